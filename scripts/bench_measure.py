"""What the benchmarks measure about a server process: peak RSS, CPU time, py-spy profiles."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

VENV_BIN = Path(__file__).resolve().parent.parent / ".venv" / "bin"


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- memory


class RssWatch:
    """Peak resident memory of a process over one measurement."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._stop = threading.Event()
        self._peak_kib = 0
        self.hwm_reset = False
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _status(self, key: str) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        return 0

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                self._peak_kib = max(self._peak_kib, self._status("VmRSS"))
            except OSError:
                return
            self._stop.wait(0.01)

    def __enter__(self) -> "RssWatch":
        try:  # "5" resets the peak RSS (VmHWM) to the current RSS (Linux >= 4.0)
            with open(f"/proc/{self.pid}/clear_refs", "w") as f:
                f.write("5")
            self.hwm_reset = True
        except OSError:
            self.hwm_reset = False
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self.hwm_reset:
            self._peak_kib = max(self._peak_kib, self._status("VmHWM"))

    @property
    def peak_mib(self) -> float:
        return self._peak_kib / 1024

    def current_mib(self) -> float:
        return self._status("VmRSS") / 1024


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User and system CPU time a process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


# --------------------------------------------------------------------------- profiling


class PySpy:
    """``py-spy record`` of one process while a measurement runs (or a no-op)."""

    def __init__(self, pid: int | None, out: Path | None, rate: int = 1000, gil: bool = False,
                 native: bool = False) -> None:
        self.pid, self.out, self.rate, self.gil, self.native = pid, out, rate, gil, native
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> "PySpy":
        if self.pid is None or self.out is None:
            return self
        exe = shutil.which("py-spy", path=str(VENV_BIN)) or shutil.which("py-spy")
        if exe is None:
            log("py-spy not found: `.venv/bin/pip install py-spy`; not profiling")
            return self
        cmd = [exe, "record", "--pid", str(self.pid), "--rate", str(self.rate), "--format", "raw",
               "-o", str(self.out)]
        if self.gil:
            cmd.append("--gil")
        # --native: C frames too (FastCDC, BLAKE3, AES-GCM, memmove); it pauses the process
        # for each sample (py-spy refuses --native with --nonblocking)
        cmd.append("--native" if self.native else "--nonblocking")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # let it attach
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            log(f"py-spy profile written to {self.out}")


def cpu_seconds_all(pids: list[int]) -> tuple[float, float]:
    """User and system CPU time of several processes (Apache's workers), summed."""
    user = system = 0.0
    for pid in pids:
        try:
            u, s = cpu_seconds(pid)
        except OSError:
            continue
        user, system = user + u, system + s
    return user, system


def measured_rounds(rounds: Callable[[], None], work: Path, *, keep: bool, json_path: str | None,
                    values: dict[str, list[float]]) -> None:
    """Run a benchmark's rounds: Ctrl-C keeps what was measured, the work directory is
    removed (unless ``keep``), and the samples go to ``json_path`` if one is given."""
    try:
        rounds()
    except KeyboardInterrupt:
        log("interrupted: reporting what was measured")
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    if json_path:
        Path(json_path).write_text(json.dumps(values, indent=1))
