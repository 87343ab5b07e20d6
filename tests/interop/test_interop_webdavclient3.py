"""webdavclient3 (``webdav3.client.Client``) against a real server.

webdavclient3 is also what ``davbackup upload/download/ls`` is built on, so its quirks
are pinned here: existence checks are HEAD and only 200 counts (also
for collections), an upload with a progress callback is sent chunked, and ``copy()``
of a directory sends ``Depth: 1``. Every transfer is compared byte for byte, and
what the client uploaded is read back with plain PROPFIND/GET as well.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from webdav3.client import Client
from webdav3.exceptions import WebDavException

from tests.interop_fixtures import (
    NFC_NAME,
    NFD_NAME,
    RESERVED_NAME,
    assert_same_tree,
    get_bytes,
    read_tree,
    remote_tree,
    sample_tree,
    url_of,
    write_tree,
)
from tests.server_fixtures import DavServer

pytestmark = [pytest.mark.interop, pytest.mark.timeout(120)]


def make_client(server: DavServer, user: str = "alice") -> Client:
    return Client({
        "webdav_hostname": server.url,
        "webdav_login": user,
        "webdav_password": server.password(user),
        "webdav_timeout": 60,
    })


@pytest.fixture(scope="module")
def client(shared_dav_server: DavServer) -> Client:
    return make_client(shared_dav_server)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    root = tmp_path_factory.mktemp("wdc3-src") / "tree"
    files = sample_tree(seed=3)
    write_tree(root, files)
    return root, files


def test_check_answers_for_files_collections_and_missing(
        client: Client, shared_dav_server: DavServer) -> None:
    client.mkdir("/chk")
    client.upload_to(b"x", "/chk/f.txt")
    assert client.check("/chk/f.txt")
    # webdavclient3 sends HEAD; a collection must answer 200, with or without slash
    assert client.check("/chk")
    assert client.check("/chk/")
    assert client.check("/")
    assert not client.check("/chk/missing.txt")
    assert not client.check("/no-such-dir/")
    head = requests.head(url_of(shared_dav_server, "/chk/"),
                         auth=shared_dav_server.auth(), timeout=30)
    assert head.status_code == 200


def test_mkdir_nested_and_is_dir(client: Client) -> None:
    assert client.mkdir("/mk/one/two/three", recursive=True)
    assert client.is_dir("/mk/one/two/three")
    client.upload_to(b"data", "/mk/one/file.bin")
    assert not client.is_dir("/mk/one/file.bin")
    assert sorted(client.list("/mk/one")) == ["file.bin", "two/"]


def test_upload_and_download_tree_byte_for_byte(
        client: Client, shared_dav_server: DavServer,
        tree: tuple[Path, dict[str, bytes]], tmp_path: Path) -> None:
    root, files = tree
    client.mkdir("/up")
    client.upload_sync(remote_path="/up/tree", local_path=str(root))
    # an independent reader sees exactly the uploaded tree
    assert_same_tree(remote_tree(shared_dav_server, "/up/tree"), files)
    # and the client downloads it back unchanged
    target = tmp_path / "back"
    client.download_sync(remote_path="/up/tree", local_path=str(target))
    assert_same_tree(read_tree(target), files)


def test_upload_sync_replaces_existing_directory(
        client: Client, tree: tuple[Path, dict[str, bytes]],
        shared_dav_server: DavServer, tmp_path: Path) -> None:
    """upload_directory deletes an existing remote directory first."""
    root, files = tree
    client.mkdir("/replace")
    client.upload_sync(remote_path="/replace/tree", local_path=str(root))
    client.upload_to(b"stale", "/replace/tree/stale.txt")
    client.upload_sync(remote_path="/replace/tree", local_path=str(root))
    assert_same_tree(remote_tree(shared_dav_server, "/replace/tree"), files)


def test_single_files_non_ascii_names(client: Client, tmp_path: Path,
                                      shared_dav_server: DavServer) -> None:
    client.mkdir("/names")
    for index, name in enumerate([NFC_NAME, NFD_NAME, RESERVED_NAME, "日本語 файл.txt"]):
        local = tmp_path / f"in-{index}"
        payload = f"{index}: {name}\n".encode() * 1000
        local.write_bytes(payload)
        client.upload_sync(remote_path=f"/names/{name}", local_path=str(local))
        back = tmp_path / f"out-{index}"
        client.download_sync(remote_path=f"/names/{name}", local_path=str(back))
        assert back.read_bytes() == payload
        assert get_bytes(shared_dav_server, f"/names/{name}") == payload
    listed = client.list("/names")
    # NFC and NFD spellings are two different names and both survive unchanged
    assert sorted(listed) == sorted([NFC_NAME, NFD_NAME, RESERVED_NAME, "日本語 файл.txt"])


def test_list_and_info_report_sizes_and_etags(
        client: Client, tree: tuple[Path, dict[str, bytes]],
        shared_dav_server: DavServer) -> None:
    root, files = tree
    client.mkdir("/info")
    client.upload_sync(remote_path="/info/tree", local_path=str(root))
    entries = {e["name"]: e for e in client.list("/info/tree", get_info=True)}
    top_files = {rel: data for rel, data in files.items() if "/" not in rel}
    for name, data in top_files.items():
        assert entries[name]["isdir"] is False
        assert int(entries[name]["size"]) == len(data), name
    assert entries["deep"]["isdir"] is True
    info = client.info("/info/tree/big.bin")
    assert int(info["size"]) == len(files["big.bin"])
    head = requests.head(url_of(shared_dav_server, "/info/tree/big.bin"),
                         auth=shared_dav_server.auth(), timeout=30)
    assert head.headers["ETag"].strip('"') == info["etag"].strip('"')
    assert info["modified"]


def test_upload_with_progress_is_sent_chunked(
        client: Client, tmp_path: Path, shared_dav_server: DavServer) -> None:
    data = sample_tree(seed=9, big=2 * 1024 * 1024 + 5)["big.bin"]
    local = tmp_path / "progress.bin"
    local.write_bytes(data)
    calls: list[tuple[int, int]] = []
    client.mkdir("/progress")
    # a progress callback makes webdavclient3 stream a generator: Transfer-Encoding chunked
    client.upload_sync(remote_path="/progress/p.bin", local_path=str(local),
                       progress=lambda cur, total: calls.append((cur, total)))
    assert calls and calls[-1][1] == len(data)
    assert get_bytes(shared_dav_server, "/progress/p.bin") == data
    assert int(client.info("/progress/p.bin")["size"]) == len(data)


def test_move_file_and_directory(client: Client, shared_dav_server: DavServer) -> None:
    client.mkdir("/mv")
    client.mkdir("/mv/src")
    client.upload_to(b"first", "/mv/src/a.txt")
    client.upload_to("ünïcødé".encode(), "/mv/src/ü.txt")
    client.move("/mv/src/a.txt", "/mv/src/b.txt")
    assert not client.check("/mv/src/a.txt")
    assert get_bytes(shared_dav_server, "/mv/src/b.txt") == b"first"
    # onto an existing file: refused without overwrite, done with it
    client.upload_to(b"second", "/mv/src/c.txt")
    with pytest.raises(WebDavException):
        client.move("/mv/src/c.txt", "/mv/src/b.txt", overwrite=False)
    assert get_bytes(shared_dav_server, "/mv/src/b.txt") == b"first"
    client.move("/mv/src/c.txt", "/mv/src/b.txt", overwrite=True)
    assert get_bytes(shared_dav_server, "/mv/src/b.txt") == b"second"
    # a whole directory, to a non-ASCII name
    client.move("/mv/src", "/mv/dést")
    assert not client.check("/mv/src")
    assert remote_tree(shared_dav_server, "/mv/dést") == {
        "b.txt": b"second", "ü.txt": "ünïcødé".encode()}


def test_copy_file(client: Client, shared_dav_server: DavServer) -> None:
    client.mkdir("/cp")
    payload = sample_tree(seed=5)["big.bin"]
    client.upload_to(payload, "/cp/orig.bin")
    client.copy("/cp/orig.bin", "/cp/copy.bin")
    assert get_bytes(shared_dav_server, "/cp/copy.bin") == payload
    # the copy is independent of the original
    client.upload_to(b"changed", "/cp/orig.bin")
    assert get_bytes(shared_dav_server, "/cp/copy.bin") == payload


def test_copy_directory_with_default_depth(
        client: Client, tree: tuple[Path, dict[str, bytes]],
        shared_dav_server: DavServer) -> None:
    """``Client.copy`` of a collection sends ``Depth: 1``; the server
    must still copy the whole tree (RFC 4918 allows only 0 and infinity for COPY, and a
    client that says 1 means "the directory with its content")."""
    root, files = tree
    client.mkdir("/cpdir")
    client.upload_sync(remote_path="/cpdir/src", local_path=str(root))
    client.copy("/cpdir/src", "/cpdir/dst")
    assert_same_tree(remote_tree(shared_dav_server, "/cpdir/dst"), files)
    assert_same_tree(remote_tree(shared_dav_server, "/cpdir/src"), files)


def test_clean_file_and_directory(client: Client, shared_dav_server: DavServer) -> None:
    client.mkdir("/cl/sub", recursive=True)
    client.upload_to(b"a", "/cl/sub/a.txt")
    client.upload_to(b"b", "/cl/b.txt")
    client.clean("/cl/b.txt")
    assert not client.check("/cl/b.txt")
    client.clean("/cl/sub/")
    assert not client.check("/cl/sub/")
    assert not client.check("/cl/sub/a.txt")
    response = requests.get(url_of(shared_dav_server, "/cl/sub/a.txt"),
                            auth=shared_dav_server.auth(), timeout=30)
    assert response.status_code == 404
    assert client.list("/cl") == []


def test_properties_round_trip(client: Client) -> None:
    client.mkdir("/props")
    client.upload_to(b"p", "/props/f.txt")
    option = {"namespace": "urn:davbackup:test", "name": "colour", "value": "grün"}
    client.set_property("/props/f.txt", option)
    assert client.get_property(
        "/props/f.txt", {"namespace": "urn:davbackup:test", "name": "colour"}) == "grün"


def test_reader_role_cannot_write(shared_dav_server: DavServer, tmp_path: Path) -> None:
    reader = make_client(shared_dav_server, "reader")
    assert reader.check("/")
    with pytest.raises(WebDavException):
        reader.upload_to(b"nope", "/reader-was-here.txt")
    assert not reader.check("/reader-was-here.txt")
