"""A small S3 client for davbackup: one bucket and key prefix, errors mapped to ours.

The only module that imports boto3 (lazily, so the embedded default never pays for
it). Settings come from the environment as in every AWS tool: ``AWS_ENDPOINT_URL``
(any S3-compatible server: Ceph RGW, MinIO, AWS), ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` or the usual AWS config files, ``AWS_REGION``.
Path-style addressing is used, which every S3-compatible server understands.

Request checksums are computed only where S3 requires them: every blob davbackup
stores is authenticated by AES-GCM, so a CRC over each body would be CPU spent twice.
"""

from __future__ import annotations

import builtins
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Iterator

from davbackup.errors import DavBackupError, StorageUnavailable, UsageError

#: above this size an object is uploaded in parts (S3 parts are 5 MiB–5 GiB)
MULTIPART_THRESHOLD = 32 * 1024 * 1024
PART_SIZE = 16 * 1024 * 1024
UPLOAD_THREADS = 4


class ObjectMissing(Exception):
    """No object under that key."""


class RangeNotSatisfiable(Exception):
    """The range starts at or after the end of the object."""


@dataclass(frozen=True)
class S3Url:
    bucket: str
    prefix: str  # "" or ends with "/"

    @classmethod
    def parse(cls, url: str) -> "S3Url":
        if not url.startswith("s3://"):
            raise UsageError(f"{url!r}: an S3 location is written s3://bucket/prefix")
        bucket, _, prefix = url[5:].partition("/")
        if not bucket or len(bucket) < 3 or "/" in bucket:
            raise UsageError(f"{url!r}: no valid bucket name")
        prefix = prefix.strip("/")
        return cls(bucket, prefix + "/" if prefix else "")

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


@dataclass(frozen=True)
class ObjectInfo:
    key: str  # relative to the prefix
    size: int
    mtime: float


def _client(max_connections: int) -> Any:
    try:
        import boto3
        from botocore.config import Config
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise UsageError("S3 storage needs boto3: pip install 'davbackup[s3]'") from exc
    logging.getLogger("botocore").setLevel(logging.WARNING)  # not "found credentials in ..."
    config = Config(
        s3={"addressing_style": "path"},
        retries={"max_attempts": 5, "mode": "standard"},
        max_pool_connections=max_connections,
        connect_timeout=10,
        read_timeout=60,
        tcp_keepalive=True,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None, config=config)


class ObjectStore:
    """Objects under one ``s3://bucket/prefix``; keys given to it are relative."""

    def __init__(self, url: S3Url, *, max_connections: int = 32) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        self.url = url
        self._client = _client(max_connections)
        self._ClientError = ClientError
        self._BotoCoreError = BotoCoreError
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def _key(self, key: str) -> str:
        return self.url.prefix + key

    def _fail(self, op: str, key: str, exc: Exception) -> DavBackupError:
        return StorageUnavailable(f"{op} {self.url.bucket}/{self._key(key)}: {exc}")

    def _code(self, exc: Exception) -> str:
        if isinstance(exc, self._ClientError):
            return str(exc.response.get("Error", {}).get("Code", ""))
        return ""

    # -- single objects -------------------------------------------------------------

    def check_bucket(self) -> None:
        """Fail early and clearly when the bucket is missing or the credentials wrong."""
        try:
            self._client.head_bucket(Bucket=self.url.bucket)
        except (self._ClientError, self._BotoCoreError) as exc:
            if self._code(exc) in ("404", "NoSuchBucket"):
                raise UsageError(f"bucket {self.url.bucket!r} does not exist (create it first)") from exc
            raise self._fail("HEAD bucket", "", exc) from exc

    def put(self, key: str, body: bytes | memoryview) -> None:
        try:
            self._client.put_object(Bucket=self.url.bucket, Key=self._key(key), Body=bytes(body))
        except (self._ClientError, self._BotoCoreError) as exc:
            raise self._fail("PUT", key, exc) from exc

    def put_parts(self, key: str, size: int, read: Any) -> None:
        """Upload ``size`` bytes as one object; ``read(offset, length)`` supplies them.
        Large objects go up in parts, several at a time; the object appears (whole)
        only when the upload completes, and an upload that fails is aborted."""
        if size <= MULTIPART_THRESHOLD:
            self.put(key, read(0, size))
            return
        full = self._key(key)
        try:
            upload_id = self._client.create_multipart_upload(Bucket=self.url.bucket, Key=full)["UploadId"]
        except (self._ClientError, self._BotoCoreError) as exc:
            raise self._fail("CreateMultipartUpload", key, exc) from exc

        def part(number: int) -> dict[str, Any]:
            start = (number - 1) * PART_SIZE
            body = read(start, min(PART_SIZE, size - start))
            answer = self._client.upload_part(
                Bucket=self.url.bucket, Key=full, UploadId=upload_id, PartNumber=number, Body=body
            )
            return {"PartNumber": number, "ETag": answer["ETag"]}

        count = (size + PART_SIZE - 1) // PART_SIZE
        try:
            parts = list(self._executor().map(part, range(1, count + 1)))
            self._client.complete_multipart_upload(
                Bucket=self.url.bucket, Key=full, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except (self._ClientError, self._BotoCoreError) as exc:
            try:
                self._client.abort_multipart_upload(Bucket=self.url.bucket, Key=full, UploadId=upload_id)
            except (self._ClientError, self._BotoCoreError):
                pass  # the store's lifecycle rule (or cleanup) removes it later
            raise self._fail("multipart upload", key, exc) from exc

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(UPLOAD_THREADS, thread_name_prefix="davbackup-s3-part")
            return self._pool

    def get(self, key: str) -> bytes:
        try:
            answer = self._client.get_object(Bucket=self.url.bucket, Key=self._key(key))
            data: bytes = answer["Body"].read()
            return data
        except (self._ClientError, self._BotoCoreError) as exc:
            if self._code(exc) in ("NoSuchKey", "404"):
                raise ObjectMissing(key) from exc
            raise self._fail("GET", key, exc) from exc

    def get_range(self, key: str, start: int, length: int) -> bytes:
        """Bytes ``start .. start+length-1`` (fewer if the object ends sooner)."""
        try:
            answer = self._client.get_object(
                Bucket=self.url.bucket, Key=self._key(key), Range=f"bytes={start}-{start + length - 1}"
            )
            data: bytes = answer["Body"].read()
            return data
        except (self._ClientError, self._BotoCoreError) as exc:
            code = self._code(exc)
            if code in ("NoSuchKey", "404"):
                raise ObjectMissing(key) from exc
            if code == "InvalidRange":
                raise RangeNotSatisfiable(key) from exc
            raise self._fail("GET", key, exc) from exc

    def download(self, key: str, fileobj: Any) -> None:
        """Stream a whole object into ``fileobj``."""
        try:
            body = self._client.get_object(Bucket=self.url.bucket, Key=self._key(key))["Body"]
            for piece in body.iter_chunks(1024 * 1024):
                fileobj.write(piece)
        except (self._ClientError, self._BotoCoreError) as exc:
            if self._code(exc) in ("NoSuchKey", "404"):
                raise ObjectMissing(key) from exc
            raise self._fail("GET", key, exc) from exc

    def head(self, key: str) -> ObjectInfo | None:
        try:
            answer = self._client.head_object(Bucket=self.url.bucket, Key=self._key(key))
        except (self._ClientError, self._BotoCoreError) as exc:
            if self._code(exc) in ("NoSuchKey", "404"):
                return None
            raise self._fail("HEAD", key, exc) from exc
        return ObjectInfo(key, int(answer["ContentLength"]), answer["LastModified"].timestamp())

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects whose relative key starts with ``prefix``, in key order."""
        strip = len(self.url.prefix)
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.url.bucket, Prefix=self._key(prefix)
            )
            for page in pages:
                for obj in page.get("Contents", []):
                    yield ObjectInfo(obj["Key"][strip:], int(obj["Size"]), obj["LastModified"].timestamp())
        except (self._ClientError, self._BotoCoreError) as exc:
            raise self._fail("LIST", prefix, exc) from exc

    def delete(self, keys: builtins.list[str]) -> None:
        """Delete objects (missing ones are no error)."""
        for start in range(0, len(keys), 1000):
            batch = [{"Key": self._key(k)} for k in keys[start : start + 1000]]
            try:
                answer = self._client.delete_objects(
                    Bucket=self.url.bucket, Delete={"Objects": batch, "Quiet": True}
                )
            except (self._ClientError, self._BotoCoreError) as exc:
                raise self._fail("DELETE", keys[start], exc) from exc
            errors = [e for e in answer.get("Errors", []) if e.get("Code") != "NoSuchKey"]
            if errors:
                raise StorageUnavailable(f"DELETE in {self.url}: {errors[0]}")

    def close(self) -> None:
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
        self._client.close()


class StreamingUpload:
    """One object uploaded in parts while it is still being written (a pack filling
    up): a part of :data:`PART_SIZE` starts in the background as soon as the writer
    has written that far, so :meth:`complete` only sends the rest. The object appears
    whole, and only when complete; :meth:`abort` leaves nothing behind."""

    def __init__(self, store: ObjectStore, key: str, read: Callable[[int, int], bytes]) -> None:
        self._store, self._key, self._read = store, key, read
        self._full = store._key(key)
        self._created: Future[str] = store._executor().submit(self._create)
        self._parts: builtins.list[Future[dict[str, Any]]] = []
        self.covered = 0  # bytes handed to parts so far

    def _create(self) -> str:
        answer = self._store._client.create_multipart_upload(Bucket=self._store.url.bucket, Key=self._full)
        return str(answer["UploadId"])

    def _part(self, number: int, start: int, length: int) -> dict[str, Any]:
        upload_id = self._created.result()
        answer = self._store._client.upload_part(Bucket=self._store.url.bucket, Key=self._full, UploadId=upload_id,
                                                 PartNumber=number, Body=self._read(start, length))
        return {"PartNumber": number, "ETag": answer["ETag"]}

    def _submit(self, start: int, length: int) -> None:
        self._parts.append(self._store._executor().submit(self._part, len(self._parts) + 1, start, length))
        self.covered = start + length

    def written(self, size: int) -> None:
        """The object has ``size`` bytes so far: start a part for every whole one."""
        while size - self.covered >= PART_SIZE:
            self._submit(self.covered, PART_SIZE)

    def complete(self, size: int) -> None:
        """Send what is left of the ``size`` bytes as the last part; the object appears."""
        store = self._store
        try:
            if size > self.covered or not self._parts:
                self._submit(self.covered, size - self.covered)
            parts = [f.result() for f in self._parts]
            store._client.complete_multipart_upload(Bucket=store.url.bucket, Key=self._full,
                                                    UploadId=self._created.result(), MultipartUpload={"Parts": parts})
        except (store._ClientError, store._BotoCoreError, OSError, EOFError) as exc:
            self.abort()
            raise store._fail("multipart upload", self._key, exc) from exc

    def abort(self) -> None:
        """Give the upload up (in the background; the store's lifecycle rule or cleanup
        removes what an abort that fails leaves)."""
        def run() -> None:
            try:
                upload_id = self._created.result()
                for f in self._parts:
                    f.exception()  # let the parts in flight end first
                self._store._client.abort_multipart_upload(Bucket=self._store.url.bucket, Key=self._full,
                                                           UploadId=upload_id)
            except Exception:  # noqa: BLE001 - best effort
                pass

        threading.Thread(target=run, name="davbackup-s3-abort", daemon=True).start()
