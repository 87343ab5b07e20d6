"""davbackup's web page in headless Chromium, driven over the DevTools protocol.

Each page is opened at a desktop and at a phone's width; the test reads the DOM and
the layout from the running page (title, logo loaded, user name, usage, sign-out
hint, no horizontal scrolling on the phone), collects every console message,
uncaught exception and failed request, and saves a screenshot whose size is
checked. The screenshots stay in :data:`SHOTS` for humans.
"""

from __future__ import annotations

import struct
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.chromium_cdp import Browser
from tests.interop_fixtures import require_tool
from provider.dir_browser import human_size
from tests.server_fixtures import DavServer, davbackup

pytestmark = [pytest.mark.interop, pytest.mark.timeout(240)]

SHOTS = Path("/tmp/davbackup-web-page")
DESKTOP = (1100, 750)
PHONE = (390, 844)
UA = {
    "windows": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
               "(KHTML, like Gecko) Chrome/120.0 Safari/537.36",
    "macos": "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_1) AppleWebKit/605.1.15 "
             "(KHTML, like Gecko) Version/17.1 Safari/605.1.15",
    "linux": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
             "Chrome/120.0 Safari/537.36",
    "ios": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
           "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
    "android": "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 "
               "(KHTML, like Gecko) Chrome/120.0 Mobile Safari/537.36",
}
LONG_NAME = "Steuererklärung 2025 – Belege und Quittungen (endgültige Fassung).pdf"

PAGE_FACTS = """({
  title: document.title,
  header: document.querySelector('header').innerText,
  body: document.body.innerText,
  logoLoaded: document.querySelector('.brand img').naturalWidth > 0,
  logoAlt: document.querySelector('.brand img').alt,
  user: document.getElementById('user-name') && document.getElementById('user-name').textContent,
  access: document.getElementById('access') && document.getElementById('access').textContent,
  usage: document.getElementById('usage') && document.getElementById('usage').textContent,
  signOut: document.getElementById('sign-out') && document.getElementById('sign-out').textContent,
  connect: document.getElementById('connect') && document.getElementById('connect').getAttribute('href'),
  names: Array.from(document.querySelectorAll('#listing td.name > a:first-child')).map(a => a.textContent),
  scrollWidth: document.documentElement.scrollWidth,
  innerWidth: window.innerWidth,
  offscreen: Array.from(document.querySelectorAll('header, main a, #listing td, .url'))
      .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1).length,
})"""


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.fixture(scope="module")
def folder(shared_dav_server: DavServer) -> str:
    require_tool("chromium")
    SHOTS.mkdir(exist_ok=True)
    session = shared_dav_server.session()
    path = f"/web-{uuid.uuid4().hex[:6]}/"
    base = shared_dav_server.url + path
    assert session.request("MKCOL", base).status_code == 201
    assert session.request("MKCOL", base + quote("Fotos ü")).status_code == 201
    for name, size in ((LONG_NAME, 150_000), ("notes.txt", 12), (".DS_Store", 6)):
        assert session.put(base + quote(name), data=b"x" * size).status_code == 201
    return path


@pytest.fixture
def browser(tmp_path: Path) -> Browser:
    require_tool("chromium")
    with Browser(tmp_path / "profile") as b:
        yield b


def open_page(browser: Browser, server: DavServer, path: str, user: str = "alice") -> dict:
    browser.credentials(user, server.password(user))
    browser.open(server.url + quote(path, safe="/?"))
    return browser.evaluate(PAGE_FACTS)


@pytest.mark.parametrize("size", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_listing(shared_dav_server: DavServer, folder: str,
                 browser: Browser, size: tuple[int, int]) -> None:
    width, height = size
    browser.viewport(width, height, mobile=size == PHONE,
                     user_agent=UA["android"] if size == PHONE else None)
    facts = open_page(browser, shared_dav_server, folder)
    assert facts["title"] == f"{folder} – davbackup"
    assert "WsgiDAV" not in facts["body"] and "WsgiDAV" not in facts["title"]
    assert facts["logoLoaded"] and facts["logoAlt"] == "davbackup logo"
    assert "davbackup" in facts["header"]
    # the account line: name, access, usage and how to sign out; no stray punctuation
    assert facts["user"] == "alice" and facts["access"] == "read-write"
    assert facts["usage"].endswith(" used") and facts["usage"][0].isdigit()
    assert "close every window" in facts["signOut"]
    for stray in (". ,", "roles:", "realm:", "Authenticated user"):
        assert stray not in facts["body"], stray
    assert facts["connect"].endswith("?connect")
    # the listing: folders first, OS metadata hidden
    assert facts["names"] == [".. (up one folder)", "Fotos ü", "notes.txt", LONG_NAME]
    assert "\t150 kB" in facts["body"]
    # nothing wider than the screen (a phone must not scroll sideways)
    assert facts["scrollWidth"] <= facts["innerWidth"], facts
    assert facts["offscreen"] == 0
    assert browser.problems() == []
    shot = browser.screenshot(SHOTS / f"listing-{width}.png")
    assert png_size(shot) == (width, height)
    assert len(shot) > 8_000


@pytest.mark.parametrize("platform", sorted(UA))
def test_connect_page_for_each_platform(shared_dav_server: DavServer, folder: str,
                                        browser: Browser, platform: str) -> None:
    phone = platform in ("ios", "android")
    width, height = PHONE if phone else DESKTOP
    browser.viewport(width, height, mobile=phone, user_agent=UA[platform])
    open_page(browser, shared_dav_server, folder + "?connect")
    facts = browser.evaluate("""({
      title: document.title,
      url: document.getElementById('dav-url').textContent,
      sections: Array.from(document.querySelectorAll('section.platform')).map(s => s.id),
      detected: Array.from(document.querySelectorAll('section.detected')).map(s => s.id),
      open: Array.from(document.querySelectorAll('details[open]')).map(d => d.parentElement.id),
      text: document.querySelector('section.detected').innerText,
      gnome: document.getElementById('gnome-url') && document.getElementById('gnome-url').textContent,
      plain: !!document.getElementById('plain-http'),
      scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth,
    })""")
    assert facts["title"] == "Connect a drive – davbackup"
    assert facts["url"] == shared_dav_server.url + quote(folder)
    assert facts["detected"] == [f"platform-{platform}"] == facts["open"]
    assert facts["sections"][0] == f"platform-{platform}" and len(facts["sections"]) == 5
    assert facts["plain"], "a plain-HTTP server must say so"
    expected = {
        "windows": "Map network drive", "macos": "Connect to Server",
        "linux": "Other Locations", "ios": "Connect to Server", "android": "WebDAV location",
    }[platform]
    assert expected in facts["text"]
    assert facts["gnome"] == f"dav://127.0.0.1:{shared_dav_server.port}{quote(folder)}"
    assert facts["scrollWidth"] <= facts["innerWidth"], facts
    assert browser.problems() == []
    shot = browser.screenshot(SHOTS / f"connect-{platform}.png")
    assert png_size(shot) == (width, height)


def test_reader_sees_read_only(shared_dav_server: DavServer, browser: Browser) -> None:
    browser.viewport(*DESKTOP)
    facts = open_page(browser, shared_dav_server, "/", user="reader")
    assert facts["user"] == "reader" and facts["access"] == "read-only"
    assert "read-write" not in facts["body"]
    assert browser.problems() == []


def test_assets_need_no_login_and_pages_do(shared_dav_server: DavServer,
                                           folder: str) -> None:
    import requests
    for asset in ("style.css", "logo.svg"):
        answer = requests.get(f"{shared_dav_server.url}/:dir_browser/{asset}", timeout=30)
        assert answer.status_code == 200, asset
    for page in (folder, folder + "?connect"):
        assert requests.get(shared_dav_server.url + quote(page, safe="/?"),
                            timeout=30).status_code == 401


def test_usage_shows_the_quota(dav_server: DavServer, browser: Browser) -> None:
    """With a quota (``davbackup user quota``) the account line says how much of it is used."""
    server = dav_server
    server.stop()
    davbackup(["user", "quota", "bob", "--quota", "2M", "--repo", str(server.repo)], server.env)
    server.start()
    session = server.session("bob")
    assert session.put(f"{server.url}/half.bin", data=b"b" * 1_000_000).status_code == 201
    browser.viewport(*DESKTOP)
    facts = open_page(browser, server, "/", user="bob")
    assert facts["usage"] == f"1.0 MB of {human_size(2 * 1024 * 1024)} used"
    assert browser.problems() == []
