"""The Markdown summary and the self-contained ``report.html`` (inline CSS, plots embedded as data URIs, no
network). A small inline script checks that every image decoded and writes a hidden marker into the page
(``<p id="image-check" hidden>``), which a headless browser's ``--dump-dom`` shows; headers sort their tables."""

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


FRONT = ("model", "dataset", "strategy", "n_seeds", "test/dice mean", "test/dice ci95", "test/iou mean",
         "test/iou ci95", "val/dice mean", "val/dice ci95", "objective")  # fmt: skip


def front(df: pl.DataFrame, first: tuple[str, ...] = FRONT) -> pl.DataFrame:
    """The columns a reader looks for first (cell, test Dice and its interval), then the rest in their order."""
    if df is None or df.height == 0:
        return df
    lead = [c for c in first if c in df.columns]
    return df.select(lead + [c for c in df.columns if c not in lead])


def html_table(df: pl.DataFrame, max_rows: int = MAX_ROWS, first: tuple[str, ...] = ()) -> str:
    """A sortable table (click a header); long tables scroll inside their box with the header kept in view."""
    if df is None or df.height == 0:
        return "<p><em>(empty)</em></p>"
    if first:
        df = front(df, first)
    head = "".join(f"<th title='sort by {html.escape(c)}'>{html.escape(c)}</th>" for c in df.columns)
    body = []
    for row in df.head(max_rows).iter_rows():
        cells = "".join(
            f'<td class="{"num" if isinstance(v, (int, float)) else ""}"'
            + (f' data-v="{v!r}"' if isinstance(v, (int, float)) and not isinstance(v, bool) else "")
            + f">{html.escape(_cell(v))}</td>"
            for v in row
        )
        body.append(f"<tr>{cells}</tr>")
    more = f"<p class='note'>{df.height - max_rows} more rows in the CSV.</p>" if df.height > max_rows else ""
    return (
        f"<div class='scroll'><table class='sortable'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody>"
        f"</table></div>{more}"
    )


def _img(png: Path | None, alt: str, caption: str = "") -> str:
    if png is None or not png.is_file():
        return ""
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    links = " · ".join(
        f"<code>plots/{html.escape(png.with_suffix(ext).name)}</code>"
        for ext in (".png", ".pdf", ".svg")
        if png.with_suffix(ext).is_file()
    )
    cap = f"{html.escape(caption)} " if caption else ""
    return (
        f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{cap}Files: {links}</figcaption></figure>"
    )


SELECTION = (
    "The best configuration of each (model, dataset, strategy) cell is chosen on the validation objective (mean over "
    "seeds) and reported on test: mean and 95 % t-interval over the seeds of that one configuration (a "
    "configuration is every parameter and train setting; seeds are its only replicates). Comparisons are paired "
    "over datasets and seeds (paired t; strategies within each model; models on the (dataset, strategy) cells they "
    "share, paired over dataset, strategy and seed; the depth trend: a slope per dataset and seed, tested over them; "
    'medical vs natural compares different datasets: Welch t) and say "no clear difference" when their 95 % '
    "interval includes 0."
)


def baselines_note(result: AnalysisResult) -> str:
    """What each baseline of the study trains (two fine-tunes differ: decoder only vs every weight), or ""."""
    from .plots import is_baseline, label, strategy_order

    table = result.best_table
    if table is None or table.height == 0 or "strategy" not in table.columns:
        return ""
    names = [s for s in strategy_order(table["strategy"].unique().to_list()) if is_baseline(s)]
    return ("Baselines: " + "; ".join(f"{s} = {label(s)}" for s in names) + ".") if names else ""


MODELS_NOTE = (
    "The image and text encoders of each model of this study, from the model catalog and the architecture record "
    'each model is built from; "prompts enter": where prompt tokens can go in that model.'
)


def models_scope(result: AnalysisResult) -> str:
    """The study's models and their encoders in one sentence (the report's scope), or "" with no trials."""
    from .encoders import short
    from .plots import model_order

    names = model_order(list(result.models))
    if not names:
        return ""
    return f"Model{'s' if len(names) != 1 else ''} ({len(names)}): " + "; ".join(short(m) for m in names) + "."


def models_table(result: AnalysisResult) -> pl.DataFrame:
    """The study's models with their encoders (an empty table before any trial is listed)."""
    from .encoders import models_table as table

    return table(result.models)


def summary_markdown(result: AnalysisResult, study: Path) -> str:
    states = ", ".join(f"{n} {s}" for s, n in result.states.items())
    out = [f"# Analysis of `{study.name}`", ""]
    out += [f"> **Note:** {n}" for n in result.notes()]
    out += [
        "",
        f"{result.n_done} of {result.n_trials} trials done ({states}). Objective: `{result.objective}` "
        f"({result.mode}). {SELECTION}",
        "",
        *([baselines_note(result), ""] if baselines_note(result) else []),
        *([models_scope(result), ""] if result.models else []),
    ]
    if result.models:
        out += ["## Models: image and text encoders", "", MODELS_NOTE, "", markdown_table(models_table(result)), ""]
    out += [
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
    if result.curves_plot is not None:
        out += ["## Learning curves", "", f"![learning curves](plots/{result.curves_plot.name})", ""]
    if result.masks_plot is not None:
        out += ["## Predicted masks", "", f"![masks](plots/{result.masks_plot.name})", ""]
    out += ["## Best configuration per cell", "", "LaTeX: `tables/best_per_cell.tex`.", ""]
    out += [markdown_table(front(result.best_table)), ""]
    out += ["## Grouped by " + ", ".join(result.by), "", GROUPED_NOTE, "", markdown_table(result.table), ""]
    return "\n".join(out)


GROUPED_NOTE = (
    "std: over the group's finished trials (configurations pooled, a spread); ci95: only where the group is one "
    "configuration (an interval over its seeds), else empty."
)


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1150px;padding:0 1em;
color:#222;line-height:1.45}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
.sentence{font-size:1.08em;background:#f3f7ff;border-left:4px solid #3b6fd8;padding:.5em .8em}
.skipped{color:#777;font-style:italic}.note{color:#666;font-size:.9em}
table{border-collapse:collapse;font-size:.85em;margin:.6em 0}th,td{border:1px solid #ddd;padding:.25em .5em}
th{background:#f5f5f5;position:sticky;top:0;cursor:pointer;white-space:nowrap}th:hover{background:#e8eefc}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.scroll{max-height:28em;overflow:auto;max-width:100%}img{max-width:100%;height:auto;border:1px solid #eee}
figure{margin:.5em 0}figcaption{color:#555;font-size:.85em}nav a{margin-right:1em}
.warn{background:#fff4e0;border-left:4px solid #d58a00;padding:.5em .8em}
"""

SORT = """
<script>
document.querySelectorAll("table.sortable th").forEach(function (th, col) {
  th.addEventListener("click", function () {
    var body = th.closest("table").tBodies[0], rows = Array.prototype.slice.call(body.rows);
    var dir = th.getAttribute("data-dir") === "asc" ? -1 : 1;
    th.setAttribute("data-dir", dir === 1 ? "asc" : "desc");
    rows.sort(function (a, b) {
      var x = a.cells[col], y = b.cells[col];
      var u = x.getAttribute("data-v"), v = y.getAttribute("data-v");
      if (u !== null && v !== null) return dir * (parseFloat(u) - parseFloat(v));
      return dir * x.textContent.localeCompare(y.textContent);
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
</script>
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
  // layout: headings must not run off the page; in every table, test Dice must be in view without scrolling
  var layout = [];
  document.querySelectorAll("h1, h2, p.sentence").forEach(function (h) {
    if (h.scrollWidth > h.clientWidth + 1) layout.push("cut: " + h.textContent.slice(0, 40));
  });
  document.querySelectorAll("div.scroll").forEach(function (box) {
    var ths = box.querySelectorAll("th"), edge = box.getBoundingClientRect().right;
    if (box.getBoundingClientRect().right > document.documentElement.clientWidth + 1) layout.push("box overflows");
    ths.forEach(function (th) {
      if (th.textContent === "test/dice mean" && th.getBoundingClientRect().right > edge + 1)
        layout.push("test/dice hidden: " + (box.previousElementSibling || {}).textContent);
    });
  });
  p.setAttribute("data-layout", layout.length ? layout.join(" | ") : "ok");
});
</script>
"""


def report_html(result: AnalysisResult, study: Path) -> str:
    states = ", ".join(f"{n} {html.escape(s)}" for s, n in result.states.items())
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>vlsm-batch analysis: {html.escape(study.name)}</title>",
        f"<style>{CSS}</style>",
        "<script>window.__reportErrors=[];window.addEventListener('error',function(e){"
        "window.__reportErrors.push(String(e.message||e.type));},true);</script>",
        "</head><body>",
        f"<h1>Analysis of <code>{html.escape(study.name)}</code></h1>",
        *[f"<p class='warn'>{html.escape(n)}</p>" for n in result.notes()],
        f"<p>{result.n_done} of {result.n_trials} trials done ({states}). Objective "
        f"<code>{html.escape(result.objective)}</code> ({html.escape(result.mode)}). Generated {now} from "
        f"<code>{html.escape(str(study))}</code>.</p>",
        f"<p class='note'>{html.escape(SELECTION)} Click a column header to sort.</p>",
        f"<p class='note' id='baselines'>{html.escape(note)}</p>" if (note := baselines_note(result)) else "",
        f"<p id='scope-models'>{html.escape(scope)}</p>" if (scope := models_scope(result)) else "",
        "<nav>"
        + ("<a href='#models'>encoders</a>" if result.models else "")
        + "".join(f"<a href='#t-{html.escape(t.spec.name)}'>{html.escape(t.spec.name)}</a>" for t in result.takeaways)
        + ("<a href='#curves'>learning curves</a>" if result.curves_plot is not None else "")
        + "<a href='#masks'>masks</a><a href='#best'>best per cell</a><a href='#grouped'>grouped</a></nav>",
    ]
    if result.models:
        parts.append("<h2 id='models'>Models: image and text encoders</h2>")
        parts.append(f"<p class='note'>{html.escape(MODELS_NOTE)}</p>")
        parts.append(html_table(models_table(result)))
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
    if result.curves_plot is not None:
        parts.append("<h2 id='curves'>Learning curves (best trial of each cell)</h2>")
        parts.append(_img(result.curves_plot, "learning curves"))
        if result.curves_left_out:
            parts.append(f"<p class='note'>{len(result.curves_left_out)} more trials not drawn.</p>")
    parts.append("<h2 id='masks'>Predicted masks (best trial of each cell)</h2>")
    if result.masks_plot is not None:
        parts.append(_img(result.masks_plot, "predicted masks"))
    else:
        parts.append(
            "<p class='note'>No predictions yet: <code>vlsm-batch predict --study STUDY --best</code> writes the "
            "best trials' test masks as PNGs, and the next <code>analyze</code> shows them here.</p>"
        )
    parts.append("<h2 id='best'>Best configuration per cell</h2>")
    parts.append("<p class='note'>Also as LaTeX (booktabs): <code>tables/best_per_cell.tex</code>.</p>")
    parts.append(html_table(result.best_table, first=FRONT))
    parts.append(f"<h2 id='grouped'>All finished trials grouped by {html.escape(', '.join(result.by))}</h2>")
    parts.append(_img(result.by_plot, "grouped"))
    parts.append(f"<p class='note'>{html.escape(GROUPED_NOTE)}</p>")
    parts.append(html_table(result.table, first=(*result.by, "n", "n_configs", "test/dice mean", "test/dice std")))
    if result.failures is not None and result.failures.height:
        parts.append("<h2>Failures</h2>")
        parts.append(html_table(result.failures))
    parts.append("<p id='image-check' hidden>images-unchecked</p>")  # read by the browser test, not shown
    parts.append(SORT)
    parts.append(CHECK)
    parts.append("</body></html>")
    return "\n".join(p for p in parts if p)
