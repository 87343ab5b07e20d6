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
takes that long). One exception, asked for by :class:`provider.http_limits.LimitedRequest`:
the response header is held (:meth:`SocketWriter.hold_next`) and goes out with the
first block of the body in one ``sendmsg``, or alone at :meth:`SocketWriter.flush`
when the request ends; a small answer then costs one system call and one TCP
segment instead of two (``100 Continue`` and error answers are never held).
"""

from __future__ import annotations

import ssl
import threading
from typing import Any

from cheroot.makefile import StreamWriter

#: at most this much of a body is copied to join it with the header (TLS)
_JOIN_LIMIT = 64 * 1024


class SocketWriter(StreamWriter):
    """cheroot's stream writer with a copy-free ``write`` (nothing goes through its
    buffer; ``flush`` only sends a held header)."""

    def __init__(self, sock: Any, bufsize: int) -> None:
        super().__init__(sock, "wb", bufsize)
        self._socket = sock
        self._sending = threading.Lock()
        self._held: bytes | None = None
        self._hold_next = False
        #: plain sockets take the header and a block in one ``sendmsg``; TLS sockets have none
        self._gather = not isinstance(sock, ssl.SSLSocket) and hasattr(sock, "sendmsg")

    def hold_next(self) -> None:
        """Keep the next write (a response header) and send it with the write after it."""
        self._hold_next = True

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
            if self._hold_next:
                self._hold_next = False
                self._held = bytes(view) if self._held is None else self._held + bytes(view)
                self.bytes_written += size
                return size
            if self._held is not None:
                held, self._held = self._held, None
                view = self._send_with(held, view)
            send = self._socket.send
            while view:
                sent = send(view)
                view = view[sent:]
        self.bytes_written += size
        return size

    def flush(self) -> None:
        """Send a held header."""
        with self._sending:
            if self._held is not None:
                held, self._held = self._held, None
                view = memoryview(held)
                while view:
                    view = view[self._socket.send(view):]

    def _send_with(self, held: bytes, view: memoryview) -> memoryview:
        """Send ``held`` and as much of ``view`` as the kernel takes in one call; the rest of ``view``."""
        if not self._gather:  # one TLS record for the header and the start of the body
            rest = memoryview(held + bytes(view[:_JOIN_LIMIT]))
            while rest:
                rest = rest[self._socket.send(rest):]
            return view[_JOIN_LIMIT:]
        first = memoryview(held)
        while first:
            sent = self._socket.sendmsg([first, view])
            if sent >= len(first):
                return view[sent - len(first):]
            first = first[sent:]
        return view
