#!/usr/bin/env python3
"""Summarise py-spy ``--format raw`` output (collapsed stacks) as text tables.

    .venv/bin/python scripts/bench_pyspy_summary.py .bench-tmp/profiles/get-davbackup-r1.txt

Prints the share of samples per function, by self time (the innermost frame) and by
inclusive time (anywhere on the stack, counted once per stack), with line numbers
folded so one function is one row. ``--focus NAME`` keeps only stacks that pass
through a frame containing NAME (e.g. ``do_PUT``) and reports shares of those.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_LINE = re.compile(r":\d+\)$")


def fold(frame: str) -> str:
    """``func (path/file.py:123)`` -> ``func (path/file.py)``."""
    return _LINE.sub(")", frame.strip())


def load(path: Path, focus: str | None) -> tuple[list[tuple[list[str], int]], int]:
    stacks = []
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [fold(f) for f in stack.split(";")]
        if focus and not any(focus in f for f in frames):
            continue
        stacks.append((frames, int(count)))
        total += int(count)
    return stacks, total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--focus", help="only stacks through a frame containing this text")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    for path in args.files:
        stacks, total = load(path, args.focus)
        print(f"== {path} ({total} samples{', focus ' + args.focus if args.focus else ''})")
        if not total:
            continue
        own: Counter[str] = Counter()
        incl: Counter[str] = Counter()
        for frames, n in stacks:
            own[frames[-1]] += n
            for f in set(frames):
                incl[f] += n
        print("-- self")
        for f, n in own.most_common(args.top):
            print(f"{100 * n / total:6.1f}%  {f}")
        print("-- inclusive")
        for f, n in incl.most_common(args.top):
            print(f"{100 * n / total:6.1f}%  {f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
