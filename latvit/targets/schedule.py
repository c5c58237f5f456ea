"""Many jobs on many targets: concurrently across devices, one job at a time on each, resumable.

    outcomes = run_on_targets(jobs, "pi5,jetson", log="runs/bench-targets.jsonl")
    for o in outcomes:
        print(o.target, o.record["median_ms"] if o.ok else o.error)

- Each comma-separated entry is a target that runs *every* job; `tag:NAME` is a pool that runs each job once
  on any free device carrying the tag. Entries run at the same time (one thread per device); a device never
  runs two jobs at once, even when two entries name it.
- With `log`, every finished job is appended to a JSON-lines file at once (fsynced), keyed by (artifact hash,
  runtime, runner version on the device, flags, device fingerprint): a rerun after a kill, a reboot of the
  device or a dropped connection skips what is done (the outcome says `resumed`) and measures the rest.
- A device that cannot be used (TargetError) fails its remaining jobs with that one line; a job that fails on
  the device (RemoteRunError, any LatvitError) fails alone; everything else goes on.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latvit.errors import LatvitError
from latvit.runtimes import get_runtime
from latvit.targets.base import Target, TimingJob, TimingResult
from latvit.targets.registry import TagPool, get_target
from latvit.targets.remote import IDENTITY_FIELDS, TargetError, job_flags, result_record
from latvit.utils import atomic_write_text

LOG_FORMAT = "latvit-target-results"


@dataclass
class JobOutcome:
    """One job on one target entry. job: index into the jobs list; spec: the entry ("pi5", "tag:phones");
    target: the device that ran it; record: `remote.result_record` (None on failure); resumed: taken from the
    log, not measured in this run."""

    job: int
    spec: str
    target: str
    key: str | None = None
    result: TimingResult | None = None
    record: dict[str, Any] | None = None
    error: str | None = None
    resumed: bool = False
    started: float | None = None  # wall-clock seconds (time.time) around the device's work on it
    finished: float | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


# -- keys ------------------------------------------------------------------------------------------------
def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:24]


def device_id(target: Target) -> str:
    """A short hash of what makes the device itself (CPU, board, cores, machine, OS kind) plus its name."""
    fingerprint = target.fingerprint()
    return _digest([target.name, {k: fingerprint.get(k) for k in IDENTITY_FIELDS}])


def runner_version(target: Target, runtime: str) -> str | None:
    """What times `runtime` on `target`, with its version (the local runtime's version for 'local')."""
    if hasattr(target, "runner_version"):
        return target.runner_version(runtime)
    try:
        return get_runtime(runtime).version()
    except (ImportError, LatvitError):
        return None


def job_key(job: TimingJob, target: Target) -> str:
    """The key of a result: the artifact's content, its runtime, the runner's version there and the flags."""
    config = getattr(target, "config", None)
    flags = (
        job_flags(job, config)
        if config is not None
        else {
            "threads": job.threads,
            "protocol": job.protocol.as_kwargs(),
            "options": getattr(job, "options", None) or {},
        }
    )
    return _digest(
        {
            "artifact": job.artifact.sha256(),
            "runtime": job.artifact.runtime,
            "runner": runner_version(target, job.artifact.runtime),
            "flags": flags,
        }
    )


# -- the log ---------------------------------------------------------------------------------------------
class ResultLog:
    """Results as JSON lines, appended (and fsynced) as they arrive. Loading drops a torn last line (a kill
    mid-write) by rewriting the file without it; any other damage raises one line."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self.entries: list[dict[str, Any]] = []
        if self.path.is_file():
            self._load()

    def _load(self) -> None:
        lines = self.path.read_bytes().split(b"\n")
        good: list[bytes] = []
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                if entry.get("format") != LOG_FORMAT:
                    raise ValueError("not a result line")
            except ValueError:
                if i >= len(lines) - 2:  # the last line, cut by a kill: drop it
                    atomic_write_text(self.path, b"".join(g + b"\n" for g in good).decode())
                    break
                raise LatvitError(
                    f"{self.path} is not a latvit result log (line {i + 1}); delete it or choose another log file"
                ) from None
            good.append(line)
            self.entries.append(entry)

    def done(self, key: str, devices: dict[str, str]) -> dict[str, Any] | None:
        """The finished entry for job `key` on one of `devices` (device id -> name), or None."""
        return next((e for e in self.entries if e["ok"] and e["key"] == key and e["device_id"] in devices), None)

    def append(self, entry: dict[str, Any]) -> None:
        line = json.dumps({"format": LOG_FORMAT, **entry}, default=str) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
            self.entries.append(json.loads(line))


# -- running --------------------------------------------------------------------------------------------
@dataclass
class _Entry:
    """One comma-separated entry: its devices, and the queue of its jobs still to run."""

    spec: str
    devices: list[Target]
    queue: deque
    workers: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def retire_worker(self) -> bool:
        """One worker gave up on its device; True when it was the last one."""
        with self.lock:
            self.workers -= 1
            return self.workers == 0


def _entries(targets: str | list[str]) -> list[_Entry]:
    specs = [s.strip() for s in (targets.split(",") if isinstance(targets, str) else targets) if s.strip()]
    if not specs:
        raise LatvitError("no target given; name one (e.g. --target local or --target pi5,jetson)")
    entries = []
    for spec in dict.fromkeys(specs):
        target = get_target(spec)
        devices = target.devices if isinstance(target, TagPool) else [target]
        entries.append(_Entry(spec, devices, deque()))
    return entries


def run_on_targets(
    jobs: list[TimingJob],
    targets: str | list[str],
    *,
    log: str | Path | None = None,
    on_outcome: Callable[[JobOutcome], None] | None = None,
) -> list[JobOutcome]:
    """Run every job on every entry of `targets` (see the module docstring); outcomes in (entry, job) order.
    `on_outcome` is called as each job finishes (from the device's thread)."""
    entries = _entries(targets)
    results = ResultLog(log) if log is not None else None
    devices = {d.name: d for e in entries for d in e.devices}
    down = _probe_all(list(devices.values()))
    outcomes: list[JobOutcome] = []
    report_lock = threading.Lock()

    def report(outcome: JobOutcome, entry: dict[str, Any] | None = None) -> None:
        with report_lock:
            outcomes.append(outcome)
            if results is not None and entry is not None:
                results.append(entry)
            if on_outcome is not None:
                on_outcome(outcome)

    for entry in entries:
        up = {device_id(d): d.name for d in entry.devices if d.name not in down}
        for i, job in enumerate(jobs):
            done = None
            if results is not None and up:
                keys = {job_key(job, d) for d in entry.devices if d.name not in down}
                done = next((results.done(k, up) for k in keys if results.done(k, up)), None)
            if done is not None:
                report(
                    JobOutcome(
                        i,
                        entry.spec,
                        done["target"],
                        done["key"],
                        TimingResult(**done["result"]),
                        done["record"],
                        resumed=True,
                    )
                )
            elif not up:
                reasons = "; ".join(down[d.name] for d in entry.devices)
                report(
                    JobOutcome(
                        i, entry.spec, entry.devices[0].name if len(entry.devices) == 1 else entry.spec, error=reasons
                    )
                )
            else:
                entry.queue.append(i)

    device_locks = {name: threading.Lock() for name in devices}
    threads = [
        threading.Thread(
            target=_worker,
            args=(entry, device, jobs, device_locks[device.name], report),
            daemon=True,
            name=f"latvit-{device.name}",
        )
        for entry in entries
        for device in entry.devices
        if device.name not in down
    ]
    for entry in entries:
        entry.workers = sum(1 for d in entry.devices if d.name not in down)
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    order = {e.spec: n for n, e in enumerate(entries)}
    return sorted(outcomes, key=lambda o: (order[o.spec], o.job))


def _probe_all(devices: list[Target]) -> dict[str, str]:
    """Probe every device at once; {name: one-line reason} for those that cannot be used."""
    down: dict[str, str] = {}

    def probe(device: Target) -> None:
        try:
            device.fingerprint()
        except LatvitError as e:
            down[device.name] = str(e)

    threads = [threading.Thread(target=probe, args=(d,), daemon=True) for d in devices]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return down


def _worker(
    entry: _Entry, device: Target, jobs: list[TimingJob], lock: threading.Lock, report: Callable[..., None]
) -> None:
    """Take the entry's jobs one at a time and run them on `device`; when the device becomes unusable, stop,
    and if it was the entry's last worker, fail what is left in the queue with the reason."""
    while True:
        try:
            i = entry.queue.popleft()
        except IndexError:
            return
        job = jobs[i]
        try:
            with lock:
                key = job_key(job, device)
                started = time.time()
                result = device.time_settled(job)  # again after a transient slowdown
                finished = time.time()
            record = result_record(device, result, job)
            outcome = JobOutcome(
                i, entry.spec, record["target"], key, result, record, started=started, finished=finished
            )
            report(
                outcome,
                {
                    "ok": True,
                    "key": key,
                    "device_id": device_id(device),
                    "spec": entry.spec,
                    "target": record["target"],
                    "artifact": job.artifact.path.name if job.artifact.path else job.artifact.runtime,
                    "runtime": job.artifact.runtime,
                    "record": record,
                    "result": result.as_dict(),
                    "time": _now(),
                },
            )
        except TargetError as e:
            report(JobOutcome(i, entry.spec, device.name, error=str(e)))
            if entry.retire_worker():
                while entry.queue:
                    report(JobOutcome(entry.queue.popleft(), entry.spec, device.name, error=str(e)))
            return
        except LatvitError as e:
            report(
                JobOutcome(i, entry.spec, device.name, error=str(e)),
                {
                    "ok": False,
                    "key": None,
                    "device_id": None,
                    "spec": entry.spec,
                    "target": device.name,
                    "runtime": job.artifact.runtime,
                    "error": str(e),
                    "time": _now(),
                },
            )


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def time_interleaved(target: Target, jobs: dict[str, TimingJob], rounds: int) -> dict[str, list[float]]:
    """`protocol.measure_interleaved` on a target: every round times each job once (order reversed on odd
    rounds), a fixed count per round (`target_rel` None: the rounds carry the spread); returns the per-round
    median ms of each label. For comparing artifacts on a remote device while it drifts."""
    medians: dict[str, list[float]] = {label: [] for label in jobs}
    order = list(jobs.items())
    for i in range(rounds):
        for label, job in order[::-1] if i % 2 else order:
            fixed = dataclasses.replace(job, protocol=dataclasses.replace(job.protocol, target_rel=None))
            medians[label].append(target.time(fixed).timing.median_ms)
    return medians
