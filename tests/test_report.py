"""`latvit report`: one offline HTML page from result files, its sections, escaping, bad input, and a real
browser (Chromium via Selenium, skipped with the reason where it is not installed).

The inputs are small synthetic result files written with latvit's own record functions (bench records,
Profile, DensityReport, search steps); nothing is measured here.
"""

import json
import re
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

from latvit.analysis.density import DensityReport
from latvit.analysis.profile import OpTime, Profile
from latvit.cli import main
from latvit.latency.bench import base_record, finish_record, pareto_front, records_csv, records_json
from latvit.models.spaces import Choice
from latvit.report import bench_result, build_report, load_results, write_report
from latvit.report.markup import script_json
from latvit.report.sections import series_labels
from latvit.search.algorithms import Step
from latvit.targets.protocol import Timing, machine_info

pytest.importorskip("plotly")

EVIL = "<script>alert(1)</script>"
EVIL_CLOSE = "</script><img src=x onerror=alert(1)>"


# -- result files, written with latvit's own record functions ----------------------------------------------
def bench_record(model, runtime, ms, *, cpu=None, batch=1, gflops=1.5, params=5e6, **extra):
    record = (
        base_record(model, runtime, batch, 224, 2)
        | machine_info(2)
        | {
            "status": "ok",
            "source": "timm" if model.startswith("timm:") else "latvit",
            "deployed": True,
            "runtime_version": f"{runtime} 1.0",
            "params_m": params / 1e6,
            "gflops": gflops,
            "median_ms": ms,
            "p90_ms": ms * 1.1,
            "min_ms": ms * 0.9,
            "mean_ms": ms,
            "cv": 0.04,
            "iters": 50,
            "export_abs_diff": 1e-6,
        }
    )
    if cpu:
        record["cpu"] = cpu
    return finish_record(record, gflops * 1e9, params, 120.0) | extra


def bench_records():
    """Seven measured rows with a top-1 on two runtimes (one with hostile strings), one failed row."""
    rows = [
        bench_record(m, rt, ms * scale)
        for rt, scale in (("ort", 1.0), ("openvino", 0.8))
        for m, ms in (("efficientformer_l1", 10.0), ("mobilevit_xxs", 5.0), ("timm:fastvit_t8", 7.0))
    ]
    rows.append(
        bench_record("efficientformer_l1", "ort", 3.0)
        | {"model": EVIL, "top1": 90.0, "top1_source": EVIL_CLOSE, "cpu": EVIL}
    )
    failed = base_record("mobilevit_s", "ort", 1, 256, 2) | machine_info(2) | {"status": "failed", "error": EVIL_CLOSE}
    return rows + [failed]


def profile_dict(model="mobilevit_xxs"):
    t = Timing(2.0, 2.2, 1.9, 2.0, 0.05, 20)
    ops = [
        OpTime("conv", "Conv", "stem.0", "stem[0]", "conv_bn_act", "stem", "stem", 0.5, 1),
        OpTime("mm", "MatMul", "stages.0.blocks.0.attn", "stages[0][0]", "mobilevit", "token_mixer", "attn", 1.0, 2),
        OpTime("gelu", "Gelu", "stages.0.blocks.0.mlp", "stages[0][0]", "mobilevit", "activation", "act", 0.3, 2),
    ]
    blocks = [{"where": "stem[0]", "kind": "conv_bn_act"}, {"where": "stages[0][0]", "kind": "mobilevit"}]
    return Profile(model, "ort", "onnxruntime 1.0", 64, 1, "ort profiler", ops, t, t, blocks, machine_info(1)).to_dict()


def density_dict():
    rows = [
        {
            "label": label,
            "kind": kind,
            "resolution": r,
            "c_in": 64,
            "width": 64,
            "source": "test",
            "gflops": 0.1 * r,
            "mparams": 0.05,
            "ms": 1.0,
            "gflops_per_s": g * r,
            "mparams_per_s": 50.0,
            "pct_peak": g * r / 2,
            "error": None,
        }
        for label, kind, g in ((EVIL, "meta4d", 3.0), ("BottleNeck", "bottleneck", 5.0))
        for r in (56, 28, 14, 7)
    ]
    rows.append(rows[0] | {"resolution": 112, "error": EVIL_CLOSE, "gflops_per_s": None})
    return DensityReport("ort", "onnxruntime 1.0", 2, 200.0, rows, machine_info(2)).to_dict()


def lut_validate_dict():
    """The shape `latvit lut validate --json` writes (rows, error statistics per method)."""
    rows = [
        {
            "name": n,
            "source": s,
            "img_size": 224,
            "gflops": g,
            "measured_ms": m,
            "predicted_ms": p,
            "low_ms": p * 0.95,
            "high_ms": p * 1.05,
            "blocks_ms": p * 0.9,
            "flops_ms": g * 4,
        }
        for n, s, g, m, p in (
            ("efficientformer_l1", "zoo", 2.6, 11.0, 10.5),
            (EVIL, "sample", 1.5, 6.0, 6.4),
            ("sample_2", "sample", 1.0, 4.0, 3.9),
        )
    ]
    stats = {
        "n": 3,
        "mape": 4.0,
        "within_10": 1.0,
        "max_abs_pct": 6.7,
        "spearman": 1.0,
        "worst": [{"name": EVIL, "measured_ms": 6.0, "predicted_ms": 6.4, "error_pct": 6.7}],
    }
    return {
        "table": "lut.json",
        "meta": {
            "space": "efficientformer",
            "img_size": 224,
            "runtime": "ort",
            "runtime_version": "onnxruntime 1.0",
            "threads": 2,
            "deploy": True,
            "created": "2026-12-01T00:00:00+00:00",
        }
        | machine_info(2),
        "rows": rows,
        "skipped": [],
        "methods": {"lut_predictor": stats | {"band_coverage": 0.67}, "flops_baseline": stats},
        "ms_per_gflop": 4.0,
    }


def write_search_dir(path: Path) -> None:
    choice = Choice((48, 96), (2, 2), ((4.0, 4.0), (4.0, 4.0)))
    steps = [Step("start", choice, 12.0, 80.0), Step("slim", choice, 9.0, 78.5), Step("slim", choice, 7.5, 77.0)]
    path.mkdir()
    (path / "trace.json").write_text(json.dumps([s.as_dict() for s in steps]))
    (path / "pareto.json").write_text(json.dumps([s.as_dict() for s in steps[1:]]))
    (path / "result.json").write_text(
        json.dumps(
            {
                "method": "efficientformer",
                "space": "efficientformer",
                "supernet": "gumbel",
                "img_size": 64,
                "target_ms": 8.0,
                "predicted_ms": 7.5,
                "accuracy_inherited": 77.0,
                "params_m": 3.1,
                "runtime": "ort",
                "spec": str(path / "spec.json"),
                "measured_ms": 7.9,
                "measure_error": "",
            }
        )
    )


@pytest.fixture
def result_files(tmp_path):
    return write_result_files(tmp_path)


def write_result_files(tmp_path: Path) -> dict[str, Path]:
    """Every kind of input latvit report reads, written under `tmp_path`: {kind: path}."""
    files = {
        "bench": tmp_path / "bench.json",
        "csv": tmp_path / "other-machine.csv",
        "profile": tmp_path / "profile.json",
        "density": tmp_path / "density.json",
        "lut": tmp_path / "lut-validate.json",
        "accuracy": tmp_path / "validate.json",
        "compression": tmp_path / "compression.json",
        "search": tmp_path / "search",
    }
    files["bench"].write_text(records_json(bench_records()))
    files["csv"].write_text(
        records_csv(
            [
                bench_record("efficientformer_l1", "ort", 20.0, cpu="Other CPU"),
                bench_record("mobilevit_xxs", "ort", 4.0, cpu="Other CPU"),
            ]
        )
    )
    files["profile"].write_text(json.dumps(profile_dict()))
    files["density"].write_text(json.dumps(density_dict()))
    files["lut"].write_text(json.dumps(lut_validate_dict()))
    files["accuracy"].write_text(
        json.dumps(
            {
                "model": "mobilevit_xxs",
                "data": "fashion-mnist",
                "img_size": 32,
                "crop_pct": 1.0,
                "tome": "0",
                "sparsity": None,
                "top1": 91.5,
                "top5": 99.9,
                "loss": 0.25,
                "images": 10000,
                "images_per_sec": 900.0,
            }
        )
    )
    files["compression"].write_text(
        json.dumps(
            {
                "format": "latvit-compression/1",
                "machine": machine_info(2),
                "batch": 1,
                "recipe": "vit",
                "rows": [
                    {"model": EVIL, "runtime": "ort", "variant": v, "median_ms": ms, "speedup": 4.0 / ms, "top1": None}
                    for v, ms in (("fp32", 4.0), ("int8", 2.0))
                ]
                + [{"model": "mobilevit_xxs", "runtime": "ort", "variant": "int8", "error": EVIL_CLOSE}],
            }
        )
    )
    write_search_dir(files["search"])
    return files


# -- reading the page back -------------------------------------------------------------------------------
class PageParser(HTMLParser):
    """Tags, section ids, table rows and each figure's JSON of a report page."""

    def __init__(self):
        super().__init__()
        self.tags, self.sections, self.scripts, self.rows = [], [], [], {}
        self._script, self._table = None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "section":
            self.sections.append(attrs["id"])
        if tag == "script":
            self._script = []
        if tag == "table":
            self._table = attrs.get("id")
        if tag == "tr" and self._table:
            self.rows.setdefault(self._table, []).append([])
        if tag == "td" and self._table:
            self.rows[self._table][-1].append(attrs)

    def handle_endtag(self, tag):
        if tag == "script":
            self.scripts.append("".join(self._script))
            self._script = None
        if tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._script is not None:
            self._script.append(data)

    def figures(self) -> dict[str, dict]:
        out = {}
        for text in self.scripts:
            m = re.match(r'\(function \(\) \{ var f = (.*); Plotly\.newPlot\("([^"]+)"', text, re.S)
            if m:
                out[m.group(2)] = json.loads(m.group(1))
        return out


def parse(page: str) -> PageParser:
    parser = PageParser()
    parser.feed(page)
    return parser


def without_plotly_js(page: str) -> str:
    """The page less the plotly.js bundle (whose code holds URL strings of its own, e.g. map attributions)."""
    start = page.index('<script id="plotly-js">')
    return page[:start] + page[page.index("</script>", start) + len("</script>") :]


def records_traces(fig: dict) -> list[dict]:
    return [t for t in fig["data"] if (t.get("meta") or {}).get("role") == "records"]


# -- tests -----------------------------------------------------------------------------------------------
def test_report_has_a_section_per_kind_of_input(result_files, tmp_path):
    out = tmp_path / "report.html"
    assert main(["report", *map(str, result_files.values()), "-o", str(out)]) == 0
    page = out.read_text()
    parsed = parse(page)
    assert parsed.sections == [
        "inputs",
        "pareto",
        "bench",
        "comparison",
        "accuracy",
        "profile",
        "density",
        "lut",
        "search",
        "compression",
    ]
    for path in result_files.values():  # every input is named in the always-visible inputs table
        assert str(path) in page
    figs = parsed.figures()
    assert {
        "fig-pareto",
        "fig-comparison",
        "fig-profile-categories",
        "fig-profile-0",
        "fig-density-0",
        "fig-lut-0",
        "fig-search-0",
        "fig-compression",
    } <= set(figs)
    # the comparison: three configurations (ort and openvino here, ort on the other machine), ratios per model
    comparison = figs["fig-comparison"]["data"]
    assert len(comparison) == 2 and all(len(t["y"]) == len(t["x"]) for t in comparison)
    # LUT validation: the +-10% band and y = x drawn, one trace per kind of point
    names = [t.get("name") for t in figs["fig-lut-0"]["data"]]
    assert "±10%" in names and "y = x" in names and "FLOPs baseline" in names
    # density: one line per block type, GFLOP/s against resolution, reversed log axis
    density = figs["fig-density-0"]
    assert len(density["data"]) == 2 and density["layout"]["xaxis"]["autorange"] == "reversed"
    assert density["data"][1]["x"] == [7, 14, 28, 56] and density["data"][1]["y"] == [35.0, 70.0, 140.0, 280.0]


def test_pareto_chart_holds_every_record_with_a_top1(result_files, tmp_path):
    inputs = load_results(
        [result_files["bench"], result_files["csv"], result_files["accuracy"], result_files["search"]]
    )
    fig = parse(build_report(inputs)).figures()["fig-pareto"]
    measured = [r for r in inputs[0].data + inputs[1].data if r["status"] == "ok"]
    points = [(x, y) for t in records_traces(fig) for x, y in zip(t["x"], t["y"])]
    assert len(points) == len(measured) == 9
    top1 = {"mobilevit_xxs": 91.5}  # measured by the validate input, in place of the published 69.0
    assert sorted(points) == sorted((r["median_ms"], top1.get(r["model"], r["top1"])) for r in measured)
    # one series per runtime and machine (the hostile row names a third CPU); each has its Pareto front,
    # grouped with it for the legend
    series = [t["name"] for t in records_traces(fig)]
    assert len(series) == 4 and any("Other CPU" in s for s in series)
    fronts = [t for t in fig["data"] if t["meta"]["role"] == "front"]
    for trace, front in zip(records_traces(fig), fronts):
        assert front["legendgroup"] == trace["legendgroup"] and front["showlegend"] is False
        pts = list(zip(trace["x"], trace["y"]))
        assert sorted(zip(front["x"], front["y"])) == sorted(pts[i] for i in pareto_front(pts))
    # the search's result at its measured latency, the hover with every record field, the axis toggle
    assert [t for t in fig["data"] if t["meta"]["role"] == "search"][0]["x"] == [7.9]
    assert all(f"{field}: " in records_traces(fig)[0]["hovertext"][0] for field in ("median_ms", "cpu", "top1_source"))
    buttons = fig["layout"]["updatemenus"][0]["buttons"]
    assert [b["args"][0]["xaxis.type"] for b in buttons] == ["linear", "log"]


def test_bench_table_is_sortable_with_density_and_peak(result_files):
    page = build_report(load_results([result_files["bench"]]))
    parsed = parse(page)
    rows = parsed.rows["bench-table"][1:]  # the header row has no cells
    assert len(rows) == len(bench_records())
    assert ("table", {"id": "bench-table", "class": "sortable"}) in parsed.tags
    assert "GFLOP/s" in page and "% peak" in page and "aria-sort" in page  # the columns and the sort script
    numeric = [float(c["data-v"]) for row in rows for c in row if c.get("data-v")]
    assert pytest.approx(150.0) in numeric  # density of the 10 ms rows: 1.5 GFLOP / 10 ms = 150 GFLOP/s
    assert pytest.approx(125.0) in numeric  # and its share of the 120 GFLOP/s peak, in %


def test_every_string_from_a_result_file_is_escaped(result_files):
    page = build_report(load_results(list(result_files.values())))
    ours = without_plotly_js(page)
    assert EVIL not in page and EVIL_CLOSE not in page and "<img" not in ours
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # shown, as text
    parsed = parse(page)
    assert {tag for tag, _ in parsed.tags} <= {
        "html",
        "head",
        "meta",
        "title",
        "style",
        "script",
        "body",
        "h1",
        "h2",
        "h3",
        "nav",
        "a",
        "section",
        "p",
        "div",
        "table",
        "thead",
        "tbody",
        "tr",
        "th",
        "td",
    }
    assert all(
        set(attrs) <= {"id", "class", "href", "lang", "charset", "http-equiv", "content", "name", "data-v"}
        for _, attrs in parsed.tags
    )
    # every embedded figure is JSON without a raw <, > or & (so no string can leave its <script>)
    figure_scripts = [s for s in parsed.scripts if "Plotly.newPlot" in s]
    assert figure_scripts and not any(c in s for s in figure_scripts for c in "<>&")
    assert ours.count("<script") == ours.count("</script>")
    assert script_json('{"a": "</script>&\u2028"}') == '{"a": "\\u003c/script\\u003e\\u0026\\u2028"}'


@pytest.mark.parametrize(
    "content, problem",
    [
        ('{"foo": 1}', "not a latvit result file"),
        ("\x89PNG\r\n\x1a\n\x00\x00", "not a latvit result file"),
        ("", "empty"),
        ('{"format": "latvit-bench/2", "records": []}', "format version 2"),
        ('{"format": "latvit-lut", "format_version": 1, "entries": {}}', "lookup table"),
        ('{"schema": "latvit.profile", "schema_version": 7, "model": "x"}', "format version 7"),
        ('{"format": "latvit-bench/1", "records": [{"model": "x", "runtime": "ort"}]}', "lacks 'status'"),
        ("name,size\nfoo,1\n", "not a latvit result file"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, result_files, content, problem):
    bad = tmp_path / ("bad.csv" if content.startswith("name,") else "bad.json")
    bad.write_bytes(content.encode("latin-1"))
    out = tmp_path / "report.html"
    assert main(["report", str(result_files["bench"]), str(bad), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad) in err and problem in err, err
    assert not out.exists() and not list(tmp_path.glob(".report.html*"))


def test_truncated_files_are_refused(tmp_path, capsys, result_files):
    for name in ("bench", "csv", "profile"):
        text = result_files[name].read_text()
        cut = tmp_path / f"cut-{result_files[name].name}"
        cut.write_text(text[: len(text) // 2])
        out = tmp_path / "report.html"
        out.write_text("the previous report")
        assert main(["report", str(cut), "-o", str(out)]) == 2
        err = capsys.readouterr().err
        assert str(cut) in err and ("truncated" in err or "incomplete" in err), err
        assert out.read_text() == "the previous report"  # left as it was: the page is written atomically


def test_missing_inputs_and_foreign_directories(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope.json"), "-o", str(tmp_path / "r.html")]) == 2
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "dir").mkdir()
    assert main(["report", str(tmp_path / "dir"), "-o", str(tmp_path / "r.html")]) == 2
    assert "not a latvit search output" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()


def test_missing_plotly_names_the_extra(result_files, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "plotly", None)  # `import plotly` raises ImportError
    assert main(["report", str(result_files["bench"]), "-o", str(tmp_path / "r.html")]) == 2
    assert "pip install 'latvit[report]'" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()


def test_csv_and_json_hold_the_same_records(tmp_path):
    records = bench_records()
    (tmp_path / "b.json").write_text(records_json(records))
    (tmp_path / "b.csv").write_text(records_csv(records))
    from_json, from_csv = (r.data for r in load_results([tmp_path / "b.json", tmp_path / "b.csv"]))
    assert from_json == from_csv


def test_series_follow_what_differs():
    a = bench_record("mobilevit_xxs", "ort", 5.0) | {"file": "a.json"}
    assert series_labels([a, a | {"runtime": "openvino"}]) == ["ort", "openvino"]
    assert series_labels([a, a | {"cpu": "Other CPU"}])[1] == "ort · Other CPU"
    assert series_labels([a, a | {"batch": 8}]) == ["ort · batch 1", "ort · batch 8"]
    assert series_labels([a, a | {"file": "b.json"}]) == ["ort (a.json)", "ort (b.json)"]  # before / after
    assert series_labels([a | {"tome_r": "keep0.5"}]) == ["ort · tome keep0.5"]


def test_bench_writes_the_report_of_its_run(tmp_path, monkeypatch):
    """`latvit bench --report` hands the run's records to the report (the run itself is stubbed here)."""
    records = bench_records()[:3]
    monkeypatch.setattr("latvit.cli.measure_bench", lambda req, on_row=None: records)  # cli's run_bench
    out = tmp_path / "run.html"
    assert main(["bench", "--models", "mobilevit_xxs", "--json", "", "--plot", "", "--report", str(out)]) == 0
    fig = parse(out.read_text()).figures()["fig-pareto"]
    assert sum(len(t["x"]) for t in records_traces(fig)) == 3
    assert bench_result(records).kind == "bench"


def test_report_api_writes_atomically(result_files, tmp_path):
    out = write_report([result_files["bench"]], tmp_path / "sub" / "r.html", title=EVIL)
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and EVIL not in page and "&lt;script&gt;" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?https?:""", without_plotly_js(page))  # nothing to fetch


# -- in a real browser ------------------------------------------------------------------------------------
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture
def browser():
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("Chromium is not installed (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1000",
        "--proxy-server=127.0.0.1:9",
        "--host-resolver-rules=MAP * ~NOTFOUND",
    ):  # no network at all
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    # the driver's path given: selenium-manager never runs, so nothing is downloaded
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_network_conditions(offline=True, latency=0, download_throughput=0, upload_throughput=0)
    yield driver
    driver.quit()


@pytest.mark.slow
def test_report_in_chromium_offline(result_files, tmp_path, browser):
    from selenium.webdriver.common.by import By

    out = write_report(list(result_files.values()), tmp_path / "report.html")
    browser.get(out.resolve().as_uri())
    pareto = "return document.getElementById('fig-pareto').data"
    traces = browser.execute_script(pareto)
    drawn_figures = browser.execute_script("return document.querySelectorAll('div.plot.js-plotly-plot').length")
    assert drawn_figures == len(parse(out.read_text()).figures()) == 8  # every figure drawn
    # the points drawn are the records: count and values
    records = [r for r in load_results([result_files["bench"], result_files["csv"]]) for r in r.data]
    measured = [r for r in records if r["status"] == "ok"]
    drawn = [(x, y) for t in traces if (t.get("meta") or {}).get("role") == "records" for x, y in zip(t["x"], t["y"])]
    top1 = {"mobilevit_xxs": 91.5}
    assert sorted(drawn) == sorted((r["median_ms"], top1.get(r["model"], r["top1"])) for r in measured)
    # a click on the first legend entry hides that series (and its front), the others stay
    browser.find_element(By.CSS_SELECTOR, "#fig-pareto g.legend g.traces rect.legendtoggle").click()
    hidden = "return document.getElementById('fig-pareto').data[0].visible === 'legendonly'"
    deadline = time.monotonic() + 10  # plotly waits out its double-click window before a single click acts
    while not browser.execute_script(hidden) and time.monotonic() < deadline:
        time.sleep(0.2)
    visible = [t.get("visible") for t in browser.execute_script(pareto)]
    assert visible[:2] == ["legendonly", "legendonly"] and "legendonly" not in visible[2:]
    # the hostile strings stayed text: no script ran, no image was made
    assert browser.execute_script("return document.querySelectorAll('img').length") == 0
    assert EVIL in browser.find_element(By.ID, "bench-table").text
    # the header click sorts the table by latency
    browser.find_element(By.XPATH, "//table[@id='bench-table']//th[text()='median ms']").click()
    cells = browser.execute_script(
        "return Array.from(document.querySelectorAll('#bench-table tbody tr')).map("
        "r => r.cells[6].getAttribute('data-v')).filter(v => v)"
    )
    assert [float(c) for c in cells] == sorted(float(c) for c in cells)
    # no console errors, no request left the page, no element points off it
    errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert not errors, errors
    requests = [json.loads(e["message"])["message"] for e in browser.get_log("performance")]
    urls = {m["params"]["request"]["url"] for m in requests if m["method"] == "Network.requestWillBeSent"}
    assert urls == {out.resolve().as_uri()}, urls
    assert (
        browser.execute_script(
            "return Array.from(document.querySelectorAll('[src],[href]')).map("
            "e => e.getAttribute('src') || e.getAttribute('href')).filter("
            "u => /^https?:/.test(u)).length"
        )
        == 0
    )
