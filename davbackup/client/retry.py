"""Exponential backoff for a transfer that keeps losing its connection.

The budget counts consecutive failures *without progress*: every attempt that moves
the upload (or download) forward resets it, so a long transfer over a flaky link
keeps going as long as it advances.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class Backoff:
    retries: int = 8
    base: float = 0.5
    maximum: float = 30.0
    sleep: Callable[[float], None] = time.sleep
    failures: int = field(default=0, init=False)

    def progress(self) -> None:
        """The transfer moved forward: start counting failures from zero again."""
        self.failures = 0

    def failed(self, retry_after: float | None = None) -> bool:
        """Record a failure and wait; False when the budget is spent (give up)."""
        self.failures += 1
        if self.failures > self.retries:
            return False
        delay = self.base * (2 ** (self.failures - 1))
        delay = min(self.maximum, delay * (0.75 + random.random() / 2))  # jitter: resumers do not march in step
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.maximum))
        self.sleep(delay)
        return True


def retry_after_seconds(value: str | None) -> float | None:
    if value and value.strip().isdigit():
        return float(value.strip())
    return None
