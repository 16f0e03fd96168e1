"""The HTML pages: report.html of a run (write_outputs writes it) and session.html of a session.

The default tests read the pages as text (what is on them, what links where, what is escaped); the
slow ones open them in real headless Chromium (tests/browser.py) and check that no error is raised,
no request is blocked and every figure loads — skipped with the reason when Chromium is absent.
"""

from __future__ import annotations

import html
import json
import re
import os
from pathlib import Path

import pandas as pd
import pytest

import browser  # tests/browser.py (conftest puts tests/ on the path)
import octascope
from octascope.results.outputs import save_figure, write_outputs, write_partial_outputs
from octascope.results.report import REPORT_NAME, SESSION_REPORT_NAME, write_run_report, write_session_report

REFUSAL = "no particle could be analysed: particle 1: off the [001] zone axis <streaked> & unclassifiable"
needs_chromium = pytest.mark.skipif(browser.chromium() is None,
                                    reason="Chromium not installed (apt-get install -y chromium): the pages "
                                           "cannot be opened in a real browser here")


def _result():
    from octascope.input.synthetic import SyntheticSpec, make_synthetic

    image, truth = make_synthetic(SyntheticSpec(n_cells=(6, 6), rotation_deg=8.0, particle_angle_deg=7.0, seed=1))
    return octascope.analyze(image, truth=truth, progress=None)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A session folder with an analysed run (one figure, to keep the default run fast) and a
    refused one (write_partial_outputs: columns, the overlay, the region, error.txt)."""
    from octascope.results.figures import network_overlay

    result = _result()
    session = tmp_path_factory.mktemp("session")
    done, refused = session / "runs" / "frame 1 (Å)", session / "runs" / "frame2"
    save_figure(network_overlay(result.image, result.columns, result.octahedra, result.particles), done,
                "network_overlay", ("png",), dpi=60)
    write_outputs(result, done, config={"source": {"path": "frame 1 (Å).tif"}, "denoiser": "none"}, figure_formats=())
    write_partial_outputs(result, refused, REFUSAL)
    return result, session, done, refused


def _hrefs(text: str) -> list[str]:
    return [html.unescape(h) for h in re.findall(r'href="([^"#][^"]*)"', text)]


def _check_links(page: Path) -> list[str]:
    """Every relative link of ``page`` resolves to a file, every #anchor to a section; no link or
    source leaves the machine."""
    from urllib.parse import unquote

    text = page.read_text(encoding="utf-8")
    assert not re.search(r'(src|href)="(https?:)?//', text), "a link or source outside the page's folder"
    ids = set(re.findall(r' id="([^"]+)"', text))
    for anchor in re.findall(r'href="#([^"]*)"', text):
        assert html.unescape(anchor) in ids, f"link to #{anchor} on {page.name}, which has no such section"
    hrefs = _hrefs(text)
    for h in hrefs:
        assert (page.parent / unquote(h)).exists(), f"broken link {h!r} on {page.name}"
    return hrefs


def test_run_report_written_with_the_outputs(runs):
    result, _, done, _ = runs
    page = done / REPORT_NAME
    text = page.read_text(encoding="utf-8")
    summary = json.loads((done / "summary.json").read_text())
    # the headline, with θ1-θ3 defined
    assert "θ1 = mean(φ1, φ2)" in text and "θ3 = (θ1 + θ2)/2" in text
    assert f"octahedra: {summary['n_octahedra']}" in text
    # every figure of the folder is embedded (the page works when it leaves the folder)
    pngs = [p for p in done.glob("*.png") if p.name != "crystal_mask.png"]
    assert len(pngs) == 1 and text.count('src="data:image/png;base64,') == len(pngs)
    # one row per particle, and the CSV tables linked (relative, resolving)
    particles = pd.read_csv(done / "particles.csv")
    table = re.search(r'<table class="sortable" id="particles-table">.*?</table>', text, re.S).group(0)
    assert table.count("<tr>") == len(particles) + 1
    hrefs = _check_links(page)
    for name in ("particles.csv", "octahedra.csv", "columns.csv", "summary.json", "config.yaml"):
        assert name in hrefs
    # uncertainties in words, with this run's numbers; parameters and versions
    assert "statistical" in text and "systematic" in text and 'id="uncertainty-table"' in text
    assert "frame 1 (Å).tif" in text and "numpy" in text
    assert "No flags" in text or "flags" in " ".join(summary.get("flags") or ["flags"])


def test_refused_frame_page_says_why(runs):
    _, _, _, refused = runs
    text = (refused / REPORT_NAME).read_text(encoding="utf-8")
    assert not (refused / "summary.json").exists()
    assert ">refused<" in text and html.escape(REFUSAL) in text and REFUSAL not in text
    assert text.count('src="data:image/png;base64,') >= 1  # what the early stages found
    _check_links(refused / REPORT_NAME)


def test_strings_from_data_and_config_are_escaped(tmp_path):
    evil = '<img src=x onerror="alert(1)">'
    page = write_run_report(tmp_path, summary={"image": {"source": evil}, "flags": [f"flag {evil}"],
                                              "particles": [{"particle": 1, "verdict": "refused", "reasons": evil}]},
                            config={"source": {"path": f"</script>{evil}"}})
    text = page.read_text(encoding="utf-8")
    assert evil not in text and "</script><img" not in text and "<img src=x" not in text
    assert text.count(html.escape(evil)) >= 3
    assert "Content-Security-Policy" in text and "default-src &#x27;none&#x27;" in text


def _session_table(runs_) -> pd.DataFrame:
    """What the batch writes as session.csv: one row per frame and particle (refused: one row)."""
    _, session, done, refused = runs_
    rows = pd.read_csv(done / "particles.csv")
    rows.insert(0, "frame", "frame 1 (Å).tif")
    rows["output_dir"] = str(done.relative_to(session))
    rows["run_id"] = "a1"
    bad = pd.DataFrame([{"frame": "frame2.tif", "particle": 1, "verdict": "refused", "reasons": REFUSAL,
                         "output_dir": str(refused), "run_id": "b2"}])
    return pd.concat([rows, bad], ignore_index=True)


def test_session_page(runs):
    _, session, done, refused = runs
    table = _session_table(runs)
    page = write_session_report(session, table, [done, refused])
    assert page == session / SESSION_REPORT_NAME
    text = page.read_text(encoding="utf-8")
    # a card per frame, with a thumbnail of each (both folders have the overlay) and a link to its page
    assert text.count('<div class="card">') == 2 and text.count('src="data:image/jpeg;base64,') == 2
    hrefs = _check_links(page)
    assert "runs/frame%201%20%28%C3%85%29/report.html" in re.findall(r'href="([^"]+)"', text)
    assert {h for h in hrefs if h.endswith(REPORT_NAME)} == {"runs/frame%201%20%28%C3%85%29/report.html",
                                                             "runs/frame2/report.html"}
    # the table: every row, value ± 1σ paired, the raw value kept for sorting
    body = re.search(r'<table class="sortable" id="session-table">.*?</table>', text, re.S).group(0)
    assert body.count("<tr>") == len(table) + 1
    assert 'data-col="theta3_deg_shell"' in body and 'data-col="theta3_deg_shell_total_err"' not in body
    v = table["theta3_deg_shell"].dropna().iloc[0]
    assert f'data-v="{float(v)!r}"' in body
    assert "1 analysed, 1 refused" in text


# --------------------------------------------------------------------------------------------
# in a real browser
# --------------------------------------------------------------------------------------------

@pytest.mark.slow
@needs_chromium
def test_browser_check_sees_faults(tmp_path):
    """The checker is not blind: a missing image, an outside request and a script error are seen."""
    from octascope.results.report import page

    text = page("faults", '<img src="missing.png" alt="missing"><img src="https://example.invalid/x.png" alt="outside">')
    nonce = re.search(r'nonce="([^"]+)"', text).group(1)
    text = text.replace("</body>", f'<script nonce="{nonce}">undefinedFunction();</script></body>')
    (tmp_path / "faults.html").write_text(text)
    r = browser.check_page(tmp_path / "faults.html")
    assert set(r["broken"]) == {"missing", "outside"}
    assert any("csp" in e for e in r["errors"]) and any("undefinedFunction" in e for e in r["errors"])


@pytest.mark.slow
@needs_chromium
def test_pages_in_chromium(runs, tmp_path):
    """Both pages as a reader opens them: every figure of a full run loads, no error, no blocked
    request, and a click on a column head sorts the table."""
    result, session, _, refused = runs
    full = session / "runs" / "full"
    write_outputs(result, full, config={"denoiser": "none"}, figure_formats=("png",))
    n_figures = len([p for p in full.glob("*.png") if p.name != "crystal_mask.png"])
    assert n_figures >= 10
    for page, sort in ((full / REPORT_NAME, {}), (refused / REPORT_NAME, {})):
        r = browser.check_page(page, sort_columns=sort)
        assert r["errors"] == [] and r["console"] == [] and r["broken"] == []
        assert r["n_images"] == len(list(page.parent.glob("*.png"))) - (page.parent / "crystal_mask.png").exists()
    table = _session_table(runs)
    table = pd.concat([table, table.assign(frame="full.tif", output_dir="runs/full", run_id="c3")], ignore_index=True)
    page = write_session_report(session, table, [session / "runs" / "frame 1 (Å)", refused, full])
    heads = re.findall(r'<th scope="col"[^>]*data-col="([^"]+)"', re.search(
        r'id="session-table">.*?</thead>', page.read_text(), re.S).group(0))
    col = heads.index("theta3_deg_shell")
    r = browser.check_page(page, sort_columns={"session-table": col})
    assert r["errors"] == [] and r["console"] == [] and r["broken"] == [] and r["n_images"] == 3
    up, down = ([float(k) for k in keys if k] for keys in r["sorts"]["session-table"]["keys"])
    assert len(up) == table["theta3_deg_shell"].notna().sum() and up == sorted(up) and down == sorted(up, reverse=True)
    shots = os.environ.get("OCTASCOPE_SCREENSHOTS")  # a folder: keep screenshots of the pages to look at
    if shots:
        browser.screenshot(full / REPORT_NAME, Path(shots) / "test-run-report.png", height=3000)
        browser.screenshot(page, Path(shots) / "test-session.png", height=1600)
