"""nginx or HAProxy in front of cluster nodes, configured with the examples of docs/deploy.md.

The ``nginx`` and ``haproxy`` blocks of the deployment guide are taken from the page
itself and only localised: the node addresses become the test's nodes, port 443 a
free loopback port, the certificate a throwaway self-signed one (``openssl``). One
line is added for the tests: the ``X-Upstream`` response header names the node that
answered, so a test can tell that the second half of an upload really went to the
other node. The proxies (from Debian, installed by ``scripts/test``) run in the
foreground, everything under a temp dir.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.server_fixtures import DavServer, free_port

ROOT = Path(__file__).resolve().parents[2]
DEPLOY_DOC = ROOT / "docs" / "deploy.md"
#: the node addresses the guide's example uses, in order
DOC_NODES = ("10.0.0.11:8080", "10.0.0.12:8080")


def doc_block(language: str) -> str:
    """The code block of docs/deploy.md marked ``language``."""
    found = re.search(rf"```{language}\n(.*?)```", DEPLOY_DOC.read_text(encoding="utf-8"), re.S)
    assert found, f"docs/deploy.md has no {language} example"
    return found.group(1)


def self_signed_certificate(workdir: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its key (no passphrase)."""
    cert, key = workdir / "proxy.pem", workdir / "proxy.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


@dataclass
class Proxy:
    kind: str  # "nginx" or "haproxy"
    workdir: Path
    port: int
    cert: Path
    nodes: dict[str, DavServer]  # what X-Upstream says -> node
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def base(self) -> str:
        """The folder of this proxy's tests (several proxies may front the same nodes)."""
        return f"{self.url}/{self.kind}"

    def session(self, user: str = "alice") -> requests.Session:
        node = next(iter(self.nodes.values()))
        s = node.session(user)
        s.verify = str(self.cert)
        s.trust_env = False  # else REQUESTS_CA_BUNDLE from the environment wins over ``verify``
        return s

    def served_by(self, response: requests.Response) -> DavServer:
        """The node that answered ``response`` (the ``X-Upstream`` header)."""
        upstream = response.headers.get("X-Upstream", "")
        last = upstream.split(",")[-1].strip()  # "a, b" when nginx retried on the next node
        assert last in self.nodes, f"X-Upstream {upstream!r} names none of the nodes"
        return self.nodes[last]

    def error_log(self) -> str:
        try:
            return (self.workdir / "error.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            # graceful: finish requests, then exit
            self.proc.send_signal(signal.SIGQUIT if self.kind == "nginx" else signal.SIGUSR1)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def adapted_doc_block(kind: str, addresses: list[str], replacements: dict[str, str]) -> str:
    """The guide's ``kind`` example with its node addresses replaced by ``addresses``
    and each ``replacements`` pattern (a regex) replaced exactly once; fails loudly
    when the guide's example no longer has what the test replaces."""
    block = doc_block(kind)
    for doc_address, address in zip(DOC_NODES, addresses, strict=True):
        assert doc_address in block, f"the guide's {kind} example no longer names {doc_address}"
        block = block.replace(doc_address, address)
    for pattern, replacement in replacements.items():
        block, n = re.subn(pattern, replacement, block)
        assert n == 1, f"the guide's {kind} example no longer matches {pattern!r}"
    return block


def nginx_config(workdir: Path, port: int, cert: Path, key: Path, addresses: list[str]) -> str:
    block = adapted_doc_block("nginx", addresses, {
        r"listen 443 ssl http2;": f"listen 127.0.0.1:{port} ssl http2;",
        r"ssl_certificate     \S+;": f"ssl_certificate     {cert};",
        r"ssl_certificate_key \S+;": f"ssl_certificate_key {key};",
        r"location / \{": "location / {\n        add_header X-Upstream $upstream_addr always;",
    })
    temp = "\n".join(f"    {kind}_temp_path {workdir / kind};" for kind in
                     ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    user = "user root root;\n" if os.geteuid() == 0 else ""  # workers need the temp dirs of root's tmp
    return (
        f"{user}daemon off;\nworker_processes 1;\npid {workdir / 'nginx.pid'};\n"
        f"error_log {workdir / 'error.log'} info;\n"
        "events { worker_connections 512; }\n"
        "http {\n"
        f"    access_log {workdir / 'access.log'};\n{temp}\n"
        + "\n".join("    " + line for line in block.splitlines())
        + "\n}\n"
    )


def haproxy_config(port: int, pem: Path, addresses: list[str]) -> str:
    block = adapted_doc_block("haproxy", addresses, {
        r"bind :443 ssl crt \S+": f"bind 127.0.0.1:{port} ssl crt {pem}",
        r"(\nbackend davbackup\n)": r"\1    http-response set-header X-Upstream %[srv_name]\n",
    })
    return f"global\n    maxconn 512\n    log stderr format short local0 notice\n{block}"


def start_proxy(kind: str, workdir: Path, nodes: list[DavServer]) -> Proxy:
    """``kind`` ("nginx" or "haproxy") in front of ``nodes``, serving HTTPS on loopback."""
    workdir.mkdir(parents=True, exist_ok=True)
    cert, key = self_signed_certificate(workdir)
    port = free_port()
    addresses = [f"127.0.0.1:{node.port}" for node in nodes]
    if kind == "nginx":
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        conf = workdir / "nginx.conf"
        conf.write_text(nginx_config(workdir, port, cert, key, addresses), encoding="utf-8")
        args = [binary, "-p", str(workdir), "-c", str(conf), "-e", str(workdir / "error.log")]
        check = [*args, "-t"]
        names = addresses
    else:
        binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        pem = workdir / "proxy-with-key.pem"  # HAProxy wants certificate and key in one file
        pem.write_bytes(cert.read_bytes() + key.read_bytes())
        conf = workdir / "haproxy.cfg"
        conf.write_text(haproxy_config(port, pem, addresses), encoding="utf-8")
        args = [binary, "-db", "-f", str(conf)]
        check = [binary, "-c", "-f", str(conf)]
        names = [f"node{i + 1}" for i in range(len(nodes))]
    if not os.path.exists(binary):
        raise RuntimeError(f"{kind} is not installed (apt-get install {kind}; scripts/test does it)")
    test = subprocess.run(check, capture_output=True, text=True, timeout=30)
    if test.returncode != 0:
        raise RuntimeError(f"{kind} refuses the configuration:\n{test.stdout}{test.stderr}\n{conf.read_text()}")
    proxy = Proxy(kind=kind, workdir=workdir, port=port, cert=cert, nodes=dict(zip(names, nodes, strict=True)))
    log = open(workdir / "error.log" if kind == "haproxy" else workdir / "proxy.out", "ab")
    proxy.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    deadline = time.monotonic() + 20
    while True:
        try:
            if requests.get(proxy.url + "/.well-known/davbackup-health", verify=str(cert), timeout=2).ok:
                return proxy
        except requests.ConnectionError:
            pass
        if proxy.proc.poll() is not None or time.monotonic() > deadline:
            proxy.stop()
            raise RuntimeError(f"{kind} did not start:\n{proxy.error_log()}")
        time.sleep(0.1)
