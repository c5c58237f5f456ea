"""The report's charts as plotly figures, built from result data already read (`latvit.report.inputs`).

Every string a figure shows (trace names, point labels, hover text, axis titles taken from results)
goes through `esc` first: plotly draws labels from a small HTML subset, so an escaped string is shown
as the text it is and never as markup. plotly is imported inside each function (the `report` extra).
"""

from __future__ import annotations

import math
from typing import Any

from latvit.latency.bench import pareto_front
from latvit.report.markup import esc, plotly_module

# marker per model group on the Pareto chart (the legend's colours are the series)
GROUP_SYMBOLS = {"seed": "circle", "frontier": "diamond", "baseline": "square", "other": "x", "search": "star"}
GROUP_NAMES = {
    "seed": "latvit seed model",
    "frontier": "frontier (timm)",
    "baseline": "survey baseline (timm)",
    "other": "other",
    "search": "found by latvit search",
}


def _go():
    plotly_module()
    import plotly.graph_objects as go

    return go


def palette(i: int) -> str:
    """The i-th series colour (plotly's D3 cycle, then its Dark24)."""
    plotly_module()
    from plotly.colors import qualitative

    colours = qualitative.D3 + qualitative.Dark24
    return colours[i % len(colours)]


def hover_text(fields: dict[str, Any]) -> str:
    """Every field of a record as `name: value` lines (values escaped; None shown as a dash)."""
    return "<br>".join(f"{esc(k)}: {'–' if v is None else esc(_short_number(v))}" for k, v in fields.items())


def _short_number(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else value


def _layout(fig, title: str, x: str, y: str, **extra) -> None:
    fig.update_layout(
        title=esc(title),
        xaxis_title=esc(x),
        yaxis_title=esc(y),
        template="plotly_white",
        hoverlabel={"align": "left"},
        **({"margin": {"t": 70}} | extra),
    )


def latency_axis_buttons(axis: str = "xaxis") -> list[dict]:
    """Buttons that switch the latency axis between linear and log (plotly updatemenus)."""
    return [
        {
            "type": "buttons",
            "direction": "right",
            "x": 0.0,
            "xanchor": "left",
            "y": 1.02,
            "yanchor": "bottom",
            "showactive": True,
            "buttons": [
                {"label": "linear latency", "method": "relayout", "args": [{f"{axis}.type": "linear"}]},
                {"label": "log latency", "method": "relayout", "args": [{f"{axis}.type": "log"}]},
            ],
        }
    ]


# -- the Pareto chart -----------------------------------------------------------------------------------
def point_label(model: str) -> str:
    """A point's text on the chart: the model without its `timm:` prefix (the marker shape tells the group
    apart; the hover keeps the full name)."""
    return model.removeprefix("timm:")


def pareto_figure(series: list[tuple[str, list[dict]]], found: list[dict], batch_note: str):
    """Top-1 against measured latency: one trace per series (label, records with `median_ms`, `top1`,
    `model`, `group` and the fields to hover) and a dotted Pareto-front step line in its colour, grouped
    with it so the legend toggles both; `found` (search results) as stars. Each trace's `meta.role` says
    what it is ("records", "front", "search") for readers of the page."""
    go = _go()
    fig = go.Figure()
    for i, (label, rows) in enumerate(series):
        colour, group = palette(i), f"series{i}"
        fig.add_trace(
            go.Scatter(
                x=[r["median_ms"] for r in rows],
                y=[r["top1"] for r in rows],
                mode="markers+text",
                name=esc(label),
                legendgroup=group,
                text=[esc(point_label(r["model"])) for r in rows],
                textposition="top center",
                textfont={"size": 9, "color": colour},
                hovertext=[hover_text(r["fields"]) for r in rows],
                hovertemplate="%{hovertext}<extra></extra>",
                meta={"role": "records"},
                marker={
                    "color": colour,
                    "size": 10,
                    "symbol": [GROUP_SYMBOLS[r["group"]] for r in rows],
                    "line": {"width": 1, "color": "white"},
                },
            )
        )
        front = sorted(
            (rows[k]["median_ms"], rows[k]["top1"]) for k in pareto_front([(r["median_ms"], r["top1"]) for r in rows])
        )
        fig.add_trace(
            go.Scatter(
                x=[p[0] for p in front],
                y=[p[1] for p in front],
                mode="lines",
                legendgroup=group,
                showlegend=False,
                hoverinfo="skip",
                meta={"role": "front"},
                line={"color": colour, "dash": "dot", "width": 1.5, "shape": "hv"},
            )
        )
    if found:
        fig.add_trace(
            go.Scatter(
                x=[r["median_ms"] for r in found],
                y=[r["top1"] for r in found],
                mode="markers+text",
                name="found by latvit search",
                text=[esc(r["model"]) for r in found],
                textposition="bottom center",
                hovertext=[hover_text(r["fields"]) for r in found],
                hovertemplate="%{hovertext}<extra></extra>",
                marker={"symbol": "star", "size": 16, "color": "crimson"},
                meta={"role": "search"},
            )
        )
    _layout(
        fig,
        "Top-1 against latency measured here",
        f"median latency (ms){batch_note}",
        "top-1 (%)",
        height=640,
        updatemenus=latency_axis_buttons(),
        legend={"title": {"text": "series (click to hide)"}},
        margin={"t": 110},
    )
    return fig


# -- profiles -------------------------------------------------------------------------------------------
def profile_blocks_figure(profile: dict, label: str):
    """One stacked bar per block (ms by category) of one `latvit profile` result."""
    go = _go()
    fig = go.Figure()
    blocks = profile["blocks"]
    names = [esc(b["block"]) + (f" ({esc(b['kind'])})" if b.get("kind") else "") for b in blocks]
    labels = profile.get("category_labels") or {}
    for i, cat in enumerate(_categories(profile)):
        values = [float(b["categories"].get(cat, 0.0)) for b in blocks]
        if any(values):
            fig.add_trace(
                go.Bar(
                    x=names,
                    y=values,
                    name=esc(labels.get(cat, cat)),
                    marker_color=palette(i),
                    hovertemplate="%{x}: %{y:.3f} ms<extra>" + esc(labels.get(cat, cat)) + "</extra>",
                )
            )
    _layout(
        fig,
        f"{label}: latency per block",
        "block",
        "ms per image",
        barmode="stack",
        height=460,
        xaxis={"tickangle": -60, "tickfont": {"size": 9}},
    )
    return fig


def profile_categories_figure(profiles: list[tuple[str, dict]]):
    """One stacked bar per profiled model: the whole inference's ms by category, runtime overhead included."""
    go = _go()
    fig = go.Figure()
    cats = list(dict.fromkeys(c for _, p in profiles for c in _categories(p) + ["overhead"]))
    labels = {k: v for _, p in profiles for k, v in (p.get("category_labels") or {}).items()}
    labels.setdefault("overhead", "outside any op (overhead)")
    for i, cat in enumerate(cats):
        values = [float(p["categories"].get(cat, 0.0)) for _, p in profiles]
        if any(values):
            fig.add_trace(
                go.Bar(
                    x=[esc(name) for name, _ in profiles],
                    y=values,
                    name=esc(labels.get(cat, cat)),
                    marker_color=palette(i),
                    hovertemplate="%{x}: %{y:.3f} ms<extra>" + esc(labels.get(cat, cat)) + "</extra>",
                )
            )
    _layout(fig, "Latency per category", "model on runtime", "ms per image", barmode="stack", height=460)
    return fig


def _categories(profile: dict) -> list[str]:
    return [c for c in profile["categories"] if c != "overhead"]


# -- density --------------------------------------------------------------------------------------------
def density_figure(density: dict, label: str):
    """GFLOP/s against resolution, one line per block type (TRT-ViT's Table 1), the GEMM peak dashed."""
    go = _go()
    fig = go.Figure()
    rows = [r for r in density["rows"] if not r.get("error") and r.get("gflops_per_s") is not None]
    for i, block in enumerate(dict.fromkeys(r["label"] for r in rows)):
        pts = sorted((r for r in rows if r["label"] == block), key=lambda r: r["resolution"])
        fig.add_trace(
            go.Scatter(
                x=[r["resolution"] for r in pts],
                y=[r["gflops_per_s"] for r in pts],
                mode="lines+markers",
                name=esc(block),
                marker_color=palette(i),
                hovertext=[
                    hover_text(
                        {
                            k: r.get(k)
                            for k in (
                                "label",
                                "kind",
                                "resolution",
                                "c_in",
                                "width",
                                "source",
                                "gflops",
                                "mparams",
                                "ms",
                                "gflops_per_s",
                                "mparams_per_s",
                                "pct_peak",
                            )
                        }
                    )
                    for r in pts
                ],
                hovertemplate="%{hovertext}<extra></extra>",
            )
        )
    peak = density.get("gemm_peak_gflops")
    if peak:
        fig.add_hline(y=peak, line_dash="dash", line_color="black", annotation_text=f"GEMM peak {peak:.0f} GFLOP/s")
    resolutions = sorted({r["resolution"] for r in density["rows"]})
    _layout(
        fig,
        f"Block density: {label}",
        "input resolution of the block (px)",
        "GFLOP/s",
        height=480,
        xaxis={
            "type": "log",
            "autorange": "reversed",
            "tickvals": resolutions,
            "ticktext": [f"{r}x{r}" for r in resolutions],
        },
    )
    return fig


# -- LUT validation -------------------------------------------------------------------------------------
def lut_figure(report: dict, label: str):
    """Predicted against measured latency (log-log): the LUT predictor, the FLOPs baseline, y = x and the
    +-10% band."""
    go = _go()
    rows = report["rows"]
    measured = [r["measured_ms"] for r in rows]
    lo, hi = min(measured) * 0.7, max(measured) * 1.4
    fig = go.Figure()
    line = [lo, hi]
    fig.add_trace(
        go.Scatter(
            x=line, y=[v * 0.9 for v in line], mode="lines", line={"width": 0}, showlegend=False, hoverinfo="skip"
        )
    )
    fig.add_trace(
        go.Scatter(
            x=line,
            y=[v * 1.1 for v in line],
            mode="lines",
            line={"width": 0},
            fill="tonexty",
            fillcolor="rgba(128,128,128,0.2)",
            name="±10%",
            hoverinfo="skip",
        )
    )
    fig.add_trace(
        go.Scatter(x=line, y=line, mode="lines", line={"color": "black", "width": 1}, name="y = x", hoverinfo="skip")
    )
    for source, symbol, colour in (("sample", "circle", palette(0)), ("zoo", "square-open", palette(0))):
        pts = [r for r in rows if (r.get("source") == "zoo") == (source == "zoo")]
        if pts:
            fig.add_trace(
                go.Scatter(
                    x=[r["measured_ms"] for r in pts],
                    y=[r["predicted_ms"] for r in pts],
                    mode="markers",
                    name=f"LUT predictor ({'zoo models' if source == 'zoo' else 'sampled specs'})",
                    marker={"symbol": symbol, "color": colour, "size": 8},
                    error_y={
                        "type": "data",
                        "symmetric": False,
                        "array": [max(0.0, (r.get("high_ms") or r["predicted_ms"]) - r["predicted_ms"]) for r in pts],
                        "arrayminus": [
                            max(0.0, r["predicted_ms"] - (r.get("low_ms") or r["predicted_ms"])) for r in pts
                        ],
                        "thickness": 1,
                        "width": 0,
                    },
                    hovertext=[hover_text(r) for r in pts],
                    hovertemplate="%{hovertext}<extra></extra>",
                )
            )
    with_flops = [r for r in rows if r.get("flops_ms") is not None]
    if with_flops:
        fig.add_trace(
            go.Scatter(
                x=[r["measured_ms"] for r in with_flops],
                y=[r["flops_ms"] for r in with_flops],
                mode="markers",
                name="FLOPs baseline",
                marker={"symbol": "x", "color": palette(3)},
                hovertext=[esc(r["name"]) for r in with_flops],
                hovertemplate="%{hovertext}: %{y:.2f} ms<extra>FLOPs baseline</extra>",
            )
        )
    _layout(
        fig,
        f"LUT predictor: {label}",
        "measured latency (ms)",
        "predicted latency (ms)",
        height=560,
        xaxis={"type": "log", "range": _log_range(lo, hi)},
        yaxis={"type": "log", "range": _log_range(lo, hi)},
    )
    return fig


def _log_range(lo: float, hi: float) -> list[float]:
    return [math.log10(lo), math.log10(hi)]


# -- search ---------------------------------------------------------------------------------------------
def search_figure(search: dict, label: str):
    """A search's trace (in order), its Pareto front and the result, against predicted latency."""
    go = _go()
    fig = go.Figure()
    trace, result = search.get("trace") or [], search.get("result") or {}
    front = sorted(search.get("pareto") or [], key=lambda s: s["latency_ms"])  # a step line, left to right
    if trace:
        fig.add_trace(
            go.Scatter(
                x=[s["latency_ms"] for s in trace],
                y=[s["accuracy"] for s in trace],
                mode="lines+markers",
                name="trace (in order)",
                marker={"color": palette(7), "size": 6},
                line={"width": 1},
                hovertext=[
                    hover_text(
                        {
                            "step": i,
                            "action": s.get("action"),
                            "latency_ms": s["latency_ms"],
                            "accuracy": s["accuracy"],
                            "mes": s.get("mes"),
                        }
                    )
                    for i, s in enumerate(trace)
                ],
                hovertemplate="%{hovertext}<extra></extra>",
            )
        )
    if front:
        fig.add_trace(
            go.Scatter(
                x=[s["latency_ms"] for s in front],
                y=[s["accuracy"] for s in front],
                mode="lines+markers",
                name="Pareto front",
                line={"shape": "hv", "color": palette(0)},
            )
        )
    if result:
        fig.add_trace(
            go.Scatter(
                x=[result["predicted_ms"]],
                y=[result["accuracy_inherited"]],
                mode="markers",
                name="result",
                marker={"symbol": "star", "size": 16, "color": "crimson"},
                hovertext=[hover_text(result)],
                hovertemplate="%{hovertext}<extra></extra>",
            )
        )
        fig.add_vline(
            x=result["target_ms"],
            line_dash="dash",
            line_color="gray",
            annotation_text=f"target {result['target_ms']:g} ms",
        )
    _layout(fig, f"Search: {label}", "predicted latency (ms, LUT)", "top-1 with inherited weights (%)", height=460)
    return fig


# -- comparisons ----------------------------------------------------------------------------------------
def ratio_figure(models: list[str], ratios: list[tuple[str, list[float | None]]], baseline: str):
    """Per model, each configuration's latency over the baseline's (grouped bars, log scale, 1 = equal)."""
    go = _go()
    fig = go.Figure()
    for i, (label, values) in enumerate(ratios):
        fig.add_trace(
            go.Bar(
                x=[esc(m) for m in models],
                y=values,
                name=esc(label),
                marker_color=palette(i + 1),
                hovertemplate="%{x}: %{y:.2f}x<extra>" + esc(label) + "</extra>",
            )
        )
    fig.add_hline(y=1.0, line_color="black", line_width=1)
    _layout(
        fig,
        f"Latency relative to {baseline}",
        "model",
        "latency / baseline latency (below 1: faster)",
        barmode="group",
        height=480,
        yaxis={"type": "log"},
    )
    return fig


def speedup_figure(rows: list[dict]):
    """Compression benchmark: each variant's speed-up over fp32, per model and runtime."""
    go = _go()
    fig = go.Figure()
    keys = list(dict.fromkeys(f"{r['model']} / {r['runtime']}" for r in rows))
    for i, variant in enumerate(dict.fromkeys(r["variant"] for r in rows)):
        by_key = {f"{r['model']} / {r['runtime']}": r.get("speedup") for r in rows if r["variant"] == variant}
        fig.add_trace(
            go.Bar(
                x=[esc(k) for k in keys],
                y=[by_key.get(k) for k in keys],
                name=esc(variant),
                marker_color=palette(i),
                hovertemplate="%{x}: %{y:.2f}x<extra>" + esc(variant) + "</extra>",
            )
        )
    fig.add_hline(y=1.0, line_color="black", line_width=1)
    _layout(
        fig, "Speed-up over fp32 on the same runtime", "model / runtime", "speed-up (x)", barmode="group", height=460
    )
    return fig


__all__ = [
    "GROUP_NAMES",
    "GROUP_SYMBOLS",
    "density_figure",
    "hover_text",
    "latency_axis_buttons",
    "lut_figure",
    "pareto_figure",
    "profile_blocks_figure",
    "profile_categories_figure",
    "ratio_figure",
    "search_figure",
    "speedup_figure",
]
