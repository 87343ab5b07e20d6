"""The davbackup client: upload, download and list over WebDAV, resuming transfers.

Modules:

``credentials``  user and password from --user, $DAVBACKUP_PASSWORD, netrc or a prompt
``remote``       one server: listings and metadata (webdavclient3), folders, raw requests
``upload``       files and trees as range-PUT parts that resume after any interruption
``download``     files and trees with ranged GETs that resume partial files
``state``        what was transferred (skip unchanged files)
``retry``        exponential backoff
``progress``     tqdm bars on a terminal
``errors``       HTTP answers → :mod:`davbackup.errors` (exit codes)

The wire protocol of the resumable upload is documented in ``provider/resumable/range_put.py``
and the curl recipe in README.md.
"""

from davbackup.client.credentials import Credentials, resolve_credentials
from davbackup.client.download import Downloader, DownloadOptions, DownloadStats
from davbackup.client.errors import ConnectionFailed, ServerError, TransferFailed
from davbackup.client.progress import Progress
from davbackup.client.remote import Remote, RemoteEntry, split_url
from davbackup.client.state import ClientState
from davbackup.client.upload import Uploader, UploadOptions, UploadStats, format_bytes, parse_size

__all__ = [
    "ClientState",
    "ConnectionFailed",
    "Credentials",
    "DownloadOptions",
    "DownloadStats",
    "Downloader",
    "Progress",
    "Remote",
    "RemoteEntry",
    "ServerError",
    "TransferFailed",
    "UploadOptions",
    "UploadStats",
    "Uploader",
    "format_bytes",
    "parse_size",
    "resolve_credentials",
    "split_url",
]
