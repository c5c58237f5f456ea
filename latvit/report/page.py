"""The report page: every section the inputs have data for, in one self-contained HTML file."""

from __future__ import annotations

from pathlib import Path

from latvit.report.inputs import ResultFile, load_results
from latvit.report.markup import document, esc, plotly_module
from latvit.report.sections import sections
from latvit.utils import atomic_write_text, check_writable

DEFAULT_TITLE = "latvit report"


def build_report(inputs: list[ResultFile], title: str = DEFAULT_TITLE) -> str:
    """The HTML page for `inputs` (see `latvit.report.sections`); nothing is written."""
    parts = sections(inputs)
    body = "\n".join(
        f'<section id="{esc(anchor)}"><h2>{esc(heading)}</h2>\n{html}</section>' for anchor, heading, html in parts
    )
    return document(title, [(anchor, heading) for anchor, heading, _ in parts], body)


def write_report(inputs: list[ResultFile] | list[str | Path], output: str | Path, title: str = DEFAULT_TITLE) -> Path:
    """Read `inputs` (paths, or `ResultFile`s already read), build the page and write it atomically to
    `output`: a bad input raises its one-line error before anything is written."""
    output = Path(output)
    check_writable(output)
    plotly_module()  # the missing extra says so before any input is read
    results = [r for r in inputs if isinstance(r, ResultFile)]
    if len(results) != len(inputs):
        results = load_results(list(inputs))
    atomic_write_text(output, build_report(results, title))
    return output


__all__ = ["DEFAULT_TITLE", "build_report", "write_report"]
