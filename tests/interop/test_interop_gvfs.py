"""GNOME Files' WebDAV backend (GVfs ``gvfsd-dav``) against a real server.

GVfs runs headless here: ``dbus-run-session`` starts a private session bus, the
``gio`` command activates ``gvfsd`` on it, and ``gio mount dav://...`` reads the
user name and password from stdin as GNOME Files would ask for them. Everything
GNOME Files does with a file goes through the same daemon: ``gio mkdir``, ``gio
copy`` (upload and download), ``gio list``, ``gio info``, ``gio move`` (rename) and
``gio remove``. The uploaded tree is read back with plain PROPFIND/GET.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from tests.interop_fixtures import (
    assert_same_tree,
    read_tree,
    remote_tree,
    require_tool,
    run,
    sample_tree,
    url_path,
    write_tree,
)
from tests.server_fixtures import DavServer

pytestmark = [pytest.mark.interop, pytest.mark.timeout(300)]


def gio_script(server: DavServer, remote: str, local: Path, back: Path,
               files: dict[str, bytes]) -> str:
    """A shell script doing what GNOME Files does, inside one session bus."""
    root = f"dav://127.0.0.1:{server.port}"
    here = lambda rel: root + url_path(f"{remote}{rel}")  # noqa: E731
    lines = [
        "set -eu",
        f"printf '%s\\n%s\\n' alice {shlex.quote(server.password('alice'))} | gio mount {root}/",
        f"gio mkdir {shlex.quote(here(''))}",
    ]
    # one level at a time, as GNOME Files does: ``gio mkdir -p`` expects "not found"
    # for a missing parent, but MKCOL answers 409 (RFC 4918 §9.3.1), which GVfs
    # reports as an error
    parts = [rel.split("/")[:-1] for rel in files]
    folders = sorted({"/".join(p[:i]) for p in parts for i in range(1, len(p) + 1)})
    for folder in folders:
        lines.append(f"gio mkdir {shlex.quote(here(folder))}")
    for rel in files:
        lines.append(f"gio copy {shlex.quote(str(local / rel))} {shlex.quote(here(rel))}")
    lines.append(f"gio list -h {shlex.quote(here(''))} > {shlex.quote(str(back / 'listing.txt'))}")
    for rel in files:
        target = back / "copy" / rel
        lines.append(f"mkdir -p {shlex.quote(str(target.parent))}")
        lines.append(f"gio copy {shlex.quote(here(rel))} {shlex.quote(str(target))}")
    lines += [
        f"gio info -a standard::size {shlex.quote(here('big.bin'))}"
        f" > {shlex.quote(str(back / 'info.txt'))}",
        f"gio copy {shlex.quote(str(local / 'small.txt'))} {shlex.quote(here('renamed-src.txt'))}",
        f"gio rename {shlex.quote(here('renamed-src.txt'))} 'umbenannt ä.txt'",
        f"gio copy {shlex.quote(str(local / 'small.txt'))} {shlex.quote(here('gone.txt'))}",
        f"gio remove {shlex.quote(here('gone.txt'))}",
        f"gio mount -u {root}/",
    ]
    return "\n".join(lines) + "\n"


def test_gvfs_mount_copy_list_rename_remove(shared_dav_server: DavServer,
                                            tmp_path: Path) -> None:
    require_tool("gio")
    require_tool("dbus-run-session")
    server = shared_dav_server
    files = sample_tree(seed=13)
    local, back = tmp_path / "local", tmp_path / "back"
    write_tree(local, files)
    back.mkdir()
    remote = "/gvfs/"
    script = tmp_path / "gio.sh"
    script.write_text(gio_script(server, remote, local, back, files), encoding="utf-8")
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8",
           "GIO_USE_VOLUME_MONITOR": "unix"}
    run(["dbus-run-session", "--", "bash", str(script)], timeout=240, env=env)

    expected = dict(files)
    expected["umbenannt ä.txt"] = files["small.txt"]
    assert_same_tree(remote_tree(server, remote), expected)
    assert_same_tree(read_tree(back / "copy"), files)
    listing = (back / "listing.txt").read_text(encoding="utf-8").splitlines()
    assert {line.split("\t")[0] for line in listing} >= {
        name.split("/")[0] for name in files}
    info = (back / "info.txt").read_text(encoding="utf-8")
    assert f"standard::size: {len(files['big.bin'])}" in info
