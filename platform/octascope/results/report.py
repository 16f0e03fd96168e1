"""The report of a run and of a session: one self-contained HTML page each, read from disk.

:func:`write_run_report` writes ``report.html`` into a run folder (:func:`octascope.results.outputs.write_outputs`
calls it before ``summary.json``; :func:`~octascope.results.outputs.write_partial_outputs` for a refused
frame); :func:`write_session_report` writes the page of a session (a batch over many frames) from the
session table and the run folders.

How the pages are made, and why:

- **Figures embedded, files linked.** The figures are embedded in the page as ``data:`` URIs (the PNG
  already written; an SVG where no PNG was), so ``report.html`` alone — mailed, attached to a
  notebook entry, opened in MLflow's artifact view — still shows every figure; relative ``src``
  links would break as soon as the page leaves its folder. The CSV tables, the SVG figures and the
  session page's links to the run pages are relative links (``href``), which work wherever the
  folder is copied or unzipped to. A run page is ≈1.3× the size of its PNGs.
- **Nothing from outside.** No server, no CDN, no web font, no network request: the style is inline,
  the one script (sorting the tables by a click on a column head) is inline and the page's
  Content-Security-Policy allows no fetch at all (``default-src 'none'``) and no script but its own
  (a per-page nonce).
- **Escaped.** Every string that comes from the data or the configuration (file names, config values,
  flags, table cells) goes through :func:`html.escape`; every link through
  :func:`urllib.parse.quote`. A file called ``<script>.tif`` shows as its name.
- **Read from the folder.** Everything on a run page comes from the files of the run folder
  (``summary.json``, ``config.yaml``, ``particles.csv``, ``error.txt``, the figures) or from the
  ``summary``/``config`` given, so a page can be rebuilt for any finished folder.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import secrets
import time
import urllib.parse
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from octascope.results.atomic import atomic_write
from octascope.results.figures import L_DEFINITION, PHI_DEFINITION, THETA_DEFINITION
from octascope.results.summary import core_shell_line, tilt_lines
from octascope.results.tracking import code_version, package_versions

#: file name of a run's page (in the run folder)
REPORT_NAME = "report.html"
#: file name of a session's page (in the session folder)
SESSION_REPORT_NAME = "session.html"

#: figures shown on a run page, in this order: (file stem, heading, caption); others follow
FIGURES: tuple[tuple[str, str, str], ...] = (
    ("network_overlay", "The image and the octahedral network",
     "The (denoised) image with the atomic columns found, coloured by species (Pb red, X purple, Cs orange; "
     "hollow: at the rim of a particle, not measured), the Pb–X bonds of the octahedral network and, with several "
     "particles or a refused one, each particle's outline and number."),
    ("theta_maps", "Octahedral tilt θ1, θ2, θ3",
     "One tile per octahedron (its unit cell), translucent over the image. {theta}. {phi}."),
    ("bond_length_maps", "Bond lengths L1, L2", "One tile per octahedron over the image. {L}."),
    ("theta_uncertainty_map", "Uncertainty of θ3",
     "The total 1σ of each octahedron's θ3: the image's noise and the systematic part together (see "
     "<a href=\"#uncertainties\">Uncertainties</a>)."),
    ("tilt_histograms", "Tilts in the core and the shell",
     "How θ1, θ2, θ3 are distributed over the octahedra of the core and of the shell (the outer cells of each "
     "particle). {theta}."),
    ("tilt_line_profile", "Tilt along a line",
     "θ1–θ3 along the lattice direction a1 through the particle's centre, each point the mean of four lattice "
     "rows in one lattice spacing (± its standard error)."),
    ("phi_maps", "Pb–X bond tilts φ1–φ4", "{phi}. θ1–θ3 are means of these."),
    ("cs_spacing_maps", "Cs–Cs spacings", "C1 along a1, C2 along a2, C3 their mean, per Cs column."),
    ("pb_spacing_maps", "Pb–Pb spacings", "P1 along a1, P2 along a2, P3 their mean, per Pb column."),
    ("spacing_line_profile", "Spacings along a line", "C3 and P3 along a1 through the centre (± standard error)."),
    ("crystal_region", "The crystal region",
     "Where the Bragg-filtered image stands above the image's own noise (red outline), or the region given; "
     "columns outside it were dropped."),
    ("particle_histograms", "The particles of the frame", "Sizes and mean θ3 per analysed particle."),
)

#: files a run folder may hold, with what they are (shown in the file list)
FILE_NOTES = {
    "particles.csv": "one row per particle: verdict, size, lattice, mean tilts with uncertainties",
    "octahedra.csv": "one row per octahedron: θ1–θ3, φ1–φ4, σ1–σ4, L1, L2 with their 1σ, shell, particle",
    "columns.csv": "one row per atomic column: position, species, fit, position 1σ",
    "lattice.csv": "Cs–Cs and Pb–Pb spacings per column",
    "accuracy_matches.csv": "columns matched to the truth, with their errors",
    "accuracy_octahedra.csv": "octahedra matched to the truth, with their errors",
    "summary.json": "every number of this page, machine-readable (written last: the folder is complete)",
    "config.yaml": "the resolved configuration of the run",
    "error.txt": "why the frame was refused",
    "crystal_mask.png": "the crystal region as a mask (255 = crystal)",
    "denoised.npy": "the denoised image",
}

#: the columns of particles.csv shown on a run page (the CSV has all)
PARTICLE_COLUMNS = ("particle", "verdict", "trusted", "reasons", "touches_edge", "size_a1_nm", "size_a2_nm",
                    "rotation_deg", "a1_A", "a2_A", "zone_axis", "n_octahedra_measured",
                    "n_octahedra_core", "theta1_deg_core", "theta2_deg_core", "theta3_deg_core",
                    "n_octahedra_shell", "theta1_deg_shell", "theta2_deg_shell", "theta3_deg_shell",
                    "dtheta3_core_minus_shell_deg", "dtheta3_verdict")

#: names the session table may give its output-folder and frame columns
OUTPUT_COLUMN_NAMES = ("output_dir", "output_folder", "output", "run_dir", "folder")
FRAME_COLUMN_NAMES = ("frame", "input", "source", "image", "file")


# ------------------------------------------------------------------------------------------------
# small pieces: escaping, numbers, tables
# ------------------------------------------------------------------------------------------------

def esc(value: Any) -> str:
    """``value`` as text safe in HTML content and in quoted attributes."""
    return html.escape(str(value), quote=True)


def link(path: str | Path) -> str:
    """A relative path as an escaped, URL-quoted ``href`` value (spaces, ``#``, ``?``, non-ASCII)."""
    text = Path(path).as_posix() if isinstance(path, Path) else str(path).replace(os.sep, "/")
    return esc(urllib.parse.quote(text, safe="/"))


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
        and math.isfinite(float(value))


def fmt(value: Any) -> str:
    """A table cell as text: 4 significant digits, yes/no, — for missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if not math.isfinite(v):
            return "—"
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
            return f"{v:.3g}"
        return f"{v:.4g}"
    return str(value)


def fmt_pm(value: Any, error: Any) -> str:
    """``value ± error`` with the value rounded to the error's second significant digit."""
    if not _finite(value):
        return "—"
    if not _finite(error) or float(error) <= 0:
        return fmt(value)
    digits = max(0, min(6, 1 - int(math.floor(math.log10(float(error))))))
    return f"{float(value):.{digits}f} ± {float(error):.{digits}f}"


def error_column(columns: Sequence[str], name: str) -> str | None:
    """The column holding the 1σ of ``name``: ``<name>_total_err`` (statistical and systematic),
    else ``<name>_err``; for a name ending in a unit (``…_deg``) also ``<stem>_total_err_<unit>``."""
    cands = [f"{name}_total_err", f"{name}_err"]
    stem, _, unit = name.rpartition("_")
    if stem and unit in ("deg", "A", "pm", "nm"):
        cands += [f"{stem}_total_err_{unit}", f"{stem}_err_{unit}"]
    return next((c for c in cands if c in columns), None)


def _sort_key(value: Any) -> str:
    """The ``data-v`` of a cell: what the sort compares (numbers as numbers, missing as empty)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "1" if value else "0"
    if isinstance(value, (int, float, np.integer, np.floating)):
        v = float(value)
        return repr(v) if math.isfinite(v) else ""
    return str(value)


def html_table(df: pd.DataFrame, *, table_id: str | None = None, pair_errors: bool = True,
               links: Mapping[str, Mapping[Any, str]] | None = None, caption: str | None = None) -> str:
    """A sortable HTML table of ``df``: every cell escaped, its raw value in ``data-v``.

    With ``pair_errors`` a column with an uncertainty column (:func:`error_column`) is shown as
    ``value ± error`` and the uncertainty column is not shown on its own (the cell keeps the raw
    error in ``data-err``). ``links``: column -> {cell value -> relative href} makes those cells links.
    """
    cols = [str(c) for c in df.columns]
    pairs: dict[str, str] = {}
    if pair_errors:
        for c in cols:
            e = error_column(cols, c)
            if e is not None and e not in pairs and c not in pairs.values() and pd.api.types.is_numeric_dtype(df[c]):
                pairs[c] = e
    shown = [c for c in cols if c not in set(pairs.values())]
    head = "".join(f'<th scope="col" tabindex="0" data-col="{esc(c)}">{esc(c)}'
                   + (' <span class="pm">± 1σ</span>' if c in pairs else "") + "</th>" for c in shown)
    body = []
    records = df.to_dict("records")
    for row in records:
        cells = []
        for c in shown:
            v = row.get(c)
            if c in pairs:
                e = row.get(pairs[c])
                text = fmt_pm(v, e)
                attrs = f' data-v="{esc(_sort_key(v))}" data-err="{esc(_sort_key(e))}"'
            else:
                text = fmt(v)
                attrs = f' data-v="{esc(_sort_key(v))}"'
            href = (links or {}).get(c, {}).get(v) if v is not None else None
            inner = f'<a href="{link(href)}">{esc(text)}</a>' if href else esc(text)
            cls = (' class="num"' if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
                   else ' class="long"' if len(text) > 40 else "")  # long text: a wider column, not a tall row
            cells.append(f"<td{cls}{attrs}>{inner}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    ident = f' id="{esc(table_id)}"' if table_id else ""
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    return (f'<div class="scroll"><table class="sortable"{ident}>{cap}<thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def key_value_table(rows: Iterable[tuple[str, Any]], *, table_id: str | None = None) -> str:
    """A two-column table (name, value), both escaped."""
    ident = f' id="{esc(table_id)}"' if table_id else ""
    body = "".join(f"<tr><th scope=\"row\">{esc(k)}</th><td>{esc(fmt(v))}</td></tr>" for k, v in rows)
    return f'<table class="kv"{ident}><tbody>{body}</tbody></table>'


def data_uri(path: Path) -> str | None:
    """A figure file as a ``data:`` URI (PNG, SVG, JPEG), or None when it cannot be read."""
    mime = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}.get(
        path.suffix.lower())
    try:
        raw = path.read_bytes() if mime else None
    except OSError:
        return None
    if not raw:
        return None
    return f"data:{mime};base64,{base64.b64encode(raw).decode('ascii')}"


def thumbnail_uri(path: Path, size_px: int = 360) -> str | None:
    """A small JPEG of a figure as a ``data:`` URI (for the session page), or None."""
    try:
        # lazy: Pillow, only when the report is written
        from PIL import Image as PILImage

        with PILImage.open(path) as im:
            im = im.convert("RGB")
            im.thumbnail((size_px, size_px))
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=82)
    except Exception:  # noqa: BLE001 - a missing or unreadable figure gives no thumbnail, not an error
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


# ------------------------------------------------------------------------------------------------
# the page
# ------------------------------------------------------------------------------------------------

_CSS = """
:root { --ink: #1b1f24; --muted: #57606a; --line: #d0d7de; --bg: #f6f8fa; --ok: #1a7f37; --warn: #9a6700;
        --bad: #cf222e; }
* { box-sizing: border-box; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: var(--ink);
       margin: 0 auto; max-width: 1280px; padding: 1.2rem 1.6rem 3rem; }
h1 { font-size: 1.5rem; margin: 0.2rem 0 0.3rem; word-break: break-word; }
h2 { font-size: 1.2rem; margin: 2rem 0 0.6rem; padding-bottom: 0.2rem; border-bottom: 1px solid var(--line); }
h3 { font-size: 1.02rem; margin: 1.2rem 0 0.4rem; }
.sub { color: var(--muted); margin: 0 0 0.8rem; word-break: break-word; }
nav { position: sticky; top: 0; background: white; padding: 0.4rem 0; border-bottom: 1px solid var(--line);
      z-index: 2; font-size: 0.9rem; }
nav a { margin-right: 0.9rem; }
a { color: #0969da; }
.badge { display: inline-block; padding: 0.1rem 0.55rem; border-radius: 1rem; font-size: 0.85rem; font-weight: 600;
         color: white; vertical-align: middle; }
.ok { background: var(--ok); } .warn { background: var(--warn); } .bad { background: var(--bad); }
.glance { font: 13.5px/1.45 ui-monospace, "DejaVu Sans Mono", monospace; background: var(--bg); padding: 0.7rem 0.9rem;
          border-radius: 6px; white-space: pre-wrap; word-break: break-word; margin: 0; }
.notice { border-left: 4px solid var(--warn); background: #fff8c5; padding: 0.5rem 0.9rem; margin: 0.6rem 0; }
.notice.bad { border-color: var(--bad); background: #ffebe9; color: var(--ink); }
.notice.ok { border-color: var(--ok); background: #dafbe1; color: var(--ink); }
figure { margin: 1rem 0 1.6rem; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; background: white; }
figcaption { color: var(--muted); font-size: 0.92rem; margin-top: 0.3rem; max-width: 72rem; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; font-size: 0.86rem; margin: 0.4rem 0 0.8rem; }
th, td { border: 1px solid var(--line); padding: 0.22rem 0.5rem; text-align: left; vertical-align: top; }
thead th { background: var(--bg); position: sticky; top: 0; cursor: pointer; user-select: none; white-space: nowrap; }
thead th[aria-sort="ascending"]::after { content: " ▲"; font-size: 0.7em; }
thead th[aria-sort="descending"]::after { content: " ▼"; font-size: 0.7em; }
td.long { min-width: 22rem; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.kv th { background: var(--bg); font-weight: 600; white-space: nowrap; }
table.kv td { word-break: break-word; }
caption { caption-side: top; text-align: left; color: var(--muted); padding-bottom: 0.2rem; }
.pm { font-weight: normal; color: var(--muted); font-size: 0.85em; }
details { margin: 0.5rem 0; } summary { cursor: pointer; color: #0969da; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(230px, 1fr)); gap: 0.9rem; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 0.5rem; background: white; }
.card img { width: 100%; height: auto; border-radius: 4px; display: block; }
.card .name { font-weight: 600; word-break: break-word; margin-top: 0.3rem; }
.card .line { color: var(--muted); font-size: 0.86rem; word-break: break-word; }
.noimg { height: 150px; display: flex; align-items: center; justify-content: center; background: var(--bg);
         color: var(--muted); border-radius: 4px; }
footer { margin-top: 2.5rem; color: var(--muted); font-size: 0.85rem; }
"""

_SORT_JS = """
(function () {
  function key(row, col) {
    var cell = row.cells[col];
    if (!cell) { return ""; }
    var v = cell.getAttribute("data-v");
    return v === null ? cell.textContent.trim() : v;
  }
  function isNum(s) { return s !== "" && isFinite(Number(s)); }
  function compare(a, b) {
    if (a === "" || b === "") { return a === b ? 0 : (a === "" ? 1 : -1); }
    var na = isNum(a), nb = isNum(b);
    if (na && nb) { return Number(a) - Number(b); }
    if (na !== nb) { return na ? -1 : 1; }
    return a.localeCompare(b, undefined, {numeric: true, sensitivity: "base"});
  }
  function sortBy(table, th, col) {
    var asc = th.getAttribute("aria-sort") !== "ascending";
    var heads = table.tHead.rows[0].cells;
    for (var i = 0; i < heads.length; i++) { heads[i].removeAttribute("aria-sort"); }
    th.setAttribute("aria-sort", asc ? "ascending" : "descending");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (r1, r2) {
      var a = key(r1, col), b = key(r2, col);
      if (a === "" || b === "") { return compare(a, b); }  /* missing values last either way */
      return asc ? compare(a, b) : compare(b, a);
    });
    for (var k = 0; k < rows.length; k++) { body.appendChild(rows[k]); }
  }
  var tables = document.querySelectorAll("table.sortable");
  Array.prototype.forEach.call(tables, function (table) {
    if (!table.tHead) { return; }
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
      th.title = "sort by this column";
      th.addEventListener("click", function () { sortBy(table, th, col); });
      th.addEventListener("keydown", function (ev) {
        if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); sortBy(table, th, col); }
      });
    });
  });
})();
"""


def page(title: str, body: str, *, nav: Sequence[tuple[str, str]] = ()) -> str:
    """A complete HTML document: escaped ``title``, ``body`` (already HTML), inline style and the
    table-sorting script under a Content-Security-Policy that allows no network request."""
    nonce = secrets.token_urlsafe(12)
    csp = (f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'nonce-{nonce}'; "
           "base-uri 'none'; form-action 'none'")
    links = "".join(f'<a href="#{esc(anchor)}">{esc(text)}</a>' for anchor, text in nav)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{esc(csp)}\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        "<meta name=\"generator\" content=\"octascope\">\n"
        f"<title>{esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + (f"<nav>{links}</nav>\n" if links else "")
        + body
        + f"\n<script nonce=\"{nonce}\">{_SORT_JS}</script>\n</body>\n</html>\n"
    )


def _write(path: Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


# ------------------------------------------------------------------------------------------------
# a run
# ------------------------------------------------------------------------------------------------

def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _read_yaml(path: Path) -> dict[str, Any] | None:
    try:
        # lazy: PyYAML (~10 ms to import), not loaded at start-up
        import yaml

        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except Exception:  # noqa: BLE001 - an unreadable config is shown as absent
        return None
    return data if isinstance(data, dict) else None


def _read_csv(path: Path) -> pd.DataFrame | None:
    try:
        return pd.read_csv(path)
    except Exception:  # noqa: BLE001 - missing or empty
        return None


def _flatten(d: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.extend(_flatten(v, key + "."))
        else:
            out.append((key, json.dumps(v, ensure_ascii=False) if isinstance(v, (list, tuple, Mapping)) else v))
    return out


def _versions() -> list[tuple[str, Any]]:
    rows = list(code_version().items()) + list(package_versions().items())
    return [(k.removeprefix("package."), v) for k, v in rows]


def _figure_html(run_dir: Path, stem: str, heading: str, caption: str, *, narrow: bool = False) -> str | None:
    png, svg = run_dir / f"{stem}.png", run_dir / f"{stem}.svg"
    src = data_uri(png) if png.is_file() else (data_uri(svg) if svg.is_file() else None)
    if src is None:
        return None
    files = " ".join(f'<a href="{link(p.name)}">{esc(p.suffix[1:].upper())}</a>' for p in (png, svg) if p.is_file())
    cls = ' class="narrow"' if narrow else ""
    width = _css_width(png) if png.is_file() else None
    size = f' width="{width}"' if width else ""
    return (f'<figure{cls} id="fig-{esc(stem)}"><h3>{esc(heading)}</h3>'
            f'<img src="{src}" alt="{esc(heading)}"{size}>'
            f"<figcaption>{caption} <span class=\"files\">File: {files}</span></figcaption></figure>")


def _css_width(png: Path) -> int | None:
    """The width [CSS px] at which a PNG shows its text at the size it was drawn (its pixels × 96 / its
    dpi), so every figure on the page has the same scale and font size (a wide figure is still
    shrunk to the page); None when unknown."""
    try:
        # lazy: Pillow, only when the report is written
        from PIL import Image as PILImage

        with PILImage.open(png) as im:
            dpi = float((im.info.get("dpi") or (0, 0))[0] or 0)
            width = im.size[0]
    except Exception:  # noqa: BLE001 - no size: the page's max-width rule alone
        return None
    return round(width * 96 / dpi) if dpi > 0 else None


def _captions() -> dict[str, str]:
    return {"theta": esc(THETA_DEFINITION), "phi": esc(PHI_DEFINITION),
            "L": esc(L_DEFINITION)}


def _status(summary: Mapping[str, Any] | None, error: str | None) -> tuple[str, str, str]:
    """(badge text, badge class, one sentence) of a run."""
    if error:
        return "refused", "bad", "The frame was refused: nothing was measured."
    if summary is None:
        return "incomplete", "bad", "The run did not finish (no summary.json): it is still going, or it was killed."
    particles = summary.get("particles") or []
    refused = [p for p in particles if p.get("verdict") not in (None, "analysed")]
    flags = summary.get("flags") or []
    if flags or refused:
        return "analysed, with flags", "warn", "Analysed, but read the flags below before using the numbers."
    return "analysed", "ok", "Analysed; every plausibility check passed."


def _glance_lines(summary: Mapping[str, Any]) -> list[str]:
    """The report's headline: the printed summary's lines, from summary.json."""

    img = summary.get("image") or {}
    lines = []
    shape = img.get("shape_px") or []
    size = f"{shape[1]}x{shape[0]} px, " if len(shape) == 2 else ""
    dose = img.get("dose_e_per_A2")
    lines.append(f"image: {img.get('source', '?')} ({size}{fmt(img.get('pixel_size_A'))} Å/px, {img.get('signal', '?')}"
                 + (f", {fmt(dose)} e/Å²" if _finite(dose) else "") + ")")
    counts = summary.get("counts") or {}
    if counts or summary.get("n_columns"):
        lines.append("columns: " + ", ".join(f"{sp} {counts.get(sp, 0)}" for sp in ("Pb", "X", "Cs", "unknown")))
    if summary.get("n_octahedra"):
        lines.append(f"octahedra: {summary['n_octahedra']}")
    rows = summary.get("particles") or []
    if rows:
        analysed = sum(r.get("verdict") == "analysed" for r in rows)
        lines.append(f"particles: {len(rows)} ({analysed} analysed, {len(rows) - analysed} not)")
    octa = (summary.get("metrics") or {}).get("octahedral") or {}
    lines.extend(line.strip() for line in tilt_lines(summary.get("tilt") or {}, octa.get("shell_depth_cells")))
    tests = summary.get("core_shell_test") or []
    lines.extend(core_shell_line(t, len(rows) > 1).strip() for t in tests)
    acc = summary.get("accuracy") or {}
    if "detection_f1" in acc:
        parts = [f"detection F1 {acc['detection_f1']:.3f}"]
        if _finite(acc.get("rmse_pm_all")):
            parts.append(f"RMSE {acc['rmse_pm_all']:.1f} pm")
        if _finite(acc.get("species_accuracy")):
            parts.append(f"species accuracy {100 * acc['species_accuracy']:.1f} %")
        if _finite(acc.get("theta3_mae_deg")):
            parts.append(f"θ3 error {acc['theta3_mae_deg']:.2f}°")
        lines.append("accuracy vs truth: " + ", ".join(parts))
    region = summary.get("region")
    if region:
        lines.append(f"crystal region: {100 * float(region.get('fraction_of_image') or 0):.0f} % of the image "
                     f"({region.get('source')}); {region.get('columns_outside_dropped', 0)} columns outside it dropped")
    total = (summary.get("timings_s") or {}).get("total")
    if _finite(total):
        lines.append(f"analysis time: {total:.1f} s")
    return lines


def _flags_html(summary: Mapping[str, Any] | None, error: str | None) -> str:
    out = []
    if error:
        out.append(f'<div class="notice bad"><strong>Refused.</strong> {esc(error)}</div>'
                   "<p>A frame is refused when no particle in it can be analysed (or the input does not fit what "
                   "the analysis assumes). No tilt was measured; what the early stages found — the columns and "
                   "the crystal region — is shown below so you can see why.</p>")
    flags = list((summary or {}).get("flags") or [])
    particles = (summary or {}).get("particles") or []
    refused = [p for p in particles if p.get("verdict") not in (None, "analysed")]
    edge = [p for p in particles if p.get("touches_edge") and p.get("verdict") == "analysed"]
    if flags:
        out.append("<p>The numbers of this frame carry these flags (reasons not to trust them as they stand):</p><ul>"
                   + "".join(f"<li>{esc(f)}</li>" for f in flags) + "</ul>")
    for p in refused:
        reasons = p.get("reasons") or "no reason recorded"
        out.append(f'<div class="notice">Particle {esc(p.get("particle"))} was <strong>not analysed</strong>: '
                   f"{esc(reasons)}. Its columns are kept as <code>unknown</code> in columns.csv; it has no tilts.</div>")
    for p in edge:
        out.append(f'<div class="notice">Particle {esc(p.get("particle"))} touches the frame edge: part of it may lie '
                   "outside the image, so the depth below the surface is unknown for its octahedra near the edge "
                   "(<code>shell</code> −1 in octahedra.csv); they count in neither core nor shell.</div>")
    if not out and summary is not None:
        out.append('<div class="notice ok">No flags: every particle was analysed and passed the plausibility '
                   "checks ([001] zone axis, column contrast, Pb sublattice, perovskite lattice and spacing).</div>")
    if summary is not None and not summary.get("trusted", True) and not flags:
        out.append('<div class="notice">summary.json marks this run as not trusted.</div>')
    return "\n".join(out)


def _uncertainty_html(summary: Mapping[str, Any]) -> str:
    parts = ["""<p>Every position, angle and length comes with a 1σ uncertainty in three parts
(the columns <code>*_err*</code>, <code>*_sys*</code>, <code>*_total_err*</code> of the CSV tables):</p>
<ul>
<li><strong>statistical</strong> (<code>_err</code>): the spread this image's own noise gives the number — from the
noise power spectrum fitted to the image, propagated through every column position to the angles with the
correlations of neighbouring columns kept. It shrinks with the dose and with the number of octahedra averaged.</li>
<li><strong>systematic</strong> (<code>_sys</code>): what no noise model sees — the image of a thermally smeared or
tilted column does not peak at the mean position of its atoms. Set from a simulation study (3.8 nm cubes after
300 K molecular dynamics); for angles it does not average down over a region, so it is the floor of a mean.</li>
<li><strong>total</strong> (<code>_total_err</code>): both together; every ± on this page is the total 1σ.</li>
<li><strong>scatter</strong> (<code>_sd</code>): how much the octahedra's tilts differ from each other — structure
of the particle, not an error.</li>
</ul>
<p>The core − shell difference Δθ3 of a particle is tested against zero with its total uncertainty (z, two-sided p):
“significant at 3σ” means |Δθ3| &gt; 3 × its 1σ. The full account, and how it was checked against simulations
with known truth, is docs/uncertainty.md in the octascope documentation.</p>"""]
    rows = []
    for p in summary.get("particles") or []:
        if p.get("verdict") != "analysed":
            continue
        for region in ("core", "shell"):
            v = p.get(f"theta3_deg_{region}")
            if not _finite(v):
                continue
            stat, sys_, tot, sd = (p.get(f"theta3_deg_{region}{s}") for s in ("_err", "_sys", "_total_err", "_sd"))
            if _finite(stat) and _finite(sys_) and float(stat) > 0 and float(sys_) > 0:
                if float(sys_) > 2 * float(stat):
                    what = "mostly systematic: more dose or more frames would not make it smaller"
                elif float(stat) > 2 * float(sys_):
                    what = "mostly the image's noise: a higher dose or more frames would make it smaller"
                else:
                    what = "noise and systematic part alike"
            else:
                what = ""
            rows.append({"particle": p.get("particle"), "region": region, "θ3 mean [°]": v,
                         "statistical 1σ [°]": stat, "systematic 1σ [°]": sys_, "total 1σ [°]": tot,
                         "scatter of the octahedra (sd) [°]": sd, "the error is": what})
    if rows:
        parts.append("<h3>In this run: mean θ3 per particle and region</h3>"
                     + html_table(pd.DataFrame(rows), table_id="uncertainty-table", pair_errors=False))
    scalars = summary.get("scalars") or {}
    med = [(label, scalars.get(key)) for key, label in (
        ("theta3_err_deg_median", "median statistical 1σ of one octahedron's θ3 [°]"),
        ("theta3_sys_deg_median", "median systematic 1σ of one octahedron's θ3 [°]"),
        ("theta3_total_err_deg_median", "median total 1σ of one octahedron's θ3 [°]")) if _finite(scalars.get(key))]
    if med:
        parts.append(key_value_table(med, table_id="octahedron-uncertainty"))
    return "\n".join(parts)


def _files_html(run_dir: Path, to_come: Sequence[str] = ()) -> str:
    """The files of the folder, CSV first, linked; ``to_come``: files written after the page
    (``summary.json``), listed without a size."""
    try:
        entries = sorted((p for p in run_dir.iterdir() if p.is_file() and not p.name.startswith(".")
                          and p.name != REPORT_NAME), key=lambda p: (p.suffix != ".csv", p.suffix, p.name))
    except OSError:
        return ""
    items = []
    for p in entries:
        try:
            size = p.stat().st_size
        except OSError:
            continue
        note = FILE_NOTES.get(p.name, "")
        human = f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.0f} kB" if size >= 1e3 else f"{size} B"
        items.append(f'<li><a href="{link(p.name)}">{esc(p.name)}</a> <span class="pm">({esc(human)})</span>'
                     + (f" — {esc(note)}" if note else "") + "</li>")
    for name in to_come:
        if not (run_dir / name).exists():
            note = FILE_NOTES.get(name, "")
            items.append(f'<li><a href="{link(name)}">{esc(name)}</a>' + (f" — {esc(note)}" if note else "") + "</li>")
    return "<ul>" + "".join(items) + "</ul>" if items else "<p>No files.</p>"


def _run_inputs(run_dir: Path, summary: Mapping[str, Any] | None, config: Mapping[str, Any] | None,
                error: str | None) -> tuple[Mapping[str, Any] | None, Mapping[str, Any] | None, str | None]:
    """The summary, configuration and refusal of a run: those given, else read from its folder."""
    if summary is None:
        summary = _read_json(run_dir / "summary.json")
    if config is None:
        config = _read_yaml(run_dir / "config.yaml")
    if error is None and (run_dir / "error.txt").is_file():
        try:
            error = (run_dir / "error.txt").read_text(encoding="utf-8").strip() or None
        except OSError:
            error = None
    return summary, config, error


def _head_sections(run_dir: Path, source: str, summary: Mapping[str, Any] | None, error: str | None) -> list[str]:
    """The top of a run page: the heading with its status badge, the summary lines and the flags."""
    badge, cls, sentence = _status(summary, error)
    written = time.strftime("%Y-%m-%d %H:%M")
    sections: list[str] = []
    sections.append(f'<h1>{esc(source)} <span class="badge {cls}">{esc(badge)}</span></h1>'
                    f'<p class="sub">{esc(sentence)} Run folder <code>{esc(run_dir.name)}</code>; page written '
                    f"{esc(written)}.</p>")
    glance = _glance_lines(summary) if summary else ([f"refused: {error}"] if error else ["no results"])
    sections.append('<h2 id="glance">Summary</h2><pre class="glance">' + esc("\n".join(glance)) + "</pre>"
                    f'<p class="sub">{esc(THETA_DEFINITION)}; φk is the angle of Pb–X bond k from its local lattice '
                    + ("axis.</p>" if error or summary is None else
                       "axis. ± is the total 1σ (see <a href=\"#uncertainties\">Uncertainties</a>).</p>"))
    sections.append('<h2 id="flags">Flags and refusals</h2>' + _flags_html(summary, error))
    return sections


def _figure_blocks(run_dir: Path) -> list[str]:
    """The run folder's figures as page blocks: those of :data:`FIGURES` in its order, then any other PNG."""
    captions = _captions()
    figs = []
    shown = set()
    for stem, heading, caption in FIGURES:
        block = _figure_html(run_dir, stem, heading, caption.format(**captions),
                             narrow=stem in ("network_overlay", "crystal_region", "theta_uncertainty_map",
                                             "tilt_line_profile", "spacing_line_profile"))
        shown.add(stem)
        if block:
            figs.append(block)
    for png in sorted(run_dir.glob("*.png")):
        if png.stem not in shown and png.name != "crystal_mask.png":
            block = _figure_html(run_dir, png.stem, png.stem.replace("_", " "), "")
            if block:
                figs.append(block)
    return figs


def _particles_section(run_dir: Path, summary: Mapping[str, Any] | None) -> str | None:
    """The per-particle table (from ``particles.csv``, else the summary); None without particles."""
    particles = _read_csv(run_dir / "particles.csv")
    if particles is None and summary and summary.get("particles"):
        particles = pd.DataFrame(summary["particles"])
    if particles is None or not len(particles):
        return None
    cols = [c for c in PARTICLE_COLUMNS if c in particles]
    keep = cols + [e for c in cols if (e := error_column(list(particles.columns), c)) is not None]
    return ('<h2 id="particles">Particles</h2>'
            "<p>One row per particle (click a column head to sort). Mean tilts per region with their "
            + ("total 1σ; all columns are in "
               f'<a href="{link("particles.csv")}">particles.csv</a>.</p>'
               if (run_dir / "particles.csv").is_file() else
               "total 1σ (no particles.csv: the frame was not measured).</p>")
            + html_table(particles[keep], table_id="particles-table"))


def _accuracy_section(summary: Mapping[str, Any]) -> str | None:
    """The accuracy against the true columns, where the image came with them; else None."""
    acc = summary.get("accuracy")
    if not acc:
        return None
    return ('<h2 id="accuracy">Accuracy against the truth</h2>'
            "<p>The image came with its true columns (a simulation, or truth files beside the image): "
            "how far the analysis is from it. F1: found vs true columns; RMSE: position error [pm]; "
            "mae: mean absolute error; bias: mean signed error.</p>"
            + key_value_table(sorted(acc.items()), table_id="accuracy-table"))


def _parameters_section(summary: Mapping[str, Any] | None, config: Mapping[str, Any] | None) -> str:
    """The plugins, the full configuration, the software versions and the time per stage of a run."""
    params = ['<h2 id="parameters">Parameters and versions</h2>']
    plugins = (summary or {}).get("plugins") or {}
    if plugins:
        params.append("<h3>Plugins</h3>" + key_value_table(
            (k, ", ".join(map(str, v)) if isinstance(v, (list, tuple)) else v) for k, v in plugins.items()))
    if config:
        params.append("<details><summary>The full configuration (config.yaml)</summary>"
                      + key_value_table(_flatten(config), table_id="config-table") + "</details>")
    else:
        params.append("<p>The configuration was not recorded for this run.</p>")
    params.append("<h3>Software</h3>" + key_value_table(_versions(), table_id="versions-table"))
    timings = (summary or {}).get("timings_s") or {}
    if timings:
        params.append("<details><summary>Time per stage [s]</summary>"
                      + key_value_table(timings.items()) + "</details>")
    return "\n".join(params)


def write_run_report(run_dir: str | Path, *, summary: Mapping[str, Any] | None = None,
                     config: Mapping[str, Any] | None = None, error: str | None = None,
                     title: str | None = None) -> Path:
    """Write ``report.html`` into a run folder: one self-contained page to read a run.

    The page shows the headline numbers, the flags and refusals in words, the image with the
    octahedral network, the tilt and bond-length maps over the image (every figure of the folder,
    embedded, with a caption that defines what it shows), the per-particle table, what the
    uncertainties mean with this run's numbers, the parameters and the software versions, and
    links to the CSV tables and figure files. It opens from disk in any browser, without a server
    or a network (see the module notes).

    Parameters
    ----------
    run_dir : str or pathlib.Path
        The run folder; its files are read (figures, ``particles.csv``, ``summary.json``,
        ``config.yaml``, ``error.txt``).
    summary : Mapping, optional
        The content of ``summary.json`` (:func:`octascope.results.summary.summarize`); by default
        read from the folder. :func:`~octascope.results.outputs.write_outputs` passes it, since
        ``summary.json`` is written after the page.
    config : Mapping, optional
        The resolved configuration; by default read from ``config.yaml`` (absent: not shown).
    error : str, optional
        Why the frame was refused; by default read from ``error.txt``. A refused frame's page says
        why and shows what the early stages found.
    title : str, optional
        The page title; by default the image's source.

    Returns
    -------
    pathlib.Path
        The page written (``run_dir / "report.html"``).
    """

    run_dir = Path(run_dir)
    summary, config, error = _run_inputs(run_dir, summary, config, error)
    source = ((summary or {}).get("image") or {}).get("source") or run_dir.name
    title = title or f"octascope: {source}"

    sections: list[str] = _head_sections(run_dir, source, summary, error)
    nav: list[tuple[str, str]] = [("glance", "summary"), ("flags", "flags")]
    figs = _figure_blocks(run_dir)
    if figs:
        nav.append(("figures", "figures"))
        sections.append('<h2 id="figures">Figures</h2>' + "\n".join(figs))
    elif summary is not None:
        sections.append('<h2 id="figures">Figures</h2><p>No figures were written (<code>figure_formats=[]</code>); '
                        "run again with <code>figure_formats=[png]</code> to see them here.</p>")
    particles = _particles_section(run_dir, summary)
    if particles is not None:
        nav.append(("particles", "particles"))
        sections.append(particles)
    if summary is not None and not error:
        nav.append(("uncertainties", "uncertainties"))
        sections.append('<h2 id="uncertainties">Uncertainties: what the ± means</h2>' + _uncertainty_html(summary))
        accuracy = _accuracy_section(summary)
        if accuracy is not None:
            nav.append(("accuracy", "accuracy"))
            sections.append(accuracy)

    nav.append(("parameters", "parameters"))
    sections.append(_parameters_section(summary, config))
    nav.append(("files", "files"))
    sections.append('<h2 id="files">Files of this run</h2><p>Beside this page in the run folder (links open the '
                    "files; keep the folder together when you copy it).</p>" + _files_html(run_dir, ("summary.json",) if summary is not None and not error else ()))
    sections.append('<footer>Written by octascope. The page is self-contained: figures are embedded, tables and '
                    "figure files are linked relative to the run folder.</footer>")
    return _write(run_dir / REPORT_NAME, page(title, "\n".join(sections), nav=nav))


# ------------------------------------------------------------------------------------------------
# a session
# ------------------------------------------------------------------------------------------------

def _column(df: pd.DataFrame, names: Sequence[str]) -> str | None:
    return next((c for c in names if c in df.columns), None)


def _relative(target: Path, start: Path) -> str:
    try:
        return os.path.relpath(target, start)
    except ValueError:  # another drive (Windows)
        return target.resolve().as_uri()


def _frame_card(run_dir: Path, session_dir: Path, name: str | None) -> str:
    summary = _read_json(run_dir / "summary.json")
    error = None
    if (run_dir / "error.txt").is_file():
        try:
            error = (run_dir / "error.txt").read_text(encoding="utf-8").strip()
        except OSError:
            error = "refused"
    badge, cls, _ = _status(summary, error)
    source = name or ((summary or {}).get("image") or {}).get("source") or run_dir.name
    thumb = None
    for stem in ("network_overlay", "crystal_region"):
        if (run_dir / f"{stem}.png").is_file():
            thumb = thumbnail_uri(run_dir / f"{stem}.png")
            if thumb:
                break
    img = (f'<img src="{thumb}" alt="{esc(source)}">' if thumb
           else '<div class="noimg">no figure</div>')
    target = run_dir / REPORT_NAME if (run_dir / REPORT_NAME).is_file() else run_dir
    href = _relative(target, session_dir)
    lines = []
    if summary:
        octa = (summary.get("metrics") or {}).get("octahedral") or {}
        tl = tilt_lines(summary.get("tilt") or {}, octa.get("shell_depth_cells"))
        lines += [t.strip() for t in tl if "θ3" in t or t.strip().startswith("mean tilt")][:2]
        n_flags = len(summary.get("flags") or [])
        if n_flags:
            lines.append(f"{n_flags} flag{'s' if n_flags > 1 else ''}")
    elif error:
        lines.append(error)
    text = "".join(f'<div class="line">{esc(t)}</div>' for t in lines)
    return (f'<div class="card"><a href="{link(href)}">{img}</a>'
            f'<div class="name"><a href="{link(href)}">{esc(source)}</a> <span class="badge {cls}">{esc(badge)}</span></div>'
            f"{text}</div>")


def write_session_report(session_dir: str | Path, session_table: pd.DataFrame,
                         run_dirs: Sequence[str | Path] | None = None, *, title: str | None = None) -> Path:
    """Write ``session.html`` of a session: every frame with a thumbnail and a link to its run page,
    and the session table, sortable.

    Parameters
    ----------
    session_dir : str or pathlib.Path
        Folder of the session; the page is written there and links to the run folders relative to it
        (they may lie inside it or beside it).
    session_table : pandas.DataFrame
        The session table (``session.csv``): one row per frame and particle. The columns the batch
        writes are ``frame`` (input file), ``particle``, the headline numbers with their
        uncertainties (mean θ1–θ3 in core and shell, ``theta3_deg_core`` with ``theta3_deg_core_err``
        or ``_total_err`` …), ``flags``, ``run_id`` and ``output_dir`` (the run folder); any column
        may be missing and any other column is shown too. A number with an uncertainty column
        (:func:`error_column`) is shown as ``value ± 1σ``; the output folder column (``output_dir``,
        ``output_folder``, ``run_dir`` or ``folder``) links to the run's page. Every cell keeps its
        raw value in ``data-v`` (what the sort compares).
    run_dirs : sequence of path, optional
        The run folders of the session, in the order to show them; by default the distinct values
        of the table's output folder column, in table order. A relative folder is taken relative to
        ``session_dir``. Refused and unfinished runs get a card too (their page says why).
    title : str, optional
        Page title (default: the session folder's name).

    Returns
    -------
    pathlib.Path
        The page written (``session_dir / "session.html"``).
    """
    session_dir = Path(session_dir)
    session_dir.mkdir(parents=True, exist_ok=True)
    table = session_table.reset_index(drop=True) if session_table is not None else pd.DataFrame()
    out_col = _column(table, OUTPUT_COLUMN_NAMES)
    frame_col = _column(table, FRAME_COLUMN_NAMES)

    def resolve(p: str | Path) -> Path:
        path = Path(p)
        return path if path.is_absolute() else session_dir / path

    if run_dirs is None:
        values = table[out_col].dropna().astype(str).tolist() if out_col else []
        run_dirs = list(dict.fromkeys(values))
    dirs = [resolve(p) for p in run_dirs]
    names: dict[Path, str] = {}
    if out_col and frame_col:
        for out, frame in zip(table[out_col], table[frame_col]):
            if isinstance(out, str) and frame is not None:
                names.setdefault(resolve(out).resolve(), str(frame))
    cards = [_frame_card(d, session_dir, names.get(d.resolve())) for d in dirs]

    links: dict[str, dict[Any, str]] = {}
    if out_col:
        for value in table[out_col].dropna().unique():
            target = resolve(str(value))
            page_path = target / REPORT_NAME
            links.setdefault(out_col, {})[value] = _relative(page_path if page_path.is_file() else target, session_dir)
    title = title or f"octascope session: {session_dir.resolve().name}"
    n_frames = len(dirs)
    done = sum((d / "summary.json").is_file() for d in dirs)
    refused = sum((d / "error.txt").is_file() and not (d / "summary.json").is_file() for d in dirs)
    body = [f"<h1>{esc(title)}</h1>",
            f'<p class="sub">{n_frames} frame{"s" if n_frames != 1 else ""}: {done} analysed, {refused} refused, '
            f"{n_frames - done - refused} unfinished; {len(table)} row{'s' if len(table) != 1 else ''} in the session "
            f"table. Page written {esc(time.strftime('%Y-%m-%d %H:%M'))}.</p>",
            '<h2 id="frames">Frames</h2><p>Click a frame for its report.</p>',
            '<div class="cards">' + "".join(cards) + "</div>" if cards else "<p>No frames.</p>",
            '<h2 id="table">The session table</h2>'
            "<p>One row per frame and particle; click a column head to sort (again to reverse). ± is the 1σ "
            "given in the table" + (f' (<a href="{link("session.csv")}">session.csv</a>)' if (session_dir / "session.csv").is_file() else "")
            + ".</p>",
            html_table(table, table_id="session-table", links=links) if len(table.columns) else "<p>No table.</p>",
            '<footer>Written by octascope. Thumbnails are embedded; the frames\' pages and files are linked relative '
            "to this folder.</footer>"]
    return _write(session_dir / SESSION_REPORT_NAME, page(title, "\n".join(body), nav=[("frames", "frames"), ("table", "table")]))
