"""HTML for `latvit report`: escaping, tables, embedded figures and the page around them.

Safe to share: every string that comes from a result file passes through `esc` (html.escape) before it
reaches the page, in tables, text and inside the figures (plotly renders its labels as a small HTML
subset, so figure strings are escaped too and shown literally). Figures travel as JSON inside <script>;
`script_json` escapes `<`, `>` and `&` there (and the two JavaScript line separators), so no string can
close the script element or open another one. The page loads nothing: plotly.js and the few lines of
sorting script are inline, and a Content-Security-Policy forbids any fetch.
"""

from __future__ import annotations

import html
import json
import math
from typing import Any

from latvit.errors import missing_extra

# no network at all: inline scripts and styles only, images only from data: URIs (plotly's own)
CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; "
    "font-src data:; connect-src 'none'"
)
PLOTLY_CONFIG = {"displaylogo": False, "responsive": True}  # no logo: its link would point off the page

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1280px;
       padding: 0 1.5em 3em; color: #222; }
h1 { font-size: 1.6em; margin: 0.8em 0 0.2em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
nav a { margin-right: 1em; } .note { color: #555; font-size: 0.92em; max-width: 70em; }
table { border-collapse: collapse; font-size: 0.86em; margin: 0.6em 0; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
th { background: #f4f4f4; position: sticky; top: 0; }
table.sortable th { cursor: pointer; user-select: none; }
table.sortable th[aria-sort="ascending"]::after { content: " \\25B2"; }
table.sortable th[aria-sort="descending"]::after { content: " \\25BC"; }
.scroll { max-height: 34em; overflow: auto; }
.plot { width: 100%; min-height: 420px; }
.bad { color: #a40; }
"""

# Click a header to sort by it (numbers by their data-v value, text otherwise); click again to reverse.
SORT_SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var asc = th.getAttribute("aria-sort") !== "ascending";
      table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", asc ? "ascending" : "descending");
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      function key(row) {
        var cell = row.cells[col];
        var v = cell.getAttribute("data-v");
        return v === null ? cell.textContent : (v === "" ? null : parseFloat(v));
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === null || y === null) { return (x === null) - (y === null); }  // empty cells last
        var c = (typeof x === "number" && typeof y === "number") ? x - y : String(x).localeCompare(String(y));
        return asc ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""


def esc(value: Any) -> str:
    """Text for the page: None is empty, everything else escaped (quotes included, for attributes)."""
    return "" if value is None else html.escape(str(value), quote=True)


def fmt(value: Any, spec: str = ".2f") -> str:
    """A number formatted with `spec`, anything else escaped; None and NaN are empty."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return esc(value)
    if isinstance(value, float) and not math.isfinite(value):
        return ""
    return format(value, spec)


class Cell:
    """A table cell: its shown text (escaped here) and, for numbers, the value it sorts by."""

    def __init__(self, value: Any, spec: str | None = None, cls: str = ""):
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        self.text = fmt(value, spec) if number and spec else esc(value)
        self.sort = value if number and (not isinstance(value, float) or math.isfinite(value)) else None
        self.number = number or value is None
        self.cls = cls

    def html(self) -> str:
        classes = " ".join(c for c in ("num" if self.number else "", self.cls) if c)
        attrs = f' class="{classes}"' if classes else ""
        if self.number:
            attrs += f' data-v="{"" if self.sort is None else repr(float(self.sort))}"'
        return f"<td{attrs}>{self.text}</td>"


def table(
    headers: list[str],
    rows: list[list[Cell | Any]],
    *,
    sortable: bool = False,
    scroll: bool = False,
    table_id: str | None = None,
) -> str:
    """An HTML table; `rows` hold `Cell`s or plain values (escaped as text)."""
    cls = ' class="sortable"' if sortable else ""
    ident = f' id="{esc(table_id)}"' if table_id else ""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join((c if isinstance(c, Cell) else Cell(c)).html() for c in row) + "</tr>" for row in rows
    )
    out = f"<table{ident}{cls}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    return f'<div class="scroll">{out}</div>' if scroll else out


def script_json(text: str) -> str:
    """JSON text made safe inside <script>: `<`, `>`, `&` and U+2028/2029 as \\u escapes (still the same JSON)."""
    for char, escaped in (
        ("&", "\\u0026"),
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escaped)
    return text


def plotly_module():
    """plotly, or the one-line error naming the extra that installs it."""
    try:
        import plotly
    except ImportError:
        raise missing_extra("plotly", "report") from None
    return plotly


def figure(fig_id: str, fig) -> str:
    """A plotly figure as a <div> and the <script> that draws it (the figure's JSON escaped by `script_json`)."""
    plotly_module()
    import plotly.io as pio

    spec = script_json(pio.to_json(fig, validate=False, pretty=False))
    config = script_json(json.dumps(PLOTLY_CONFIG))
    return (
        f'<div id="{esc(fig_id)}" class="plot"></div>\n<script>(function () {{ var f = {spec}; '
        f'Plotly.newPlot("{esc(fig_id)}", f.data, f.layout, {config}); }})();</script>'
    )


def document(title: str, nav: list[tuple[str, str]], body: str) -> str:
    """The whole page: plotly.js inline in <head>, the sections, the sorting script."""
    plotly_module()
    from plotly.offline import get_plotlyjs

    links = "".join(f'<a href="#{esc(anchor)}">{esc(text)}</a>' for anchor, text in nav)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)}</title>
<style>{STYLE}</style>
<script>window.PlotlyConfig = {{MathJaxConfig: "local"}};</script>
<script id="plotly-js">{get_plotlyjs()}</script>
</head>
<body>
<h1>{esc(title)}</h1>
<nav>{links}</nav>
{body}
<script>{SORT_SCRIPT}</script>
</body>
</html>
"""


__all__ = ["CSP", "Cell", "document", "esc", "figure", "fmt", "plotly_module", "script_json", "table"]
