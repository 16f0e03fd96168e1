"""Open an HTML page in real headless Chromium and report what a reader's browser would see go wrong.

Used by tests/results/test_report.py. Chromium's ``--dump-dom`` prints the DOM after the page has loaded;
a checker script is put into a copy of the page (first in ``<head>``, with the page's own CSP nonce so
the page's Content-Security-Policy lets it run) that records

- uncaught errors (``window.onerror``, including errors of the page's own script),
- resource load failures (``error`` events in the capture phase: an ``<img>`` that does not load),
- Content-Security-Policy violations (``securitypolicyviolation``: a request the page must not make),
- ``console.error`` calls,

and after ``load`` checks every ``<img>`` (``complete`` and ``naturalWidth > 0``), clicks the first
column head of each sortable table twice and records the cells' sort keys after each click; the result
is written as JSON into a ``<pre id="__octascope_check">`` that ``--dump-dom`` prints. Chromium's own
console log (``--enable-logging=stderr --v=0``: ``CONSOLE`` lines) is read as a second witness.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

CHECK_ID = "__octascope_check"

_CHECKER = """
(function () {
  var errors = [];
  window.addEventListener("error", function (e) {
    var t = e.target;
    if (t && t !== window && t.tagName) { errors.push("load failed: <" + t.tagName.toLowerCase() + "> "
        + String(t.getAttribute("src") || t.getAttribute("href") || "").slice(0, 80)); }
    else { errors.push("error: " + e.message); }
  }, true);
  document.addEventListener("securitypolicyviolation", function (e) {
    errors.push("csp: " + e.violatedDirective + " " + e.blockedURI);
  });
  var ce = console.error;
  console.error = function () { errors.push("console.error: " + Array.prototype.join.call(arguments, " "));
                                return ce.apply(console, arguments); };
  window.addEventListener("load", function () {
    var imgs = document.images, broken = [];
    for (var i = 0; i < imgs.length; i++) {
      if (!imgs[i].complete || imgs[i].naturalWidth === 0) { broken.push(imgs[i].getAttribute("alt") || String(i)); }
    }
    var sorts = {};
    var tables = document.querySelectorAll("table.sortable");
    for (var k = 0; k < tables.length; k++) {
      var t = tables[k], heads = t.tHead ? t.tHead.rows[0].cells : [];
      if (!heads.length) { continue; }
      var col = Number(t.getAttribute("data-check-col") || 0), keys = [];
      for (var c = 0; c < 2; c++) {
        heads[col].click();
        keys.push(Array.prototype.map.call(t.tBodies[0].rows, function (r) {
          var cell = r.cells[col]; return cell ? (cell.getAttribute("data-v") || "") : ""; }));
      }
      sorts[t.id || String(k)] = {column: heads[col].getAttribute("data-col"), keys: keys,
                                  aria: heads[col].getAttribute("aria-sort")};
    }
    var pre = document.createElement("pre");
    pre.id = "%s";
    pre.textContent = JSON.stringify({errors: errors, n_images: imgs.length, broken: broken, sorts: sorts});
    document.body.appendChild(pre);
  });
})();
""" % CHECK_ID


def chromium() -> str | None:
    """The Chromium (or Chrome) executable, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _flags(exe: str) -> list[str]:
    return [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
            "--allow-file-access-from-files"]


def check_page(page: Path, *, sort_columns: dict[str, int] | None = None, timeout_s: float = 90) -> dict:
    """Open ``page`` (a copy of it with the checker, in the same folder so relative links resolve) in
    headless Chromium; return ``{"errors": [...], "n_images": n, "broken": [...], "sorts": {...},
    "console": [...]}``. ``sort_columns``: table id -> index of the column head to click."""
    exe = chromium()
    if exe is None:
        raise RuntimeError("chromium not found")
    text = page.read_text(encoding="utf-8")
    nonce = re.search(r'<script nonce="([^"]+)"', text)
    attr = f' nonce="{html.escape(nonce.group(1))}"' if nonce else ""
    checker = f"<script{attr}>{_CHECKER}</script>"
    for table_id, col in (sort_columns or {}).items():
        text = text.replace(f'id="{table_id}"', f'id="{table_id}" data-check-col="{col}"', 1)
    # after the CSP meta (so the policy is in force for everything the page does), before any content
    head_end = text.index("<title>")
    text = text[:head_end] + checker + "\n" + text[head_end:]
    copy = page.with_name(f".check-{page.name}")
    copy.write_text(text, encoding="utf-8")
    try:
        with tempfile.TemporaryDirectory() as profile:
            proc = subprocess.run(_flags(exe) + [f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
                                                 "--virtual-time-budget=10000", "--dump-dom", copy.resolve().as_uri()],
                                  capture_output=True, text=True, timeout=timeout_s)
    finally:
        copy.unlink(missing_ok=True)
    m = re.search(rf'<pre id="{CHECK_ID}">(.*?)</pre>', proc.stdout, re.S)
    if m is None:
        raise AssertionError(f"the checker did not report (exit {proc.returncode}); stderr tail:\n{proc.stderr[-2000:]}")
    result = json.loads(html.unescape(m.group(1)))
    result["console"] = [line for line in proc.stderr.splitlines() if "CONSOLE" in line]
    return result


def screenshot(page: Path, out: Path, *, width: int = 1280, height: int = 2400, timeout_s: float = 90) -> Path:
    """A PNG of ``page`` as Chromium draws it (the top ``height`` pixels)."""
    exe = chromium()
    if exe is None:
        raise RuntimeError("chromium not found")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(_flags(exe) + [f"--user-data-dir={profile}", "--hide-scrollbars", f"--window-size={width},{height}",
                                      f"--screenshot={out}", "--virtual-time-budget=5000", page.resolve().as_uri()],
                       capture_output=True, text=True, timeout=timeout_s)
    return out
