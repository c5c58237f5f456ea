"""Targets: *where* an artifact runs and is timed, behind one seam (`latvit.targets.base.Target`), with the
one measurement protocol (`latvit.targets.protocol`).

`get_target(name)` is the registry every measuring command's `--target` goes through: "local" (this machine,
the default) is built in; named remote targets come from the user's target configuration
(`latvit.targets.config`), URLs (`ssh://user@host`, `adb://SERIAL`) and tags (`tag:NAME`) work too;
`run_on_targets(jobs, "pi5,jetson")` runs jobs on several targets concurrently, resumably.
"""

from __future__ import annotations

from latvit.targets.base import Artifact, Protocol, Settle, Target, TimingJob, TimingResult
from latvit.targets.local import LOCAL, LocalTarget
from latvit.targets.registry import DEFAULT_TARGET, TagPool, get_target, make_target
from latvit.targets.remote import RemoteRunError, TargetError, result_record, target_meta, target_mismatch
from latvit.targets.schedule import JobOutcome, run_on_targets

__all__ = [
    "Artifact",
    "DEFAULT_TARGET",
    "JobOutcome",
    "LOCAL",
    "LocalTarget",
    "Protocol",
    "RemoteRunError",
    "Settle",
    "TagPool",
    "Target",
    "TargetError",
    "TimingJob",
    "TimingResult",
    "get_target",
    "make_target",
    "result_record",
    "run_on_targets",
    "target_meta",
    "target_mismatch",
]
