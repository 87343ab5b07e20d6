"""Key slots: ``keys/<slot>.json`` files wrapping the master key (DESIGN.md §3).

The master key material (64 random bytes) never changes for the life of a repository.
Each slot wraps it under a key-encryption key derived from one passphrase with
Argon2id, so passphrases can be added and removed without touching any data.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from davbackup import crypto
from davbackup.errors import KeyFileError, UsageError, WrongPassphrase
from davbackup.metafiles import LocalFiles, MetaFiles

KEY_FORMAT = "davbackup-key"
KEY_VERSION = 1
MASTER_SIZE = 64


@dataclass(frozen=True)
class MasterKeys:
    """The repository's secret keys, all derived from the 64-byte master material."""

    material: bytes

    @property
    def encryption(self) -> bytes:
        return self.material[:32]

    @property
    def identity(self) -> bytes:
        return self.material[32:]

    def chunk_id_key(self) -> bytes:
        return crypto.derive_key(self.identity, "chunk-id")

    def chunker_seed(self) -> int:
        seed = crypto.derive_key(self.identity, "chunker-seed")
        return (int.from_bytes(seed[:8], "big") & ((1 << 62) - 1)) | 1

    def chunk_subkey_base(self) -> bytes:
        return crypto.derive_key(self.encryption, "chunk-data")

    def name_key(self) -> bytes:
        return crypto.derive_key(self.encryption, "names")

    def name_hash_key(self) -> bytes:
        return crypto.derive_key(self.identity, "name-hash")

    def etag_key(self) -> bytes:
        return crypto.derive_key(self.identity, "etag")

    def journal_key(self) -> bytes:
        return crypto.derive_key(self.encryption, "journal")


@dataclass(frozen=True)
class KeySlot:
    slot: str
    label: str
    created: float
    path: Path | str  # where the slot file is (a URL when it is in an object store)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def _associated(repo_id: str, slot: str) -> bytes:
    return f"davbackup-key-v{KEY_VERSION}\x00{repo_id}\x00{slot}".encode("ascii")


class KeyRing:
    """The key slot files of one repository: ``keys/*.json`` in its directory (give
    the ``keys`` directory) or in its object store (give the store's :class:`MetaFiles`)."""

    def __init__(self, location: Path | MetaFiles, repo_id: str) -> None:
        if isinstance(location, Path):
            self.files: MetaFiles = LocalFiles(location.parent)
            self.folder = location.name
        else:
            self.files = location
            self.folder = "keys"
        self.directory = self.files.where(self.folder)
        self.repo_id = repo_id

    def _slot_files(self) -> list[str]:
        try:
            return self.files.list(self.folder, ".json")
        except FileNotFoundError as exc:
            raise KeyFileError(f"{self.directory}: key directory is missing") from exc

    def slots(self) -> list[KeySlot]:
        result = []
        for name in self._slot_files():
            data = self._load(name)
            path = self.files.where(name)
            result.append(KeySlot(data["slot"], data.get("label", ""), float(data["created"]), path))
        return result

    def _load(self, name: str) -> dict[str, Any]:
        path = self.files.where(name)
        try:
            data: dict[str, Any] = json.loads(self.files.read(name).decode("utf-8"))
            if data.get("format") != KEY_FORMAT:
                raise KeyFileError(f"{path}: not a davbackup key file")
            if not isinstance(data.get("version"), int) or data["version"] > KEY_VERSION:
                raise KeyFileError(f"{path}: key file version {data['version']} is too new")
            for field in ("slot", "created", "kdf", "salt", "nonce", "wrapped"):
                if field not in data:
                    raise KeyFileError(f"{path}: key file lacks {field!r}")
            data["created"] = float(data["created"])
            if not isinstance(data["slot"], str) or not isinstance(data["kdf"], dict):
                raise KeyFileError(f"{path}: malformed key file")
            return data
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError, ValueError, TypeError) as exc:
            raise KeyFileError(f"{path}: unreadable key file ({exc})") from exc

    def add(self, master: MasterKeys, passphrase: str, label: str = "", kdf: crypto.KdfParams | None = None) -> KeySlot:
        if not passphrase:
            raise UsageError("the passphrase is empty")
        kdf = kdf or crypto.kdf_params_from_env()
        slot = crypto.random_bytes(4).hex()
        salt = crypto.random_bytes(16)
        kek = kdf.derive(passphrase, salt)
        nonce, wrapped = crypto.seal(kek, master.material, _associated(self.repo_id, slot))
        created = time.time()
        record = {
            "format": KEY_FORMAT,
            "version": KEY_VERSION,
            "slot": slot,
            "label": label,
            "created": created,
            "kdf": kdf.to_json(),
            "salt": _b64(salt),
            "nonce": _b64(nonce),
            "wrapped": _b64(wrapped),
        }
        name = f"{self.folder}/{slot}.json"
        self.files.write(name, (json.dumps(record, indent=2) + "\n").encode("utf-8"))
        return KeySlot(slot, label, created, self.files.where(name))

    def unlock(self, passphrase: str) -> tuple[MasterKeys, KeySlot]:
        """Try every slot; the one the passphrase opens gives the master keys."""
        files = self._slot_files()
        if not files:
            raise KeyFileError(f"{self.directory}: no key slots found")
        problems: list[str] = []
        for name in files:
            path = self.files.where(name)
            try:
                data = self._load(name)
                kdf = crypto.KdfParams.from_json(data["kdf"])
                kek = kdf.derive(passphrase, _unb64(data["salt"]))
                material = crypto.open_sealed(
                    kek, _unb64(data["nonce"]), _unb64(data["wrapped"]), _associated(self.repo_id, data["slot"])
                )
            except crypto.DecryptionFailed:
                continue
            except (KeyFileError, ValueError, TypeError, KeyError) as exc:
                problems.append(str(exc))
                continue
            if len(material) != MASTER_SIZE:
                problems.append(f"{path}: wrapped key has the wrong size")
                continue
            slot = KeySlot(data["slot"], data.get("label", ""), float(data["created"]), path)
            return MasterKeys(material), slot
        if problems and len(problems) == len(files):
            raise KeyFileError("no usable key slot: " + "; ".join(problems))
        raise WrongPassphrase("wrong passphrase: it opens none of the repository's key slots")

    def remove(self, slot: str, passphrase_in_use: str) -> None:
        """Remove a slot; refuses to remove the last one or the one now in use."""
        slots = self.slots()
        match = [s for s in slots if s.slot == slot]
        if not match:
            raise UsageError(f"no key slot {slot!r}")
        if len(slots) == 1:
            raise UsageError("refusing to remove the last key slot: the data would be lost")
        _, used = self.unlock(passphrase_in_use)
        if used.slot == slot:
            raise UsageError("refusing to remove the slot of the passphrase in use; unlock with another one")
        for name in self._slot_files():
            if self._load(name)["slot"] == slot:
                self.files.delete(name)
