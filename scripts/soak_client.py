"""One soak client: a thread that runs random WebDAV operations in its own folder and
keeps an exact model of what the server acknowledged there.

Each client owns ``/soak-cNN`` in its user's namespace, so its model is exact: a
file is in the model only once the server answered 201/204 for it, and leaves it
when a DELETE or MOVE was acknowledged. Statuses that the protocol allows in a
situation (a 423 while a cut-off upload still holds its session, a 308 for an
unfinished part) are *expected*; anything else is counted as unexpected with a
sample of the answer. A path touched by an operation that went wrong is marked
uncertain and left out of the final comparison (the unexpected status already
counts against the run).
"""

from __future__ import annotations

import base64
import math
import random
import re
import threading
import time
import uuid
from typing import Callable
from urllib.parse import quote, unquote, urlsplit

import requests

from soak_content import Content, KiB, MiB, Body, Recorder, cut_request, matches

TIMEOUT = 300
MAX_FILES = 30
LOCK_BODY = (b'<?xml version="1.0" encoding="utf-8"?><D:lockinfo xmlns:D="DAV:">'
             b"<D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype>"
             b"<D:owner>soak</D:owner></D:lockinfo>")
PROPPATCH_BODY = ('<?xml version="1.0" encoding="utf-8"?><D:propertyupdate xmlns:D="DAV:" '
                  'xmlns:S="urn:davbackup-soak"><D:set><D:prop><S:note>{}</S:note></D:prop></D:set>'
                  "</D:propertyupdate>")
PROPFIND_BODY = (b'<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:prop>'
                 b"<D:resourcetype/><D:getcontentlength/></D:prop></D:propfind>")
HREF = re.compile(rb"<(?:[A-Za-z]+:)?href>([^<]*)</(?:[A-Za-z]+:)?href>")


class Unexpected(Exception):
    """An answer the protocol does not allow here (already recorded)."""


class SoakClient:
    def __init__(self, index: int, base_url: str, user: str, password: str, recorder: Recorder,
                 stop: threading.Event, *, max_size: int, seed: int) -> None:
        self.index = index
        self.base_url = base_url.rstrip("/")
        self.port = urlsplit(base_url).port or 80
        self.user = user
        self.auth_token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self.session = requests.Session()
        self.session.auth = (user, password)
        self.rec = recorder
        self.stop = stop
        self.max_size = max_size
        self.rng = random.Random(seed)
        self.root = f"/soak-c{index:02d}"
        self.files: dict[str, Content] = {}
        self.dirs: set[str] = {self.root}
        self.uncertain: set[str] = set()
        self.ops = 0
        self.error: str | None = None
        #: what the current resumable upload did, for the report of an unexpected answer
        self.trace: list[str] = []

    # -- HTTP ------------------------------------------------------------------------

    def url(self, path: str) -> str:
        return self.base_url + quote(path)

    def call(self, label: str, method: str, path: str, ok: tuple[int, ...], *, allowed: tuple[int, ...] = (),
             body: object = None, headers: dict[str, str] | None = None, stream: bool = False,
             url: str | None = None) -> requests.Response:
        """One request; a status outside ``ok + allowed`` is recorded as unexpected and raised."""
        started = time.monotonic()
        try:
            r = self.session.request(method, url or self.url(path), data=body, headers=headers or {},
                                     timeout=TIMEOUT, stream=stream, allow_redirects=False)
        except requests.RequestException as exc:
            self.rec.record(label, 0, time.monotonic() - started, expected=False, detail=f"{path}: {exc!r}")
            raise Unexpected(label) from exc
        up = len(body) if isinstance(body, (bytes, Body)) else 0
        expected = r.status_code in ok or r.status_code in allowed
        down = 0 if stream else len(r.content)
        sent = (headers or {}).get("Content-Range") or (headers or {}).get("Upload-Offset") or ""
        self.trace.append(f"{label} {sent} {up}B -> {r.status_code} {r.headers.get('Upload-Offset', '')}")
        detail = f"{method} {path}: {'' if stream else r.text[:200].strip()}"
        if not expected and len(self.trace) > 1:
            detail += " | " + "; ".join(self.trace[-8:])
        self.rec.record(label, r.status_code, time.monotonic() - started, expected=expected,
                        detail=detail, up=up, down=down)
        if not expected:
            raise Unexpected(label)
        return r

    # -- choosing --------------------------------------------------------------------

    def size(self, big: bool = False) -> int:
        """Log-uniform sizes: mostly small files (1 KiB to 2 MiB; resumable uploads 1 to
        8 MiB), a few large ones up to max_size (5 %; 10 % of resumable uploads)."""
        low, split = (MiB, 8 * MiB) if big else (KiB, 2 * MiB)
        if self.rng.random() < (0.10 if big else 0.05):
            low, split = split, max(split, self.max_size)
        split = min(split, self.max_size)
        return int(math.exp(self.rng.uniform(math.log(min(low, split)), math.log(split))))

    def new_content(self, big: bool = False) -> Content:
        if self.files and self.rng.random() < 0.25:  # the same bytes again: deduplication
            known = self.rng.choice(list(self.files.values()))
            if not big or known.size >= MiB:
                return known
        return Content(self.rng.getrandbits(48), self.size(big))

    def new_path(self, ext: str = ".bin") -> str:
        folder = self.rng.choice(sorted(self.dirs))
        name = self.rng.choice(["f", "Datei ü", "x y", "файл", "n"]) + f"-{uuid.uuid4().hex[:8]}{ext}"
        return f"{folder}/{name}"

    def some_file(self) -> str | None:
        choices = [p for p in self.files if p not in self.uncertain]
        return self.rng.choice(sorted(choices)) if choices else None

    # -- the loop --------------------------------------------------------------------

    def run(self) -> None:
        try:
            self.call("MKCOL", "MKCOL", self.root, (201,))
        except Unexpected:
            self.error = "could not create its folder"
            return
        ops: list[tuple[float, Callable[[], None]]] = [
            (18, self.op_put), (4, self.op_overwrite), (10, self.op_get), (14, self.op_get_range),
            (10, self.op_propfind), (3, self.op_mkcol), (5, self.op_move), (5, self.op_copy),
            (6, self.op_delete), (1, self.op_copy_dir), (1, self.op_delete_dir), (5, self.op_lock),
            (3, self.op_proppatch), (5, self.op_range_put), (3, self.op_sabredav), (3, self.op_ietf),
        ]
        weights = [w for w, _ in ops]
        while not self.stop.is_set():
            if len(self.files) > MAX_FILES:
                op = self.op_delete
            else:
                op = self.rng.choices(ops, weights)[0][1]
            self.ops += 1
            self.trace = []
            try:
                op()
            except Unexpected:
                pass

    # -- plain operations ------------------------------------------------------------------

    def put(self, path: str, content: Content, label: str = "PUT") -> None:
        status = (204,) if path in self.files else (201,)
        try:
            self.call(label, "PUT", path, status, body=Body(content))
        except Unexpected:
            self.uncertain.add(path)
            raise
        self.files[path] = content

    def op_put(self) -> None:
        self.put(self.new_path(), self.new_content())

    def op_overwrite(self) -> None:
        path = self.some_file()
        if path is not None:
            self.put(path, self.new_content(), "PUT")

    def op_get(self) -> None:
        path = self.some_file()
        if path is None:
            return self.op_put()
        content = self.files[path]
        r = self.call("GET", "GET", path, (200,), stream=True)
        ok, n = matches(content, r.iter_content(1 * MiB))
        self.rec.add_down(n)
        if not ok or n != content.size:
            self.rec.record("GET-content", 0, 0, expected=False, detail=f"{path}: wrong bytes ({n})")

    def op_get_range(self) -> None:
        path = self.some_file()
        if path is None:
            return self.op_put()
        content = self.files[path]
        if content.size < 2:
            return self.op_get()
        start = self.rng.randrange(content.size)
        end = min(content.size - 1, start + self.rng.randrange(1, 4 * MiB))
        r = self.call("GET-range", "GET", path, (206,), stream=True, headers={"Range": f"bytes={start}-{end}"})
        ok, n = matches(content, r.iter_content(1 * MiB), start)
        self.rec.add_down(n)
        if not ok or n != end - start + 1:
            self.rec.record("GET-content", 0, 0, expected=False, detail=f"{path} {start}-{end}: wrong bytes")

    def listing(self, folder: str) -> set[str] | None:
        r = self.call("PROPFIND", "PROPFIND", folder + "/", (207,), body=PROPFIND_BODY,
                      headers={"Depth": "1", "Content-Type": "application/xml"})
        names = set()
        for href in HREF.findall(r.content):
            path = unquote(urlsplit(href.decode()).path).rstrip("/")
            if path != folder:
                names.add(path)
        return names

    def op_propfind(self) -> None:
        folder = self.rng.choice(sorted(self.dirs))
        seen = self.listing(folder)
        want = {p for p in list(self.files) + list(self.dirs) if p.rsplit("/", 1)[0] == folder}
        diff = (seen or set()) ^ want
        if diff - self.uncertain:
            self.rec.record("PROPFIND-listing", 0, 0, expected=False, detail=f"{folder}: differs by {sorted(diff)[:4]}")

    def op_mkcol(self) -> None:
        if len(self.dirs) >= 6:
            return self.op_propfind()
        parent = self.rng.choice(sorted(self.dirs))
        if parent.count("/") > 3:
            parent = self.root
        path = f"{parent}/d-{uuid.uuid4().hex[:6]}"
        self.call("MKCOL", "MKCOL", path, (201,))
        self.dirs.add(path)

    def _move_or_copy(self, method: str) -> None:
        src = self.some_file()
        if src is None:
            return self.op_put()
        if self.rng.random() < 0.3 and self.some_file() not in (None, src):
            dest = self.some_file() or ""
        else:
            dest = self.new_path(".moved" if method == "MOVE" else ".copy")
        if dest == src:
            return
        replaced = dest in self.files
        try:
            self.call(method, method, src, (204,) if replaced else (201,),
                      headers={"Destination": self.url(dest), "Overwrite": "T"})
        except Unexpected:
            self.uncertain.update((src, dest))
            raise
        self.files[dest] = self.files[src]
        if method == "MOVE":
            del self.files[src]

    def op_move(self) -> None:
        self._move_or_copy("MOVE")

    def op_copy(self) -> None:
        self._move_or_copy("COPY")

    def op_delete(self) -> None:
        path = self.some_file()
        if path is None:
            return self.op_put()
        try:
            self.call("DELETE", "DELETE", path, (204,))
        except Unexpected:
            self.uncertain.add(path)
            raise
        del self.files[path]

    def _subdirs(self) -> list[str]:
        return sorted(d for d in self.dirs if d != self.root)

    def op_copy_dir(self) -> None:
        subdirs = self._subdirs()
        if not subdirs or len(self.files) > MAX_FILES // 2:
            return self.op_mkcol()
        src = self.rng.choice(subdirs)
        dest = f"{self.root}/copy-{uuid.uuid4().hex[:6]}"
        self.call("COPY-dir", "COPY", src, (201,), headers={"Destination": self.url(dest), "Depth": "infinity"})
        for d in [d for d in self.dirs if d == src or d.startswith(src + "/")]:
            self.dirs.add(dest + d[len(src):])
        for p in [p for p in self.files if p.startswith(src + "/")]:
            self.files[dest + p[len(src):]] = self.files[p]

    def op_delete_dir(self) -> None:
        subdirs = self._subdirs()
        if not subdirs:
            return self.op_mkcol()
        path = self.rng.choice(subdirs)
        inside = [p for p in self.files if p.startswith(path + "/")]
        try:
            self.call("DELETE-dir", "DELETE", path, (204,))
        except Unexpected:
            self.uncertain.update(inside)
            raise
        for p in inside:
            del self.files[p]
        self.dirs = {d for d in self.dirs if d != path and not d.startswith(path + "/")}

    def op_lock(self) -> None:
        """LOCK a file, see a PUT without the token refused, PUT with it, UNLOCK."""
        path = self.some_file()
        if path is None:
            return self.op_put()
        r = self.call("LOCK", "LOCK", path, (200,), body=LOCK_BODY,
                      headers={"Timeout": "Second-120", "Content-Type": "application/xml", "Depth": "0"})
        token = r.headers.get("Lock-Token", "").strip()
        try:
            content = self.new_content()
            self.call("PUT-locked", "PUT", path, (423,), body=b"refused while locked")
            try:
                self.call("PUT", "PUT", path, (204,), body=Body(content), headers={"If": f"({token})"})
            except Unexpected:
                self.uncertain.add(path)
                raise
            self.files[path] = content
        finally:
            self.call("UNLOCK", "UNLOCK", path, (204,), headers={"Lock-Token": token})

    def op_proppatch(self) -> None:
        path = self.some_file() or self.root
        body = PROPPATCH_BODY.format(uuid.uuid4().hex).encode()
        self.call("PROPPATCH", "PROPPATCH", path, (207,), body=body, headers={"Content-Type": "application/xml"})

    # -- resumable uploads, cut off at random ---------------------------------------------

    def _cut(self, method: str, path_or_url: str, headers: dict[str, str], content: Content,
             start: int, end: int) -> None:
        cut_after = self.rng.randrange(0, end - start)
        cut_request(self.port, method, quote(path_or_url), self.auth_token, headers, content, start, end, cut_after)
        self.trace.append(f"{method}-cut {start}-{end - 1} after {cut_after}B")
        self.rec.count_cut(method)

    def op_range_put(self) -> None:
        """Range PUT in parts, some parts cut off; offset queries say where to go on."""
        path, content = self.new_path(".range"), self.new_content(big=True)
        total = content.size
        digest = {"Repr-Digest": f"sha-256=:{content.sha256_b64()}:"}
        part = max(256 * KiB, total // self.rng.randint(1, 5))
        offset, cuts = 0, 0
        self.uncertain.add(path)
        while True:
            end = min(offset + part, total)
            if cuts < 2 and self.rng.random() < 0.4:
                cuts += 1
                self._cut("PUT", path, {"Content-Range": f"bytes {offset}-{end - 1}/{total}", **digest},
                          content, offset, end)
                offset = self._range_offset(path, total, digest)
                if offset < 0:
                    break
                continue
            r = self.call("PUT-range", "PUT", path, (201, 204, 308), allowed=(423,), body=Body(content, offset, end),
                          headers={"Content-Range": f"bytes {offset}-{end - 1}/{total}", **digest})
            if r.status_code in (201, 204):
                break
            if r.status_code == 423:
                time.sleep(0.5)
                offset = self._range_offset(path, total, digest)
                if offset < 0:
                    break
                continue
            offset = int(r.headers["Upload-Offset"])
        self.uncertain.discard(path)
        self.files[path] = content

    def _range_offset(self, path: str, total: int, digest: dict[str, str]) -> int:
        """The held offset (-1: the upload completed)."""
        for _ in range(200):
            r = self.call("PUT-range-query", "PUT", path, (308, 200), allowed=(423,), body=b"",
                          headers={"Content-Range": f"bytes */{total}", **digest})
            if r.status_code == 200:
                return -1
            if r.status_code == 308:
                return int(r.headers["Upload-Offset"])
            time.sleep(0.5)
        raise Unexpected("range offset query never stopped answering 423")

    def op_sabredav(self) -> None:
        """An empty file, then PATCH appends (some cut off: they change nothing)."""
        path, content = self.new_path(".patch"), self.new_content(big=True)
        self.uncertain.add(path)
        self.call("PUT", "PUT", path, (201,), body=b"")
        size, part = 0, max(256 * KiB, content.size // self.rng.randint(1, 4))
        while size < content.size:
            end = min(size + part, content.size)
            headers = {"Content-Type": "application/x-sabredav-partialupdate", "X-Update-Range": "append"}
            if self.rng.random() < 0.3:
                self._cut("PATCH", path, headers, content, size, end)
                r = self.call("HEAD", "HEAD", path, (200,))
                size = int(r.headers["Content-Length"])
                continue
            self.call("PATCH-sabredav", "PATCH", path, (204,), body=Body(content, size, end), headers=headers)
            size = end
        self.uncertain.discard(path)
        self.files[path] = content

    def op_ietf(self) -> None:
        """IETF draft: careful creation, appends (some cut off), HEAD for the offset."""
        path, content = self.new_path(".ietf"), self.new_content(big=True)
        self.uncertain.add(path)
        r = self.call("POST-ietf", "POST", path, (201,), body=b"", headers={
            "Upload-Complete": "?0", "Upload-Length": str(content.size), "Upload-Draft-Interop-Version": "8",
            "Repr-Digest": f"sha-256=:{content.sha256_b64()}:"})
        location = r.headers["Location"]
        offset, part = 0, max(256 * KiB, content.size // self.rng.randint(1, 4))
        while True:
            end = min(offset + part, content.size)
            last = end == content.size
            headers = {"Content-Type": "application/partial-upload", "Upload-Offset": str(offset),
                       "Upload-Complete": "?1" if last else "?0"}
            if self.rng.random() < 0.3:
                self._cut("PATCH", unquote(location), headers, content, offset, end)
                h = self.call("HEAD-ietf", "HEAD", location, (204,), url=self.base_url + location)
                if h.headers.get("Upload-Complete") == "?1":
                    break
                offset = int(h.headers["Upload-Offset"])
                continue
            r = self.call("PATCH-ietf", "PATCH", location, (201, 204), allowed=(409, 423),
                          body=Body(content, offset, end), headers=headers, url=self.base_url + location)
            if r.status_code == 409:
                offset = int(r.headers["Upload-Offset"])
                continue
            if r.status_code == 423:  # a cut-off append still holds the upload: ask again
                time.sleep(0.5)
                h = self.call("HEAD-ietf", "HEAD", location, (204,), url=self.base_url + location)
                if h.headers.get("Upload-Complete") == "?1":
                    break
                offset = int(h.headers["Upload-Offset"])
                continue
            if r.headers.get("Upload-Complete") == "?1":
                break
            offset = int(r.headers["Upload-Offset"])
        self.uncertain.discard(path)
        self.files[path] = content
