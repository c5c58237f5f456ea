"""The candidates `latvit tune` tries: runtime x precision x token merging x threads, and which exist here.

    axes = candidate_axes(model, runtimes=["ort", "eager"], threads=[1, 2])
    for c in enumerate_candidates(axes): ...        # Candidate(runtime="ort", precision="int8", tome="0", threads=2)

Precisions: `fp32`; `bf16` (OpenVINO's bf16 kernels, runtime `openvino_bf16`, only where the CPU has bf16
units); `int8` (each runtime's own quantizer, `latvit.deploy.quantize`); `int8-ac` (int8 with accuracy control
at the tune's --max-drop: NNCF's on OpenVINO, latvit's float fallback on LiteRT). Token merging settings are
tried only where the model merges.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch.nn as nn

from latvit.deploy import compress
from latvit.deploy.quantize import ACCURACY_CONTROL, QUANT_RUNTIMES
from latvit.errors import LatvitError
from latvit.runtimes import get_runtime

PRECISIONS = ("fp32", "bf16", "int8", "int8-ac")
# tried by default where installed; inductor is opt-in (compiling once per thread count takes minutes)
DEFAULT_RUNTIMES = ("eager", "ort", "openvino", "executorch", "litert", "tensorrt", "coreml")
DEFAULT_TOME = ("0", "keep0.5")


@dataclass(frozen=True)
class Candidate:
    """One deployable form: `runtime` (a base runtime name: ort, openvino, ...), `precision` (PRECISIONS),
    `tome` (a token-merging setting, "0" = off) and the thread count it runs with."""

    runtime: str
    precision: str
    tome: str
    threads: int

    @property
    def key(self) -> str:
        """Unique, stable name of the candidate (tune.json's record key, resume's lookup)."""
        return f"{self.runtime}/{self.precision}/tome={self.tome}/threads={self.threads}"

    @property
    def build_key(self) -> tuple[str, str, str]:
        """Candidates that share an artifact (they differ only in threads): it is exported once."""
        return self.runtime, self.precision, self.tome

    @property
    def run_runtime(self) -> str:
        """The registered runtime that loads and runs the artifact."""
        return "openvino_bf16" if self.precision == "bf16" else self.runtime

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Axes:
    """The values of each axis that exist here (after the user's restrictions), and what was left out."""

    runtimes: tuple[str, ...]
    precisions: tuple[str, ...]
    tomes: tuple[str, ...]
    threads: tuple[int, ...]
    skipped: dict[str, str]  # "runtime ort" / "precision bf16" / "tome keep0.5" -> why it is not tried


def default_thread_counts(cores: int) -> tuple[int, ...]:
    """Powers of two below `cores`, and `cores` itself: 1, 2, 4, ..., cores."""
    counts, t = [], 1
    while t < cores:
        counts.append(t)
        t *= 2
    return tuple(counts + [cores])


def model_merges(model: nn.Module, tome: str) -> str | None:
    """None when `tome` applies to `model` (a deployed copy is merged once to find out), else why not."""
    try:
        compress(model, tome)
    except LatvitError as e:
        return str(e)
    return None


def candidate_axes(model: nn.Module, *, cores: int, runtimes=None, precisions=None, tomes=None, threads=None) -> Axes:
    """Axes for `model` on this machine: the user's values (None = the defaults) less what cannot run here.
    Unknown names raise a one-line LatvitError; runtimes that cannot run are skipped with the reason."""
    skipped: dict[str, str] = {}
    wanted = list(runtimes or DEFAULT_RUNTIMES)
    available = []
    for name in wanted:
        reason = get_runtime(name).cannot_run()  # unknown names raise, with the list of known ones
        if reason:
            skipped[f"runtime {name}"] = reason
        elif name in ("openvino_bf16", "tensorrt_fp16"):
            raise LatvitError(
                f"'{name}' is a precision: give --runtimes {name.split('_')[0]} --precisions {name.split('_')[1]}"
            )
        else:
            available.append(name)
    precisions = list(precisions or PRECISIONS)
    for p in precisions:
        if p not in PRECISIONS:
            raise LatvitError(f"unknown precision '{p}': choose from {', '.join(PRECISIONS)}")
    if "bf16" in precisions and "openvino" in available:
        reason = get_runtime("openvino_bf16").cannot_run()
        if reason:
            skipped["precision bf16"] = reason
            precisions.remove("bf16")
    user_tomes = tomes is not None
    tomes = [str(t) for t in (tomes or DEFAULT_TOME)]
    for t in [t for t in tomes if t != "0"]:
        reason = model_merges(model, t)
        if reason:
            if user_tomes and t not in DEFAULT_TOME:  # asked for by name: say why not, rather than skip
                raise LatvitError(f"--tome {t}: {reason}")
            skipped[f"tome {t}"] = reason
            tomes.remove(t)
    counts = tuple(threads or default_thread_counts(cores))
    if any(t < 1 for t in counts):
        raise LatvitError(f"thread counts must be >= 1, got {list(counts)}")
    return Axes(tuple(available), tuple(precisions), tuple(tomes or ["0"]), counts, skipped)


def supports(runtime: str, precision: str) -> bool:
    """Whether `runtime` has `precision` at all (bf16: OpenVINO; int8: the quantizers; accuracy control:
    OpenVINO and LiteRT)."""
    if precision == "fp32":
        return True
    if precision == "bf16":
        return runtime == "openvino"
    if precision == "int8-ac":
        return runtime in ACCURACY_CONTROL
    return runtime in QUANT_RUNTIMES


def enumerate_candidates(axes: Axes) -> list[Candidate]:
    """Every combination of the axes that a runtime supports, fp32 and unmerged first (the cheap, safe
    ones set the bar that prunes the rest), most threads first."""
    order = {p: i for i, p in enumerate(PRECISIONS)}
    out = [
        Candidate(rt, p, tome, t)
        for rt in axes.runtimes
        for p in axes.precisions
        if supports(rt, p)
        for tome in axes.tomes
        for t in axes.threads
    ]
    return sorted(out, key=lambda c: (order[c.precision], c.tome != "0", axes.runtimes.index(c.runtime), -c.threads))
