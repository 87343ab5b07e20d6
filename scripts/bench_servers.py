"""The servers the benchmarks compare: davbackup (this checkout or a baseline build) and
plain WsgiDAV with its FilesystemProvider, each one process on 127.0.0.1.

Used by ``scripts/bench_server.py`` and the other benchmark scripts (through it);
Apache mod_dav is in ``scripts/bench_peers.py``.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_clients import PASSWORD, USER  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
PYTHON = VENV_BIN / "python" if (VENV_BIN / "python").exists() else Path(sys.executable)
DAVBACKUP = VENV_BIN / "davbackup"
WORK_ROOT = ROOT / ".bench-tmp"

PASSPHRASE = "bench-passphrase-not-secret"


# --------------------------------------------------------------------------- servers


class Server:
    """One server process on 127.0.0.1 (port chosen by the kernel)."""

    label = "?"

    #: extra environment for the server and its preparation commands
    extra_env: dict[str, str] = {}

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.log_path = workdir / f"{self.key}.log"

    @property
    def key(self) -> str:
        return self.label.split()[0].lower()

    def command(self) -> list[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        pass

    def start(self) -> None:
        self.prepare()
        env = dict(os.environ, DAVBACKUP_PASSPHRASE=PASSPHRASE, PYTHONUNBUFFERED="1", **self.extra_env)
        self.proc = subprocess.Popen(
            self.command(),
            stdout=subprocess.PIPE,
            stderr=open(self.log_path, "ab"),
            env=env,
            cwd=self.workdir,
        )
        self.url = self._wait_url(self.proc, deadline=time.monotonic() + 60)
        self._wait_http()

    @staticmethod
    def _wait_url(proc: subprocess.Popen[bytes], deadline: float) -> str:
        assert proc.stdout is not None
        buf = b""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 0.2)
            if ready:
                data = os.read(proc.stdout.fileno(), 4096)
                if not data:
                    break
                buf += data
                for line in buf.decode(errors="replace").splitlines():
                    if "http://" in line:
                        url = line[line.index("http://") :].split()[0]
                        return url if url.endswith("/") else url + "/"
            if proc.poll() is not None:
                break
        raise RuntimeError(f"server did not start: {buf.decode(errors='replace')!r}")

    def _wait_http(self) -> None:
        for _ in range(100):
            try:
                requests.request("OPTIONS", self.url, auth=(USER, PASSWORD), timeout=5)
                return
            except requests.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.label} not answering on {self.url}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None


class DavbackupServer(Server):
    label = "davbackup"
    #: a Python file run instead of the ``davbackup`` entry point (``--serve-wrapper``)
    wrapper: str | None = None

    def entry(self) -> list[str]:
        return [str(PYTHON), self.wrapper] if self.wrapper else [str(DAVBACKUP)]

    def prepare(self) -> None:
        self.repo = self.workdir / f"{self.key}-repo"
        env = dict(os.environ, DAVBACKUP_PASSPHRASE=PASSPHRASE, **self.extra_env)
        cli = [str(PYTHON), "-m", "davbackup"]
        # cwd: ``python -m`` puts the working directory first on sys.path
        subprocess.run([*cli, "init", "--repo", str(self.repo)], env=env, check=True,
                       stdout=subprocess.DEVNULL, cwd=self.workdir)
        subprocess.run([*cli, "user", "add", USER, "--repo", str(self.repo)], env=env,
                       input=(PASSWORD + "\n").encode(), check=True, stdout=subprocess.DEVNULL, cwd=self.workdir)

    def command(self) -> list[str]:
        return [*self.entry(), "serve", "--repo", str(self.repo), "--port", "0"]


class BaseBuildServer(DavbackupServer):
    """davbackup from another checkout (``--baseline-build DIR``), same interpreter and
    libraries: the build a change is compared with, in the same run."""

    label = "base build"

    def entry(self) -> list[str]:
        return [str(PYTHON), "-m", "davbackup"]


class WsgidavFsServer(Server):
    label = "WsgiDAV FS"

    def prepare(self) -> None:
        self.root = self.workdir / "wsgidav-fs-root"
        self.root.mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        return [str(PYTHON), str(ROOT / "scripts" / "bench_wsgidav_fs.py"), "--root", str(self.root),
                "--user", USER, "--password", PASSWORD]
