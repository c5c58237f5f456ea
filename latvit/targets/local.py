"""The local target: this machine, the default of every measuring command (`--target local`).

It times in the calling process: bench and the other commands already run each measurement in an isolated
child process (`protocol.run_isolated`), which is where a local `time()` call happens. A job that carries a
prepared runner is timed through it; otherwise the artifact is loaded with its runtime's own loader.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from latvit.runtimes import runnable_runtime
from latvit.targets.base import Target, TimingJob, TimingResult
from latvit.targets.protocol import collect_samples, machine_info, set_threads


class LocalTarget(Target):
    name, kind = "local", "local"

    def fingerprint(self) -> dict[str, Any]:
        info = machine_info(0)
        return {key: info[key] for key in ("cpu", "cores", "platform", "python")}

    def time(self, job: TimingJob) -> TimingResult:
        set_threads(job.threads)
        run = job.runner
        if run is None:
            if job.artifact.path is None:
                raise ValueError(f"a {job.artifact.runtime} job without an artifact file needs a prepared runner")
            import torch  # the runtimes' loaders take the example tensor for its shape

            example = torch.zeros(job.artifact.input_shape)
            run = runnable_runtime(job.artifact.runtime).load(job.artifact.path, example, job.threads)
        x = np.random.default_rng(0).standard_normal(job.artifact.input_shape, dtype=np.float32)
        samples = collect_samples(lambda: run(x), **job.protocol.as_kwargs())
        return TimingResult(samples=samples, fingerprint=self.fingerprint())


LOCAL = LocalTarget()
