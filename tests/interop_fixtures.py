"""Shared pieces of the interoperability tests (``tests/interop/``).

The server itself comes from :mod:`tests.server_fixtures` (a real ``davbackup serve``
subprocess on 127.0.0.1). This module adds what every client test needs besides:

* a sample tree with awkward names (non-ASCII in NFC and NFD, reserved URL
  characters, an empty file, a file spanning several store chunks), written to disk
  and read back as ``{relative path: bytes}`` so trees compare with one ``==``;
* :func:`remote_tree`, which walks a server tree with plain PROPFIND/GET (``requests``),
  so what a client claims to have uploaded is checked by an independent reader;
* :func:`run`, a subprocess runner whose failure message carries the tool's output.

The system tools (litmus, rclone, davfs2, cadaver, chromium, curl, fuse3) are
installed by ``scripts/test``; a missing tool is a failure, not a skip.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import tempfile
import unicodedata
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import pytest

from tests.server_fixtures import DavServer

MiB = 1024 * 1024
DAV_NS = "{DAV:}"

#: Names every client must carry through unchanged.
NFC_NAME = unicodedata.normalize("NFC", "café résumé.txt")
NFD_NAME = unicodedata.normalize("NFD", "café résumé-nfd.txt")
RESERVED_NAME = "a b&c#d%e+f;g=h@i'(j)[k].txt"


def sample_tree(seed: int = 0, *, big: int = 3 * MiB + 17) -> dict[str, bytes]:
    """A small tree of files keyed by POSIX relative path.

    ``big`` bytes of random data make one file span several chunks (the store cuts
    256 KiB - 4 MiB, about 1 MiB on average).
    """
    rng = random.Random(seed)
    return {
        "empty.txt": b"",
        "small.txt": b"hello, davbackup\n",
        "big.bin": rng.randbytes(big),
        NFC_NAME: "Grüße aus Köln — ünïcødé content\n".encode(),
        NFD_NAME: b"decomposed name\n",
        RESERVED_NAME: b"reserved characters in the name\n",
        "ünïcødé dir/日本語 файл.txt": "日本語のテキスト\n".encode(),
        "ünïcødé dir/emoji 🎉.bin": rng.randbytes(70_000),
        "deep/a/b/c/leaf.txt": b"leaf\n",
        "deep/a/sibling.bin": rng.randbytes(300_000),
    }


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def read_tree(root: Path) -> dict[str, bytes]:
    """All regular files under ``root`` as ``{relative POSIX path: bytes}``."""
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def require_tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: run scripts/test (it installs it with apt)")
    return found


def run(cmd: list[str], *, timeout: float = 120, check: bool = True, text: bool = True,
        **kwargs: object) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    """Run a client; on failure, the assertion message shows what it printed."""
    result = subprocess.run(cmd, capture_output=True, text=text, timeout=timeout,
                            **kwargs)  # type: ignore[call-overload]
    if check and result.returncode != 0:
        out, err = result.stdout, result.stderr
        if not text:
            out, err = out.decode(errors="replace"), err.decode(errors="replace")
        pytest.fail(
            f"{' '.join(cmd)} exited {result.returncode}\n"
            f"--- stdout ---\n{out[-4000:]}\n--- stderr ---\n{err[-4000:]}"
        )
    return result


def rclone_env(home: Path, remotes: dict[str, tuple[str, str, str, str]]) -> dict[str, str]:
    """The environment for rclone with the given webdav remotes and nothing else:
    ``{NAME: (url, user, password, vendor)}``, configured through ``RCLONE_CONFIG_*``
    variables with ``RCLONE_CONFIG`` an empty file below ``home`` (the user's own
    rclone configuration is never read or written)."""
    require_tool("rclone")
    home.mkdir(parents=True, exist_ok=True)
    config = home / "rclone.conf"
    config.write_text("")
    env = {**os.environ, "HOME": str(home), "RCLONE_CONFIG": str(config)}
    for name, (url, user, password, vendor) in remotes.items():
        obscured = run(["rclone", "obscure", password], env=env).stdout.strip()
        prefix = f"RCLONE_CONFIG_{name.upper()}_"
        env.update({prefix + "TYPE": "webdav", prefix + "URL": url, prefix + "VENDOR": vendor,
                    prefix + "USER": user, prefix + "PASS": obscured})
    return env


def url_path(path: str) -> str:
    """Percent-encode a server path (UTF-8), keeping the slashes."""
    return quote(path, safe="/")


def url_of(server: DavServer, path: str) -> str:
    return server.url + url_path(path)


def get_bytes(server: DavServer, path: str, user: str = "alice") -> bytes:
    response = server.session(user).get(url_of(server, path), timeout=60)
    assert response.status_code == 200, (
        f"GET {path}: {response.status_code} {response.text[:300]}"
    )
    return response.content


def propfind_children(server: DavServer, collection: str,
                      user: str = "alice") -> dict[str, bool]:
    """Children of a collection as ``{name: is_collection}`` (PROPFIND, Depth 1)."""
    if not collection.endswith("/"):
        collection += "/"
    response = server.session(user).request(
        "PROPFIND", url_of(server, collection), headers={"Depth": "1"}, timeout=60,
        data=b'<?xml version="1.0"?><propfind xmlns="DAV:"><prop><resourcetype/>'
             b"</prop></propfind>",
    )
    assert response.status_code == 207, (
        f"PROPFIND {collection}: {response.status_code} {response.text[:300]}"
    )
    children: dict[str, bool] = {}
    own = unquote(collection).rstrip("/")
    for item in ET.fromstring(response.content).iter(DAV_NS + "response"):
        href = unquote(urlsplit(item.findtext(DAV_NS + "href", "")).path)
        is_collection = item.find(f".//{DAV_NS}resourcetype/{DAV_NS}collection") is not None
        if href.rstrip("/") == own:
            continue
        children[href.rstrip("/").rsplit("/", 1)[-1]] = is_collection
    return children


def remote_tree(server: DavServer, root: str, user: str = "alice") -> dict[str, bytes]:
    """Every file below ``root`` read with plain PROPFIND and GET."""
    files: dict[str, bytes] = {}
    pending = [""]
    while pending:
        rel_dir = pending.pop()
        here = root.rstrip("/") + "/" + rel_dir
        for name, is_collection in propfind_children(server, here, user).items():
            rel = f"{rel_dir}{name}"
            if is_collection:
                pending.append(rel + "/")
            else:
                files[rel] = get_bytes(server, here + name, user)
    return dict(sorted(files.items()))


def assert_same_tree(actual: dict[str, bytes], expected: dict[str, bytes]) -> None:
    """Compare trees with a readable message (names first, then sizes)."""
    assert sorted(actual) == sorted(expected), "file names differ"
    wrong = [rel for rel in expected if actual[rel] != expected[rel]]
    assert not wrong, "content differs: " + ", ".join(
        f"{rel} ({len(actual[rel])} vs {len(expected[rel])} bytes)" for rel in wrong
    )


@pytest.fixture
def public_tmp() -> Iterator[Path]:
    """A temp dir the davfs2 user can enter (0755), removed afterwards: the ``workdir``
    of :func:`davfs2_mount`."""
    path = Path(tempfile.mkdtemp(prefix="davbackup-mount-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def davfs2_mount(server: DavServer, workdir: Path, name: str,
                 *, use_locks: bool = True) -> Iterator[Path]:
    """Mount the server's root for alice with davfs2; unmount (and so flush) on exit."""
    require_tool("mount.davfs")
    if os.geteuid() != 0:
        pytest.fail("davfs2 mounts need root (mount -t davfs); run the tests as root")
    mountpoint = workdir / f"{name}-mnt"
    cache = workdir / f"{name}-cache"
    mountpoint.mkdir()
    cache.mkdir()
    cache.chmod(0o777)  # the davfs2 daemon runs as user davfs2 and creates its dir here
    secrets = workdir / f"{name}-secrets"
    secrets.write_text(f"{server.url}/ alice {server.password('alice')}\n")
    secrets.chmod(0o600)
    conf = workdir / f"{name}-davfs2.conf"
    conf.write_text(
        "buf_size 64\n"
        f"use_locks {1 if use_locks else 0}\n"
        f"cache_dir {cache}\n"
        f"secrets {secrets}\n"
        "delay_upload 1\n"
        "ask_auth 0\n"
    )
    run(["mount", "-t", "davfs", f"{server.url}/", str(mountpoint), "-o", f"conf={conf}"],
        timeout=60)
    mounted = True
    try:
        assert os.path.ismount(mountpoint)
        yield mountpoint
        run(["umount", str(mountpoint)], timeout=120)  # waits for pending uploads
        mounted = False
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True, timeout=60)
