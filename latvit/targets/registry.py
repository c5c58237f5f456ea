"""Names to targets: what `--target NAME` means.

    get_target(None) / get_target("local")   this machine
    get_target("pi5")                        a configured target (`latvit target add pi5 ssh://...`)
    get_target("ssh://pi@10.0.0.7:2222")     an unconfigured device, by URL (settings at their defaults)
    get_target("adb://39021FDH2000TB")
    get_target("tag:phones")                 any free device of the configured ones tagged "phones"

A list (`--target pi5,jetson`) is several targets: `latvit.targets.schedule.run_on_targets` runs jobs on them
concurrently.
"""

from __future__ import annotations

import threading
from typing import Any

from latvit.errors import LatvitError
from latvit.targets.adb import AdbTarget
from latvit.targets.base import Target, TimingJob, TimingResult
from latvit.targets.config import TargetConfig, get_config, tagged
from latvit.targets.local import LOCAL
from latvit.targets.ssh import SSHTarget

DEFAULT_TARGET = "local"


def make_target(config: TargetConfig, **options: Any) -> Target:
    """The Target object for a configuration (`options` go to its constructor, e.g. retries for SSH)."""
    kind = config.parsed.kind
    if kind == "ssh":
        return SSHTarget(config, **options)
    if kind == "adb":
        return AdbTarget(config, **options)
    return LOCAL


def get_target(name: str | None = None, **options: Any) -> Target:
    """The target called `name` (see the module docstring). An unknown name raises one line saying how to
    add it; a comma-separated list raises (one target here; `run_on_targets` takes lists)."""
    if name in (None, "", DEFAULT_TARGET):
        return LOCAL
    if "," in name:
        raise LatvitError(
            f"'{name}' names several targets; a single one is needed here "
            "(latvit.targets.schedule.run_on_targets runs jobs on a list)"
        )
    if name.startswith("tag:"):
        return TagPool(name[len("tag:") :], [make_target(c, **options) for c in tagged(name[len("tag:") :])])
    if "://" in name:
        return make_target(TargetConfig(name=name, url=name), **options)
    return make_target(get_config(name), **options)


class TagPool(Target):
    """Any free device of a tag: a job runs on the first member no other job of this process is using (in
    name order), else waits for one. Which device ran it is in the result (`fingerprint["target"]`)."""

    kind = "pool"

    def __init__(self, tag: str, devices: list[Target]):
        self.name, self.devices = f"tag:{tag}", devices
        self._free = threading.Condition()
        self._busy: set[str] = set()

    def fingerprint(self) -> dict[str, Any]:
        return {"tag": self.name, "devices": [d.name for d in self.devices]}

    def time(self, job: TimingJob) -> TimingResult:
        with self._free:
            while all(d.name in self._busy for d in self.devices):
                self._free.wait()
            device = next(d for d in self.devices if d.name not in self._busy)
            self._busy.add(device.name)
        try:
            return device.time(job)
        finally:
            with self._free:
                self._busy.discard(device.name)
                self._free.notify()

    def close(self) -> None:
        for device in self.devices:
            device.close()
