"""A randomized WebDAV workload with a model of what it did, for the recovery tests.

:class:`Workload` drives a real server with every kind of write (PUT, overwrite, range
PUT, IETF resumable upload, SabreDAV PATCH, MKCOL, MOVE, COPY, DELETE, PROPPATCH and
restore from ``/.history/``) for several users, and keeps a :class:`Model`: per user,
path -> (folder?, bytes, dead properties). :func:`observe` reads what a server shows
(the live tree with contents, ETags, dead properties, quotas, and ``/.history/`` with
every point in time's listing and ETags), so a test can compare a server with the
model and with what it showed before.
"""

from __future__ import annotations

import copy
import random
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

import requests
from lxml import etree

DAV = "{DAV:}"
NS = "urn:recover-test"
XML = {"Content-Type": "application/xml; charset=utf-8"}
SABRE = "application/x-sabredav-partialupdate"

Tree = dict[str, tuple[bool, bytes | None, dict[str, str]]]  # path -> (is_dir, data, props)


@dataclass
class Model:
    users: dict[str, Tree] = field(default_factory=dict)

    def copy(self) -> "Model":
        return Model(copy.deepcopy(self.users))


def _url(base: str, path: str) -> str:
    return base + quote(path)


def _children(tree: Tree, path: str) -> list[str]:
    prefix = path.rstrip("/") + "/"
    return [p for p in tree if p.startswith(prefix)]


class Workload:
    def __init__(self, base_url: str, users: dict[str, str], seed: int) -> None:
        self.base = base_url
        self.rng = random.Random(seed)
        self.sessions = {}
        for name, password in users.items():
            s = requests.Session()
            s.auth = (name, password)
            self.sessions[name] = s
        self.model = Model({name: {"/": (True, None, {})} for name in users})
        #: user -> [(point in time, that user's tree then)]
        self.marks: dict[str, list[tuple[str, Tree]]] = {name: [] for name in users}
        self.counter = 0
        #: the model before and after the operation in flight (for crash tests)
        self.before: Model | None = None
        self.after: Model | None = None

    # -- helpers -----------------------------------------------------------------

    def _name(self, ext: str = ".bin") -> str:
        self.counter += 1
        return f"n{self.counter:04d}-{self.rng.choice(['ä', 'x', ' sp', 'Ω'])}{ext}"

    def _data(self) -> bytes:
        size = self.rng.choice([0, 1, 700, 5000, 70000, 300000, 1500000])
        return self.rng.randbytes(size)

    def _pick(self, tree: Tree, *, dirs: bool | None = None, root: bool = False) -> str | None:
        paths = [p for p, (d, _, _) in tree.items() if (dirs is None or d == dirs) and (root or p != "/")]
        return self.rng.choice(sorted(paths)) if paths else None

    def _new_path(self, tree: Tree, ext: str = ".bin") -> str:
        folder = self._pick(tree, dirs=True, root=True) or "/"
        return folder.rstrip("/") + "/" + self._name(ext)

    # -- operations ---------------------------------------------------------------

    def step(self) -> str:
        user = self.rng.choice(sorted(self.sessions))
        tree = self.model.users[user]
        ops = ["put", "put", "overwrite", "range_put", "ietf", "patch", "mkcol", "mkcol", "move", "copy",
               "delete", "proppatch", "proppatch", "mark", "restore"]
        op = self.rng.choice(ops)
        self.before = self.model.copy()
        after = self.model.copy()
        self.after = after
        new = after.users[user]
        done = getattr(self, "_" + op)(user, self.sessions[user], tree, new)
        if done:
            self.model = after
        self.before = self.after = None
        return f"{user} {op}" if done else f"{user} {op} (skipped)"

    def _put(self, user: str, s: requests.Session, tree: Tree, new: Tree) -> bool:
        path, data = self._new_path(tree), self._data()
        new[path] = (False, data, {})
        r = s.put(_url(self.base, path), data=data)
        assert r.status_code == 201, (path, r.status_code, r.text)
        return True

    def _overwrite(self, user: str, s: requests.Session, tree: Tree, new: Tree) -> bool:
        path = self._pick(tree, dirs=False)
        if path is None:
            return False
        data = self._data()
        new[path] = (False, data, tree[path][2])
        r = s.put(_url(self.base, path), data=data)
        assert r.status_code == 204, (path, r.status_code, r.text)
        return True

    def _range_put(self, user: str, s: requests.Session, tree: Tree, new: Tree) -> bool:
        path = self._pick(tree, dirs=False) if self.rng.random() < 0.5 else None
        path = path or self._new_path(tree)
        data = self.rng.randbytes(self.rng.choice([4096, 600000]))
        half = len(data) // 2
        props = tree[path][2] if path in tree else {}
        new[path] = (False, data, props)
        url = _url(self.base, path)
        r = s.put(url, data=data[:half], headers={"Content-Range": f"bytes 0-{half - 1}/{len(data)}"})
        assert r.status_code == 308, (path, r.status_code, r.text)
        r = s.put(url, data=data[half:], headers={"Content-Range": f"bytes {half}-{len(data) - 1}/{len(data)}"})
        assert r.status_code in (201, 204), (path, r.status_code, r.text)
        return True

    def _ietf(self, user: str, s: requests.Session, tree: Tree, new: Tree) -> bool:
        path = self._new_path(tree)
        data = self.rng.randbytes(self.rng.choice([3000, 400000]))
        half = len(data) // 2
        new[path] = (False, data, {})
        r = s.post(_url(self.base, path), data=data[:half], headers={
            "Upload-Complete": "?0", "Upload-Length": str(len(data)), "Upload-Draft-Interop-Version": "8"})
        assert r.status_code == 201, (path, r.status_code, r.text)
        location = self.base + r.headers["Location"]
        r = s.patch(location, data=data[half:], headers={
            "Content-Type": "application/partial-upload", "Upload-Offset": str(half), "Upload-Complete": "?1"})
        assert r.status_code in (201, 204) and r.headers.get("Upload-Complete") == "?1", (r.status_code, r.text)
        return True

    def _patch(self, user: str, s: requests.Session, tree: Tree, new: Tree) -> bool:
        path = self._pick(tree, dirs=False)
        if path is None:
            return False
        extra = self.rng.randbytes(self.rng.choice([10, 3000]))
        old = tree[path]
        new[path] = (False, (old[1] or b"") + extra, old[2])
        r = s.patch(_url(self.base, path), data=extra, headers={"Content-Type": SABRE, "X-Update-Range": "append"})
        assert r.status_code == 204, (path, r.status_code, r.text)
        return True

    def _mkcol(self, user: str, s: requests.Session, tree: Tree, new: Tree) -> bool:
        path = self._new_path(tree, "") + "/"
        path = path.rstrip("/")
        new[path] = (True, None, {})
        r = s.request("MKCOL", _url(self.base, path))
        assert r.status_code == 201, (path, r.status_code, r.text)
        return True

    def _dest_for(self, tree: Tree, src: str) -> str | None:
        folders = [p for p, (d, _, _) in tree.items() if d and p != src and not p.startswith(src + "/")]
        folder = self.rng.choice(sorted(folders))
        return folder.rstrip("/") + "/" + self._name(".mv" if not tree[src][0] else "")

    def _move(self, user: str, s: requests.Session, tree: Tree, new: Tree) -> bool:
        src = self._pick(tree)
        if src is None:
            return False
        dst = self._dest_for(tree, src)
        for p in [src, *_children(tree, src)]:
            del new[p]
            new[dst + p[len(src):]] = tree[p]
        r = s.request("MOVE", _url(self.base, src),
                      headers={"Destination": _url(self.base, dst), "Overwrite": "F"})
        assert r.status_code == 201, (src, dst, r.status_code, r.text)
        return True

    def _copy(self, user: str, s: requests.Session, tree: Tree, new: Tree) -> bool:
        src = self._pick(tree)
        if src is None:
            return False
        dst = self._dest_for(tree, src)
        for p in [src, *_children(tree, src)]:
            new[dst + p[len(src):]] = tree[p]
        r = s.request("COPY", _url(self.base, src),
                      headers={"Destination": _url(self.base, dst), "Overwrite": "F", "Depth": "infinity"})
        assert r.status_code == 201, (src, dst, r.status_code, r.text)
        return True

    def _delete(self, user: str, s: requests.Session, tree: Tree, new: Tree) -> bool:
        path = self._pick(tree)
        if path is None:
            return False
        for p in [path, *_children(tree, path)]:
            del new[p]
        r = s.delete(_url(self.base, path))
        assert r.status_code == 204, (path, r.status_code, r.text)
        return True

    def _proppatch(self, user: str, s: requests.Session, tree: Tree, new: Tree) -> bool:
        path = self._pick(tree)
        if path is None:
            return False
        is_dir, data, props = tree[path]
        props = dict(props)
        name = self.rng.choice(["colour", "note", "tag"])
        if name in props and self.rng.random() < 0.3:
            del props[name]
            op = f'<D:remove><D:prop><x:{name} xmlns:x="{NS}"/></D:prop></D:remove>'
        else:
            props[name] = f"v{self.rng.randrange(1000)} ü"
            op = f'<D:set><D:prop><x:{name} xmlns:x="{NS}">{props[name]}</x:{name}></D:prop></D:set>'
        new[path] = (is_dir, data, props)
        body = f'<?xml version="1.0" encoding="utf-8"?><D:propertyupdate xmlns:D="DAV:">{op}</D:propertyupdate>'
        r = s.request("PROPPATCH", _url(self.base, path), data=body.encode("utf-8"), headers=XML)
        assert r.status_code == 207 and "200" in r.text, (path, r.status_code, r.text)
        return True

    def _mark(self, user: str, s: requests.Session, tree: Tree, new: Tree) -> bool:
        """Wait for the next second: the tree at the end of the previous one is the model now."""
        time.sleep(1.02 - (time.time() % 1.0))
        second = int(time.time()) - 1
        point = time.strftime("%Y-%m-%dT%H%M%SZ", time.gmtime(second))
        self.marks[user].append((point, copy.deepcopy(tree)))
        return True

    def _restore(self, user: str, s: requests.Session, tree: Tree, new: Tree) -> bool:
        if not self.marks[user]:
            return False
        point, then = self.rng.choice(self.marks[user])
        candidates = [p for p in then if p != "/" and (p.rsplit("/", 1)[0] or "/") in tree]
        if not candidates:
            return False
        path = self.rng.choice(sorted(candidates))
        for p in [path, *_children(tree, path)] if path in tree else []:
            del new[p]
        for p in [path, *_children(then, path)]:
            new[p] = then[p]
        r = s.request("COPY", self.base + "/.history/" + point + quote(path),
                      headers={"Destination": _url(self.base, path), "Overwrite": "T"})
        assert r.status_code in (201, 204), (point, path, r.status_code, r.text)
        return True


def drive(work: Workload, stop: "threading.Event", failure: list[BaseException],
          bases: list[str] | None = None) -> None:
    """Run steps until ``stop`` is set (a thread's target), on the servers ``bases`` in
    turn if given; the first error (a killed server) ends it, kept in ``failure``: the
    step in flight is then undecided (``work.before`` / ``work.after``)."""
    i = 0
    while not stop.is_set():
        if bases:
            work.base = bases[i % len(bases)]
            i += 1
        try:
            work.step()
        except BaseException as exc:  # noqa: BLE001 - the kill
            failure.append(exc)
            return


# -- observing a server ---------------------------------------------------------------


def _propfind(s: requests.Session, url: str, depth: str = "1") -> list[tuple[str, dict[str, str]]]:
    r = s.request("PROPFIND", url, headers={**XML, "Depth": depth})
    assert r.status_code == 207, (url, r.status_code, r.text[:500])
    out = []
    for resp in etree.fromstring(r.content).iter(f"{DAV}response"):
        href = unquote(resp.findtext(f"{DAV}href"))
        props: dict[str, str] = {}
        for ps in resp.iter(f"{DAV}propstat"):
            if "200" not in (ps.findtext(f"{DAV}status") or ""):
                continue
            for prop in ps.find(f"{DAV}prop"):
                if prop.tag in (f"{DAV}lockdiscovery", f"{DAV}supportedlock"):
                    continue
                props[prop.tag] = etree.tostring(prop, method="c14n").decode() if len(prop) else (prop.text or "")
        out.append((href, props))
    return out


def _walk(s: requests.Session, base: str, prefix: str, contents: bool) -> dict[str, object]:
    """Every resource below ``prefix``: path -> (properties, bytes or None)."""
    seen: dict[str, object] = {}
    todo = [prefix]
    while todo:
        folder = todo.pop()
        for href, props in _propfind(s, base + quote(folder)):
            path = href if href.startswith("/") else href[len(base):]
            if path.rstrip("/") == folder.rstrip("/"):
                seen.setdefault(path.rstrip("/") or "/", (props, None))
                continue
            is_dir = path.endswith("/")
            path = path.rstrip("/")
            data = None
            if not is_dir and contents:
                r = s.get(base + quote(path))
                assert r.status_code == 200, (path, r.status_code)
                data = r.content
            seen[path] = (props, data)
            if is_dir:
                todo.append(path + "/")
    return seen


def observe(base: str, users: dict[str, str], *, history: bool = True,
            quotas: frozenset[str] = frozenset()) -> dict[str, object]:
    """What the server shows every user: the live tree with contents and properties,
    bytes used (and available, for the users in ``quotas``: for the others it is the
    free disk space), and (with ``history``) each point in time's tree with properties
    and ETags."""
    state: dict[str, object] = {}
    for name, password in users.items():
        s = requests.Session()
        s.auth = (name, password)
        live = _walk(s, base, "/", contents=True)
        body = ('<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:quota-used-bytes/>'
                '<D:quota-available-bytes/></D:prop></D:propfind>')
        r = s.request("PROPFIND", base + "/", data=body, headers={**XML, "Depth": "0"})
        assert r.status_code == 207, r.text
        quota = sorted((e.tag, e.text) for e in etree.fromstring(r.content).iter()
                       if e.tag == f"{DAV}quota-used-bytes"
                       or (e.tag == f"{DAV}quota-available-bytes" and name in quotas))
        entry: dict[str, object] = {"live": live, "quota": quota}
        if history:
            points = sorted(h.rstrip("/").rsplit("/", 1)[-1] for h, _ in _propfind(s, base + "/.history/")
                            if h.rstrip("/") != "/.history")
            entry["history"] = {p: _walk(s, base, f"/.history/{p}/", contents=False) for p in points}
        state[name] = entry
    return state


def live_as_model(state: dict[str, object]) -> dict[str, Tree]:
    """The live part of :func:`observe`'s result in the model's shape."""
    out: dict[str, Tree] = {}
    for user, entry in state.items():
        tree: Tree = {}
        for path, (props, data) in entry["live"].items():  # type: ignore[index]
            is_dir = props.get(f"{DAV}resourcetype", "").find("collection") >= 0
            dead = {k[len(NS) + 2:]: v for k, v in props.items() if k.startswith("{" + NS + "}")}
            tree[path] = (is_dir, data, dead)
        out[user] = tree
    return out


def differences(a: object, b: object, where: str = "", limit: int = 10) -> list[str]:
    """Where two observed states differ (for assertion messages)."""
    out: list[str] = []
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if key not in a or key not in b:
                out.append(f"{where}/{key}: only in {'second' if key in b else 'first'}")
            else:
                out += differences(a[key], b[key], f"{where}/{key}", limit)
            if len(out) >= limit:
                break
    elif isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            out += differences(x, y, f"{where}[{i}]", limit)
    elif a != b:
        out.append(f"{where}: {str(a)[:200]!r} != {str(b)[:200]!r}")
    return out[:limit]
