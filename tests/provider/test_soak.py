"""The soak test, 60-second version: 50 clients of 3 users against a real server
(scripts/soak.py), then every acknowledged file read back after a restart and
``check --read-data``. The 10-minute run is a benchmark (``scripts/soak``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_soak_one_minute(tmp_path: Path):
    report_path = tmp_path / "soak.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "soak.py"), "--seconds", "60", "--gc-every", "20",
         "--json", str(report_path)],
        capture_output=True, text=True, timeout=900,
    )
    assert report_path.exists(), result.stdout + result.stderr
    report = json.loads(report_path.read_text())
    detail = result.stdout[-6000:]
    assert report["unexpected"] == {}, detail
    assert report["client_errors"] == [] and report["stuck_clients"] == 0, detail
    audit = report["audit"]
    assert audit["files"] > 100, detail
    assert (audit["lost"], audit["wrong"], audit["extra_entries"], audit["missing_entries"]) == (0, 0, 0, 0), detail
    assert report["check"]["exit_code"] == 0, detail
    assert report["gc_runs"] and all(run["exit_code"] == 0 for run in report["gc_runs"]), detail
    # every kind of request ran, and resumable uploads were really cut off and resumed
    labels = {row["label"] for row in report["methods"]}
    assert {"PUT", "GET-range", "PROPFIND", "MOVE", "COPY", "DELETE", "LOCK", "UNLOCK", "PUT-range",
            "PATCH-sabredav", "PATCH-ietf"} <= labels, labels
    assert report["cut_requests"].get("PUT", 0) > 0 and report["cut_requests"].get("PATCH", 0) > 0
    assert result.returncode == 0, detail
