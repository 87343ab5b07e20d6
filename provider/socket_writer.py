"""Answer bodies written to the socket without cheroot's copies.

cheroot's ``BufferedWriter.write`` (``cheroot/makefile.py``) appends every block to a
bytearray, copies that into a new ``bytes`` object for each ``send``, and after a
partial send deletes the sent part from the front of the bytearray (moving the rest)
and copies the remainder again for the next ``send``. A 1 MiB GET block that the
kernel takes in a few pieces is therefore copied several times over, under the GIL,
on the request thread. :class:`SocketWriter` (installed as each connection's
``wfile`` by :class:`provider.http_limits.LimitedConnection`) sends from a
memoryview of the caller's block instead: no copy in Python at all, and the GIL is
released while the kernel takes the bytes.

It keeps what cheroot's writer promises: every byte is written before ``write``
returns (cheroot never buffers across calls either), ``bytes_written`` counts them,
and the socket's timeout applies to each ``send`` (a slow reader is dropped only
when it stops reading for ``socket_timeout``, as before, not when a whole block
takes that long).
"""

from __future__ import annotations

import threading
from typing import Any

from cheroot.makefile import StreamWriter


class SocketWriter(StreamWriter):
    """cheroot's stream writer with a copy-free ``write`` (nothing goes through its
    buffer, so ``flush`` has nothing to do)."""

    def __init__(self, sock: Any, bufsize: int) -> None:
        super().__init__(sock, "wb", bufsize)
        self._socket = sock
        self._sending = threading.Lock()

    def write(self, b: Any) -> Any:
        if isinstance(b, str):
            raise TypeError("can't write str to binary stream")
        if self.closed:
            raise ValueError("write to closed file")
        view = memoryview(b)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        size = len(view)
        with self._sending:
            send = self._socket.send
            while view:
                sent = send(view)
                view = view[sent:]
        self.bytes_written += size
        return size
