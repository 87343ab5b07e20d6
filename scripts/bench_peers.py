"""Peer servers for the benchmarks: Apache httpd with mod_dav_fs on loopback.

``ApacheDav(workdir)`` writes its own ``httpd.conf`` (event MPM, mod_dav_fs, Basic
authentication against an htpasswd file with a SHA-1 entry so that checking the
password costs what davbackup's cached check costs), runs ``apache2 -DFOREGROUND``
on a free port of 127.0.0.1 and stops it with SIGTERM. Nothing of the system's
Apache configuration is used, and no system service is started. If Debian's
``apache2`` package is missing, :func:`ensure_apache` installs it with apt (as
root, or through sudo).

Apache, like WsgiDAV's FilesystemProvider, does not fsync what it stores.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import requests

APACHE = "/usr/sbin/apache2"
MODULES = Path("/usr/lib/apache2/modules")
RUN_USER = "www-data"


def ensure_apache() -> None:
    """Install Debian's apache2 if it is not there (the bench's own config is used)."""
    if Path(APACHE).exists() and (MODULES / "mod_dav_fs.so").exists() and shutil.which("htpasswd"):
        return
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", "apache2", "apache2-utils"],
                   check=True, env=env, stdout=subprocess.DEVNULL)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


CONFIG = """\
ServerRoot "{work}"
ServerName 127.0.0.1
Listen 127.0.0.1:{port}
PidFile "{work}/httpd.pid"
DefaultRuntimeDir "{work}"
Mutex file:{work} default
ErrorLog "{work}/error.log"
LogLevel warn
{user}
LoadModule mpm_event_module {modules}/mod_mpm_event.so
LoadModule authn_core_module {modules}/mod_authn_core.so
LoadModule authn_file_module {modules}/mod_authn_file.so
LoadModule authz_core_module {modules}/mod_authz_core.so
LoadModule authz_user_module {modules}/mod_authz_user.so
LoadModule auth_basic_module {modules}/mod_auth_basic.so
LoadModule dav_module {modules}/mod_dav.so
LoadModule dav_fs_module {modules}/mod_dav_fs.so
StartServers 2
ThreadsPerChild 16
MaxRequestWorkers 64
KeepAlive On
MaxKeepAliveRequests 0
DavLockDB "{work}/davlock"
DocumentRoot "{root}"
<Directory "{root}">
    Dav On
    AuthType Basic
    AuthName "bench"
    AuthUserFile "{work}/htpasswd"
    Require valid-user
</Directory>
"""


class ApacheDav:
    """Apache httpd 2.4 with mod_dav_fs, on its own directory and port."""

    label = "Apache mod_dav"
    key = "apache"

    def __init__(self, workdir: Path, user: str, password: str) -> None:
        self.workdir = workdir / "apache"
        self.user, self.password = user, password
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> None:
        ensure_apache()
        work, root = self.workdir, self.workdir / "root"
        root.mkdir(parents=True, exist_ok=True)
        port = free_port()
        as_root = os.geteuid() == 0
        if as_root:  # httpd refuses to serve as root: its workers run as www-data
            shutil.chown(root, RUN_USER, RUN_USER)
            shutil.chown(work, RUN_USER, RUN_USER)
        subprocess.run(["htpasswd", "-b", "-c", "-s", str(work / "htpasswd"), self.user, self.password],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        user = f"User {RUN_USER}\nGroup {RUN_USER}" if as_root else ""
        conf = work / "httpd.conf"
        conf.write_text(CONFIG.format(work=work, root=root, port=port, modules=MODULES, user=user))
        self.proc = subprocess.Popen([APACHE, "-f", str(conf), "-DFOREGROUND"], stdout=subprocess.DEVNULL,
                                     stderr=open(work / "stderr.log", "ab"), start_new_session=True)
        self.url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"apache exited: {(work / 'error.log').read_text(errors='replace')[-2000:]}")
            try:
                requests.request("OPTIONS", self.url, auth=(self.user, self.password), timeout=2)
                return
            except requests.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError("apache did not answer")

    @property
    def pid(self) -> int:
        """The process that serves (the event MPM's first child), for CPU and RSS figures."""
        assert self.proc is not None
        children = _children(self.proc.pid)
        return children[0] if children else self.proc.pid

    def pids(self) -> list[int]:
        assert self.proc is not None
        return [self.proc.pid, *_children(self.proc.pid)]

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
        self.proc = None


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]
