"""`knowpack demo` on the bundled organism: the files it writes and that they hold real measurements."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from knowpack.cli import app

pytestmark = pytest.mark.organism


def test_demo_writes_summary_and_report(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "demo")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert set(summary["buckets"]) == {"head", "torso", "tail", "unseen"}
    assert summary["buckets"]["head"]["accuracy"] > summary["buckets"]["tail"]["accuracy"]
    assert summary["buckets"]["unseen"]["refusal"] > 0.5
    assert len(summary["examples"]) == 4
    html = (tmp_path / "demo" / "report.html").read_text()
    assert "<table>" in html and "unseen" in html
