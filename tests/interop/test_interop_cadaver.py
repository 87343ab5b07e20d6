"""cadaver (the neon-based WebDAV shell) scripted through stdin.

Credentials come from ``~/.netrc`` in a temporary HOME. cadaver exits 0 even when a
command fails, so every script's transcript is checked for ``failed`` and every
result is verified independently over HTTP (``requests``).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from tests.interop_fixtures import get_bytes, propfind_children, remote_tree, require_tool, \
    run, url_of
from tests.server_fixtures import DavServer

pytestmark = [pytest.mark.interop, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def cadaver_home(shared_dav_server: DavServer,
                 tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("cadaver-home")
    netrc = home / ".netrc"
    netrc.write_text(
        f"machine 127.0.0.1 login alice password {shared_dav_server.password('alice')}\n")
    netrc.chmod(0o600)
    return home


def cadaver(server: DavServer, home: Path, commands: list[str]) -> str:
    """Run cadaver on ``commands``; return its transcript; fail if a command failed."""
    require_tool("cadaver")
    script = "\n".join([*commands, "quit"]) + "\n"
    env = {**os.environ, "HOME": str(home), "LC_ALL": "C.UTF-8"}
    result = run(["cadaver", server.url + "/"], input=script, env=env, cwd=home, timeout=90)
    transcript = result.stdout + result.stderr
    assert "failed" not in transcript.lower(), transcript
    assert "could not" not in transcript.lower(), transcript
    return transcript


def test_mkcol_put_ls_get(shared_dav_server: DavServer, cadaver_home: Path,
                          tmp_path: Path) -> None:
    payload = random.Random(7).randbytes(2 * 1024 * 1024 + 333)
    src = tmp_path / "src.bin"
    src.write_bytes(payload)
    text = tmp_path / "text.txt"
    text.write_text("Grüße, 日本語\n", encoding="utf-8")
    back = tmp_path / "back.bin"
    transcript = cadaver(shared_dav_server, cadaver_home, [
        "mkcol cad1",
        "mkcol cad1/sub",
        'mkcol "cad1/ü dir"',
        "cd cad1",
        f"put {src} data.bin",
        f'put {text} "ü dir/日本 語.txt"',
        "ls",
        'ls "ü dir"',
        f"get data.bin {back}",
    ])
    assert back.read_bytes() == payload
    assert get_bytes(shared_dav_server, "/cad1/data.bin") == payload
    assert get_bytes(shared_dav_server, "/cad1/ü dir/日本 語.txt") == text.read_bytes()
    assert propfind_children(shared_dav_server, "/cad1/") == {
        "data.bin": False, "sub": True, "ü dir": True}
    # cadaver's own listing shows the names and the size
    assert "data.bin" in transcript and str(len(payload)) in transcript
    assert "日本 語.txt" in transcript


def test_move_copy_delete(shared_dav_server: DavServer, cadaver_home: Path,
                          tmp_path: Path) -> None:
    one = tmp_path / "one.txt"
    one.write_bytes(b"one\n" * 5000)
    two = tmp_path / "two.txt"
    two.write_bytes(b"two\n" * 7000)
    cadaver(shared_dav_server, cadaver_home, [
        "mkcol cad2",
        "mkcol cad2/dir",
        f"put {one} cad2/dir/one.txt",
        f"put {two} cad2/dir/two.txt",
        "move cad2/dir/one.txt cad2/dir/uno.txt",
        "copy cad2/dir/two.txt cad2/dos.txt",
        "copy cad2/dir cad2/dircopy",          # a collection: Depth infinity
        "move cad2/dircopy cad2/moved",
        "delete cad2/dir/two.txt",
    ])
    assert remote_tree(shared_dav_server, "/cad2") == {
        "dir/uno.txt": one.read_bytes(),
        "dos.txt": two.read_bytes(),
        "moved/uno.txt": one.read_bytes(),
        "moved/two.txt": two.read_bytes(),
    }
    cadaver(shared_dav_server, cadaver_home, ["rmcol cad2/moved"])
    response = shared_dav_server.session().get(url_of(shared_dav_server, "/cad2/moved/"),
                                               timeout=30)
    assert response.status_code == 404


def test_propset_propget_propdel(shared_dav_server: DavServer, cadaver_home: Path,
                                 tmp_path: Path) -> None:
    src = tmp_path / "p.txt"
    src.write_bytes(b"props\n")
    transcript = cadaver(shared_dav_server, cadaver_home, [
        "mkcol cad3",
        f"put {src} cad3/p.txt",
        "propset cad3/p.txt colour blue",
        "propset cad3 owner-note kept-on-collection",
        "propget cad3/p.txt colour",
        "propget cad3 owner-note",
    ])
    assert "Value of colour is: blue" in transcript
    assert "Value of owner-note is: kept-on-collection" in transcript
    # the property is stored on the server: a plain PROPFIND sees it
    response = shared_dav_server.session().request(
        "PROPFIND", url_of(shared_dav_server, "/cad3/p.txt"), headers={"Depth": "0"},
        data=b'<?xml version="1.0"?><propfind xmlns="DAV:"><prop>'
             b'<colour xmlns="http://webdav.org/cadaver/custom-properties/"/>'
             b"</prop></propfind>", timeout=30)
    assert response.status_code == 207
    assert b">blue<" in response.content
    # it survives a move of the resource
    cadaver(shared_dav_server, cadaver_home, ["move cad3/p.txt cad3/q.txt"])
    moved = cadaver(shared_dav_server, cadaver_home, ["propget cad3/q.txt colour"])
    assert "Value of colour is: blue" in moved
    # and propdel removes it
    cadaver(shared_dav_server, cadaver_home, ["propdel cad3/q.txt colour"])
    require_tool("cadaver")
    env = {**os.environ, "HOME": str(cadaver_home), "LC_ALL": "C.UTF-8"}
    gone = run(["cadaver", shared_dav_server.url + "/"], input="propget cad3/q.txt colour\n"
               "quit\n", env=env, cwd=cadaver_home)
    assert "Value of colour" not in gone.stdout
    assert "404" in gone.stdout + gone.stderr


def test_lock_blocks_other_writers_until_unlocked(
        shared_dav_server: DavServer, cadaver_home: Path,
        tmp_path: Path) -> None:
    src = tmp_path / "l.txt"
    src.write_bytes(b"locked content\n")
    new = tmp_path / "l2.txt"
    new.write_bytes(b"written under cadaver's lock\n")
    # cadaver keeps the lock after quitting (it does not UNLOCK on exit)
    cadaver(shared_dav_server, cadaver_home, [
        "mkcol cad4", f"put {src} cad4/l.txt", "lock cad4/l.txt",
        f"put {new} cad4/l.txt",  # the lock holder may write
    ])
    url = url_of(shared_dav_server, "/cad4/l.txt")
    other = shared_dav_server.session().put(url, data=b"intruder", timeout=30)
    assert other.status_code == 423
    assert get_bytes(shared_dav_server, "/cad4/l.txt") == new.read_bytes()
    cadaver(shared_dav_server, cadaver_home, ["steal cad4/l.txt", "unlock cad4/l.txt"])
    after = shared_dav_server.session().put(url, data=b"after unlock", timeout=30)
    assert after.status_code == 204
    assert get_bytes(shared_dav_server, "/cad4/l.txt") == b"after unlock"
