"""Android targets: a phone or board reached through the `adb` binary, timed by the runtimes' own tools.

    latvit target add pixel8 adb://39021FDH2000TB --runner benchmark_model=./benchmark_model \\
        --runner onnxruntime_perf_test=./onnxruntime_perf_test --runner executor_runner=./executor_runner

A job's artifact picks the tool: LiteRT `.tflite` -> `benchmark_model`, ExecuTorch `.pte` ->
`executor_runner`, ONNX -> `onnxruntime_perf_test`. Tools and artifacts are pushed once into
`WORKDIR/bin/<hash>/` and `WORKDIR/artifacts/<Artifact.sha256>/` (default WORKDIR /data/local/tmp/latvit),
artifacts checked with the device's `sha256sum` on arrival. The tool runs under `taskset` on the device's
fastest `threads` cores (by cpufreq's maximum frequency), so big.LITTLE scheduling does not move it between
core types mid-measurement; the governor, frequency and temperature are read before and after.

Every adb call is an argument list (`subprocess`), and every device command is one `shlex.join`ed string,
so names and paths with spaces, quotes or `;` stay single arguments. The tools' outputs are parsed by
`latvit.targets.parsers`; `benchmark_model` and `onnxruntime_perf_test` report aggregates only, and the
result says so (`stats_source: "aggregate"`).
"""

from __future__ import annotations

import contextlib
import hashlib
import posixpath
import secrets
import shlex
import shutil
import statistics
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from latvit.targets.base import TimingJob, TimingResult
from latvit.targets.config import TargetConfig
from latvit.targets.parsers import (
    RUNNER_RUNTIMES,
    RunnerOutputError,
    parse_benchmark_model,
    parse_executor_runner,
    parse_perf_test,
)
from latvit.targets.remote import RemoteRunError, RemoteTarget, TargetError, result_from_runner

DEFAULT_WORKDIR = "/data/local/tmp/latvit"
RUNTIME_RUNNERS = {runtime: runner for runner, runtime in RUNNER_RUNTIMES.items()}  # "ort" -> onnxruntime_perf_test
STALE_LOCK_S = 3600.0  # a device lock older than this was left by a crashed workstation
# constant device scripts (no user data in them): what the device is, and its conditions around a job
_PROBE = (
    "echo @props; getprop; echo @maxfreq; "
    'for f in /sys/devices/system/cpu/cpu[0-9]*/cpufreq/cpuinfo_max_freq; do echo "$f $(cat $f)"; done; '
    "echo @nproc; nproc; echo @governor; cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"
)
_CONDITIONS = (
    'for f in /sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_cur_freq; do echo "freq $(cat $f)"; done; '
    'echo "governor $(cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_governor 2>/dev/null)"; '
    'for z in /sys/class/thermal/thermal_zone*/temp; do echo "temp $(cat $z 2>/dev/null)"; done'
)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def parse_props(text: str) -> dict[str, str]:
    """`getprop` lines `[key]: [value]` as a dict."""
    props = {}
    for line in text.splitlines():
        key, sep, value = line.partition("]: [")
        if sep and key.startswith("[") and value.endswith("]"):
            props[key[1:]] = value[:-1]
    return props


def sections(text: str) -> dict[str, str]:
    """Split the probe script's output at its `@name` lines."""
    out, name = {}, None
    for line in text.splitlines():
        if line.startswith("@"):
            name = line[1:].strip()
            out[name] = ""
        elif name is not None:
            out[name] += line + "\n"
    return out


def fastest_cores(max_freqs: dict[int, int], threads: int) -> list[int]:
    """The `threads` cores with the highest maximum frequency (the big cores), lowest index first on ties."""
    ranked = sorted(max_freqs, key=lambda cpu: (-max_freqs[cpu], cpu))
    return sorted(ranked[:threads])


def parse_conditions(text: str) -> dict[str, Any]:
    """cpu_mhz (mean current frequency), governor and the hottest thermal zone from the conditions script."""
    freqs, temps, governor = [], [], None
    for line in text.splitlines():
        kind, _, value = line.partition(" ")
        value = value.strip()
        if kind == "freq" and value.isdigit():
            freqs.append(int(value))
        elif kind == "temp" and value.lstrip("-").isdigit() and 0 < int(value) < 150_000:
            temps.append(int(value) / 1000)
        elif kind == "governor" and value:
            governor = value
    return {
        "cpu_mhz": round(statistics.fmean(freqs) / 1e3, 1) if freqs else None,
        "governor": governor,
        "temperature_c": max(temps) if temps else None,
    }


def runner_args(runner: str, model: str, threads: int, protocol: dict[str, Any]) -> list[str]:
    """The tool's command line for one timing, mapped from latvit's protocol as far as the tool allows."""
    warmup, iters = int(protocol["warmup"]), int(protocol["iters"])
    if runner == "benchmark_model":
        return [
            f"--graph={model}",
            f"--num_threads={threads}",
            f"--warmup_runs={warmup}",
            "--warmup_min_secs=0",
            f"--num_runs={iters}",
            f"--min_secs={protocol['min_seconds']}",
            f"--max_secs={protocol['max_seconds']}",
        ]
    if runner == "executor_runner":  # no warm-up option: run warmup + iters and drop the first warmup (parsers)
        return [f"--model_path={model}", f"--num_executions={warmup + iters}", f"--cpu_threads={threads}"]
    # onnxruntime_perf_test: its own single warm-up call, then iters timed runs, inputs generated (-I)
    return ["-e", "cpu", "-m", "times", "-r", str(iters), "-x", str(threads), "-y", "1", "-o", "99", "-I", model]


class AdbTarget(RemoteTarget):
    """An Android device (`adb://SERIAL`) timed with the runtimes' own benchmark tools (`config.runners`)."""

    kind = "adb"

    def __init__(self, config: TargetConfig, *, command_timeout_s: float = 120.0, lock_wait_s: float = 600.0):
        super().__init__(config)
        if self.url.kind != "adb":
            raise TargetError(f"target '{self.name}' is {config.url}, not an adb:// URL")
        self.serial = self.url.serial
        self.workdir = config.workdir or DEFAULT_WORKDIR
        self.command_timeout_s, self.lock_wait_s = command_timeout_s, lock_wait_s
        self._last_end = 0.0
        self._pushed: dict[str, str] = {}  # local sha -> device path, for this object's life
        self._busy = threading.Lock()

    # -- adb --------------------------------------------------------------------------------------------
    def _adb(self, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess:
        adb = shutil.which("adb")
        if adb is None:
            raise TargetError(
                f"target '{self.name}': the adb binary is not on PATH: install Android's platform "
                "tools (Debian: apt-get install adb)"
            )
        try:
            return subprocess.run(
                [adb, "-s", self.serial, *args],
                capture_output=True,
                text=True,
                errors="replace",
                timeout=timeout or self.command_timeout_s,
            )
        except subprocess.TimeoutExpired:
            raise RemoteRunError(
                f"target '{self.name}': `adb {args[0]}` timed out after {timeout or self.command_timeout_s:.0f} s"
            ) from None

    def _shell(self, command: str, timeout: float | None = None) -> subprocess.CompletedProcess:
        """Run one device shell command line (built with shlex.join/quote, or a constant script)."""
        return self._adb("shell", command, timeout=timeout)

    def _shell_ok(self, argv: list[str], what: str, timeout: float | None = None) -> str:
        ran = self._shell(shlex.join(argv), timeout)
        if ran.returncode != 0:
            raise TargetError(
                f"target '{self.name}': {what} failed on the device: "
                f"{_last_line(ran.stderr + ran.stdout) or 'exit ' + str(ran.returncode)}"
            )
        return ran.stdout

    def ensure_ready(self) -> None:
        """Raise one line unless the device is connected and authorized."""
        ran = self._adb("get-state", timeout=30)
        state = ran.stdout.strip()
        text = (ran.stderr + ran.stdout).lower()
        if ran.returncode == 0 and state == "device":
            return
        if "unauthorized" in text:
            raise TargetError(
                f"target '{self.name}': adb device {self.serial} is unauthorized: unlock it and "
                "accept the 'Allow USB debugging' prompt, then run `latvit target check "
                f"{self.name}`"
            )
        if "offline" in text:
            raise TargetError(
                f"target '{self.name}': adb device {self.serial} is offline: reconnect the cable (or "
                "`adb reconnect`) and retry"
            )
        raise TargetError(
            f"target '{self.name}': no adb device {self.serial} (`adb devices` does not list it): "
            "connect it with USB debugging on, or `adb connect HOST:PORT` for a network device"
        )

    # -- the Target surface ------------------------------------------------------------------------------
    def probe_device(self) -> dict[str, Any]:
        self.ensure_ready()
        self._shell_ok(["mkdir", "-p", self.workdir], f"creating {self.workdir}")
        parts = sections(self._shell(_PROBE).stdout)
        props = parse_props(parts.get("props", ""))
        max_freqs = {}
        for line in parts.get("maxfreq", "").splitlines():
            path, _, value = line.rpartition(" ")
            cpu = path.split("/cpu/cpu")[-1].split("/")[0]
            if cpu.isdigit() and value.isdigit():
                max_freqs[int(cpu)] = int(value)
        df = self._shell(shlex.join(["df", "-k", self.workdir])).stdout.splitlines()
        free = None
        if len(df) >= 2 and len(df[-1].split()) >= 4 and df[-1].split()[3].isdigit():
            free = int(df[-1].split()[3]) * 1024
        soc = props.get("ro.soc.model") or props.get("ro.board.platform") or props.get("ro.hardware")
        nproc = parts.get("nproc", "").strip()
        return {
            "cpu": f"{soc or 'unknown SoC'} ({props.get('ro.product.cpu.abi', '?')})",
            "board": " ".join(filter(None, (props.get("ro.product.manufacturer"), props.get("ro.product.model"))))
            or None,
            "cores": int(nproc) if nproc.isdigit() else len(max_freqs) or None,
            "machine": props.get("ro.product.cpu.abi"),
            "system": "Android",
            "platform": f"Android {props.get('ro.build.version.release', '?')} "
            f"(SDK {props.get('ro.build.version.sdk', '?')})",
            "max_freq_khz": max_freqs,
            "governor": parts.get("governor", "").strip() or None,
            "workdir": self.workdir,
            "free_bytes": free,
            "runners": {
                name: file_sha256(Path(path))[:16] for name, path in self.config.runners.items() if Path(path).is_file()
            },
        }

    def runner_version(self, runtime: str) -> str | None:
        runner = RUNTIME_RUNNERS.get(runtime)
        if runner is None or runner not in self.config.runners:
            return None
        return f"{runner} {self.probe()['runners'].get(runner, '?')}"

    def time(self, job: TimingJob) -> TimingResult:
        runtime = job.artifact.runtime
        runner = RUNTIME_RUNNERS.get(runtime)
        if runner is None:
            raise RemoteRunError(
                f"target '{self.name}' (adb) times {', '.join(RUNTIME_RUNNERS)} artifacts with "
                f"their benchmark tools; '{runtime}' has none"
            )
        if runner not in self.config.runners:
            raise TargetError(
                f"target '{self.name}' has no {runner} for {runtime} artifacts: add it with "
                f"`latvit target add {self.name} {self.url} --runner {runner}=PATH` (docs/targets.md "
                "says where to get it)"
            )
        if job.artifact.path is None or not job.artifact.path.is_file():
            raise RemoteRunError(f"a {runtime} job for '{self.name}' needs its artifact file")
        with self._busy:
            probe = self.probe()
            binary = self._push_runner(runner)
            model = self._push_artifact(job.artifact.path, job.artifact.sha256(), probe)
            cores = fastest_cores(probe.get("max_freq_khz") or {}, job.threads)
            protocol = job.protocol.as_kwargs()
            argv = [binary, *runner_args(runner, model, job.threads, protocol)]
            if cores:
                argv = ["taskset", format(sum(1 << c for c in cores), "x"), *argv]
            with self._device_lock():
                cooled = self._cool_down()
                before = parse_conditions(self._shell(_CONDITIONS).stdout)
                ran = self._shell(shlex.join(argv), timeout=protocol["max_seconds"] * 2 + 300)
                after = parse_conditions(self._shell(_CONDITIONS).stdout)
                self._last_end = time.monotonic()
            output = ran.stdout + "\n" + ran.stderr
            if ran.returncode != 0:
                raise RemoteRunError(
                    f"target '{self.name}': {runner} failed on the device (exit {ran.returncode}): "
                    f"{_last_line(output) or 'no output'}"
                )
            try:
                stats = (
                    parse_executor_runner(output, int(protocol["warmup"]))
                    if runner == "executor_runner"
                    else parse_benchmark_model(output)
                    if runner == "benchmark_model"
                    else parse_perf_test(output)
                )
            except RunnerOutputError as e:
                raise RemoteRunError(f"target '{self.name}': {e}") from None
            state = {
                "before": before,
                "after": after,
                "cooldown_s": cooled,
                "pinned_cores": cores,
                "warmup_runs": 1 if runner == "onnxruntime_perf_test" else int(protocol["warmup"]),
            }
            fingerprint = {**self.fingerprint(), "runtime_version": self.runner_version(runtime)}
            return result_from_runner(stats, state, self.name, fingerprint)

    # -- pushing, once ----------------------------------------------------------------------------------
    def _push_runner(self, runner: str) -> str:
        local = Path(self.config.runners[runner])
        if not local.is_file():
            raise TargetError(
                f"target '{self.name}': its {runner} {local} is gone: add it again with --runner {runner}=PATH"
            )
        sha = file_sha256(local)
        dest = posixpath.join(self.workdir, "bin", sha[:16], runner)
        return self._push_once(local, sha, dest, executable=True)

    def _push_artifact(self, path: Path, artifact_sha: str, probe: dict[str, Any]) -> str:
        dest = posixpath.join(self.workdir, "artifacts", artifact_sha, path.name)
        free, need = probe.get("free_bytes"), path.stat().st_size + (1 << 20)
        if (
            dest not in self._pushed.values()
            and self._shell(shlex.join(["test", "-f", dest])).returncode != 0
            and free is not None
            and free < need
        ):
            raise TargetError(
                f"target '{self.name}': not enough space in {self.workdir} on the device "
                f"({free / 1e6:.1f} MB free, {need / 1e6:.1f} MB needed): free some space there or "
                "set another --workdir"
            )
        return self._push_once(path, file_sha256(path), dest)

    def _push_once(self, local: Path, sha: str, dest: str, executable: bool = False) -> str:
        """Push `local` to `dest` unless it is there with the right content; checked with sha256sum."""
        if self._pushed.get(sha) == dest or self._device_sha(dest) == sha:
            self._pushed[sha] = dest
            return dest
        incoming = f"{posixpath.dirname(dest)}.incoming-{secrets.token_hex(4)}"
        self._shell_ok(["mkdir", "-p", incoming], f"creating {incoming}")
        tmp = posixpath.join(incoming, posixpath.basename(dest))
        pushed = self._adb("push", str(local), tmp, timeout=self.command_timeout_s + local.stat().st_size / 1e6)
        if pushed.returncode != 0:
            self._shell(shlex.join(["rm", "-rf", incoming]))
            raise TargetError(
                f"target '{self.name}': adb push of {local.name} failed "
                f"({_last_line(pushed.stderr + pushed.stdout)}): check the space in {self.workdir}"
            )
        if self._device_sha(tmp) != sha:
            self._shell(shlex.join(["rm", "-rf", incoming]))
            raise RemoteRunError(f"target '{self.name}': {local.name} arrived corrupted on the device (hash mismatch)")
        if executable:
            self._shell_ok(["chmod", "755", tmp], f"chmod of {local.name}")
        self._shell_ok(["rm", "-rf", posixpath.dirname(dest)], "replacing an old copy")
        self._shell_ok(["mkdir", "-p", posixpath.dirname(posixpath.dirname(dest))], "creating a directory")
        self._shell_ok(["mv", incoming, posixpath.dirname(dest)], f"moving {local.name} into place")
        self._pushed[sha] = dest
        return dest

    def _device_sha(self, path: str) -> str | None:
        ran = self._shell(shlex.join(["sha256sum", path]))
        words = ran.stdout.split()
        return words[0] if ran.returncode == 0 and words else None

    # -- one job at a time, with a pause between jobs -------------------------------------------------------
    @contextlib.contextmanager
    def _device_lock(self):
        self._acquire_lock()
        try:
            yield
        finally:
            self._shell(shlex.join(["rm", "-rf", posixpath.join(self.workdir, "lock")]))

    def _acquire_lock(self) -> None:
        """A `mkdir` lock on the device (atomic in any shell): another workstation's job makes this wait; a lock
        older than STALE_LOCK_S (its workstation died) is broken."""
        lock = posixpath.join(self.workdir, "lock")
        since = posixpath.join(lock, "since")
        take = f"{shlex.join(['mkdir', lock])} && date +%s > {shlex.quote(since)}"
        start = time.monotonic()
        while True:
            if self._shell(take).returncode == 0:
                return
            stamp = self._shell(shlex.join(["cat", since])).stdout.strip()
            now = self._shell("date +%s").stdout.strip()
            if stamp.isdigit() and now.isdigit() and int(now) - int(stamp) > STALE_LOCK_S:
                self._shell(shlex.join(["rm", "-rf", lock]))
                continue
            if time.monotonic() - start > self.lock_wait_s:
                raise RemoteRunError(
                    f"target '{self.name}': the device is busy (another workstation's job held "
                    f"{lock} for {self.lock_wait_s:.0f} s)"
                )
            time.sleep(1.0)

    def _cool_down(self) -> float:
        wait = max(0.0, self._last_end + self.config.cooldown_s - time.monotonic()) if self._last_end else 0.0
        time.sleep(wait)
        return wait


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""
