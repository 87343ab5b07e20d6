"""The metadata journal: every durable catalog change, also in the packs (DESIGN.md §20).

Each group commit of the catalog that changed a durable table produces journal
*records*: the changed rows (captured by :mod:`davbackup.journal_capture`),
serialised as JSON, compressed, encrypted and authenticated as blobs of type 2 in
*journal packs* (pack files of their own in the same pack storage, listed in the
catalog table ``journal_packs``). Records carry a sequence number and the hash of
their predecessor.

Ordering, inside :meth:`davbackup.catalog.Catalog.write`'s group commit, for the
server (the process holding ``writer.lock``):

1. in the transaction: the captured changes become records with the next sequence
   numbers (``meta.journal_seq``, ``meta.journal_head``);
2. still before COMMIT, they are appended to the server's journal pack and the pack
   is synced; if that fails (no space, an I/O error), the transaction is rolled back
   and every caller gets the error (507, or 5xx): nothing commits whose record is not
   durable;
3. COMMIT (fsync of the WAL); only then are the callers answered.

A record can so exist in the packs for a transaction that did not commit; it carries
an epoch that was committed before it was written, and the server commits a new
epoch before its next records, so the committed record that later takes the same
sequence number wins in recovery (DESIGN.md §20.2). Other processes (admin commands,
gc) commit first, keep the records in ``journal_outbox`` until they have appended and
synced them, and take a new epoch in each transaction; the server appends and syncs
every outbox row it finds when it starts.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import secrets
import sqlite3
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import blake3
import zstandard

from davbackup import clock, crypto
from davbackup.catalog import read_meta, read_metas, write_meta, write_meta2, write_transaction
from davbackup.chunkstore import storage_error
from davbackup.journal_capture import Capture
from davbackup.pack import HEADER, HEADER_SIZE, BlobError, BlobHeader
from davbackup.storage import ZEROS_AHEAD, PackAppender, PackStorage

log = logging.getLogger(__name__)

TYPE_JOURNAL = 2
TYPE_CHECKPOINT = 3
BLOB_VERSION = 1
FLAG_ZSTD = 1
RECORD_FORMAT = 1
#: captured row changes per record (a larger transaction writes several records)
OPS_PER_RECORD = 20000
GENESIS = bytes(32)
_HEAD_KEYS = ("journal_seq", "journal_head", "journal_epoch")
#: smaller payloads are stored as they are (the record of a small write is ~1.5 KB, a
#: group commit of several such writes a few KB: compressing them cost more CPU than the
#: bytes saved are worth in a journal that gc compacts)
COMPRESS_FROM = 16 * 1024
#: zeros the server keeps written past its journal pack's records (local storage: its
#: synced appends then change neither size nor block map, DESIGN.md §20.7)
PREALLOCATE = ZEROS_AHEAD


def boot_id() -> str | None:
    """This boot of the operating system (Linux), or None where it is not known."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def record_id(seq: int, digest: bytes) -> bytes:
    """The 32-byte ID field of a journal record's blob header."""
    return struct.pack(">Q", seq) + digest[:24]


def parse_record_id(blob_id: bytes) -> tuple[int, bytes]:
    return struct.unpack(">Q", blob_id[:8])[0], blob_id[8:]


_local = threading.local()  # zstd contexts are not thread-safe and costly to create


def _compress(payload: bytes) -> bytes:
    compressor = getattr(_local, "compressor", None)
    if compressor is None:
        compressor = _local.compressor = zstandard.ZstdCompressor(level=3)
    return bytes(compressor.compress(payload))


def seal_blob(key: bytes, blob_type: int, blob_id: bytes, payload: bytes) -> bytes:
    """A metadata blob: the §5 header (type 2 or 3) and the payload, zstd-compressed
    when that helps, sealed under ``keyed_hash(journal key, ID)`` with the header as
    associated data."""
    packed = _compress(payload) if len(payload) >= COMPRESS_FROM else payload
    flags = FLAG_ZSTD if len(packed) < len(payload) else 0
    body = packed if flags else payload
    nonce = crypto.random_bytes(crypto.NONCE_SIZE)
    header = HEADER.pack(b"DBLB", BLOB_VERSION, blob_type, flags, 0, len(payload), len(body) + crypto.TAG_SIZE,
                         blob_id, nonce)
    _, ciphertext = crypto.seal(crypto.keyed_hash(key, blob_id), body, header, nonce)
    return header + ciphertext


def open_blob(key: bytes, blob: bytes, blob_type: int) -> tuple[BlobHeader, bytes]:
    """Verify and decrypt a metadata blob of ``blob_type``; :class:`BlobError` otherwise."""
    header = BlobHeader.parse(bytes(blob[:HEADER_SIZE]))
    if header.segmented:
        raise BlobError("a metadata blob is never sealed in segments")
    if header.blob_type != blob_type:
        raise BlobError(f"blob type {header.blob_type}, expected {blob_type}")
    body = memoryview(blob)[HEADER_SIZE:]
    if len(body) != header.stored_len:
        raise BlobError("blob is truncated")
    try:
        plain = crypto.open_sealed(crypto.keyed_hash(key, header.chunk_id), header.nonce, body, header.raw)
    except crypto.DecryptionFailed as exc:
        raise BlobError("authentication tag mismatch (altered or corrupt)") from exc
    if header.flags & FLAG_ZSTD:
        try:
            plain = zstandard.ZstdDecompressor().decompress(plain, max_output_size=header.plain_len)
        except zstandard.ZstdError as exc:
            raise BlobError(f"decompression failed: {exc}") from exc
    if len(plain) != header.plain_len:
        raise BlobError("plaintext length mismatch")
    return header, plain


# -- record payloads -------------------------------------------------------------------


def _encode_bytes(value: object) -> object:
    """``json.dumps`` calls this for what JSON has no type for: BLOBs."""
    if isinstance(value, bytes):
        return {"b": binascii.b2a_base64(value, newline=False).decode("ascii")}
    raise TypeError(f"cannot journal a value of type {type(value).__name__}")


def decode_value(value: Any) -> object:
    if isinstance(value, dict):
        return base64.b64decode(value["b"])
    return value


_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False, default=_encode_bytes)
#: what ``_ENCODER.encode`` runs for a list, without its per-call set-up (and no check for
#: circular references, which rows of values cannot have): the same bytes
_ENCODE_OPS = json.encoder.c_make_encoder(  # type: ignore[attr-defined]
    None, _encode_bytes, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, False,
) if json.encoder.c_make_encoder is not None else None  # type: ignore[attr-defined]
#: the ``tables`` part of records, by the tables a record touches (in order): the
#: same few combinations recur in every record of a kind of write
_TABLES_JSON: dict[tuple[int, tuple[str, ...]], str] = {}


def _tables_json(shapes: dict[str, Any], names: tuple[str, ...]) -> str:
    key = (id(shapes), names)
    text = _TABLES_JSON.get(key)
    if text is None:
        text = _ENCODER.encode(
            {t: {"columns": list(shapes[t].columns), "key": list(shapes[t].key)} for t in names})
        if len(_TABLES_JSON) < 4096:
            _TABLES_JSON[key] = text
    return text


def encode_record(seq: int, prev: bytes, epoch: int, now: float, schema: int, shapes: dict[str, Any],
                  ops: list[tuple[str, str, tuple[object, ...]]]) -> bytes:
    """The record's JSON (§20.2): the same document ``json.dumps`` would make of
    ``{"format", "seq", "prev", "epoch", "time", "schema", "tables", "ops"}``."""
    names = tuple(dict.fromkeys(table for table, _op, _values in ops))
    encoded = "".join(_ENCODE_OPS(ops, 0)) if _ENCODE_OPS is not None else _ENCODER.encode(ops)
    return (
        f'{{"format":{RECORD_FORMAT},"seq":{seq},"prev":"{prev.hex()}","epoch":{epoch},'
        f'"time":{float(now)!r},"schema":{schema},"tables":{_tables_json(shapes, names)},'
        f'"ops":{encoded}}}'
    ).encode("utf-8")


@dataclass(frozen=True)
class OutRecord:
    seq: int
    digest: bytes
    payload: bytes


class Journal:
    """The journal hook of one process's catalog group commit.

    ``early`` (the server, which holds ``writer.lock``): a batch's records are appended
    to the journal pack and synced *before* COMMIT, so nothing commits unless its
    records are durable; a failed append or sync rolls the batch back and every caller
    gets the error (DESIGN.md §20.2). A record of a transaction that then fails to
    commit stays in the pack; the epoch rule tells it apart from the committed record
    that later takes its sequence number. Other processes append after COMMIT (their
    records never need that rule) and keep an outbox row until the records are synced.
    """

    def __init__(self, storage: PackStorage, key: bytes, schema: int, pack_target_size: int, *,
                 early: bool = False) -> None:
        self.storage = storage
        self.key = key
        self.schema = schema
        self.pack_target_size = pack_target_size
        self.early = early
        self.capture: Capture | None = None
        self._lock = threading.Lock()
        self._pack: tuple[str, PackAppender] | None = None  # this process's journal pack
        self._new_pack: tuple[str, PackAppender] | None = None  # registered in the running transaction
        self._flushed = 0  # outbox rows up to here were synced by this process
        self._cleared = 0  # ... and deleted from the outbox
        self._unsynced: list[OutRecord] = []  # committed, not yet synced (a failed sync; not the writer)
        #: the writer commits a new epoch before its first records and after any batch
        #: that did not commit (its records may be in the pack)
        self._epoch_due = early
        self._sync_due = False  # the batch needs the catalog's WAL synced (§20.7)

    def install(self, conn: sqlite3.Connection) -> None:
        if self.early and conn.execute("PRAGMA temp_store").fetchone()[0] != 2:
            # The server: the capture table and the sub-journals of the batch's savepoints
            # in memory, not in temporary files (~10 fewer pwrite calls per small write;
            # set before the TEMP table exists: a change of temp_store drops TEMP tables).
            conn.execute("PRAGMA temp_store=MEMORY")
        if self.capture is None:
            self.capture = Capture(conn)
        self.capture.install(conn, marks=self.early)

    # -- inside the group commit ------------------------------------------------------

    def before_batch(self, conn: sqlite3.Connection) -> bool:
        """Before the batch's transaction begins: the writer commits a new epoch first if
        one is due, so every record it writes before a COMMIT carries an epoch that is
        already committed, and greater than that of any record of a transaction of it
        that did not commit (DESIGN.md §20.2). Returns whether it committed one (the
        catalog then syncs its WAL: the start's replay relies on that epoch, §20.7)."""
        if not self._epoch_due:
            return False
        with write_transaction(conn):
            write_meta(conn, "journal_epoch", str(int(read_meta(conn, "journal_epoch") or 0) + 1))
            boot = boot_id()
            if boot is not None:  # the start's replay: was the machine restarted since? (§20.7)
                write_meta(conn, "journal_boot", boot)
            self._clear_mark(conn)
        self._epoch_due = False
        return True

    @property
    def durable_log(self) -> bool:
        """Whether the journal is the catalog's durable log (the server: its catalog
        commits without syncing the WAL unless :attr:`wal_sync_due`; DESIGN.md §20.7)."""
        return self.early

    @property
    def wal_sync_due(self) -> bool:
        """After the batch's COMMIT: whether it changed something the journal does not
        replay at start, so the catalog must sync its WAL before answering."""
        return self._sync_due

    def _clear_mark(self, conn: sqlite3.Connection) -> None:
        """Drop a sync mark the journal's own statements left outside a drain (the
        caller syncs for them)."""
        if self.capture is not None:
            conn.execute("DELETE FROM journal_capture WHERE n = -1")

    def before_commit(self, conn: sqlite3.Connection) -> list[OutRecord]:
        """In the batch's transaction, before COMMIT: turn captured changes into records;
        the writer also appends and syncs them (raising if it cannot: the batch then
        rolls back), other processes keep them in the outbox until ``after_commit``."""
        assert self.capture is not None
        if not self.early and self._flushed > self._cleared:
            conn.execute("DELETE FROM journal_outbox WHERE seq <= ?", (self._flushed,))
            self._cleared = self._flushed  # (if this rolls back, close() deletes them)
        records: list[OutRecord] = []
        now = clock.now()
        seq = prev = None
        epoch = 0
        self._sync_due = False
        for ops in self.capture.drain(conn, OPS_PER_RECORD):
            if seq is None:
                seq, prev, epoch = self._head(conn)
            assert prev is not None
            seq += 1
            payload = encode_record(seq, prev, epoch, now, self.schema, self.capture.shapes, ops)
            digest = blake3.blake3(payload).digest()
            if not self.early:
                conn.execute("INSERT INTO journal_outbox(seq, payload) VALUES (?, ?)", (seq, payload))
            records.append(OutRecord(seq, digest, payload))
            prev = digest
        self._sync_due = self.capture.sync_due
        if not records:
            return records
        assert seq is not None and prev is not None
        write_meta2(conn, "journal_seq", str(seq), "journal_head", prev.hex())
        self._new_pack = None
        name = self._pack[0] if self._pack is not None else None
        if name is None or conn.execute(
            "UPDATE journal_packs SET last_seq=? WHERE name=?", (seq, name)
        ).rowcount == 0:
            # no pack yet, or gc compacted ours away (everything in it is in a checkpoint)
            name = secrets.token_hex(16)
            conn.execute(
                "INSERT INTO journal_packs(name, kind, first_seq, last_seq, created) VALUES (?, 'journal', ?, ?, ?)",
                (name, records[0].seq, seq, now),
            )
            if self.early:  # where the start looks for records the catalog lost (§20.7)
                write_meta(conn, "journal_writer_pack", name)
                self._clear_mark(conn)
                self._sync_due = True
            # The file too, before COMMIT: a registered journal pack always exists
            # (an object store shows it from its first sync on).
            try:
                appender = self.storage.create(name)
                if self.early and hasattr(appender, "preallocate"):
                    appender.preallocate(PREALLOCATE)  # zeros ahead, fdatasync
                self._new_pack = (name, appender)
            except OSError as exc:
                raise storage_error(exc, "cannot create a catalog journal pack; nothing was written") from exc
        if self.early:
            self._write_early(records)
        return records

    def _head(self, conn: sqlite3.Connection) -> tuple[int, bytes, int]:
        """The last record's number and hash, and the epoch of the next records: the
        writer's is the committed one (see :meth:`before_batch`), another process takes
        a new one with its transaction (its records reach the packs only if it commits)."""
        rows = read_metas(conn, _HEAD_KEYS)
        seq = int(rows.get("journal_seq", "0"))
        head = bytes.fromhex(rows["journal_head"]) if "journal_head" in rows else GENESIS
        epoch = int(rows.get("journal_epoch", "0"))
        if not self.early:
            epoch += 1
            write_meta(conn, "journal_epoch", str(epoch))
        return seq, head, epoch

    def _write_early(self, records: list[OutRecord]) -> None:
        """The writer, before COMMIT: append the records and sync them; any failure is
        raised (as 507 for no space, else 5xx) and the batch rolls back."""
        with self._lock:
            if self._new_pack is not None:
                self._switch_pack(self._new_pack)
            assert self._pack is not None
            appender = self._pack[1]
            try:
                for rec in records:
                    appender.append(seal_blob(self.key, TYPE_JOURNAL, record_id(rec.seq, rec.digest), rec.payload))
                appender.sync()
            except BaseException as exc:
                # What the pack got since its last good sync may be lost (§8 invariant 9):
                # the next batch starts a new pack (a pack new in this batch is removed
                # by after_rollback).
                if self._new_pack is not None and self._pack[0] == self._new_pack[0]:
                    self._pack = None
                else:
                    self._give_up_pack()
                if isinstance(exc, OSError):
                    raise storage_error(exc, "cannot write the catalog journal; nothing was written") from exc
                raise

    def after_commit(self, records: list[OutRecord]) -> None:
        """After COMMIT, before anyone is answered. The writer's records are durable
        already; another process's are appended and synced now. Raises (the callers get
        an error) if they could not be made durable; they are tried again with the next
        batch, and at the next start from the outbox."""
        with self._lock:
            try:
                if not self.early:
                    self._unsynced.extend(records)
                    if self._new_pack is not None:
                        self._switch_pack(self._new_pack)
                    self._append_and_sync()
            except OSError as exc:
                self._give_up_pack()
                raise storage_error(exc, "cannot make the catalog journal durable") from exc
            except BaseException:
                self._give_up_pack()
                raise
            finally:
                self._new_pack = None
            if self._pack is not None and self._pack[1].size >= self.pack_target_size:
                _close_quietly(self._pack[1])
                self._pack = None

    def _give_up_pack(self) -> None:
        """A failed append or sync: what this pack got since its last good sync may be
        lost (§8 invariant 9), so the next batch starts a new pack (and another process
        writes every unsynced record again)."""
        if self._pack is not None:
            _close_quietly(self._pack[1])
            self._pack = None

    def after_rollback(self) -> None:
        """The transaction did not commit: a journal pack created for it is removed; the
        writer's records appended for it stay behind it in its pack, superseded by the
        next epoch, which the writer commits before its next records."""
        with self._lock:
            if self.early:
                self._epoch_due = True
            if self._new_pack is not None:
                name, appender = self._new_pack
                self._new_pack = None
                if self._pack is not None and self._pack[0] == name:
                    self._pack = None
                _close_quietly(appender)
                try:
                    self.storage.delete(name)
                except Exception as exc:  # noqa: BLE001 - gc removes it as a stray
                    log.warning("could not remove unused journal pack %s: %s", name, exc)

    # -- pack handling ----------------------------------------------------------------

    def _switch_pack(self, new: tuple[str, PackAppender]) -> None:
        old = self._pack
        self._pack = new
        if old is not None and old[0] != new[0]:
            _close_quietly(old[1])

    def _append_and_sync(self) -> None:
        assert self._pack is not None
        appender = self._pack[1]
        for rec in self._unsynced:
            appender.append(seal_blob(self.key, TYPE_JOURNAL, record_id(rec.seq, rec.digest), rec.payload))
        appender.sync()
        if self._unsynced:
            self._flushed = max(self._flushed, self._unsynced[-1].seq)
        self._unsynced = []

    def flush_outbox(self, write: Callable[[Callable[[sqlite3.Connection], Any]], Any]) -> int:
        """At open: make the outbox rows some process committed but may not have synced
        durable (again: a duplicate of a record is harmless), then delete them."""
        rows = write(lambda conn: conn.execute("SELECT seq, payload FROM journal_outbox ORDER BY seq").fetchall())
        if not rows:
            return 0
        records = [OutRecord(seq, blake3.blake3(payload).digest(), payload) for seq, payload in rows]
        last = records[-1].seq

        def register(conn: sqlite3.Connection) -> str:
            name = secrets.token_hex(16)
            conn.execute(
                "INSERT INTO journal_packs(name, kind, first_seq, last_seq, created) VALUES (?, 'journal', ?, ?, ?)",
                (name, records[0].seq, last, clock.now()),
            )
            return name

        with self._lock:
            if self._pack is None:
                name = write(register)
                self._switch_pack((name, self.storage.create(name)))
            else:
                assert self._pack is not None
                name = self._pack[0]
                write(lambda conn: conn.execute(
                    "UPDATE journal_packs SET last_seq=max(last_seq, ?) WHERE name=?", (last, name)))
            self._unsynced.extend(records)
            try:
                self._append_and_sync()
            except OSError as exc:
                self._give_up_pack()
                self._unsynced = []
                raise storage_error(exc, "cannot make the catalog journal durable") from exc
            # Closed at once (an object store gets it whole, its spool goes); the first
            # batch of records starts the process's own pack.
            if self._pack is not None:
                _close_quietly(self._pack[1])
                self._pack = None
        write(lambda conn: conn.execute("DELETE FROM journal_outbox WHERE seq <= ?", (last,)))
        return len(records)

    def close(self, write: Callable[[Callable[[sqlite3.Connection], Any]], Any] | None = None) -> None:
        """Close this process's journal pack; with ``write``, also delete the outbox rows
        it synced (else the next process to open the catalog syncs them once more)."""
        with self._lock:
            if self._pack is not None:
                _close_quietly(self._pack[1])
                self._pack = None
            flushed = self._flushed if not self._unsynced else 0
        if write is not None and flushed > self._cleared:
            try:
                write(lambda conn: conn.execute("DELETE FROM journal_outbox WHERE seq <= ?", (flushed,)))
            except Exception as exc:  # noqa: BLE001 - harmless: the next open syncs them again
                log.warning("could not clear the journal outbox: %s", exc)


def _close_quietly(appender: PackAppender) -> None:
    try:
        appender.close()
    except OSError as exc:  # every record in it was synced before its callers were answered
        log.warning("closing journal pack %s failed: %s", appender.name, exc)
    except Exception as exc:  # noqa: BLE001 - storage errors of other backends
        log.warning("closing journal pack %s failed: %s", appender.name, exc)
