"""Latency lookup tables (LUTs): every distinct block of a search space, measured in isolation on the
user's own device and runtime, plus a few whole networks measured end to end to calibrate the predictor.

A table is one JSON file:

    {"format": "latvit-lut", "format_version": 1,
     "meta":     {space, img_size, runtime, runtime_version, threads, deploy, cpu, cores, torch_version, ...},
     "entries":  {ITEM_ID: {where, kind, median_ms, p90_ms, min_ms, mean_ms, cv, iters, flops}},
     "networks": {NET_ID: {name, spec, img_size, median_ms, ...}},   # end-to-end calibration runs
     "calibration": {...} | null}                                    # fitted by latvit.latency.predictor

An *item* is a planned block (`PlannedBlock`, keyed by `PlannedBlock.key`) or a network's classifier head
(`PlannedHead`): together they are everything a forward pass runs except the one token reshape. ITEM_ID
is the key as a JSON list, so a file is readable and diffable.

`build_lut` is resumable: the file is rewritten atomically after every measurement, and a rerun of the
same command skips what the file already holds, so nothing is measured twice and a killed build leaves a
valid file. Settings that change latencies (runtime and version, threads, CPU, torch version, deploy,
space, input size, protocol) are recorded; resuming or using a table under other settings needs `force`.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import math
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Union

import torch
import torch.nn as nn

from latvit.errors import LatvitError
from latvit.targets.protocol import Timing, default_threads, machine_info, measure_latency, set_threads
from latvit.layers import cost as C
from latvit.layers.common import ClassifierHead
from latvit.space.blocks import BLOCK_KINDS
from latvit.space.plan import NetPlan, PlannedBlock, plan_network
from latvit.space.spec import HeadSpec, NetSpec, spec_to_dict
from latvit.utils import atomic_write_text, progress_bar

FORMAT = "latvit-lut"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Protocol:
    """Settings of `measure_latency` for one kind of measurement."""

    warmup: int
    iters: int
    min_seconds: float


# Blocks take 0.05-5 ms here: 20 calls and 0.2 s give a stable median (hundreds of calls for small
# blocks) while the EfficientFormer space (~80 items, ~1.5 s of ONNX export each) builds in ~3 minutes.
BLOCK_PROTOCOL = Protocol(warmup=5, iters=20, min_seconds=0.2)
# Whole networks are few, so they get more time: the calibration and the validation rest on them.
NETWORK_PROTOCOL = Protocol(warmup=5, iters=20, min_seconds=1.0)
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
BUILD_FIELDS = DEVICE_FIELDS + RUNTIME_FIELDS + ("threads", "torch_version", "deploy", "space", "img_size",
                                                 "block_protocol")


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
        return ("head", self.c_in, self.h, self.w, self.tokens, self.num_classes, hd.conv_width, hd.act, hd.norm,
                hd.distill)


Item = Union[PlannedBlock, PlannedHead]


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


def isolated_module(item: Item) -> tuple[nn.Module, torch.Tensor]:
    """The item built alone with a batch-1 input of the shape it sees inside the network."""
    if isinstance(item, PlannedHead):
        hd = item.head
        head = ClassifierHead(item.c_in, item.num_classes, conv_width=hd.conv_width, act=hd.act, norm=hd.norm,
                              distill=hd.distill, dropout=hd.dropout, tokens=item.tokens)
        module: nn.Module = _HeadOnly(head)
        tokens = item.tokens
    else:
        kind = BLOCK_KINDS[item.spec.kind]
        module = kind.module.from_spec(item.spec, item.c_in, item.h, item.w, 0.0)
        tokens = kind.tokens
        stream = getattr(kind, "stream", "")
        if stream:  # Mobile-Former blocks take and/or return a (map, global tokens) pair
            module = _PairAdapter(module, item.spec.tokens, item.spec.dim, takes_pair=stream != "open")
    # token blocks see (B, N, C): the network flattens once before them (that reshape is not an item)
    example = torch.randn(1, item.h * item.w, item.c_in) if tokens else torch.randn(1, item.c_in, item.h, item.w)
    return module, example


class _PairAdapter(nn.Module):
    """A block on the (map, tokens) pair as a one-tensor module (runtimes take and return one array): the
    tokens come from a fixed buffer, and a returned pair is flattened into one (B, C*H*W + T*D) output so
    that an exporter cannot drop the token branch as dead code."""

    def __init__(self, block: nn.Module, tokens: int, dim: int, takes_pair: bool):
        super().__init__()
        self.block, self.takes_pair = block, takes_pair
        self.register_buffer("z", torch.randn(1, tokens, dim))  # (1, T, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block((x, self.z) if self.takes_pair else x)
        if isinstance(out, tuple):
            return torch.cat([out[0].flatten(1), out[1].flatten(1)], dim=1)
        return out


class _HeadOnly(nn.Module):
    """What `LatvitNet` runs after its last stage: head.forward_norm, then head.forward."""

    def __init__(self, head: ClassifierHead):
        super().__init__()
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.head.forward_norm(x))  # (B, C, H, W) or (B, N, C) -> (B, num_classes)


def space_items(space: str, img_size: int | None = None) -> list[Item]:
    """Every distinct item of a search space (`zoo`: of the registered models), in a stable order."""
    found: dict[str, Item] = {}
    for plan in _space_plans(space, img_size):
        for item in plan_items(plan):
            found.setdefault(item_id(item), item)
    return list(found.values())


def _space_plans(space: str, img_size: int | None) -> Iterable[NetPlan]:
    """Plans whose items together cover the space: the covering choices, or every zoo model."""
    if space == "zoo":
        from latvit.models import MODELS

        return [plan_network(spec, img_size) for spec in MODELS.values()]
    from latvit.models.spaces import get_space

    sp = get_space(space)
    return [plan_network(sp.spec(choice, img_size)) for choice in sp.covering_choices()]


def calibration_specs(space: str, n: int, img_size: int | None = None) -> list[NetSpec]:
    """The networks a build measures end to end to fit the predictor: for a search space its largest and
    smallest specs and `n - 2` random ones; for `zoo` `n` registered models spread evenly over the list
    (the others stay out of the fit, so validation on the zoo tests the predictor on unseen models)."""
    if n <= 0:
        return []
    if space == "zoo":
        from latvit.models import MODELS

        zoo = list(MODELS.values())
        picks = sorted({round(i * (len(zoo) - 1) / max(n - 1, 1)) for i in range(min(n, len(zoo)))})
        return [zoo[i].with_img_size(img_size) for i in picks]
    import dataclasses

    from latvit.models.spaces import get_space

    sp = get_space(space)
    ends = [dataclasses.replace(sp.spec(sp.largest(), img_size), name=f"{space}_largest"),
            dataclasses.replace(sp.spec(sp.smallest(), img_size), name=f"{space}_smallest")]
    # two spare samples, since they may repeat the ends
    drawn = [dataclasses.replace(s, name=s.name.replace("_rand", "_cal"))
             for s in sample_upto(sp, n, CALIBRATION_SEED, img_size)]
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


# -- measuring ------------------------------------------------------------------------------------------
def inference_copy(module: nn.Module, deploy: bool) -> nn.Module:
    """The module as it is measured: eval mode, deploy-folded when `deploy` (as the bench measures)."""
    if not deploy:
        return module.eval()
    from latvit.deploy import deploy as fold

    return fold(module)


def time_module(module: nn.Module, example: torch.Tensor, runtime, threads: int, protocol: Protocol) -> Timing:
    """Prepare `module` on `runtime` (export, session) and time it with the shared protocol."""
    with tempfile.TemporaryDirectory(prefix="latvit-lut-") as tmp:
        run = runtime.prepare(module, example, threads, Path(tmp))
        x = example.numpy()
        return measure_latency(lambda: run(x), warmup=protocol.warmup, iters=protocol.iters,
                               min_seconds=protocol.min_seconds)


def measure_item(item: Item, runtime, threads: int, deploy: bool, protocol: Protocol = BLOCK_PROTOCOL) -> Timing:
    """One item in isolation on `runtime`."""
    torch.manual_seed(0)
    module, example = isolated_module(item)
    return time_module(inference_copy(module, deploy), example, runtime, threads, protocol)


def measure_network(spec: NetSpec, runtime, threads: int, deploy: bool,
                    protocol: Protocol = NETWORK_PROTOCOL) -> Timing:
    """A whole network end to end on `runtime` (batch 1, the spec's input size)."""
    from latvit.space.builder import build_model

    torch.manual_seed(0)
    model = build_model(spec)
    example = torch.randn(1, spec.in_chans, spec.img_size, spec.img_size)
    return time_module(inference_copy(model, deploy), example, runtime, threads, protocol)


# -- the table -------------------------------------------------------------------------------------------
class LatencyTable:
    """A loaded (or new) lookup table; `path` is where `save` writes it atomically."""

    def __init__(self, path: Path, meta: dict[str, Any], entries: dict[str, dict] | None = None,
                 networks: dict[str, dict] | None = None, calibration: dict | None = None):
        self.path = Path(path)
        self.meta = meta
        self.entries = entries if entries is not None else {}
        self.networks = networks if networks is not None else {}
        self.calibration = calibration
        self.device_checked = False  # check_device passed (or was forced) for this object

    # -- file -----------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> "LatencyTable":
        """Read and check a table; a missing, truncated or foreign file raises one clear line."""
        path = Path(path)
        if not path.is_file():
            raise LatvitError(f"latency table {path} does not exist; build one with `latvit lut build --out {path}`")
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise LatvitError(f"{path} is not a valid latency table ({_first_line(e)}); delete it and rebuild it "
                              "with `latvit lut build`") from None
        problem = _check_format(data)
        if problem:
            raise LatvitError(f"{path} is not a valid latency table ({problem}); delete it and rebuild it "
                              "with `latvit lut build`")
        return cls(path, data["meta"], data["entries"], data.get("networks", {}), data.get("calibration"))

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "meta": self.meta, "entries": self.entries,
                "networks": self.networks, "calibration": self.calibration}

    def save(self) -> None:
        atomic_write_text(self.path, json.dumps(self.to_dict(), indent=1) + "\n")

    # -- lookups --------------------------------------------------------------------------------------
    def lookup(self, item: Item) -> dict | None:
        return self.entries.get(item_id(item))

    def missing(self, items: Iterable[Item]) -> list[Item]:
        return [it for it in items if item_id(it) not in self.entries]

    def describe(self) -> str:
        m = self.meta
        size = m.get("img_size") or "default sizes"
        return (f"{self.path.name}: space {m.get('space')} at {size}, {m.get('runtime_version')} "
                f"({m.get('threads')} threads, {'deployed' if m.get('deploy') else 'as built'}) on {m.get('cpu')}, "
                f"{len(self.entries)} entries, {len(self.networks)} calibration networks")

    def check_device(self, runtime: str | None = None, force: bool = False) -> None:
        """Raise unless the table was measured on this machine (CPU, cores) and the runtime's version
        here (and `runtime`, when given); `force` accepts a foreign table."""
        if force or self.device_checked:
            self.device_checked = True
            return
        here = machine_info(int(self.meta.get("threads") or 1))
        diffs = [f"{f} '{self.meta.get(f)}' (here '{here[f]}')" for f in DEVICE_FIELDS if self.meta.get(f) != here[f]]
        if runtime is not None and runtime != self.meta.get("runtime"):
            diffs.append(f"runtime '{self.meta.get('runtime')}' (asked for '{runtime}')")
        version = _runtime_version(self.meta.get("runtime"))
        if version is not None and version != self.meta.get("runtime_version"):
            diffs.append(f"runtime version '{self.meta.get('runtime_version')}' (here '{version}')")
        if diffs:
            raise LatvitError(f"{self.path} was measured with another device or runtime: {'; '.join(diffs)}; "
                              "build a table here with `latvit lut build`, or pass --force (force=True) to use it "
                              "anyway")
        self.device_checked = True


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _runtime_version(name: str | None) -> str | None:
    """The runtime's version here, or None when it cannot be known (unknown or not installed)."""
    from latvit.runtimes import RUNTIME_MODULES, get_runtime

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
    if not isinstance(networks, dict) or any(not isinstance(n, dict) or "spec" not in n
                                             or not all(_valid_ms(n.get(f)) for f in TIMING_FIELDS)
                                             for n in networks.values()):
        return "'networks' is malformed"
    return None


TIMING_FIELDS = ("median_ms", "min_ms", "p90_ms")  # what the predictor reads


def _valid_ms(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value >= 0


def table_statistic(table: LatencyTable) -> str:
    """The entry field the predictor uses ("median_ms" or "min_ms")."""
    return STATISTICS[table.meta.get("statistic", "median")]


def load_table(lut: "str | Path | LatencyTable") -> LatencyTable:
    return lut if isinstance(lut, LatencyTable) else LatencyTable.load(lut)


# -- building ------------------------------------------------------------------------------------------
def build_meta(space: str, runtime, img_size: int | None, threads: int, deploy: bool) -> dict[str, Any]:
    info = machine_info(threads)
    return {"space": space, "img_size": img_size, "runtime": runtime.name, "runtime_version": runtime.version(),
            "deploy": deploy, "block_protocol": asdict(BLOCK_PROTOCOL), "network_protocol": asdict(NETWORK_PROTOCOL),
            "batch": 1, **info, "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def _timing_record(t: Timing) -> dict[str, Any]:
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in t.as_dict().items()}


def build_lut(space: str, runtime: str = "ort", out: str | Path = "lut.json", *, img_size: int | None = None,
              threads: int | None = None, deploy: bool = True, calibrate: int = 10, statistic: str = "median",
              force: bool = False, progress: bool = True) -> LatencyTable:
    """Measure every distinct item of `space` ("efficientformer", "efficientformerv2", "mobilevit", ... or
    "zoo") on `runtime` in isolation, then `calibrate` networks end to end, and fit the predictor.

    img_size: input size of the networks (default: the space's; `zoo`: each model's own).
    threads: CPU threads for torch and the runtime (default: all cores).
    deploy: measure deploy-folded modules (as `latvit bench` does by default).
    statistic: "median" or "min" (see STATISTICS); changing it on a rerun only refits the predictor.
    force: discard an existing `out` that was built under other settings instead of refusing.
    Resumable: `out` is rewritten atomically after every measurement; rerunning continues.
    """
    from latvit.runtimes import runnable_runtime

    if statistic not in STATISTICS:
        raise LatvitError(f"unknown statistic '{statistic}'; choose one of {', '.join(STATISTICS)}")
    rt = runnable_runtime(runtime)
    threads = threads or default_threads()
    set_threads(threads)
    deploy = bool(deploy)
    if img_size is None and space != "zoo":
        from latvit.models.spaces import get_space

        img_size = get_space(space).img_size
    items = space_items(space, img_size)  # validates the space name and size before anything is measured
    networks = calibration_specs(space, calibrate, img_size)
    meta = build_meta(space, rt, img_size, threads, deploy)
    table = _resume_or_new(Path(out), meta, force)

    todo_items = table.missing(items)
    todo_nets = [s for s in networks if network_id(s) not in table.networks]
    with progress_bar(progress, len(todo_items) + len(todo_nets), f"lut {space} on {rt.name}") as advance:
        for item in todo_items:
            advance(describe_item(item))
            start = time.perf_counter()
            timing = measure_item(item, rt, threads, deploy)
            table.entries[item_id(item)] = {"where": item.where, "kind": item_kind(item), "flops": item.cost.flops,
                                            **_timing_record(timing),
                                            "seconds": round(time.perf_counter() - start, 2)}
            table.save()
        for spec in todo_nets:
            advance(f"network {spec.name} (end to end)")
            timing = measure_network(spec, rt, threads, deploy)
            table.networks[network_id(spec)] = {"name": spec.name, "spec": spec_to_dict(spec),
                                                "img_size": spec.img_size, **_timing_record(timing)}
            table.save()
        advance(None)
    from latvit.latency.predictor import fit_calibration

    table.meta["statistic"] = statistic
    table.calibration = fit_calibration(table)
    table.save()
    return table


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
        diffs = [f"{f}: {old.meta.get(f)!r} in the file, {meta[f]!r} now" for f in BUILD_FIELDS
                 if old.meta.get(f) != meta[f]]
        if not diffs:
            return old  # resume: keep what is measured
        if not force:
            raise LatvitError(f"{out} was built with other settings ({'; '.join(diffs)}); use another --out, "
                              "or --force to discard it and rebuild")
    table = LatencyTable(out, meta)
    table.save()
    return table


