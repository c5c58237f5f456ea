"""`latvit report`: one self-contained HTML page from any mix of latvit's result files.

    from latvit.report import write_report
    write_report(["latvit-bench.json", "xxs-profile.json", "runs/search"], "report.html")

Inputs are recognised by their content (`latvit.report.inputs`); the page shows, each where its data
is present, accuracy against measured latency with the Pareto front, the bench table, a comparison
between configurations, profiles, density, LUT validation, search and compression
(`latvit.report.sections`). It opens offline: plotly.js is inline and every string from a result file
is escaped (`latvit.report.markup`).
"""

from latvit.report.inputs import KINDS, ResultFile, bench_result, load_result, load_results
from latvit.report.page import build_report, write_report

__all__ = ["KINDS", "ResultFile", "bench_result", "build_report", "load_result", "load_results", "write_report"]
