"""storage_s3.py, s3.py, storage_cache.py: what only the object-store backend does
(the shared guarantees are in test_storage_conformance.py). Runs on a real Ceph RGW.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from davbackup.errors import StorageUnavailable, UsageError
from davbackup.pack import PACK_MAGIC
from davbackup.s3 import ObjectStore, S3Url
from davbackup.storage_cache import PackCache
from davbackup.storage_s3 import S3PackStorage, pack_key, segment_prefix
from tests.services import S3Bucket, free_port

M = len(PACK_MAGIC)
NAME = "c3" + "0" * 30


def keys(bucket: S3Bucket) -> list[str]:
    answer = bucket.ceph.client().list_objects_v2(Bucket=bucket.name)
    return sorted(o["Key"] for o in answer.get("Contents", []))


def test_url_parsing() -> None:
    assert S3Url.parse("s3://bucket/a/b/") == S3Url("bucket", "a/b/")
    assert S3Url.parse("s3://bucket") == S3Url("bucket", "")
    assert str(S3Url.parse("s3://bucket/p")) == "s3://bucket/p/"
    for bad in ("bucket/p", "s3://", "s3:///p", "s3://ab/p", "http://bucket/p"):
        with pytest.raises(UsageError):
            S3Url.parse(bad)


def test_syncs_become_segments_and_close_leaves_one_object(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    storage = S3PackStorage.from_url(s3_bucket.url("r"), tmp_path / "spool")
    a = storage.create(NAME)
    first = a.append(b"a" * 100)
    a.sync()
    a.append(b"b" * 200)
    a.sync()
    a.sync()  # nothing new: no object
    seg = "r/" + segment_prefix(NAME)
    assert keys(s3_bucket) == [f"{seg}{0:016x}-{M + 100:016x}", f"{seg}{M + 100:016x}-{M + 300:016x}"]
    a.close()
    assert keys(s3_bucket) == ["r/" + pack_key(NAME)]
    assert storage.read(NAME, first, 300) == b"a" * 100 + b"b" * 200
    assert not list((tmp_path / "spool").iterdir()), "the spool is removed when no cache takes it"
    storage.close()


def test_a_full_pack_goes_up_once_and_takes_no_more_appends(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    storage = S3PackStorage.from_url(s3_bucket.url("r"), tmp_path / "spool")
    a = storage.create(NAME)
    a.append(b"z" * 1000)
    a.finish()  # what the chunk store does when a pack is full
    assert keys(s3_bucket) == ["r/" + pack_key(NAME)]
    a.sync()  # covered already
    with pytest.raises(ValueError):
        a.append(b"late")
    a.close()
    assert keys(s3_bucket) == ["r/" + pack_key(NAME)]
    storage.close()


def test_cache_keeps_written_and_read_packs_within_its_bound(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    cache = PackCache(tmp_path / "cache", max_bytes=3 * (M + 100_000))
    storage = S3PackStorage.from_url(s3_bucket.url("r"), tmp_path / "spool", cache)
    names = [f"{i:02x}" + "d" * 30 for i in range(5)]
    payload = {n: os.urandom(100_000) for n in names}
    for n in names:
        a = storage.create(n)
        a.append(payload[n])
        a.close()  # the spool moves into the cache
    assert cache.total_bytes <= cache.max_bytes
    assert [n in cache for n in names] == [False, False, True, True, True]
    # A cached pack is read locally: it still reads after its object is gone.
    s3_bucket.ceph.client().delete_object(Bucket=s3_bucket.name, Key="r/" + pack_key(names[4]))
    assert storage.read(names[4], M, 10) == payload[names[4]][:10]
    # A pack not in the cache is fetched whole on first read, evicting the oldest.
    assert storage.read(names[0], M + 500, 10) == payload[names[0]][500:510]
    assert names[0] in cache and names[2] not in cache
    assert cache.total_bytes <= cache.max_bytes
    storage.close()
    reopened = PackCache(tmp_path / "cache", max_bytes=cache.max_bytes)
    assert reopened.total_bytes == cache.total_bytes


def test_missing_bucket_and_unreachable_store(s3_bucket: S3Bucket, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        S3PackStorage.from_url("s3://no-such-bucket-here/x", tmp_path / "spool")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(StorageUnavailable) as info:
        ObjectStore(S3Url.parse(s3_bucket.url("r"))).get("config.json")
    assert info.value.http_status == 503
    assert s3_bucket.name in info.value.message


def _open_uploads(bucket: S3Bucket) -> list[str]:
    return [u["Key"] for u in bucket.ceph.client().list_multipart_uploads(Bucket=bucket.name).get("Uploads", [])]


def test_a_large_pack_goes_up_in_parts_while_it_fills(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    """From PART_SIZE on, the pack is uploaded in parts as it grows; finishing sends
    only the rest, and a pack given up leaves neither an object nor an upload."""
    from davbackup.s3 import PART_SIZE

    storage = S3PackStorage.from_url(s3_bucket.url("r"), tmp_path / "spool")
    a = storage.create(NAME)
    piece = os.urandom(1 << 20)
    for _ in range(2 * PART_SIZE // len(piece) + 3):
        a.append(piece)
    assert a.finish_is_cheaper(a.size) and not a.finish_is_cheaper(PART_SIZE // 2)
    assert _open_uploads(s3_bucket) == ["r/" + pack_key(NAME)]  # parts are going up
    assert keys(s3_bucket) == []  # nothing visible yet
    size = a.size
    a.finish()
    assert keys(s3_bucket) == ["r/" + pack_key(NAME)] and _open_uploads(s3_bucket) == []
    assert storage.read(NAME, M, len(piece)) == piece
    assert storage.read(NAME, size - len(piece), len(piece)) == piece
    a.close()

    other = "d4" + "0" * 30
    b = storage.create(other)
    for _ in range(PART_SIZE // len(piece) + 2):
        b.append(piece)
    synced = b.size
    b.sync()  # what was synced stays, as one segment
    b.append(piece)  # never uploaded
    b.abandon()  # type: ignore[attr-defined]
    with pytest.raises(StorageUnavailable):
        b.finish()
    assert keys(s3_bucket) == ["r/" + pack_key(NAME), f"r/{segment_prefix(other)}{0:016x}-{synced:016x}"]
    for _ in range(50):  # the abort runs in the background
        if not _open_uploads(s3_bucket):
            break
        time.sleep(0.1)
    assert _open_uploads(s3_bucket) == []
    storage.close()
