"""The evidence report's writers (evidence.py; the checks themselves run in scripts/evidence
against a real Envoy): a row's text and its receipts are untrusted (an agent names its tools), so
the HTML page escapes them and loads nothing; the Markdown table stays a table; a known gap is a
FAIL that names its issue. The page is opened in headless Chromium."""

from __future__ import annotations

from pathlib import Path

import browser
from evidence import Row, write_html, write_markdown

HOSTILE = "<img src=x onerror=\"document.title='pwned'\"> | `x`"
META = {"commit": "abc1234", "date": "2026-01-01 00:00 UTC", "envoy": "1.40.0", "machine": "x86_64, 2 cores",
        "seconds": 70.0, "passed": 1, "failed": 1, "known": 1}


def rows() -> list[Row]:
    ok = Row("R1.1", "R1", "intercept every action", "submit `delete_branch`", "DENY",
             observed=f"{HOSTILE}: DENY", passed=True, verified=True, verify="ok", timeline="timelines/R1.1.html",
             receipts=[{"session": "s<1>", "seq": 1, "event": "action", "decision": "DENY", "rule": "r",
                        "what": f"tools/call {HOSTILE}", "signed": True}])
    gap = Row("R9.2", "R9", "least privilege", "standing token", "scoped token", gap="#19 (not built)",
              observed="the standing token reached the tool", verified=True, verify="ok")
    return [ok, gap]


def test_html_escapes_rows_and_receipts_and_loads_nothing(tmp_path: Path) -> None:
    page = write_html(rows(), META)
    assert "<img" not in page and "<script" not in page
    assert "&lt;img src=x onerror=&quot;document.title=&#x27;pwned&#x27;&quot;&gt;" in page
    assert "<code>delete_branch</code>" in page, "a `code` span of the row's own text"
    assert "<code>s&lt;1&gt;</code>" in page
    assert "default-src &#x27;none&#x27;" in page and "unsafe-inline" not in page
    assert 'class="GAP">FAIL (known gap, #19 (not built))' in page
    assert 'class="PASS">PASS' in page
    path = tmp_path / "report.html"
    path.write_text(page)
    dom = browser.dump_dom(path.as_uri())
    assert "<img" not in dom and "1 passed, 1 failed" in dom


def test_markdown_keeps_one_table_row_per_row() -> None:
    text = write_markdown(rows(), META)
    table = [line for line in text.splitlines() if line.startswith("| R")]
    assert len(table) == 2
    assert all(line.count(" | ") == 6 for line in table), table  # `|` in the text is escaped
    assert "**FAIL (known gap, #19 (not built))**" in table[1]
    assert "- timeline: [timelines/R1.1.html](timelines/R1.1.html)" in text
