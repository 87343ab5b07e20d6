"""`davbackup upload | download | ls` against a real server, run as a user would."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


from tests.resume_fixtures import CuttingProxy
from tests.server_fixtures import ROOT, DavServer

MiB = 1024 * 1024


class Cli:
    """Runs the CLI with a private HOME and state file, password in the environment."""

    def __init__(self, server: DavServer, home: Path, user: str = "alice") -> None:
        self.server = server
        self.home = home
        self.user = user
        home.mkdir(parents=True, exist_ok=True)
        self.env = dict(os.environ, HOME=str(home), PYTHONPATH=str(ROOT),
                        DAVBACKUP_PASSWORD=server.password(user) if user in server.users else "x")
        self.env.pop("XDG_STATE_HOME", None)

    def args(self, command: str, *rest: str) -> list[str]:
        return [sys.executable, "-m", "davbackup", command, "--user", self.user,
                "--state", str(self.home / "state.sqlite"), *rest] if command != "ls" else \
            [sys.executable, "-m", "davbackup", "ls", "--user", self.user, *rest]

    def run(self, command: str, *rest: str, env: dict | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.args(command, *rest), env=env or self.env, capture_output=True, text=True,
                              timeout=300, stdin=subprocess.DEVNULL)

    def popen(self, command: str, *rest: str) -> subprocess.Popen:
        return subprocess.Popen(self.args(command, *rest), env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)


def make_tree(root: Path) -> dict[str, bytes]:
    files = {
        "big.bin": os.urandom(3 * MiB + 17),
        "empty": b"",
        "sub/naïve file.txt": "hällo wörld\n".encode(),
        "sub/deeper/data.bin": os.urandom(100_000),
    }
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return files


def tree_of(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_upload_ls_download_and_skip_unchanged(shared_dav_server, tmp_path):
    cli = Cli(shared_dav_server, tmp_path / "home")
    src = tmp_path / "src"
    files = make_tree(src)
    base = f"{shared_dav_server.url}/cli-tree"

    r = cli.run("upload", "--part-size", "1M", base, str(src))
    assert r.returncode == 0, r.stderr
    assert "uploaded 4 file(s)" in r.stdout and "0 unchanged" in r.stdout

    r = cli.run("ls", "-R", base)
    assert r.returncode == 0, r.stderr
    assert "src/sub/naïve file.txt" in r.stdout and f"{3 * MiB + 17}" in r.stdout

    r = cli.run("download", f"{base}/src", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    assert tree_of(tmp_path / "out") == files
    r = cli.run("download", f"{base}/src", str(tmp_path / "out"))
    assert "downloaded 0 file(s)" in r.stdout and "4 unchanged" in r.stdout

    r = cli.run("upload", "--part-size", "1M", base, str(src))
    assert r.returncode == 0 and "uploaded 0 file(s) (0 B sent)" in r.stdout and "4 unchanged" in r.stdout

    (src / "sub/deeper/data.bin").write_bytes(os.urandom(100_000))  # changed
    os.utime(src / "big.bin")  # touched only: same content
    r = cli.run("upload", "--part-size", "1M", base, str(src))
    assert r.returncode == 0, r.stderr
    assert "uploaded 1 file(s)" in r.stdout and "3 unchanged" in r.stdout
    r = cli.run("download", f"{base}/src", str(tmp_path / "out"))
    assert r.returncode == 0 and "downloaded 1 file(s)" in r.stdout
    assert tree_of(tmp_path / "out") == tree_of(src)

    r = cli.run("download", f"{base}/src/big.bin", str(tmp_path / "single.bin"))
    assert r.returncode == 0 and (tmp_path / "single.bin").read_bytes() == files["big.bin"]


def test_parallel_tree_upload_and_skip(shared_dav_server, tmp_path):
    """A tree of many files with 8 transfers at once: every file arrives intact, a second
    run reads no file and sends nothing, a changed file is found and sent."""
    cli = Cli(shared_dav_server, tmp_path / "home")
    src = tmp_path / "many"
    files = {f"d{i % 5}/s{i % 3}/f{i:03d}.bin": os.urandom(i * 97 % 20_000) for i in range(120)}
    files["d0/large.bin"] = os.urandom(5 * MiB + 1)  # over the one-PUT size: range PUT parts
    for rel, content in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(content)
    base = f"{shared_dav_server.url}/cli-parallel"
    r = cli.run("upload", "--jobs", "8", "--part-size", "2M", base, str(src))
    assert r.returncode == 0, r.stderr
    assert f"uploaded {len(files)} file(s)" in r.stdout
    with shared_dav_server.session() as s:
        for rel, content in files.items():
            assert s.get(f"{base}/many/{rel}").content == content, rel
    r = cli.run("upload", "--jobs", "8", base, str(src))
    assert r.returncode == 0 and "uploaded 0 file(s) (0 B sent)" in r.stdout
    assert f"{len(files)} unchanged" in r.stdout
    (src / "d3/s1/f013.bin").write_bytes(b"changed")
    r = cli.run("upload", "--jobs", "3", base, str(src))
    assert r.returncode == 0 and "uploaded 1 file(s) (7 B sent)" in r.stdout, r.stdout
    assert shared_dav_server.session().get(f"{base}/many/d3/s1/f013.bin").content == b"changed"
    r = cli.run("upload", "--jobs", "0", base, str(src))
    assert r.returncode == 2 and "--jobs" in r.stderr


def test_single_file_upload_into_folder(shared_dav_server, tmp_path):
    cli = Cli(shared_dav_server, tmp_path / "home")
    f = tmp_path / "one.txt"
    f.write_text("one")
    r = cli.run("upload", f"{shared_dav_server.url}/cli-single/a/b", str(f))
    assert r.returncode == 0, r.stderr
    assert shared_dav_server.session().get(f"{shared_dav_server.url}/cli-single/a/b/one.txt").text == "one"


def test_exit_codes(shared_dav_server, tmp_path):
    cli = Cli(shared_dav_server, tmp_path / "home")
    r = cli.run("ls", f"{shared_dav_server.url}/does-not-exist")
    assert r.returncode == 3 and "no such" in r.stderr
    r = cli.run("download", f"{shared_dav_server.url}/does-not-exist", str(tmp_path / "x"))
    assert r.returncode == 3

    wrong = dict(cli.env, DAVBACKUP_PASSWORD="wrong password")
    r = cli.run("ls", shared_dav_server.url + "/", env=wrong)
    assert r.returncode == 5 and "401" in r.stderr and "wrong password" not in r.stderr

    nopass = dict(cli.env)
    nopass.pop("DAVBACKUP_PASSWORD")
    r = cli.run("ls", shared_dav_server.url + "/", env=nopass)
    assert r.returncode == 2 and "DAVBACKUP_PASSWORD" in r.stderr

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    f = tmp_path / "f.txt"
    f.write_text("x")
    r = cli.run("upload", "--retries", "1", f"http://127.0.0.1:{closed}/x", str(f))
    assert r.returncode == 4, r.stderr

    reader = Cli(shared_dav_server, tmp_path / "home-reader", user="reader")
    r = reader.run("upload", f"{shared_dav_server.url}/cli-ro", str(f))
    assert r.returncode == 5, r.stderr

    r = cli.run("upload", shared_dav_server.url + "/x", str(tmp_path / "missing-local"))
    assert r.returncode == 2
    r = cli.run("upload", "--part-size", "zero", shared_dav_server.url + "/x", str(f))
    assert r.returncode == 2


def test_netrc_credentials(shared_dav_server, tmp_path):
    cli = Cli(shared_dav_server, tmp_path / "home")
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine 127.0.0.1 login alice password {shared_dav_server.password('alice')}\n")
    netrc.chmod(0o600)
    env = dict(cli.env)
    env.pop("DAVBACKUP_PASSWORD")
    r = subprocess.run([sys.executable, "-m", "davbackup", "ls", "--netrc", str(netrc), shared_dav_server.url + "/"],
                       env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr


def test_upload_through_cutting_proxy(shared_dav_server, tmp_path):
    cli = Cli(shared_dav_server, tmp_path / "home")
    f = tmp_path / "cut.bin"
    data = os.urandom(8 * MiB + 3)
    f.write_bytes(data)
    with CuttingProxy(shared_dav_server.port, cut_range=(500_000, 3 * MiB), seed=5) as proxy:
        r = cli.run("upload", "--part-size", "2M", f"{proxy.url}/cli-cut", str(f))
        assert r.returncode == 0, r.stderr
        assert proxy.cuts >= 2
    assert shared_dav_server.session().get(f"{shared_dav_server.url}/cli-cut/cut.bin").content == data


def _wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_client_killed_mid_file_resumes_from_server_offset(shared_dav_server, tmp_path):
    cli = Cli(shared_dav_server, tmp_path / "home")
    f = tmp_path / "killed.bin"
    data = os.urandom(24 * MiB)
    f.write_bytes(data)
    with CuttingProxy(shared_dav_server.port, rate=6 * MiB) as proxy:
        url = f"{proxy.url}/cli-kill"
        proc = cli.popen("upload", "--part-size", "2M", url, str(f))
        _wait_for(lambda: proxy.sent > 12 * MiB)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        first = proxy.sent
        proxy.reset_counters()
        proxy.rate = None
        r = cli.run("upload", "--part-size", "2M", url, str(f))
        assert r.returncode == 0, r.stderr
        assert "1 resumed" in r.stdout
        second = proxy.sent
    assert shared_dav_server.session().get(f"{shared_dav_server.url}/cli-kill/killed.bin").content == data
    assert second < len(data) - 8 * MiB, (first, second)
    assert first + second < len(data) + 4 * MiB  # little was sent twice


def test_changed_file_after_kill_starts_over(shared_dav_server, tmp_path):
    cli = Cli(shared_dav_server, tmp_path / "home")
    f = tmp_path / "changing.bin"
    f.write_bytes(os.urandom(12 * MiB))
    with CuttingProxy(shared_dav_server.port, rate=6 * MiB) as proxy:
        url = f"{proxy.url}/cli-change"
        proc = cli.popen("upload", "--part-size", "1M", url, str(f))
        _wait_for(lambda: proxy.sent > 4 * MiB)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proxy.rate = None
        new = os.urandom(12 * MiB)  # same size, other content
        f.write_bytes(new)
        r = cli.run("upload", "--part-size", "1M", url, str(f))
        assert r.returncode == 0, r.stderr
        assert "resumed" not in r.stdout
    assert shared_dav_server.session().get(f"{shared_dav_server.url}/cli-change/changing.bin").content == new


def test_download_killed_mid_file_resumes(shared_dav_server, tmp_path):
    cli = Cli(shared_dav_server, tmp_path / "home")
    data = os.urandom(16 * MiB)
    remote = f"{shared_dav_server.url}/cli-dl.bin"
    assert shared_dav_server.session().put(remote, data=data).status_code == 201
    dest = tmp_path / "dl.bin"
    with CuttingProxy(shared_dav_server.port, down_rate=4 * MiB) as proxy:
        proc = cli.popen("download", f"{proxy.url}/cli-dl.bin", str(dest))
        part = tmp_path / "dl.bin.davbackup-part"
        _wait_for(lambda: part.exists() and part.stat().st_size > 6 * MiB)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proxy.reset_counters()
        proxy.down_rate = None
        r = cli.run("download", f"{proxy.url}/cli-dl.bin", str(dest))
        assert r.returncode == 0, r.stderr
        assert "1 resumed" in r.stdout
        assert proxy.received < len(data) - 5 * MiB
    assert dest.read_bytes() == data
    assert not part.exists()


def test_download_after_remote_change_starts_over(shared_dav_server, tmp_path):
    cli = Cli(shared_dav_server, tmp_path / "home")
    remote = f"{shared_dav_server.url}/cli-dl-change.bin"
    alice = shared_dav_server.session()
    old = os.urandom(8 * MiB)
    assert alice.put(remote, data=old).status_code == 201
    dest = tmp_path / "c.bin"
    with CuttingProxy(shared_dav_server.port, down_rate=4 * MiB) as proxy:
        proc = cli.popen("download", f"{proxy.url}/cli-dl-change.bin", str(dest))
        part = tmp_path / "c.bin.davbackup-part"
        _wait_for(lambda: part.exists() and part.stat().st_size > 2 * MiB)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    new = os.urandom(8 * MiB)
    assert alice.put(remote, data=new).status_code == 204
    r = cli.run("download", remote, str(dest))
    assert r.returncode == 0, r.stderr
    assert dest.read_bytes() == new
