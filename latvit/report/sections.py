"""The report's sections, each built from the inputs that carry its data (None when none do).

A section is (anchor, title, HTML). The inputs section is always there: every input's machine, runtime
versions, protocol and date. The others appear with their data: the Pareto chart and the bench table
(bench records), the comparison (records from two or more configurations), profiles, density, LUT
validation, search and compression.

Bench records are grouped into series by their configuration (`series_labels`): the runtime, and
whatever else differs between the records (device, batch, threads, precision, token merging, sparsity;
the input file where the same configuration comes from two files, e.g. before and after a change).
A record's top-1 is its published one, or the top-1 a `latvit validate --json` input measured for that
model.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from latvit.latency.bench import FRONTIER_MODELS, SEED_MODELS, STATUS_OK, SURVEY_BASELINES
from latvit.report import figures
from latvit.report.inputs import KINDS, ResultFile
from latvit.report.markup import Cell, esc, figure, table

Section = tuple[str, str, str]  # (anchor, title, html)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _note(text: str) -> str:
    return f'<p class="note">{text}</p>'


# -- bench records: gathered, top-1 applied, grouped into series ----------------------------------------
def bench_rows(inputs: list[ResultFile]) -> list[dict]:
    """Every bench record of the inputs, with the file it came from (`file`) and its top-1 taken from a
    `latvit validate` input where one measured that model (the published one kept as `top1_published`)."""
    measured = measured_top1(inputs)
    rows = []
    for result in inputs:
        if result.kind != "bench":
            continue
        for record in result.data:
            row = dict(record) | {"file": result.name}
            if row["model"] in measured:
                top1, source = measured[row["model"]]
                row |= {"top1_published": row.get("top1"), "top1": top1, "top1_source": source}
            rows.append(row)
    return rows


def measured_top1(inputs: list[ResultFile]) -> dict[str, tuple[float, str]]:
    """model -> (top-1, where it was measured) from `latvit validate --json` inputs (the last one wins)."""
    out = {}
    for result in inputs:
        if result.kind == "accuracy":
            d = result.data
            out[d["model"]] = (
                float(d["top1"]),
                f"measured by latvit validate on {d['data']} "
                f"({d.get('images', '?')} images, {d['img_size']} px; {result.name})",
            )
    return out


def device_of(record: dict) -> str:
    """The device a record was measured on: its target when remote, else this machine's CPU."""
    target = record.get("target")
    return target if target and target != "local" else (record.get("cpu") or "unknown device")


def _config(record: dict) -> dict[str, Any]:
    return {
        "device": device_of(record),
        "runtime": record["runtime"],
        "precision": record.get("precision"),
        "batch": record.get("batch"),
        "threads": record.get("threads"),
        "tome": record.get("tome_r"),
        "sparsity": record.get("sparsity"),
    }


def series_labels(rows: list[dict]) -> list[str]:
    """Each row's series label (see the module docstring), in the order of `rows`."""
    configs = [_config(r) for r in rows]
    varies = {k for k in configs[0] if len({repr(c[k]) for c in configs}) > 1} if configs else set()
    labels = []
    for c in configs:
        parts = [str(c["runtime"])]
        if c["precision"]:
            parts.append(str(c["precision"]))
        if "device" in varies:
            parts.append(str(c["device"]))
        if "batch" in varies:
            parts.append(f"batch {c['batch']}")
        if "threads" in varies:
            parts.append(f"{c['threads']} threads")
        if c["tome"] not in (None, 0, "0", ""):
            parts.append(f"tome {c['tome']}")
        if c["sparsity"] not in (None, 0, ""):
            parts.append(f"sparsity {c['sparsity']}")
        labels.append(" · ".join(parts))
    files = defaultdict(set)
    for label, row in zip(labels, rows):
        files[label].add(row["file"])
    return [f"{label} ({row['file']})" if len(files[label]) > 1 else label for label, row in zip(labels, rows)]


def model_group(model: str) -> str:
    """Which marker a model gets: a latvit seed, today's frontier, a survey baseline, or other."""
    if model in SEED_MODELS:
        return "seed"
    if model in FRONTIER_MODELS:
        return "frontier"
    return "baseline" if model in SURVEY_BASELINES else "other"


def _measured(row: dict) -> bool:
    return row.get("status") == STATUS_OK and _is_number(row.get("median_ms"))


# -- sections -------------------------------------------------------------------------------------------
def inputs_section(inputs: list[ResultFile]) -> Section:
    """Every input: what it is, the machine, runtime versions, protocol and date (always shown)."""
    rows = []
    for result in inputs:
        info = provenance(result)
        rows.append(
            [
                result.name,
                KINDS[result.kind],
                info["content"],
                info["device"],
                info["runtime"],
                info["protocol"],
                info["date"],
                info["software"],
            ]
        )
    html = table(["input", "kind", "content", "machine", "runtime", "protocol", "date", "software"], rows)
    return (
        "inputs",
        "Inputs",
        html
        + _note(
            "Dates are the results' own (measured_at, created) where they carry one, else the file's modification time."
        ),
    )


def provenance(result: ResultFile) -> dict[str, str]:
    """Plain text (escaped where shown) saying what an input holds and where, how and when it was measured:
    content, device, runtime, protocol, date, software."""
    info = dict.fromkeys(("content", "device", "runtime", "protocol", "date", "software"), "")
    file_date = f"{result.modified} (file)" if result.modified else ""
    return info | {"date": file_date} | PROVENANCE[result.kind](result.data, file_date)


def _bench_provenance(d: list[dict], file_date: str) -> dict[str, str]:
    ok = [r for r in d if _measured(r)]
    iters = [r["iters"] for r in ok if _is_number(r.get("iters"))]
    dates = sorted(str(r["measured_at"]) for r in d if r.get("measured_at"))
    return {
        "content": f"{len(d)} records ({len(ok)} measured): {len({r['model'] for r in d})} models on "
        f"{', '.join(_distinct(d, 'runtime'))}",
        "device": _join(sorted({device_of(r) for r in d}) + _distinct(d, "cores", "{} cores")),
        "runtime": _join(_distinct(d, "runtime_version")),
        "protocol": _join(
            _distinct(d, "batch", "batch {}")
            + _distinct(d, "threads", "{} threads")
            + ([f"{min(iters)}-{max(iters)} timed calls"] if iters else [])
            + _distinct(d, "deployed", "deployed: {}")
            + _distinct(d, "target", "target {}")
        ),
        "date": (dates[0] if dates[0] == dates[-1] else f"{dates[0]} to {dates[-1]}") if dates else file_date,
        "software": _join(
            _distinct(d, "latvit_version", "latvit {}")
            + _distinct(d, "torch_version", "torch {}")
            + _distinct(d, "python", "Python {}")
            + _distinct(d, "platform")
        ),
    }


def _machine(m: dict) -> dict[str, str]:
    """device and software from a `machine_info` dict."""
    return {
        "device": _join([m.get("cpu"), f"{m['cores']} cores" if m.get("cores") else None]),
        "software": _join(
            [
                f"latvit {m['latvit_version']}" if m.get("latvit_version") else None,
                f"torch {m['torch_version']}" if m.get("torch_version") else None,
                m.get("platform"),
            ]
        ),
    }


def _profile_provenance(d: dict, file_date: str) -> dict[str, str]:
    coverage = f"ops explain {100 * d['coverage']:.0f}%" if _is_number(d.get("coverage")) else None
    return _machine(d.get("machine") or {}) | {
        "content": f"{d['model']} @ {d['img_size']} px, {len(d['blocks'])} blocks ({d.get('source', '')})",
        "runtime": d["runtime_version"],
        "protocol": _join([f"{d['threads']} threads", f"{d['e2e'].get('iters', '?')} profiled calls", coverage]),
    }


def _density_provenance(d: dict, file_date: str) -> dict[str, str]:
    peak = d.get("gemm_peak_gflops")
    return _machine(d.get("machine") or {}) | {
        "content": (
            f"{len(d['rows'])} cases: {len({r['label'] for r in d['rows']})} block types at "
            f"{', '.join(str(r) for r in sorted({r['resolution'] for r in d['rows']}))} px"
        ),
        "runtime": d["runtime_version"],
        "protocol": _join(
            [
                f"{d['threads']} threads",
                f"statistic {d.get('statistic', 'median')}",
                f"GEMM peak {peak:.0f} GFLOP/s" if _is_number(peak) else None,
            ]
        ),
    }


def _lut_provenance(d: dict, file_date: str) -> dict[str, str]:
    m, proto = d["meta"], d["meta"].get("network_protocol") or {}
    networks = (
        f"networks: warm-up {proto.get('warmup')}, {proto.get('iters')} calls, {proto.get('min_seconds')} s"
        if proto
        else None
    )
    return _machine(m) | {
        "content": f"{len(d['rows'])} networks of space {m.get('space')} @ {m.get('img_size')} px",
        "runtime": m.get("runtime_version", ""),
        "protocol": _join(
            [
                f"{m.get('threads')} threads",
                f"statistic {m.get('statistic', 'median')}",
                networks,
                "deployed" if m.get("deploy") else "as built",
            ]
        ),
        "date": f"table built {m['created']}" if m.get("created") else file_date,
    }


def _accuracy_provenance(d: dict, file_date: str) -> dict[str, str]:
    return {
        "content": f"{d['model']}: top-1 {d['top1']:.2f}% on {d['data']}",
        "protocol": _join(
            [
                f"{d.get('images', '?')} images",
                f"{d['img_size']} px",
                f"crop {d.get('crop_pct')}" if d.get("crop_pct") else None,
            ]
        ),
    }


def _search_provenance(d: dict, file_date: str) -> dict[str, str]:
    r, s = d.get("result") or {}, d.get("settings") or {}
    return {
        "content": (
            f"{r.get('method', '?')} on {r.get('space', s.get('space', '?'))}: "
            f"{len(d.get('trace') or [])} trace steps" + (", result" if r else ", no result yet")
        ),
        "runtime": r.get("runtime") or "",
        "protocol": _join(
            [
                f"target {r['target_ms']:g} ms" if _is_number(r.get("target_ms")) else None,
                f"data {s['data']}" if s.get("data") else None,
                f"{s['eval_images']} held-out images" if s.get("eval_images") else None,
            ]
        ),
    }


def _compression_provenance(d: dict, file_date: str) -> dict[str, str]:
    m = d.get("machine") or {}
    return _machine(m) | {
        "content": (
            f"{len(d['rows'])} rows: {len({r['model'] for r in d['rows']})} models, variants "
            f"{', '.join(_distinct(d['rows'], 'variant'))}"
        ),
        "runtime": _join(_distinct(d["rows"], "runtime")),
        "protocol": _join(
            [
                f"{m.get('threads')} threads",
                f"batch {d.get('batch', 1)}",
                f"recipe {d['recipe']}" if d.get("recipe") else None,
                f"top-1 on {d['data']}" if d.get("data") else None,
            ]
        ),
        "date": str(d.get("created") or file_date),
    }


PROVENANCE = {
    "bench": _bench_provenance,
    "profile": _profile_provenance,
    "density": _density_provenance,
    "lut-validate": _lut_provenance,
    "accuracy": _accuracy_provenance,
    "search": _search_provenance,
    "compression": _compression_provenance,
}


def _distinct(rows: list[dict], key: str, pattern: str = "{}") -> list[str]:
    return [pattern.format(v) for v in dict.fromkeys(r.get(key) for r in rows) if v not in (None, "")]


def _join(parts: list) -> str:
    return "; ".join(str(p) for p in parts if p not in (None, ""))


def pareto_section(rows: list[dict], labels: list[str], inputs: list[ResultFile]) -> Section | None:
    """Top-1 against measured latency, one series per configuration, with each series' Pareto front."""
    series: dict[str, list[dict]] = {}
    for row, label in zip(rows, labels):
        if _measured(row) and _is_number(row.get("top1")):
            series.setdefault(label, []).append(
                {
                    "median_ms": row["median_ms"],
                    "top1": row["top1"],
                    "model": row["model"],
                    "group": model_group(row["model"]),
                    "fields": row,
                }
            )
    found = found_models(inputs)
    if not series and not found:
        return None
    batches = {r.get("batch") for r in rows if _measured(r)}
    batch_note = f", batch {batches.pop()}" if len(batches) == 1 else ", per call"
    fig = figures.pareto_figure(list(series.items()), found, batch_note)
    shown = sum(len(v) for v in series.values())
    missing = sorted({r["model"] for r in rows if _measured(r) and not _is_number(r.get("top1"))})
    notes = [
        f"{shown} measured records with a top-1. Markers: "
        + ", ".join(f"{figures.GROUP_SYMBOLS[g]} = {figures.GROUP_NAMES[g]}" for g in figures.GROUP_NAMES)
        + ". Top-1 is the published ImageNet-1k number (latvit/models/published.py) unless a "
        "`latvit validate` input measured it (see top1_source in the hover). The dotted line of each "
        "series is its Pareto front; click a legend entry to hide a series; the buttons switch the "
        "latency axis between linear and log."
    ]
    if missing:
        notes.append(f"Not on the chart (no top-1 known): {esc(', '.join(missing))}.")
    if found:
        notes.append(
            "Stars: models found by `latvit search`, at their measured latency; their top-1 is the "
            "inherited-weight accuracy on the search's own data, not ImageNet."
        )
    return "pareto", "Accuracy against latency", figure("fig-pareto", fig) + "".join(_note(n) for n in notes)


def found_models(inputs: list[ResultFile]) -> list[dict]:
    """Search results measured on their runtime, as points for the Pareto chart."""
    out = []
    for result in inputs:
        r = (result.data.get("result") or {}) if result.kind == "search" else {}
        if _is_number(r.get("measured_ms")):
            name = f"{r['space']}_{r['method']}_{r['target_ms']:g}ms"
            out.append(
                {
                    "median_ms": r["measured_ms"],
                    "top1": r["accuracy_inherited"],
                    "model": name,
                    "group": "search",
                    "fields": r | {"file": result.name},
                }
            )
    return out


BENCH_COLUMNS = [  # header, record key, number format
    ("model", "model", None),
    ("series", None, None),
    ("status", "status", None),
    ("size", "img_size", "d"),
    ("params M", "params_m", ".2f"),
    ("GFLOPs", "gflops", ".2f"),
    ("median ms", "median_ms", ".2f"),
    ("p90 ms", "p90_ms", ".2f"),
    ("CV %", "cv", ".1f"),
    ("GFLOP/s", "gflops_per_s", ".1f"),
    ("% peak", "pct_peak", ".0f"),
    ("top-1", "top1", ".1f"),
    ("MES", "mes", ".1f"),
    ("export |diff|", "export_abs_diff", ".1e"),
    ("deployed", "deployed", None),
    ("top-1 source", "top1_source", None),
    ("error", "error", None),
    ("file", "file", None),
]


def bench_section(rows: list[dict], labels: list[str]) -> Section | None:
    """Every bench record in a sortable table (click a header), density and % of the run's peak included."""
    if not rows:
        return None
    body = []
    for row, label in zip(rows, labels):
        cells = []
        for _, key, spec in BENCH_COLUMNS:
            value = label if key is None else row.get(key)
            if key == "cv" and _is_number(value):
                value = 100 * value
            cells.append(Cell(value, spec, "bad" if key == "status" and value != STATUS_OK else ""))
        body.append(cells)
    peaks = _distinct([r for r in rows if _measured(r)], "peak_gflops")
    note = (
        "Density is GFLOP/s of the model's FLOPs at the measured median; % peak is against the best GEMM of "
        "the run (" + esc(", ".join(f"{float(p):.0f}" for p in peaks)) + " GFLOP/s)."
        if peaks
        else "No peak was recorded with these records."
    )
    return (
        "bench",
        "Bench records",
        table([h for h, _, _ in BENCH_COLUMNS], body, sortable=True, scroll=True, table_id="bench-table") + _note(note),
    )


def comparison_section(rows: list[dict], labels: list[str]) -> Section | None:
    """Per model, latency in each configuration and its ratio to the first configuration's."""
    times: dict[str, dict[str, float]] = defaultdict(dict)  # label -> model -> median ms
    for row, label in zip(rows, labels):
        if _measured(row):
            times[label].setdefault(row["model"], row["median_ms"])
    configs = list(times)
    if len(configs) < 2:
        return None
    base = configs[0]
    others = [c for c in configs[1:] if any(m in times[c] for m in times[base])]
    if not others:
        return (
            "comparison",
            "Comparison",
            _note(
                f"{len(configs)} configurations ({esc(', '.join(configs))}) "
                "share no measured model: nothing to compare."
            ),
        )
    models = [m for m in times[base] if any(m in times[c] for c in others)]
    ratios = [(c, [times[c][m] / times[base][m] if m in times[c] else None for m in models]) for c in others]
    headers = ["model", f"{base} ms"] + [h for c in others for h in (f"{c} ms", f"{c} / {base}")]
    body = [
        [m, Cell(times[base][m], ".2f")]
        + [cell for c, values in ratios for cell in (Cell(times[c].get(m), ".2f"), Cell(values[i], ".2f"))]
        for i, m in enumerate(models)
    ]
    fig = figures.ratio_figure(models, ratios, base)
    alone = [c for c in configs[1:] if c not in others]
    note = f"Baseline: {esc(base)}. A ratio below 1 is faster than the baseline." + (
        f" No model in common with it: {esc(', '.join(alone))}." if alone else ""
    )
    return (
        "comparison",
        "Comparison",
        _note(note) + figure("fig-comparison", fig) + table(headers, body, sortable=True),
    )


def profile_section(inputs: list[ResultFile]) -> Section | None:
    """Per-category bars over every profiled model, then one per-block chart per profile."""
    profiles = [
        (f"{p.data['model']} on {p.data['runtime']} @ {p.data['img_size']}", p.data)
        for p in inputs
        if p.kind == "profile"
    ]
    if not profiles:
        return None
    body = [
        [
            label,
            p.get("runtime_version"),
            Cell(p["threads"]),
            Cell(p["e2e"].get("mean_ms"), ".3f"),
            Cell((p.get("latency") or {}).get("median_ms"), ".3f"),
            Cell(100 * p["coverage"] if _is_number(p.get("coverage")) else None, ".1f"),
        ]
        for label, p in profiles
    ]
    html = table(["profile", "runtime", "threads", "profiled mean ms", "unprofiled median ms", "ops explain %"], body)
    html += figure("fig-profile-categories", figures.profile_categories_figure(profiles))
    for i, (label, p) in enumerate(profiles):
        html += figure(f"fig-profile-{i}", figures.profile_blocks_figure(p, label))
    return "profile", "Where the latency goes", html


def density_section(inputs: list[ResultFile]) -> Section | None:
    """TRT-ViT's density plot for each density input, failed cases listed."""
    found = [r for r in inputs if r.kind == "density"]
    if not found:
        return None
    html = ""
    for i, result in enumerate(found):
        d = result.data
        label = f"{d['runtime_version']}, {d['threads']} threads ({result.name})"
        html += figure(f"fig-density-{i}", figures.density_figure(d, label))
        failed = [r for r in d["rows"] if r.get("error")]
        if failed:
            html += _note(
                "Failed cases: " + esc("; ".join(f"{r['label']} at {r['resolution']}: {r['error']}" for r in failed))
            )
    return "density", "Computational density", html


METHOD_NAMES = {
    "lut_predictor": "LUT predictor",
    "lut_predictor_at_build": "LUT predictor at build (no drift correction)",
    "lut_sum_only": "LUT sum, uncalibrated",
    "flops_baseline": "FLOPs baseline",
}


def lut_section(inputs: list[ResultFile]) -> Section | None:
    """Predicted against measured latency with the +-10% band, and the error table of each method."""
    found = [r for r in inputs if r.kind == "lut-validate"]
    if not found:
        return None
    html = ""
    for i, result in enumerate(found):
        d, m = result.data, result.data["meta"]
        label = f"{m.get('space')} on {m.get('runtime_version')}, {m.get('threads')} threads ({result.name})"
        if d["rows"]:
            html += figure(f"fig-lut-{i}", figures.lut_figure(d, label))
        body = []
        for key, stats in d["methods"].items():
            worst = ", ".join(f"{w['name']} {w['error_pct']:+.0f}%" for w in stats.get("worst", [])[:3])
            body.append(
                [
                    METHOD_NAMES.get(key, key),
                    Cell(stats.get("n")),
                    Cell(stats.get("mape"), ".1f"),
                    Cell(100 * stats["within_10"] if _is_number(stats.get("within_10")) else None, ".0f"),
                    Cell(stats.get("max_abs_pct"), ".1f"),
                    Cell(100 * stats["band_coverage"] if _is_number(stats.get("band_coverage")) else None, ".0f"),
                    Cell(stats.get("spearman"), ".3f"),
                    worst,
                ]
            )
        html += table(
            ["method", "networks", "MAPE %", "within ±10% (%)", "max |error| %", "band covers %", "Spearman", "worst"],
            body,
        )
        if isinstance(d.get("drift"), dict) and d["drift"].get("note"):
            html += _note("Device drift: " + esc(d["drift"]["note"]))
        if d.get("skipped"):
            html += _note(f"{len(d['skipped'])} zoo models skipped: " + esc("; ".join(map(str, d["skipped"]))))
    return "lut", "Latency lookup table: predicted against measured", html


def search_section(inputs: list[ResultFile]) -> Section | None:
    """Each search's trace, front and result."""
    found = [r for r in inputs if r.kind == "search"]
    if not found:
        return None
    html = ""
    for i, result in enumerate(found):
        r = result.data.get("result") or {}
        html += f"<h3>{esc(result.name)}</h3>"
        if r:
            html += table(list(r), [[Cell(v, ".3g") if _is_number(v) else v for v in r.values()]])
        html += figure(f"fig-search-{i}", figures.search_figure(result.data, result.name))
    return "search", "Search", html


COMPRESSION_COLUMNS = [
    ("model", "model", None),
    ("runtime", "runtime", None),
    ("variant", "variant", None),
    ("size", "img_size", "d"),
    ("median ms", "median_ms", ".3f"),
    ("speed-up", "speedup", ".2f"),
    ("top-1", "top1", ".2f"),
    ("top-1 drop", "top1_drop", ".2f"),
    ("error", "error", None),
    ("file", "file", None),
]


def compression_section(inputs: list[ResultFile]) -> Section | None:
    """Compression benchmark rows (fp32, ToMe, int8, sparse) and their speed-ups."""
    rows = [r | {"file": res.name} for res in inputs if res.kind == "compression" for r in res.data["rows"]]
    if not rows:
        return None
    body = [[Cell(r.get(key), spec) for _, key, spec in COMPRESSION_COLUMNS] for r in rows]
    measured = [r for r in rows if _is_number(r.get("speedup"))]
    html = figure("fig-compression", figures.speedup_figure(measured)) if measured else ""
    html += table([h for h, _, _ in COMPRESSION_COLUMNS], body, sortable=True, scroll=True)
    return (
        "compression",
        "Compression: fp32, token merging, int8, sparsity",
        html
        + _note(
            "Speed-ups are against fp32 on the same runtime, measured round-robin in one run; top-1 is on the "
            "benchmark's own data where it had checkpoints."
        ),
    )


def accuracy_section(inputs: list[ResultFile]) -> Section | None:
    """The `latvit validate` results used as top-1 on the Pareto chart."""
    found = [r for r in inputs if r.kind == "accuracy"]
    if not found:
        return None
    body = [
        [
            r.data["model"],
            r.data["data"],
            Cell(r.data["img_size"]),
            Cell(r.data["top1"], ".2f"),
            Cell(r.data.get("top5"), ".2f"),
            Cell(r.data.get("images")),
            r.name,
        ]
        for r in found
    ]
    return "accuracy", "Measured top-1", table(["model", "data", "size", "top-1", "top-5", "images", "file"], body)


def sections(inputs: list[ResultFile]) -> list[Section]:
    """Every section the inputs have data for, in page order (the inputs first)."""
    rows = bench_rows(inputs)
    labels = series_labels(rows)
    found = [
        inputs_section(inputs),
        pareto_section(rows, labels, inputs),
        bench_section(rows, labels),
        comparison_section(rows, labels),
        accuracy_section(inputs),
        profile_section(inputs),
        density_section(inputs),
        lut_section(inputs),
        search_section(inputs),
        compression_section(inputs),
    ]
    return [s for s in found if s is not None]


__all__ = [
    "Section",
    "bench_rows",
    "device_of",
    "measured_top1",
    "model_group",
    "provenance",
    "sections",
    "series_labels",
]
