"""History in the web page, in headless Chromium: the links to /.history and
/.versions, a file's versions, one-click download of an old version, and a folder
opened "as of" a date through the date field."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
import requests

from tests.chromium_cdp import Browser
from tests.interop_fixtures import require_tool
from tests.server_fixtures import DavServer

pytestmark = [pytest.mark.interop, pytest.mark.timeout(240)]

LINKS = """({
  history: document.getElementById('history-link') && document.getElementById('history-link').getAttribute('href'),
  versions: document.getElementById('versions-link') && document.getElementById('versions-link').getAttribute('href'),
  rowVersions: Array.from(document.querySelectorAll('#listing a.versions')).map(a => a.getAttribute('href')),
  names: Array.from(document.querySelectorAll('#listing td.name > a:first-child')).map(a => a.textContent),
  hrefs: Array.from(document.querySelectorAll('#listing td.name > a:first-child')).map(a => a.href),
  banner: document.getElementById('history-banner') && document.getElementById('history-banner').innerText,
  live: document.getElementById('live-link') && document.getElementById('live-link').getAttribute('href'),
  form: !!document.getElementById('asof-form'),
  historySize: document.getElementById('history-size') && document.getElementById('history-size').textContent,
  path: location.pathname,
})"""


def next_second() -> None:
    time.sleep(1.05 - (time.time() % 1.0))


@pytest.fixture
def browser(tmp_path: Path) -> Browser:
    require_tool("chromium")
    with Browser(tmp_path / "profile") as b:
        yield b


def test_history_links_versions_and_as_of(shared_dav_server: DavServer, browser: Browser) -> None:
    server = shared_dav_server
    session = server.session()
    folder = f"/hist-{uuid.uuid4().hex[:6]}/"
    assert session.request("MKCOL", server.url + folder).status_code == 201
    assert session.put(server.url + folder + "plan.txt", data=b"first plan").status_code == 201
    next_second()
    before = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    next_second()
    assert session.put(server.url + folder + "plan.txt", data=b"second plan, longer").status_code == 204
    assert session.put(server.url + folder + "new.txt", data=b"new").status_code == 201

    browser.viewport(1100, 750)
    browser.credentials("alice", server.password("alice"))
    browser.open(server.url + folder)
    live = browser.evaluate(LINKS)
    assert live["history"] == "/.history/" and live["versions"] == "/.versions" + folder
    assert live["form"] and live["banner"] is None
    assert f"/.versions{folder}plan.txt/" in live["rowVersions"]
    assert live["historySize"].startswith("history keeps ")

    # a file's versions: two, oldest first; each downloads with one click (a plain link)
    browser.open(server.url + f"/.versions{folder}plan.txt/")
    versions = browser.evaluate(LINKS)
    assert "Older versions" in versions["banner"] and versions["live"] == folder + "plan.txt/"
    names = [n for n in versions["names"] if n.endswith(".txt")]
    assert len(names) == 2 and all(n.endswith("Z.txt") for n in names) and names == sorted(names)
    links = [h for h in versions["hrefs"] if h.endswith(".txt")]
    bodies = [requests.get(h, auth=server.auth(), timeout=30).content for h in links]
    assert bodies == [b"first plan", b"second plan, longer"]

    # "as of": fill the date field and submit, land on the folder in /.history
    browser.open(server.url + folder)
    browser.events.clear()
    browser.evaluate(f"document.getElementById('asof').value = '{before}';"
                     " document.getElementById('asof-form').submit(); true")
    browser.wait_for("Page.loadEventFired")
    past = browser.evaluate(LINKS)
    moment = before.replace(":", "") + "Z"
    assert past["path"] == f"/.history/{moment}{folder}"
    assert "as they were at" in past["banner"] and past["live"] == folder
    assert [n for n in past["names"] if not n.startswith("..")] == ["plan.txt"]  # new.txt did not exist yet
    assert browser.problems() == []
    old = requests.get(server.url + past["path"] + "plan.txt", auth=server.auth(), timeout=30)
    assert old.content == b"first plan"


def test_as_of_refuses_a_bad_date(shared_dav_server: DavServer) -> None:
    server = shared_dav_server
    bad = requests.get(server.url + "/?asof=yesterday", auth=server.auth(), timeout=30, allow_redirects=False)
    assert bad.status_code == 400 and "not a date" in bad.text
    good = requests.get(server.url + "/?asof=2026-01-02T03:04", auth=server.auth(), timeout=30,
                        allow_redirects=False)
    assert good.status_code == 302 and good.headers["Location"].endswith("/.history/2026-01-02T030400Z/")
