"""The Markdown summary and the self-contained ``report.html`` (inline CSS, plots embedded as data URIs, no
network). A small inline script checks that every image decoded and writes a marker into the page
(``<p id="image-check">``), which a headless browser's ``--dump-dom`` shows."""

from __future__ import annotations

import base64
import datetime as _dt
import html
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import polars as pl

    from .run import AnalysisResult

MAX_ROWS = 200


def _cell(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return "–" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def markdown_table(df: pl.DataFrame, max_rows: int = 40) -> str:
    if df is None or df.height == 0:
        return "_(empty)_\n"
    cols = df.columns
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.head(max_rows).iter_rows():
        lines.append("| " + " | ".join(_cell(v).replace("|", "\\|") for v in row) + " |")
    if df.height > max_rows:
        lines.append(f"\n_{df.height - max_rows} more rows in the CSV._")
    return "\n".join(lines) + "\n"


def html_table(df: pl.DataFrame, max_rows: int = MAX_ROWS) -> str:
    if df is None or df.height == 0:
        return "<p><em>(empty)</em></p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in df.columns)
    body = []
    for row in df.head(max_rows).iter_rows():
        cells = "".join(
            f'<td class="{"num" if isinstance(v, (int, float)) else ""}">{html.escape(_cell(v))}</td>' for v in row
        )
        body.append(f"<tr>{cells}</tr>")
    more = f"<p class='note'>{df.height - max_rows} more rows in the CSV.</p>" if df.height > max_rows else ""
    return (
        f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>{more}"
    )


def _img(png: Path | None, alt: str) -> str:
    if png is None or not png.is_file():
        return ""
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def summary_markdown(result: AnalysisResult, study: Path) -> str:
    states = ", ".join(f"{n} {s}" for s, n in result.states.items())
    out = [
        f"# Analysis of `{study.name}`",
        "",
        f"{result.n_done} of {result.n_trials} trials done ({states}). Objective: `{result.objective}` "
        f"({result.mode}). The best configuration of each (model, dataset, strategy) cell is chosen on the "
        "validation objective (mean over seeds) and reported on test: mean, std and 95 % t-interval over seeds.",
        "",
        "## Takeaways",
        "",
    ]
    for t in result.takeaways:
        out.append(f"### {t.spec.title}")
        out.append("")
        if t.skipped:
            out += [f"_Not answered: {t.skipped}._", ""]
            continue
        out += [f"**{t.sentence}**", ""]
        if t.spec.description:
            out += [t.spec.description, ""]
        if t.plot is not None:
            out += [f"![{t.spec.name}](plots/{t.plot.name})", ""]
        out += [markdown_table(t.table), ""]
    out += ["## Grouped by " + ", ".join(result.by), "", markdown_table(result.table), ""]
    return "\n".join(out)


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1150px;padding:0 1em;
color:#222;line-height:1.45}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
.sentence{font-size:1.08em;background:#f3f7ff;border-left:4px solid #3b6fd8;padding:.5em .8em}
.skipped{color:#777;font-style:italic}.note{color:#666;font-size:.9em}
table{border-collapse:collapse;font-size:.85em;margin:.6em 0}th,td{border:1px solid #ddd;padding:.25em .5em}
th{background:#f5f5f5;position:sticky;top:0}td.num{text-align:right;font-variant-numeric:tabular-nums}
.scroll{max-height:28em;overflow:auto}img{max-width:100%;height:auto;border:1px solid #eee;margin:.5em 0}
nav a{margin-right:1em}
"""

CHECK = """
<script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var bad = imgs.filter(function (im) { return !(im.complete && im.naturalWidth > 0); });
  var p = document.getElementById("image-check");
  var errors = window.__reportErrors || [];
  p.textContent = (bad.length ? "images-broken " : "images-ok ") + (imgs.length - bad.length) + "/" + imgs.length +
    " errors " + errors.length;
  p.setAttribute("data-ok", bad.length || errors.length ? "false" : "true");
});
</script>
"""


def report_html(result: AnalysisResult, study: Path) -> str:
    states = ", ".join(f"{n} {html.escape(s)}" for s, n in result.states.items())
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>vlsm-batch analysis: {html.escape(study.name)}</title>",
        f"<style>{CSS}</style>",
        "<script>window.__reportErrors=[];window.addEventListener('error',function(e){"
        "window.__reportErrors.push(String(e.message||e.type));},true);</script>",
        "</head><body>",
        f"<h1>Analysis of <code>{html.escape(study.name)}</code></h1>",
        f"<p>{result.n_done} of {result.n_trials} trials done ({states}). Objective "
        f"<code>{html.escape(result.objective)}</code> ({html.escape(result.mode)}). Generated {now} from "
        f"<code>{html.escape(str(study))}</code>.</p>",
        "<p class='note'>Selection: the best configuration of each (model, dataset, strategy) cell is chosen on the "
        "validation objective (mean over seeds) and reported on test (mean, std, 95 % t-interval over seeds). "
        "Test metrics never choose.</p>",
        "<nav>"
        + "".join(f"<a href='#t-{html.escape(t.spec.name)}'>{html.escape(t.spec.name)}</a>" for t in result.takeaways)
        + "<a href='#best'>best per cell</a><a href='#grouped'>grouped</a></nav>",
    ]
    for t in result.takeaways:
        parts.append(f"<h2 id='t-{html.escape(t.spec.name)}'>{html.escape(t.spec.title)}</h2>")
        if t.skipped:
            parts.append(f"<p class='skipped'>Not answered: {html.escape(t.skipped)}.</p>")
            continue
        parts.append(f"<p class='sentence'>{html.escape(t.sentence or '')}</p>")
        if t.spec.description:
            parts.append(f"<p class='note'>{html.escape(t.spec.description)}</p>")
        parts.append(_img(t.plot, t.spec.title))
        parts.append(html_table(t.table))
    parts.append("<h2 id='best'>Best configuration per cell</h2>")
    parts.append(html_table(result.best_table))
    parts.append(f"<h2 id='grouped'>All finished trials grouped by {html.escape(', '.join(result.by))}</h2>")
    parts.append(_img(result.by_plot, "grouped"))
    parts.append(html_table(result.table))
    if result.failures is not None and result.failures.height:
        parts.append("<h2>Failures</h2>")
        parts.append(html_table(result.failures))
    parts.append("<p id='image-check' class='note'>images-unchecked</p>")
    parts.append(CHECK)
    parts.append("</body></html>")
    return "\n".join(p for p in parts if p)
