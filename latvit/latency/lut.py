"""Latency lookup tables (LUTs): every distinct block of a search space, measured in isolation on the
user's own device and runtime, plus a few whole networks measured end to end to calibrate the predictor.
This module is the table itself (items, file format, checks, what a space's table covers); measuring is
`latvit.latency.measure`, building `latvit.latency.lut_build`, predicting `latvit.latency.predictor`.

A table is one JSON file:

    {"format": "latvit-lut", "format_version": 1,
     "meta":     {space, img_size, runtime, runtime_version, threads, deploy, cpu, cores, torch_version,
                  reference: {ref_ms, ref_gemm_ms, ref_version, ...} | absent, ...},
     "entries":  {ITEM_ID: {where, kind, median_ms, p90_ms, min_ms, mean_ms, cv, iters, flops,
                            ci_low_ms, ci_high_ms, ci_rel, noisy, ref_ms, ref_min_ms, ref_gemm_ms}},
     "networks": {NET_ID: {name, spec, img_size, median_ms, ..., ref_ms}},   # end-to-end calibration runs
     "calibration": {...} | null}                                          # fitted by latvit.latency.predictor

An *item* is a planned block (`PlannedBlock`, keyed by `PlannedBlock.key`) or a network's classifier head
(`PlannedHead`): together they are everything a forward pass runs except the one token reshape. ITEM_ID
is the key as a JSON list, so a file is readable and diffable.

The device's speed drifts while a table is built and used, so every entry and network carries `ref_ms`,
the reference workload's time measured interleaved with it (`latvit.targets.reference`), and the table
the median of those (`meta.reference.ref_ms`, the table's "speed at build"). `entry_ms` states every
entry at that one speed. Tables built before the reference existed have neither and still load; their
predictions cannot be corrected for drift, and say so.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from latvit.errors import LatvitError, first_line
from latvit.layers import cost as C
from latvit.models.spaces import covering_specs, get_space
from latvit.runtimes import RUNTIME_MODULES, get_runtime
from latvit.space.blocks import BLOCK_KINDS
from latvit.space.plan import NetPlan, PlannedBlock, plan_network
from latvit.space.spec import HeadSpec, NetSpec, spec_to_dict
from latvit.targets import DEFAULT_TARGET, Target, get_target, target_mismatch
from latvit.targets.protocol import machine_info
from latvit.targets.reference import REFERENCE_VERSION
from latvit.utils import atomic_write_text

FORMAT = "latvit-lut"
FORMAT_VERSION = 1


# Calibration networks: the space's largest and smallest specs plus random ones from this seed
# (validation draws from another seed, so it tests the predictor on specs it was not fitted on).
CALIBRATION_SEED = 1000
# Which statistic of each measurement the predictor adds up and is fitted to. "median" is the protocol's
# headline number; "min" estimates the uncontended latency and is the robust choice on a machine shared
# with other jobs (where a call longer than a scheduler slice is stretched far more than a short one).
STATISTICS = {"median": "median_ms", "min": "min_ms"}
# Meta fields that make measurements incomparable when they differ.
DEVICE_FIELDS = ("cpu", "cores")
RUNTIME_FIELDS = ("runtime", "runtime_version")
BUILD_FIELDS = (
    DEVICE_FIELDS + RUNTIME_FIELDS + ("threads", "torch_version", "deploy", "space", "img_size", "block_protocol")
)


# -- items: what a table measures --------------------------------------------------------------------
@dataclass(frozen=True)
class PlannedHead:
    """A network's classifier head as a table item: (B, C, H, W) or tokens (B, N, C) -> (B, num_classes)."""

    c_in: int
    h: int
    w: int
    head: HeadSpec
    tokens: bool
    num_classes: int
    cost: C.Cost
    where: str = "head"

    @property
    def kind(self) -> str:
        return "head"

    @property
    def key(self) -> tuple:
        hd = self.head
        return (
            "head",
            self.c_in,
            self.h,
            self.w,
            self.tokens,
            self.num_classes,
            hd.conv_width,
            hd.act,
            hd.norm,
            hd.distill,
        )


Item = PlannedBlock | PlannedHead


def plan_head(plan: NetPlan) -> PlannedHead:
    c, h, w = plan.stage_outputs[-1]
    tokens = plan.token_start(len(plan.spec.stages) - 1) is not None
    return PlannedHead(c, h, w, plan.spec.head, tokens, plan.num_classes, plan.head_cost)


def plan_items(plan: NetPlan) -> list[Item]:
    """Everything a forward pass of `plan` runs, as table items: its blocks, then its head."""
    return [*plan.blocks, plan_head(plan)]


def item_kind(item: Item) -> str:
    return item.kind if isinstance(item, PlannedHead) else item.spec.kind


def item_id(item: Item) -> str:
    return json.dumps(list(item.key))


def describe_item(item: Item) -> str:
    """One line for humans: `stages[3][1] meta3d 448->448 @7x7 (expansion=4.0, heads=8, ...)`."""
    key = item.key
    if isinstance(item, PlannedHead):
        extra = dict(zip(("tokens", "num_classes", "conv_width", "act", "norm", "distill"), key[4:]))
        return f"head {item.c_in} @{item.h}x{item.w} ({', '.join(f'{k}={v}' for k, v in extra.items())})"
    fields = BLOCK_KINDS[item.spec.kind].fields
    extra = ", ".join(f"{f}={v}" for f, v in zip(fields, key[5:]))
    return f"{item.where} {item.spec.kind} {item.c_in}->{item.c_out} @{item.h}x{item.w} ({extra})"


def space_items(space: str, img_size: int | None = None) -> list[Item]:
    """Every distinct item of a search space (`zoo`: of the registered models), in a stable order."""
    found: dict[str, Item] = {}
    for spec in covering_specs(space, img_size):
        for item in plan_items(plan_network(spec)):
            found.setdefault(item_id(item), item)
    return list(found.values())


def calibration_specs(space: str, n: int, img_size: int | None = None) -> list[NetSpec]:
    """The networks a build measures end to end to fit the predictor: for a search space its largest and
    smallest specs and `n - 2` random ones; for a space without points to draw (the zoo) `n` of its
    covering specs spread evenly over the list (the others stay out of the fit, so validation on the zoo
    tests the predictor on unseen models)."""
    if n <= 0:
        return []
    try:
        sp = get_space(space)
    except LatvitError:
        covering = covering_specs(space, img_size)  # raises for an unknown name
        picks = sorted({round(i * (len(covering) - 1) / max(n - 1, 1)) for i in range(min(n, len(covering)))})
        return [covering[i] for i in picks]
    ends = [
        dataclasses.replace(sp.spec(sp.largest(), img_size), name=f"{space}_largest"),
        dataclasses.replace(sp.spec(sp.smallest(), img_size), name=f"{space}_smallest"),
    ]
    # two spare samples, since they may repeat the ends
    drawn = [
        dataclasses.replace(s, name=s.name.replace("_rand", "_cal"))
        for s in sample_upto(sp, n, CALIBRATION_SEED, img_size)
    ]
    return _distinct(ends + drawn)[:n]


def sample_upto(space, n: int, seed: int, img_size: int | None = None) -> list[NetSpec]:
    """Up to `n` distinct random specs of `space`: all it has when it has fewer points."""
    for k in range(n, 0, -1):
        try:
            return space.sample_specs(k, seed=seed, img_size=img_size)
        except LatvitError:
            continue
    return []


def _distinct(specs: list[NetSpec]) -> list[NetSpec]:
    seen, out = set(), []
    for spec in specs:
        if network_id(spec) not in seen:
            seen.add(network_id(spec))
            out.append(spec)
    return out


def network_id(spec: NetSpec) -> str:
    """A content hash of the architecture (the name is not part of it)."""
    data = spec_to_dict(spec)
    data.pop("name", None)
    return hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


# -- the table -------------------------------------------------------------------------------------------
class LatencyTable:
    """A loaded (or new) lookup table; `path` is where `save` writes it atomically."""

    def __init__(
        self,
        path: Path,
        meta: dict[str, Any],
        entries: dict[str, dict] | None = None,
        networks: dict[str, dict] | None = None,
        calibration: dict | None = None,
    ):
        self.path = Path(path)
        self.meta = meta
        self.entries = entries if entries is not None else {}
        self.networks = networks if networks is not None else {}
        self.calibration = calibration
        self.device_checked = False  # check_device passed (or was forced) for this object
        # the device now, measured by latvit.latency.predictor.follow_device (not saved: it is of this moment)
        self.drift = None

    # -- file -----------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        """Read and check a table; a missing, truncated or foreign file raises one clear line."""
        path = Path(path)
        if not path.is_file():
            raise LatvitError(f"latency table {path} does not exist; build one with `latvit lut build --out {path}`")
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise LatvitError(
                f"{path} is not a valid latency table ({first_line(e)}); delete it and rebuild it "
                "with `latvit lut build`"
            ) from None
        problem = _check_format(data)
        if problem:
            raise LatvitError(
                f"{path} is not a valid latency table ({problem}); delete it and rebuild it with `latvit lut build`"
            )
        return cls(path, data["meta"], data["entries"], data.get("networks", {}), data.get("calibration"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "meta": self.meta,
            "entries": self.entries,
            "networks": self.networks,
            "calibration": self.calibration,
        }

    def save(self) -> None:
        atomic_write_text(self.path, json.dumps(self.to_dict(), indent=1) + "\n")

    # -- lookups --------------------------------------------------------------------------------------
    def lookup(self, item: Item) -> dict | None:
        return self.entries.get(item_id(item))

    def missing(self, items: Iterable[Item]) -> list[Item]:
        return [it for it in items if item_id(it) not in self.entries]

    def rows(self, with_reference: bool = False) -> list[dict]:
        """Every measured row, the entries then the calibration networks; `with_reference`: only the rows
        timed with the reference (a valid `ref_ms`)."""
        rows = [*self.entries.values(), *self.networks.values()]
        return [r for r in rows if _valid_ms(r.get("ref_ms"))] if with_reference else rows

    def describe(self) -> str:
        m = self.meta
        size = m.get("img_size") or "default sizes"
        return (
            f"{self.path.name}: space {m.get('space')} at {size}, {m.get('runtime_version')} "
            f"({m.get('threads')} threads, {'deployed' if m.get('deploy') else 'as built'}) on {m.get('cpu')}, "
            f"{len(self.entries)} entries, {len(self.networks)} calibration networks"
        )

    @property
    def target(self) -> str:
        """The target the table was measured on ('local' for tables from before targets)."""
        return self.meta.get("target", DEFAULT_TARGET)

    def check_device(self, runtime: str | None = None, force: bool = False, target: str | Target | None = None) -> None:
        """Raise unless the table was measured on `target` (this machine: its CPU and cores, and the
        runtime's version here; a remote target: its name and the fingerprint it reports now) and, when
        given, with `runtime`; `force` accepts a foreign table. `target` None: the table's own target, which
        for a remote table is taken on trust (predicting needs no device; measuring names it)."""
        if force or self.device_checked:
            self.device_checked = True
            return
        if target is None:
            target = self.target
            if target != DEFAULT_TARGET:
                self.device_checked = True
                return
        tgt = get_target(target) if isinstance(target, str) else target
        if tgt.kind == "local" and self.meta.get("target", "local") == "local":
            here = machine_info(int(self.meta.get("threads") or 1))
            diffs = [
                f"{f} '{self.meta.get(f)}' (here '{here[f]}')" for f in DEVICE_FIELDS if self.meta.get(f) != here[f]
            ]
            version = _runtime_version(self.meta.get("runtime"))
            if version is not None and version != self.meta.get("runtime_version"):
                diffs.append(f"runtime version '{self.meta.get('runtime_version')}' (here '{version}')")
        else:
            diffs = target_mismatch(self.meta, tgt)
        if runtime is not None and runtime != self.meta.get("runtime"):
            diffs.append(f"runtime '{self.meta.get('runtime')}' (asked for '{runtime}')")
        if diffs:
            how = (
                "here with `latvit lut build`"
                if tgt.kind == "local"
                else f"on {tgt.name} with `latvit lut build --target {tgt.name}`"
            )
            raise LatvitError(
                f"{self.path} was measured with another device or runtime: {'; '.join(diffs)}; "
                f"build a table {how}, or pass --force (force=True) to use it anyway"
            )
        self.device_checked = True


def _runtime_version(name: str | None) -> str | None:
    """The runtime's version here, or None when it cannot be known (unknown or not installed)."""
    if name not in RUNTIME_MODULES:
        return None
    try:
        rt = get_runtime(name)
        return None if rt.missing() else rt.version()
    except (ImportError, LatvitError):
        return None


def _check_format(data: Any) -> str | None:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return "no 'format: latvit-lut' marker"
    if data.get("format_version") != FORMAT_VERSION:
        return f"format version {data.get('format_version')}, this latvit reads version {FORMAT_VERSION}"
    meta, entries = data.get("meta"), data.get("entries")
    if not isinstance(meta, dict) or not isinstance(entries, dict):
        return "'meta' or 'entries' is missing"
    if meta.get("statistic", "median") not in STATISTICS:
        return f"unknown statistic {meta.get('statistic')!r}"
    for field in BUILD_FIELDS:
        if field not in meta:
            return f"meta has no '{field}'"
    for key, entry in entries.items():
        for field in TIMING_FIELDS:
            if not isinstance(entry, dict) or not _valid_ms(entry.get(field)):
                return f"entry {key} has no valid {field}"
    networks = data.get("networks", {})
    if not isinstance(networks, dict) or any(
        not isinstance(n, dict) or "spec" not in n or not all(_valid_ms(n.get(f)) for f in TIMING_FIELDS)
        for n in networks.values()
    ):
        return "'networks' is malformed"
    return None


TIMING_FIELDS = ("median_ms", "min_ms", "p90_ms")  # what the predictor reads


def _valid_ms(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value >= 0


def set_build_reference(table: LatencyTable) -> None:
    """Store the table's speed at build in `meta["reference"]`: the median reference time over the rows
    measured with one (None when none was: the table cannot follow drift)."""
    rows = table.rows(with_reference=True)
    if not rows:
        table.meta.pop("reference", None)
        return
    table.meta["reference"] = {
        "ref_ms": round(statistics.median(r["ref_ms"] for r in rows), 6),
        "ref_min_ms": round(statistics.median(r.get("ref_min_ms", r["ref_ms"]) for r in rows), 6),
        "ref_gemm_ms": round(statistics.median(r["ref_gemm_ms"] for r in rows if _valid_ms(r.get("ref_gemm_ms"))), 6)
        if any(_valid_ms(r.get("ref_gemm_ms")) for r in rows)
        else None,
        "ref_version": REFERENCE_VERSION,
        "rows": len(rows),
        # how far the device moved during the build: the spread of the rows' reference times
        "build_drift": round(max(r["ref_ms"] for r in rows) / min(r["ref_ms"] for r in rows), 4),
    }


def reference_field(table: LatencyTable) -> str:
    """The reference statistic that goes with the table's: "ref_min_ms" for tables of minima (the
    uncontended speed), else "ref_ms" (the reference's median)."""
    return "ref_min_ms" if table_statistic(table) == "min_ms" else "ref_ms"


def build_reference_ms(table: LatencyTable) -> float | None:
    """The reference time the table's latencies are stated at (its `reference_field`), or None for a table
    without one."""
    ref = table.meta.get("reference") or {}
    value = ref.get(reference_field(table), ref.get("ref_ms"))
    return value if _valid_ms(value) else None


def entry_ms(table: LatencyTable, row: dict, field: str) -> float:
    """A row's (entry's or network's) `field` in ms, stated at the table's speed at build: scaled by the
    table's reference time over the row's own, which undoes the device's drift during the build."""
    ref, own = build_reference_ms(table), row.get(reference_field(table), row.get("ref_ms"))
    if ref is None or not _valid_ms(own) or own <= 0:
        return float(row[field])
    return float(row[field]) * ref / own


def table_statistic(table: LatencyTable) -> str:
    """The entry field the predictor uses ("median_ms" or "min_ms")."""
    return STATISTICS[table.meta.get("statistic", "median")]


def load_table(lut: str | Path | LatencyTable) -> LatencyTable:
    return lut if isinstance(lut, LatencyTable) else LatencyTable.load(lut)
