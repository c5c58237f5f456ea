"""`latvit lut build`: measure every distinct item of a space and a few whole networks, then fit the
predictor's calibration (`latvit.latency.predictor.fit_calibration`) on them.

Resumable: the file is rewritten atomically after every measurement, and a rerun of the same command skips
what the file already holds, so nothing is measured twice and a killed build leaves a valid file. Settings
that change latencies (runtime and version, threads, CPU, torch version, deploy, space, input size,
protocol) are recorded; resuming or using a table under other settings needs `force`.

Every measurement is timed in alternating rounds with the reference workload (`latvit.targets.reference`),
so each row carries the device's speed at its moment (`ref_ms`), and the table its speed at build
(`meta.reference`, the median over the rows): drift during the build and between build and use can then be
corrected (`latvit.latency.lut.entry_ms`, `latvit.latency.predictor`).
"""

from __future__ import annotations

import datetime
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from latvit.errors import LatvitError
from latvit.latency.lut import (
    BUILD_FIELDS,
    STATISTICS,
    LatencyTable,
    calibration_specs,
    describe_item,
    item_id,
    item_kind,
    network_id,
    set_build_reference,
    space_items,
)
from latvit.latency.measure import BLOCK_PROTOCOL, NETWORK_PROTOCOL, measure_item, measure_network, timing_record
from latvit.latency.predictor import fit_calibration
from latvit.models.spaces import ZOO, get_space
from latvit.runtimes import get_runtime, runnable_runtime
from latvit.space.spec import NetSpec, spec_to_dict
from latvit.targets import DEFAULT_TARGET, LOCAL, Settle, Target, get_target, target_meta
from latvit.targets.protocol import default_threads, machine_info, set_threads
from latvit.utils import progress_bar


def build_meta(
    space: str, runtime, img_size: int | None, threads: int, deploy: bool, target: Target = LOCAL
) -> dict[str, Any]:
    """What a table records about how it was built. On a remote target the device fields (cpu, cores, ...)
    are the target's, from its fingerprint; the exporter's (torch_version) stay this machine's."""
    info = machine_info(threads)
    if target.kind != "local":
        info |= {k: v for k, v in target.fingerprint().items() if k in info}
    return {
        "space": space,
        "img_size": img_size,
        "runtime": runtime.name,
        "runtime_version": runtime.version(),
        "deploy": deploy,
        "block_protocol": asdict(BLOCK_PROTOCOL),
        "network_protocol": asdict(NETWORK_PROTOCOL),
        "batch": 1,
        **info,
        **target_meta(target),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def default_calibration(space: str) -> int:
    """How many networks a build measures end to end: 20 for a search space, where the predictor's weights
    term (`a*S+p*P+c`) needs about that many to be told apart from noise by leave-one-out (with 10 it never
    was; calibration sets re-drawn from measured networks put 86% -> 93% of unseen ones within +-10% with 20:
    docs/lut.md); 10 for the zoo, whose 31 models must leave some unseen for validation."""
    return 10 if space == ZOO else 20


def build_lut(
    space: str,
    runtime: str = "ort",
    out: str | Path = "lut.json",
    *,
    img_size: int | None = None,
    threads: int | None = None,
    deploy: bool = True,
    calibrate: int | None = None,
    statistic: str = "median",
    force: bool = False,
    progress: bool = True,
    reference: bool = True,
    target: str | Target = DEFAULT_TARGET,
    retime: bool = True,
) -> LatencyTable:
    """Measure every distinct item of `space` ("efficientformer", "efficientformerv2", "mobilevit", ... or
    "zoo") on `runtime` in isolation, then `calibrate` networks end to end, and fit the predictor.

    img_size: input size of the networks (default: the space's; `zoo`: each model's own).
    calibrate: networks measured end to end (default `default_calibration(space)`; 0: plain sums).
    threads: CPU threads for torch and the runtime (default: all cores).
    deploy: measure deploy-folded modules (as `latvit bench` does by default).
    statistic: "median" or "min" (see STATISTICS); changing it on a rerun only refits the predictor.
    force: discard an existing `out` that was built under other settings instead of refusing.
    reference: time the reference workload with every measurement (the table can then follow drift; a
        remote target times none yet, so its table predicts at build).
    target: where the items are timed (`latvit target add`); the table records it and predicts only for it.
    retime: after the pass, time again once every row whose reference ran more than `Settle.above` slower
        than the build's fastest (`_retime_slow_rows`), keeping the reading with the faster reference.
    Resumable: `out` is rewritten atomically after every measurement; rerunning continues.
    """
    if statistic not in STATISTICS:
        raise LatvitError(f"unknown statistic '{statistic}'; choose one of {', '.join(STATISTICS)}")
    tgt = get_target(target) if isinstance(target, str) else target
    rt = runnable_runtime(runtime) if tgt.kind == "local" else get_runtime(runtime)  # remote: exported here
    threads = threads or default_threads()
    set_threads(threads)
    deploy = bool(deploy)
    if img_size is None and space != ZOO:
        img_size = get_space(space).img_size
    items = space_items(space, img_size)  # validates the space name and size before anything is measured
    calibrate = default_calibration(space) if calibrate is None else calibrate
    networks = calibration_specs(space, calibrate, img_size)
    meta = build_meta(space, rt, img_size, threads, deploy, tgt)
    table = _resume_or_new(Path(out), meta, force)

    todo_items = table.missing(items)
    todo_nets = [s for s in networks if network_id(s) not in table.networks]
    where = f"{rt.name}" + ("" if tgt.kind == "local" else f" on {tgt.name}")
    with progress_bar(progress, len(todo_items) + len(todo_nets), f"lut {space} on {where}") as advance:
        for item in todo_items:
            advance(describe_item(item))
            table.entries[item_id(item)] = _entry_row(item, rt, threads, deploy, reference, tgt)
            table.save()
        for spec in todo_nets:
            advance(f"network {spec.name} (end to end)")
            table.networks[network_id(spec)] = _network_row(spec, rt, threads, deploy, reference, tgt)
            table.save()
        advance(None)
    if retime and reference:
        _retime_slow_rows(table, items, networks, rt, threads, deploy, tgt, progress)
    set_build_reference(table)
    table.meta["statistic"] = statistic
    table.calibration = fit_calibration(table)
    table.save()
    return table


def _entry_row(item, rt, threads: int, deploy: bool, reference: bool, tgt: Target) -> dict[str, Any]:
    """A table entry: one item timed in isolation, with where it sits and its FLOPs."""
    start = time.perf_counter()
    timing, ref_fields = measure_item(item, rt, threads, deploy, reference=reference, target=tgt)
    return {
        "where": item.where,
        "kind": item_kind(item),
        "flops": item.cost.flops,
        **timing_record(timing, ref_fields),
        "seconds": round(time.perf_counter() - start, 2),
    }


def _network_row(spec: NetSpec, rt, threads: int, deploy: bool, reference: bool, tgt: Target) -> dict[str, Any]:
    """A calibration network timed end to end, with its spec."""
    timing, ref_fields = measure_network(spec, rt, threads, deploy, reference=reference, target=tgt)
    return {
        "name": spec.name,
        "spec": spec_to_dict(spec),
        "img_size": spec.img_size,
        **timing_record(timing, ref_fields),
    }


def _retime_slow_rows(
    table: LatencyTable,
    items: list,
    networks: list[NetSpec],
    rt,
    threads: int,
    deploy: bool,
    tgt: Target,
    progress: bool,
    settle: Settle = Settle(),
) -> None:
    """Time again, once, every row whose reference ran more than `settle.above` slower than the fastest
    reference of the whole build, and keep whichever reading had the faster reference. Why: a row's own
    settling (`Target.time_settled`) judges against the fastest reference seen *so far*, so it cannot act on
    a process's first rows (nothing to compare with yet: a table's first entry was timed at a reference 1.45x
    the build's usual) nor on a row at a slowdown's edge, whose reference interval is too wide to trust; and
    a transient slowdown slows the small, in-cache reference more than the item, so such a row is corrected
    too far. Rows timed again say `retimed: true` (a resumed build does not time them a third time)."""
    kinds = (  # (the table's rows, how one is timed, what this build measures into them)
        (table.entries, _entry_row, [(item_id(i), i) for i in items]),
        (table.networks, _network_row, [(network_id(s), s) for s in networks]),
    )
    timed_with_reference = table.rows(with_reference=True)
    if not timed_with_reference:
        return
    limit = min(r["ref_ms"] for r in timed_with_reference) * (1 + settle.above)
    todo = [
        (rows, time_row, key, what)
        for rows, time_row, measured in kinds
        for key, what in measured
        if key in rows and not rows[key].get("retimed") and (rows[key].get("ref_ms") or 0) > limit
    ]
    with progress_bar(progress, len(todo), "lut: again, rows timed while the device was slow") as advance:
        for rows, time_row, key, what in todo:
            advance(describe_item(what) if rows is table.entries else f"network {what.name}")
            new = time_row(what, rt, threads, deploy, True, tgt)
            kept = new if (new.get("ref_ms") or math.inf) < rows[key]["ref_ms"] else rows[key]
            rows[key] = {**kept, "retimed": True}
            table.save()
        advance(None)


def _resume_or_new(out: Path, meta: dict[str, Any], force: bool) -> LatencyTable:
    if not out.exists():
        table = LatencyTable(out, meta)
        table.save()
        return table
    try:
        old = LatencyTable.load(out)
    except LatvitError:
        if not force:
            raise
        old = None
    if old is not None:
        was = {"target": "local", **old.meta}  # tables from before targets were measured here
        diffs = [
            f"{f}: {was.get(f)!r} in the file, {meta[f]!r} now"
            for f in (*BUILD_FIELDS, "target")
            if was.get(f) != meta[f]
        ]
        if not diffs:
            return old  # resume: keep what is measured
        if not force:
            raise LatvitError(
                f"{out} was built with other settings ({'; '.join(diffs)}); use another --out, "
                "or --force to discard it and rebuild"
            )
    table = LatencyTable(out, meta)
    table.save()
    return table
