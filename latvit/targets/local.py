"""The local target: this machine, the default of every measuring command (`--target local`).

It times in the calling process: bench and the other commands already run each measurement in an isolated
child process (`protocol.run_isolated`), which is where a local `time()` call happens. A job that carries a
prepared runner is timed through it; otherwise the artifact is loaded with its runtime's own loader, and
loaded again for each further session the protocol asks for (`Protocol.sessions`). A job with `reference`
is timed in alternating rounds with the reference workload on the same runtime and threads
(`latvit.targets.reference`), prepared once per target object, runtime and thread count.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from latvit.runtimes import runnable_runtime
from latvit.targets.base import Target, TimingJob, TimingResult
from latvit.targets.protocol import (
    collect_samples,
    collect_with_reference,
    cpu_times,
    device_state,
    machine_info,
    set_threads,
)
from latvit.targets.reference import Reference, prepare_reference


class LocalTarget(Target):
    name, kind = "local", "local"

    def __init__(self):
        self._references: dict[tuple[str, int], Reference] = {}

    def reference(self, runtime: str, threads: int) -> Reference:
        """The reference workload on `runtime` with `threads`, prepared on first use."""
        key = (runtime, threads)
        if key not in self._references:
            self._references[key] = prepare_reference(runtime, threads)
        return self._references[key]

    def fingerprint(self) -> dict[str, Any]:
        info = machine_info(0)
        return {key: info[key] for key in ("cpu", "cores", "platform", "python")}

    def time(self, job: TimingJob) -> TimingResult:
        set_threads(job.threads)
        runs = self.sessions(job)
        x = np.random.default_rng(0).standard_normal(job.artifact.input_shape, dtype=np.float32)
        timed = [lambda run=run: run(x) for run in runs]
        found = {"fingerprint": self.fingerprint(), "protocol": job.protocol, "sessions": len(runs)}
        if job.reference:
            reference = self.reference(job.artifact.runtime, job.threads)
            collected = collect_with_reference(timed, reference.net, reference.gemm, **job.protocol.as_kwargs())
            return TimingResult(
                collected.work,
                collected.device,
                reference={"net": collected.net, "gemm": collected.gemm, **reference.describe},
                **found,
            )
        since = cpu_times()
        samples = collect_samples(timed, **job.protocol.as_kwargs())
        return TimingResult(samples, device_state(since), **found)

    @staticmethod
    def sessions(job: TimingJob) -> list:
        """The job's runners: its prepared one (if any) and further loads of its artifact file up to
        `job.protocol.sessions`; an in-process job (no file) has its one runner."""
        runs = [job.runner] if job.runner is not None else []
        if job.artifact.path is None:
            if not runs:
                raise ValueError(f"a {job.artifact.runtime} job without an artifact file needs a prepared runner")
            return runs
        import torch  # the runtimes' loaders take the example tensor for its shape

        example = torch.zeros(job.artifact.input_shape)
        runtime = runnable_runtime(job.artifact.runtime)
        while len(runs) < job.protocol.sessions:
            runs.append(runtime.load(job.artifact.path, example, job.threads))
        return runs


LOCAL = LocalTarget()
