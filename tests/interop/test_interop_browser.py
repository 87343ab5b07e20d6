"""Headless Chromium on the HTML directory listing.

Credentials travel in the URL (``http://user:pass@127.0.0.1:P/``): Chromium answers
the server's Basic challenge with them and reuses them for the page's subresources.
The DOM is dumped with ``--dump-dom`` and parsed: every uploaded name (NFC, NFD,
reserved characters, CJK, emoji) must be listed, and every file link's ``href``,
resolved against the page URL, must return the uploaded bytes. One screenshot is
kept at :data:`SCREENSHOT` for humans.
"""

from __future__ import annotations

import html.parser
import os
import random
from pathlib import Path
from urllib.parse import quote, unquote, urljoin, urlsplit

import pytest

from tests.interop_fixtures import NFC_NAME, NFD_NAME, RESERVED_NAME, require_tool, run, \
    url_of
from tests.server_fixtures import DavServer

pytestmark = [pytest.mark.interop, pytest.mark.timeout(180)]

SCREENSHOT = Path("/tmp/davbackup-interop-browser.png")

FILES: dict[str, bytes] = {
    NFC_NAME: "café: précomposé\n".encode(),
    NFD_NAME: b"decomposed\n",
    RESERVED_NAME: b"reserved\n",
    "日本語 файл.txt": "日本語のテキスト — текст\n".encode(),
    "emoji 🎉.bin": random.Random(51).randbytes(200_000),
    "big.bin": random.Random(52).randbytes(3 * 1024 * 1024 + 1),
}
SUBDIR = "ünïcødé dir"


class Links(html.parser.HTMLParser):
    """``(href, text)`` of every ``<a>`` in a document."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self._href: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._href = dict(attrs).get("href") or ""
            self._text = []

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._href is not None:
            self.links.append((self._href, "".join(self._text).strip()))
            self._href = None


@pytest.fixture(scope="module")
def browser_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_tool("chromium")
    return tmp_path_factory.mktemp("chromium")


def chromium(profile: Path, url: str, *extra: str) -> str:
    args = [
        "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
        *extra, url,
    ]
    return run(args, timeout=90, env={**os.environ, "HOME": str(profile)}).stdout


def with_credentials(server: DavServer, path: str, user: str = "alice") -> str:
    return (f"http://{user}:{quote(server.password(user), safe='')}@127.0.0.1:"
            f"{server.port}{quote(path, safe='/')}")


@pytest.fixture(scope="module")
def uploaded(shared_dav_server: DavServer) -> str:
    session = shared_dav_server.session()
    for collection in ("/browser/", f"/browser/{SUBDIR}/"):
        assert session.request("MKCOL", url_of(shared_dav_server, collection),
                               timeout=30).status_code == 201
    for name, data in FILES.items():
        response = session.put(url_of(shared_dav_server, f"/browser/{name}"), data=data,
                               timeout=60)
        assert response.status_code == 201, name
    session.put(url_of(shared_dav_server, f"/browser/{SUBDIR}/inner ü.txt"),
                data=b"inner\n", timeout=30)
    return "/browser/"


def test_listing_shows_names_and_links_download_the_bytes(
        shared_dav_server: DavServer, uploaded: str, browser_dir: Path) -> None:
    page_url = with_credentials(shared_dav_server, uploaded)
    dom = chromium(browser_dir, page_url, "--dump-dom")
    parser = Links()
    parser.feed(dom)
    by_text = {text: href for href, text in parser.links}
    for name in [*FILES, SUBDIR]:
        assert name in by_text, f"{name!r} not listed; links: {sorted(by_text)}"
    # each file link, resolved like the browser does, names the file and returns its bytes
    base = f"{shared_dav_server.url}{uploaded}"
    session = shared_dav_server.session()
    for name, data in FILES.items():
        target = urljoin(base, by_text[name])
        assert unquote(urlsplit(target).path) == f"/browser/{name}"
        response = session.get(target, timeout=60)
        assert response.status_code == 200, target
        assert response.content == data, name
    # the directory link leads to a listing of its own
    sub_url = urljoin(base, by_text[SUBDIR])
    assert unquote(urlsplit(sub_url).path) == f"/browser/{SUBDIR}/"
    sub = Links()
    sub.feed(chromium(browser_dir, with_credentials(shared_dav_server,
                                                    unquote(urlsplit(sub_url).path)),
                      "--dump-dom"))
    assert "inner ü.txt" in {text for _, text in sub.links}


def test_browser_downloads_text_file_itself(shared_dav_server: DavServer,
                                            uploaded: str, browser_dir: Path) -> None:
    """Chromium renders a text/plain UTF-8 file in a <pre>: the text arrives intact."""
    dom = chromium(browser_dir, with_credentials(shared_dav_server,
                                                 f"{uploaded}日本語 файл.txt"), "--dump-dom")
    assert FILES["日本語 файл.txt"].decode().strip() in html.unescape(dom)


def test_listing_without_credentials_is_refused(shared_dav_server: DavServer,
                                                uploaded: str, tmp_path: Path) -> None:
    require_tool("chromium")
    dom = chromium(tmp_path, f"{shared_dav_server.url}{uploaded}", "--dump-dom")
    assert "big.bin" not in dom
    assert NFC_NAME not in dom


def test_screenshot(shared_dav_server: DavServer, uploaded: str,
                    browser_dir: Path) -> None:
    SCREENSHOT.unlink(missing_ok=True)
    chromium(browser_dir, with_credentials(shared_dav_server, uploaded),
             f"--screenshot={SCREENSHOT}", "--window-size=1100,700",
             "--hide-scrollbars")
    assert SCREENSHOT.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert SCREENSHOT.stat().st_size > 5_000


def test_listing_states_read_only_access_for_reader(shared_dav_server: DavServer,
                                                    browser_dir: Path) -> None:
    """The page tells the user what they may do: a user with role ``ro`` (whose PUT
    answers 403) must not be told "access: read-write"."""
    refused = shared_dav_server.session("reader").put(
        url_of(shared_dav_server, "/reader-probe.txt"), data=b"x", timeout=30)
    assert refused.status_code == 403
    dom = chromium(browser_dir, with_credentials(shared_dav_server, "/", "reader"),
                   "--dump-dom")
    assert 'Signed in as <span class="user" id="user-name">reader</span>' in html.unescape(dom)
    assert "read-only" in dom, "the reader's listing does not say read-only"
    assert "read-write" not in dom, "the reader's listing claims read-write access"
