"""The one exception hierarchy of davbackup.

Every error knows the HTTP status the WebDAV layer answers with and the exit code the
CLI ends with, and its message names the operation and the path or object involved.
"""

from __future__ import annotations


class DavBackupError(Exception):
    """Base of every error davbackup raises on purpose."""

    http_status: int = 500
    exit_code: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(DavBackupError):
    """Bad command-line input or configuration."""

    http_status = 400
    exit_code = 2


class InvalidPath(DavBackupError):
    """A path that cannot name anything: '..', NUL bytes, over-long names."""

    http_status = 400
    exit_code = 2


class NotFound(DavBackupError):
    http_status = 404
    exit_code = 3


class AlreadyExists(DavBackupError):
    http_status = 405
    exit_code = 3


class Conflict(DavBackupError):
    """The parent collection is missing, or a file stands where a folder is needed."""

    http_status = 409
    exit_code = 3


class PreconditionFailed(DavBackupError):
    """Overwrite refused, or a digest or size did not match what the client promised."""

    http_status = 412
    exit_code = 3


class PermissionDenied(DavBackupError):
    http_status = 403
    exit_code = 5


class AuthenticationFailed(DavBackupError):
    http_status = 401
    exit_code = 5


class Locked(DavBackupError):
    """A resource is busy: another upload holds the session or the writer lock."""

    http_status = 423
    exit_code = 6


class IncompleteBody(DavBackupError):
    """The request body was shorter than announced; nothing was stored."""

    http_status = 400
    exit_code = 3


class RangeError(DavBackupError):
    http_status = 416
    exit_code = 3


class RepositoryError(DavBackupError):
    """The repository cannot be opened or is not a davbackup repository."""

    http_status = 500
    exit_code = 10


class WrongPassphrase(RepositoryError):
    exit_code = 11


class KeyFileError(RepositoryError):
    """A key file is missing, unreadable or malformed."""

    exit_code = 12


class UnsupportedFormat(RepositoryError):
    """The repository was written by a newer davbackup or uses unknown algorithms."""

    exit_code = 13


class CatalogDamaged(RepositoryError):
    """The catalog is missing, unreadable or fails its checks; `davbackup recover` rebuilds it."""

    exit_code = 14


class IntegrityError(DavBackupError):
    """Stored data failed verification: never serve the bytes."""

    http_status = 500
    exit_code = 20


class StorageFull(DavBackupError):
    http_status = 507
    exit_code = 21


class StorageUnavailable(DavBackupError):
    """The pack store (an object store) did not answer or failed; retrying later may work."""

    http_status = 503
    exit_code = 22
    #: seconds a client should wait before retrying (HTTP ``Retry-After``)
    retry_after = 10


class TooLarge(DavBackupError):
    """A declared size above the configured limit; nothing was stored."""

    http_status = 413
    exit_code = 3


class TooManyUploads(DavBackupError):
    """A user already holds the configured number of open upload sessions."""

    http_status = 429
    exit_code = 6


class OffsetMismatch(DavBackupError):
    """The client's offset is not the one the server holds; carries the right one."""

    http_status = 409
    exit_code = 3

    def __init__(self, message: str, offset: int, provided: int | None = None) -> None:
        super().__init__(message)
        self.offset = offset
        self.provided = provided


class LengthMismatch(DavBackupError):
    """Bytes or a completion that disagree with the upload's declared length."""

    http_status = 400
    exit_code = 3


class DigestMismatch(DavBackupError):
    """The uploaded bytes do not match the digest the client sent; nothing was stored."""

    http_status = 400
    exit_code = 3
