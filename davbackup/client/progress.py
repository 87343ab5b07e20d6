"""Progress bars (tqdm) on a terminal, nothing otherwise."""

from __future__ import annotations

import sys
from typing import Any, Protocol


class Bar(Protocol):
    def update(self, n: int) -> Any: ...
    def close(self) -> None: ...


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


class Progress:
    """Makes one bar per file when enabled (default: when stderr is a terminal)."""

    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled

    def bar(self, name: str, total: int, initial: int = 0) -> Bar:
        if not self.enabled:
            return _NoBar()
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, desc=_short(name), unit="B", unit_scale=True,
                    unit_divisor=1024, leave=False, dynamic_ncols=True, file=sys.stderr)

    def note(self, text: str) -> None:
        if self.enabled:
            from tqdm import tqdm

            tqdm.write(text, file=sys.stderr)


def _short(name: str, width: int = 30) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1):]
