"""Moving a repository to the current format version (DESIGN.md §2).

Format 2 differs from format 1 only in what writers may store: data chunks sealed in
segments (blob version 2, §5.1). Every blob already stored reads the same in both, so
the upgrade rewrites ``config.json`` (atomically) and nothing else. It is one way:
releases before format 2 refuse the repository afterwards, which is why a repository
is never upgraded behind its owner's back.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from davbackup.config import FORMAT_VERSION

if TYPE_CHECKING:
    from davbackup.repository import Repository


def upgrade_format(repo: Repository) -> tuple[int, int]:
    """``(version before, version after)``; equal when there was nothing to do.

    A running server keeps the format it opened with until it restarts."""
    before = repo.config.version
    if before >= FORMAT_VERSION:
        return before, before
    config = replace(repo.config, version=FORMAT_VERSION)
    repo.location.meta.write("config.json", config.to_json().encode("utf-8"), 0o644)
    repo.config = config
    return before, FORMAT_VERSION
