"""Targets without SSH: the configuration file, the device tools' output readers (golden files), the agent
run as a local process, what a record carries, the resumable scheduler, and Android through a fake `adb`.
The real-SSH tests are in test_targets_ssh.py."""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from targets_support import DATA, adb_calls, executable, fast_protocol, install_fake_adb, tiny_onnx

from latvit.cli import main
from latvit.errors import LatvitError
from latvit.targets import (
    Artifact,
    Protocol,
    Target,
    TimingJob,
    TimingResult,
    parsers,
    result_record,
    schedule,
    target_mismatch,
)
from latvit.targets import config as cfg
from latvit.targets.adb import AdbTarget, fastest_cores, parse_conditions, parse_props
from latvit.targets.agent import sha256_of
from latvit.targets.remote import (
    RemoteRunError,
    TargetError,
    agent_bundle,
    parse_answer,
    result_from_answer,
    result_from_runner,
    timing_fields,
)

WEIRD = "we ird'; touch PWNED; \"x"  # a path part that would run `touch` if it reached a shell unquoted


@pytest.fixture
def xdg(tmp_path, monkeypatch):
    home = tmp_path / "config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    return home / "latvit"


# -- configuration ----------------------------------------------------------------------------------------
def test_add_list_remove_round_trip_private_file(xdg, capsys):
    assert (
        main(
            ["target", "add", "pi5", "ssh://pi@pi5.local:2222", "--tags", "arm,pi", "--python", "/opt/py 3/bin/python"]
        )
        == 0
    )
    assert main(["target", "add", "mac", "ssh://me@mac.local", "--compute-units", "ne"]) == 0
    path = xdg / "targets.json"
    assert path.stat().st_mode & 0o777 == 0o600 and xdg.stat().st_mode & 0o777 == 0o700
    targets = cfg.load_targets()
    assert targets["pi5"].tags == ("arm", "pi") and targets["pi5"].python == "/opt/py 3/bin/python"
    assert targets["pi5"].parsed == cfg.Url("ssh", host="pi5.local", port=2222, user="pi")
    assert [t.name for t in cfg.tagged("arm")] == ["pi5"]
    capsys.readouterr()
    assert main(["target", "list"]) == 0
    out = capsys.readouterr().out
    assert "pi5" in out and "ssh://pi@pi5.local:2222" in out and "mac" in out
    assert main(["target", "remove", "pi5"]) == 0
    assert list(cfg.load_targets()) == ["mac"] and path.stat().st_mode & 0o777 == 0o600
    assert "password" not in path.read_text()


@pytest.mark.parametrize(
    "argv",
    [
        ["target", "add", "bad;name", "ssh://pi@h"],
        ["target", "add", "a b", "ssh://pi@h"],
        ["target", "add", "q'uote", "ssh://pi@h"],
        ["target", "add", "local", "ssh://pi@h"],
        ["target", "add", "pi", "ssh://pi:secret@h"],
        ["target", "add", "pi", "http://h"],
        ["target", "add", "pi", "ssh://pi@h:99999"],
        ["target", "add", "pi", "adb://bad serial"],
        ["target", "add", "pi", "ssh://pi@h;reboot"],
        ["target", "add", "pi", "adb://X", "--runner", "nope=/bin/sh"],
        ["target", "check", "nope"],
        ["target", "remove", "nope"],
        ["target", "check", "tag:none"],
    ],
)
def test_bad_input_is_one_line_exit_2_nothing_written(xdg, capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("latvit: error: ") and "\n" not in err
    assert not (xdg / "targets.json").exists()


def test_a_failed_write_leaves_the_previous_file(xdg, monkeypatch):
    cfg.add_target(cfg.make_config("pi5", "ssh://pi@pi5"))
    before = (xdg / "targets.json").read_bytes()

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(LatvitError, match="No space left"):
        cfg.add_target(cfg.make_config("jetson", "ssh://nv@jetson"))
    assert (xdg / "targets.json").read_bytes() == before
    assert [p.name for p in xdg.iterdir()] == ["targets.json"]  # no temporary file left behind


def test_names_urls_and_tags_resolve_to_targets(xdg):
    from latvit.targets import LOCAL, TagPool, get_target
    from latvit.targets.ssh import SSHTarget

    cfg.add_target(cfg.make_config("pi5", "ssh://pi@pi5", tags="arm"))
    cfg.add_target(cfg.make_config("orin", "ssh://nv@orin:2222", tags="arm,gpu", python="/usr/bin/python3"))
    cfg.add_target(cfg.make_config("pixel", "adb://FAKE123", tags="phones"))
    assert get_target(None) is LOCAL and get_target("local") is LOCAL
    pool = get_target("tag:arm")
    assert isinstance(pool, TagPool) and [d.name for d in pool.devices] == ["orin", "pi5"]
    assert isinstance(get_target("orin"), SSHTarget) and get_target("orin").config.python == "/usr/bin/python3"
    assert get_target("pixel").kind == "adb" and get_target("pixel").serial == "FAKE123"
    adhoc = get_target("ssh://me@10.0.0.7:2200")
    assert adhoc.name == "ssh://me@10.0.0.7:2200" and adhoc.url.port == 2200 and adhoc.workdir == ".cache/latvit-target"
    with pytest.raises(LatvitError, match="names several targets"):
        get_target("pi5,orin")
    with pytest.raises(LatvitError, match="no target has the tag 'tpu'"):
        get_target("tag:tpu")


def test_a_name_keeps_its_url_and_unknown_names_say_how_to_add(xdg):
    cfg.add_target(cfg.make_config("pi5", "ssh://pi@pi5"))
    with pytest.raises(LatvitError, match="already points at ssh://pi@pi5; remove it first"):
        cfg.add_target(cfg.make_config("pi5", "ssh://pi@other"))
    with pytest.raises(LatvitError, match="unknown target 'pi6'; did you mean 'pi5'.*latvit target add pi6"):
        cfg.get_config("pi6")
    (xdg / "targets.json").write_text("{not json")
    with pytest.raises(LatvitError, match="not a valid latvit target file"):
        cfg.load_targets()


# -- device tool outputs ---------------------------------------------------------------------------------
def test_benchmark_model_gives_its_own_aggregates():
    s = parsers.parse_benchmark_model((DATA / "benchmark_model_litert.txt").read_text())
    assert s.stats_source == "aggregate" and s.samples == []
    assert s.aggregate == {
        "count": 76,
        "mean_ms": pytest.approx(13.2154),
        "median_ms": pytest.approx(13.150),
        "p90_ms": None,
        "min_ms": pytest.approx(12.904),
        "max_ms": pytest.approx(15.877),
        "std_ms": pytest.approx(0.412),
    }
    assert s.extra["init_ms"] == pytest.approx(31.452) and s.extra["warmup_mean_ms"] == pytest.approx(14.3906)


def test_benchmark_model_without_percentiles_has_no_median():
    s = parsers.parse_benchmark_model((DATA / "benchmark_model_tflite_old.txt").read_text())
    assert s.aggregate["count"] == 55 and s.aggregate["mean_ms"] == pytest.approx(18.1907)
    assert s.aggregate["median_ms"] is None  # the tool printed none: none is invented
    fields = timing_fields(result_from_runner(s, {}, "pixel", {}))
    assert fields["median_ms"] is None and fields["stats_source"] == "aggregate" and fields["iters"] == 55
    assert fields["cv"] == pytest.approx(0.301 / 18.1907)
    with pytest.raises(parsers.RunnerOutputError, match="no timings: Benchmarking failed"):
        parsers.parse_benchmark_model((DATA / "benchmark_model_failed.txt").read_text())


def test_executor_runner_iterations_are_samples_without_the_warmup():
    text = (DATA / "executor_runner_iterations.txt").read_text()
    s = parsers.parse_executor_runner(text, warmup=2)
    assert s.stats_source == "samples" and len(s.samples) == 10
    assert s.samples[0] == pytest.approx(23.911402e-3) and s.samples[-1] == pytest.approx(23.702218e-3)
    legacy = parsers.parse_executor_runner((DATA / "executor_runner_legacy.txt").read_text(), warmup=10)
    assert legacy.stats_source == "aggregate" and legacy.aggregate["mean_ms"] == pytest.approx(1243.456 / 50)
    assert legacy.aggregate["median_ms"] is None
    with pytest.raises(parsers.RunnerOutputError, match="Failed to parse model file"):
        parsers.parse_executor_runner((DATA / "executor_runner_failed.txt").read_text())


def test_perf_test_and_trtexec():
    s = parsers.parse_perf_test((DATA / "onnxruntime_perf_test.txt").read_text())
    assert s.aggregate == {
        "count": 50,
        "mean_ms": pytest.approx(12.2477),
        "median_ms": pytest.approx(12.1046),
        "p90_ms": pytest.approx(12.8713),
        "min_ms": pytest.approx(11.7805),
        "max_ms": pytest.approx(15.1288),
        "std_ms": None,
    }
    t = parsers.parse_trtexec_times((DATA / "trtexec_times.json").read_text())
    assert t.stats_source == "samples" and [round(x * 1e3, 4) for x in t.samples] == [
        1.2413,
        1.2301,
        1.2377,
        1.2290,
        1.2512,
        1.2355,
        1.2298,
        1.2441,
    ]
    assert parsers.parse_trtexec_version((DATA / "trtexec_log.txt").read_text()) == "tensorrt 8.6.2"
    assert (
        parsers.parse_trtexec_version("&&&& RUNNING TensorRT.trtexec [TensorRT v100300] # trtexec") == "tensorrt 10.3.0"
    )
    with pytest.raises(parsers.RunnerOutputError):
        parsers.parse_trtexec_times('[{"computeMs": 1.0}]')


# -- sessions: several loads of one artifact -----------------------------------------------------------------
def test_local_target_times_every_load_the_protocol_asks_for(tmp_path, monkeypatch):
    """`Protocol(sessions=3)`: the artifact is loaded three times and every load is called; the record says 3.
    The reference network is loaded NETWORK_SESSIONS times beside it."""
    from latvit.runtimes.ort import OnnxRuntime
    from latvit.targets import LOCAL
    from latvit.targets.local import LocalTarget
    from latvit.targets.protocol import NETWORK_SESSIONS

    loads, calls = [], []
    original = OnnxRuntime.load

    def counted_load(self, path, example, threads):
        run, load = original(self, path, example, threads), len(loads)
        loads.append(Path(path).name)

        def counted(x):
            calls.append(load)
            return run(x)

        return counted

    monkeypatch.setattr(OnnxRuntime, "load", counted_load)
    model = tiny_onnx(tmp_path / "m.onnx")
    protocol = Protocol(warmup=1, iters=10, min_seconds=0.5, max_seconds=30.0, target_rel=None, sessions=3)
    target = LocalTarget()  # a reference of its own, loaded through the counted loader
    job = TimingJob(Artifact("ort", model, (1, 3, 8, 8)), 1, protocol, reference=True)
    result = target.time(job)
    assert loads.count("m.onnx") == 3 and loads.count("reference.onnx") == NETWORK_SESSIONS
    work_loads = [i for i, name in enumerate(loads) if name == "m.onnx"]
    assert {i for i in calls if i in work_loads} == set(work_loads)  # every load timed
    assert result.sessions == 3 and result_record(LOCAL, result, job)["sessions"] == 3
    one = LOCAL.time(TimingJob(Artifact("ort", model, (1, 3, 8, 8)), 1, fast_protocol()))
    assert one.sessions == 1


def test_sessions_change_a_cached_result_key_only_when_asked():
    from latvit.targets.config import TargetConfig
    from latvit.targets.remote import job_flags

    config = TargetConfig("pi", "ssh://pi@h")
    artifact = Artifact("ort", Path("m.onnx"), (1, 3, 8, 8))
    one, three = (TimingJob(artifact, 1, Protocol(sessions=n)) for n in (1, 3))
    assert "sessions" not in job_flags(one, config)  # results cached before sessions keep their key
    assert job_flags(three, config)["sessions"] == 3


# -- settling: a record taken inside a transient slowdown is taken again ----------------------------------
class DriftingDevice(Target):
    """A target whose reference network runs at the next speed of `ref_ms` per job (work at 10x it), with
    `spread` of relative noise around it."""

    name, kind = "drifting", "fake"

    def __init__(self, ref_ms, spread=0.0):
        self.ref_ms, self.spread, self.jobs = iter(ref_ms), spread, 0

    def fingerprint(self):
        return {"cpu": "Fake CPU"}

    def time(self, job):
        self.jobs += 1
        ms = next(self.ref_ms)
        net = [ms * (1 + self.spread * ((i % 5) - 2) / 2) / 1e3 for i in range(30)]
        return TimingResult([10 * s for s in net], {}, reference={"net": net, "gemm": net}, protocol=job.protocol)


def reference_job(reference=True):
    return TimingJob(Artifact("ort", Path("m.onnx"), (1, 3, 8, 8)), 1, fast_protocol(), reference=reference)


def test_a_record_inside_a_transient_slowdown_is_taken_again_after_a_pause():
    from latvit.targets import Settle

    device, pauses = DriftingDevice([1.0, 1.02, 1.45, 1.4, 1.01]), []
    assert device.time_settled(reference_job(), sleep=pauses.append).state["settle"]["tries"] == 1  # sets the usual
    assert device.time_settled(reference_job(), sleep=pauses.append).state["settle"]["tries"] == 1  # 2% slower: fine
    settled = device.time_settled(reference_job(), sleep=pauses.append)  # 1.45x, 1.4x, then back to usual
    assert settled.state["settle"] == {"tries": 3, "ref_vs_fastest": pytest.approx(1.01)}
    assert statistics.median(settled.reference["net"]) * 1e3 == pytest.approx(1.01)  # the settled try is kept
    assert pauses == [Settle().pause_s] * 2 and device.jobs == 5


def test_a_slowdown_that_lasts_keeps_the_fastest_try_and_says_how_slow():
    device, pauses = DriftingDevice([1.0, 1.5, 1.4, 1.45]), []
    device.time_settled(reference_job(), sleep=pauses.append)
    kept = device.time_settled(reference_job(), sleep=pauses.append)
    assert kept.state["settle"] == {"tries": 3, "ref_vs_fastest": pytest.approx(1.4)} and len(pauses) == 2


def test_an_uncertain_or_absent_reference_is_not_waited_for():
    noisy = DriftingDevice([1.0, 1.0, 1.5], spread=0.4)  # the reference's median known to +-40% only
    for _ in range(3):
        assert noisy.time_settled(reference_job(), sleep=pytest.fail).state["settle"]["tries"] == 1
    plain = DriftingDevice([1.0, 2.0])
    plain.time_settled(reference_job(reference=False), sleep=pytest.fail)
    assert plain.time_settled(reference_job(reference=False), sleep=pytest.fail).state == {} and plain.jobs == 2


def test_a_table_entry_says_it_was_timed_again(monkeypatch):
    import torch

    from latvit.latency.measure import time_module
    from latvit.targets import base

    pauses = []
    monkeypatch.setattr(base, "wait_seconds", pauses.append)
    device = DriftingDevice([1.0, 1.5, 1.0])
    conv, x = torch.nn.Conv2d(3, 8, 3), torch.randn(1, 3, 16, 16)
    _, first = time_module(conv, x, "ort", 1, fast_protocol(), reference=True, target=device)
    _, second = time_module(conv, x, "ort", 1, fast_protocol(), reference=True, target=device)
    assert "settle_tries" not in first and second["settle_tries"] == 2 and len(pauses) == 1
    assert second["ref_ms"] == pytest.approx(1.0)  # the try outside the slowdown


# -- the agent, run as a local process ------------------------------------------------------------------------
@pytest.fixture
def bundle(tmp_path):
    """The agent bundle written to a directory, as an SSH target ships it."""
    root = tmp_path / "bundle"
    for name, data in agent_bundle().items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def run_agent(bundle: Path, job: dict, env: dict | None = None) -> dict:
    """Run the agent as an SSH target does: the job on stdin, which stays open until the answer is in."""
    proc = subprocess.Popen(
        [sys.executable, "-I", str(bundle / "agent.py"), "run"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    proc.stdin.write(json.dumps(job) + "\n")
    proc.stdin.flush()
    out = proc.stdout.read()
    proc.stdin.close()
    assert proc.wait(60) == 0
    return parse_answer(out, "test")


def ort_job(tmp_path: Path, **extra) -> dict:
    model = tiny_onnx(tmp_path / "m.onnx")
    return {
        "workdir": str(tmp_path / "work"),
        "artifact": str(model),
        "runtime": "ort",
        "input_shape": [1, 3, 8, 8],
        "threads": 1,
        "protocol": fast_protocol().as_kwargs(),
        "options": {},
        "lock_wait_s": 5,
        "cooldown_s": 0,
        **extra,
    }


def test_agent_hash_is_artifact_sha256(tmp_path):
    single = tiny_onnx(tmp_path / f"{WEIRD}.onnx")
    package = tmp_path / "m.mlpackage"
    (package / "Data").mkdir(parents=True)
    (package / "Manifest.json").write_text("{}")
    (package / "Data" / "weights.bin").write_bytes(os.urandom(1000))
    for path in (single, package):
        assert sha256_of(str(path)) == Artifact("x", path, (1,)).sha256()


def test_agent_needs_neither_torch_nor_latvit(bundle):
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import agent; "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'latvit', 'numpy'))))"
    )
    # -S: no site-packages at all (no latvit install, no numpy): the bundle alone must import
    ran = subprocess.run([sys.executable, "-I", "-S", "-c", code, str(bundle)], capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    modules = json.loads(ran.stdout)
    assert "latvit.targets.protocol" in modules and "latvit.errors" in modules
    assert not [
        m
        for m in modules
        if m.split(".")[0] in ("torch", "numpy") or m.startswith(("latvit.models", "latvit.runtimes"))
    ]
    assert set(agent_bundle()) >= {"agent.py", "latvit/__init__.py", "latvit/targets/protocol.py"}


def test_agent_times_an_onnx_model_with_the_protocol(tmp_path, bundle):
    answer = run_agent(bundle, ort_job(tmp_path))
    assert answer["ok"], answer
    assert answer["sessions"] == 1
    assert len(answer["samples"]) >= 5 and all(0 < s < 1 for s in answer["samples"])
    assert answer["runtime_version"].startswith("onnxruntime ")
    assert {"governor", "cpu_mhz", "load_1m", "temperature_c"} <= set(answer["state"]["before"])
    result = result_from_answer(answer, "test", {"cpu": "x"})
    assert result.timing.iters == len(answer["samples"]) and result.fingerprint["runtime_version"].startswith("onnx")


def test_agent_times_each_load_a_job_asks_for(tmp_path, bundle):
    answer = run_agent(
        bundle, ort_job(tmp_path, sessions=3, protocol=fast_protocol(iters=10, min_seconds=0.5).as_kwargs())
    )
    assert answer["ok"], answer
    assert answer["sessions"] == 3 and result_from_answer(answer, "test", {}).sessions == 3


def test_agent_waits_for_the_device_lock_then_gives_up(tmp_path, bundle):
    work = tmp_path / "work"
    work.mkdir()
    with open(work / "device.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        answer = run_agent(bundle, ort_job(tmp_path, lock_wait_s=0.5))
    assert not answer["ok"] and answer["reason"] == "busy"


def test_agent_stops_and_frees_the_lock_when_the_workstation_goes(tmp_path, bundle):
    job = ort_job(tmp_path, protocol={**fast_protocol().as_kwargs(), "min_seconds": 60})
    proc = subprocess.Popen(
        [sys.executable, "-I", str(bundle / "agent.py"), "run"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    proc.stdin.write(json.dumps(job) + "\n")
    proc.stdin.flush()
    time.sleep(2.0)
    start = time.monotonic()
    proc.stdin.close()  # the SSH connection dropped
    assert proc.wait(10) == 3 and time.monotonic() - start < 5
    with open(tmp_path / "work" / "device.lock") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free


def test_agent_missing_runtime_and_unknown_runtime(tmp_path, bundle):
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed here")
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"engine")
    answer = run_agent(
        bundle,
        {**ort_job(tmp_path), "runtime": "tensorrt", "artifact": str(engine)},
        env={**os.environ, "PATH": "/nonexistent"},
    )
    assert answer["ok"] is False and answer["reason"] == "missing_runtime"
    assert "neither the tensorrt Python package nor trtexec" in answer["error"]
    answer = run_agent(bundle, {**ort_job(tmp_path), "runtime": "eager"})
    assert not answer["ok"] and "cannot run runtime 'eager'" in answer["error"]


def test_agent_times_litert(tmp_path, bundle):
    pytest.importorskip("ai_edge_litert")
    job = {
        **ort_job(tmp_path),
        "runtime": "litert",
        "artifact": str(DATA / "tiny_16.tflite"),
        "input_shape": [1, 3, 16, 16],
    }
    answer = run_agent(bundle, job)
    assert answer["ok"], answer
    assert answer["runtime_version"].startswith("ai-edge-litert ") and len(answer["samples"]) >= 5


def test_tensorrt_without_its_python_package_uses_trtexec(tmp_path, bundle):
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed here: the agent would use its Python package")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    executable(
        bin_dir / "trtexec",
        f"""#!{sys.executable}
import shutil, sys
for a in sys.argv[1:]:
    if a.startswith("--exportTimes="):
        shutil.copyfile({str(DATA / "trtexec_times.json")!r}, a.split("=", 1)[1])
print(open({str(DATA / "trtexec_log.txt")!r}).read())
""",
    )
    engine = tmp_path / "l1.engine"
    engine.write_bytes(b"engine")
    job = {**ort_job(tmp_path), "runtime": "tensorrt", "artifact": str(engine)}
    answer = run_agent(bundle, job, env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"})
    result = result_from_answer(answer, "jetson", {})
    assert result.fingerprint["runtime_version"] == "tensorrt 8.6.2" and result.state["runner"] == "trtexec"
    assert len(result.samples) == 8 and result.timing.min_ms == pytest.approx(1.2290)


def test_coreml_runs_only_on_a_mac(tmp_path, bundle):
    if platform.system() == "Darwin":
        pytest.skip("on a Mac the CoreML path runs for real through an SSH target (docs/targets.md)")
    answer = run_agent(bundle, {**ort_job(tmp_path), "runtime": "coreml", "options": {"compute_units": "ne"}})
    assert answer["reason"] == "missing_runtime" and "only on macOS" in answer["error"]


def test_answers_are_data_only():
    for text in ("__import__('os').system('x')", "[1, 2]", '{"samples": [1]}', ""):
        with pytest.raises(RemoteRunError):
            parse_answer(text, "pi5")
    for samples in ([], [float("nan")], [-1.0], ["1"], [True], "1,2", None):
        with pytest.raises(RemoteRunError, match="not a list of non-negative seconds"):
            result_from_answer({"ok": True, "samples": samples}, "pi5", {})


# -- records and tables ----------------------------------------------------------------------------------
class FakeTarget(Target):
    """An in-process target: sleeps `delay` per job, counts how many jobs overlap."""

    kind = "fake"

    def __init__(self, name: str, delay: float = 0.05, cpu: str = "Fake CPU", fail: str | None = None):
        self.name, self.delay, self.cpu, self.fail = name, delay, cpu, fail
        self.active = self.max_active = self.runs = 0
        self.lock = threading.Lock()

    def fingerprint(self):
        return {"cpu": self.cpu, "cores": 4}

    def runner_version(self, runtime):
        return "fake 1.0"

    def time(self, job):
        if self.fail == "device":
            raise TargetError(f"target '{self.name}': unreachable")
        with self.lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        time.sleep(self.delay)
        with self.lock:
            self.active -= 1
            self.runs += 1
        if self.fail == "job":
            raise RemoteRunError(f"target '{self.name}': the runner crashed on the device (killed by signal SEGV)")
        return TimingResult(
            [0.01, 0.012, 0.011], fingerprint={**self.fingerprint(), "target": self.name, "runtime_version": "fake 1.0"}
        )


def test_records_carry_the_device_and_a_table_refuses_another():
    pi = FakeTarget("pi5")
    job = TimingJob(Artifact("ort", None, (1, 3, 8, 8)), threads=2, protocol=fast_protocol())
    record = result_record(pi, pi.time(job), job)
    assert record["target"] == "pi5" and record["target_fingerprint"] == {"cpu": "Fake CPU", "cores": 4}
    assert record["runtime_version"] == "fake 1.0" and record["median_ms"] == pytest.approx(11.0)
    meta = {"target": "pi5", "target_fingerprint": {"cpu": "Fake CPU", "cores": 4}, "runtime_version": "fake 1.0"}
    assert target_mismatch(meta, pi, "fake 1.0") == []
    assert target_mismatch(meta, FakeTarget("jetson")) == ["target 'pi5' (asked for 'jetson')"]
    assert target_mismatch(meta, FakeTarget("pi5", cpu="Other CPU")) == ["cpu 'Fake CPU' (now 'Other CPU')"]
    assert target_mismatch(meta, pi, "fake 2.0") == ["runtime version 'fake 1.0' (on the target now 'fake 2.0')"]
    assert target_mismatch({"cpu": "x"}, FakeTarget("pi5")) == ["target 'local' (asked for 'pi5')"]


# -- the scheduler ---------------------------------------------------------------------------------------
@pytest.fixture
def fakes(monkeypatch):
    devices = {n: FakeTarget(n) for n in ("pi5", "jetson", "phone1", "phone2")}
    devices["broken"] = FakeTarget("broken", fail="device")
    devices["crashy"] = FakeTarget("crashy", fail="job")

    def get_target(name):
        if name.startswith("tag:"):
            return schedule.TagPool(name[4:], [devices["phone1"], devices["phone2"]])
        return devices[name]

    monkeypatch.setattr(schedule, "get_target", get_target)
    return devices


def jobs_for(tmp_path: Path, n: int) -> list[TimingJob]:
    jobs = []
    for i in range(n):
        path = tmp_path / f"m{i}.onnx"
        path.write_bytes(b"model %d" % i)
        jobs.append(TimingJob(Artifact("ort", path, (1, 3, 8, 8)), threads=1, protocol=fast_protocol()))
    return jobs


def test_targets_run_concurrently_one_job_at_a_time_each(tmp_path, fakes):
    jobs = jobs_for(tmp_path, 4)
    start = time.monotonic()
    outcomes = schedule.run_on_targets(jobs, "pi5,jetson,tag:phones")
    assert [(o.spec, o.job) for o in outcomes] == [(s, i) for s in ("pi5", "jetson", "tag:phones") for i in range(4)]
    assert all(o.ok for o in outcomes)
    assert fakes["pi5"].runs == fakes["jetson"].runs == 4 and fakes["phone1"].runs + fakes["phone2"].runs == 4
    assert fakes["phone1"].runs and fakes["phone2"].runs  # the pool used both free devices
    assert all(fakes[n].max_active == 1 for n in ("pi5", "jetson", "phone1", "phone2"))
    assert time.monotonic() - start < 4 * 0.05 * 2.5  # ~4 jobs' time, not 12


def test_a_broken_device_fails_its_jobs_and_the_rest_goes_on(tmp_path, fakes):
    outcomes = schedule.run_on_targets(jobs_for(tmp_path, 2), ["broken", "crashy", "pi5"])
    by_spec = {s: [o for o in outcomes if o.spec == s] for s in ("broken", "crashy", "pi5")}
    assert [o.error for o in by_spec["broken"]] == ["target 'broken': unreachable"] * 2
    assert all("crashed on the device (killed by signal SEGV)" in o.error for o in by_spec["crashy"])
    assert all(o.ok for o in by_spec["pi5"])


def test_a_rerun_resumes_from_the_log(tmp_path, fakes):
    log = tmp_path / "results.jsonl"
    jobs = jobs_for(tmp_path, 3)
    first = schedule.run_on_targets(jobs[:2], "pi5", log=log)
    with open(log, "a") as f:
        f.write('{"format": "latvit-target-res')  # killed mid-write
    second = schedule.run_on_targets(jobs, "pi5", log=log)
    assert [o.resumed for o in second] == [True, True, False] and fakes["pi5"].runs == 3
    assert second[0].record == first[0].record and second[0].result.samples == first[0].result.samples
    lines = log.read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(ln)["ok"] for ln in lines)  # the torn line is gone
    assert schedule.run_on_targets(jobs, "jetson", log=log)[0].resumed is False  # another device measures anew


# -- Android through a fake adb --------------------------------------------------------------------------
@pytest.fixture
def phone(tmp_path, monkeypatch):
    log = tmp_path / "adb.log"
    for k, v in install_fake_adb(tmp_path / "bin", log).items():
        monkeypatch.setenv(k, v)
    golden = DATA / "benchmark_model_litert.txt"
    args = tmp_path / "runner-args.txt"
    (tmp_path / "tools").mkdir()
    runner = executable(
        tmp_path / "tools" / "benchmark_model",
        f"#!/bin/sh\nfor a in \"$@\"; do echo \"$a\" >> '{args}'; done\ncat '{golden}'\n",
    )
    crash = executable(tmp_path / "tools" / "executor_runner", "#!/bin/sh\nkill -SEGV $$\n")
    config = cfg.make_config(
        "pixel",
        "adb://FAKE123",
        workdir=str(tmp_path / f"device {WEIRD}"),
        cooldown_s=0,
        runners=[f"benchmark_model={runner}", f"executor_runner={crash}"],
    )
    return AdbTarget(config), log, args


def test_adb_pushes_once_pins_cores_and_reads_aggregates(tmp_path, phone, monkeypatch):
    target, log, args = phone
    probe = target.probe()
    assert probe["cpu"] == "Tensor G3 (arm64-v8a)" and probe["board"] == "Google Pixel Fake"
    assert probe["platform"] == "Android 15 (SDK 35)"
    monkeypatch.setitem(probe, "max_freq_khz", {0: 2_400_000, 1: 2_400_000, 2: 1_800_000, 3: 1_800_000})
    model = tmp_path / f"m {WEIRD}.tflite"
    model.write_bytes(b"tflite bytes")
    job = TimingJob(Artifact("litert", model, (1, 3, 8, 8)), threads=2, protocol=fast_protocol())
    first, _ = target.time(job), target.time(job)
    assert first.stats_source == "aggregate" and first.state["aggregate"]["median_ms"] == pytest.approx(13.150)
    assert first.state["pinned_cores"] == [0, 1] and first.fingerprint["target"] == "pixel"
    assert set(first.state["before"]) == {"cpu_mhz", "governor", "temperature_c"}
    calls = adb_calls(log)
    assert sum(c[2] == "push" for c in calls) == 2  # the runner and the model, once each
    runs = [c for c in calls if c[2] == "shell" and "benchmark_model" in c[3] and "taskset" in c[3]]
    assert len(runs) == 2 and runs[0][3].startswith("taskset 3 ")
    assert f"--graph={target.workdir}/artifacts/{job.artifact.sha256()}/{model.name}" in args.read_text()
    assert "--num_threads=2" in args.read_text() and "--warmup_runs=2" in args.read_text()
    assert not list(tmp_path.rglob("PWNED")) and not Path("PWNED").exists()
    assert result_record(target, first, job)["median_ms"] == pytest.approx(13.150)


def test_adb_runner_crash_is_a_failed_job(tmp_path, phone):
    target, _, _ = phone
    model = tmp_path / "m.pte"
    model.write_bytes(b"pte")
    job = TimingJob(Artifact("executorch", model, (1, 3, 8, 8)), threads=1, protocol=fast_protocol())
    with pytest.raises(RemoteRunError, match=r"^target 'pixel': executor_runner failed on the device \(exit"):
        target.time(job)
    with pytest.raises(TargetError, match="has no onnxruntime_perf_test for ort artifacts: add it with"):
        target.time(TimingJob(Artifact("ort", model, (1, 3, 8, 8)), threads=1))


@pytest.mark.parametrize(
    "state, message",
    [
        ("unauthorized", "adb device FAKE123 is unauthorized: unlock it and accept the 'Allow USB debugging' prompt"),
        ("missing", "no adb device FAKE123 (`adb devices` does not list it)"),
    ],
)
def test_adb_device_problems_are_one_line_exit_2(xdg, tmp_path, monkeypatch, capsys, state, message):
    for k, v in install_fake_adb(tmp_path / "bin", tmp_path / "adb.log").items():
        monkeypatch.setenv(k, v)
    assert main(["target", "add", "pixel", "adb://FAKE123"]) == 0
    monkeypatch.setenv("FAKE_ADB_STATE", state)
    capsys.readouterr()
    assert main(["target", "check", "pixel"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("latvit: error: target 'pixel': ") and message in err and "\n" not in err


def test_adb_helpers():
    assert fastest_cores({0: 1_800_000, 1: 1_800_000, 4: 2_800_000, 5: 2_800_000, 7: 3_000_000}, 2) == [4, 7]
    assert parse_props("[ro.product.model]: [Pixel 8]\ngarbage\n[a]: []") == {"ro.product.model": "Pixel 8", "a": ""}
    state = parse_conditions("freq 1800000\nfreq 2400000\ngovernor schedutil\ntemp 41000\ntemp -40\ntemp 38500\n")
    assert state == {"cpu_mhz": 2100.0, "governor": "schedutil", "temperature_c": 41.0}


def test_bench_on_several_targets_exports_once_and_times_everywhere(fakes, monkeypatch):
    """`latvit bench --target pi5,jetson`: the artifact is made (and checked) here once, each device times it
    concurrently, and each row describes its device, without this machine's % peak."""
    import latvit.latency.bench as bench

    monkeypatch.setattr(bench, "get_target", lambda name: fakes[name])
    req = bench.BenchRequest(
        models=["mobilevit_xxs"], runtimes=["ort"], img_size=64, threads=1, target="pi5,jetson,broken"
    )
    seen = []
    records = bench.run_bench(req, on_row=seen.append, progress=False)
    assert [(r["target"], r["status"]) for r in records] == [("pi5", "ok"), ("jetson", "ok"), ("broken", "failed")]
    assert seen == records and fakes["pi5"].runs == fakes["jetson"].runs == 1
    for r in records[:2]:
        assert r["median_ms"] == pytest.approx(11.0) and r["cpu"] == "Fake CPU" and r["cores"] == 4
        assert r["export_abs_diff"] < 1e-4 and r["pct_peak"] is None and r["gflops_per_s"] > 0
        assert r["model"] == "mobilevit_xxs" and r["runtime_version"] == "fake 1.0"
    assert records[2]["error"] == "target 'broken': unreachable"  # a device that cannot be used fails alone


def test_quantize_comparison_on_a_target_ships_both_artifacts(tmp_path):
    """`latvit quantize --target pi5`: the fp32 artifact (made here) and the int8 one are timed on the device in
    alternating rounds; the agreement is computed here."""
    pytest.importorskip("onnxruntime")
    import numpy as np
    import torch

    from latvit.deploy.quantize import quantize
    from latvit.latency.int8 import compare_int8

    class Recorder(FakeTarget):
        def time(self, job):
            self.paths = [*getattr(self, "paths", []), job.artifact.path.name]
            return super().time(job)

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 4),
    ).eval()
    batches = [np.random.default_rng(i).standard_normal((1, 3, 16, 16), dtype=np.float32) for i in range(4)]
    int8 = quantize(model, "ort", batches, tmp_path / "m_int8.onnx")
    pi = Recorder("pi5")
    report = compare_int8(model, "ort", int8, batches, threads=1, rounds=3, target=pi)
    assert pi.paths == ["model.onnx", "m_int8.onnx", "m_int8.onnx", "model.onnx", "model.onnx", "m_int8.onnx"]
    assert (
        report["target"] == "pi5"
        and report["speedup"] == pytest.approx(1.0)
        and report["fp32_ms"] == pytest.approx(11.0)
    )
    assert 0 <= report["top1_agreement"] <= 1 and report["max_abs_diff"] >= 0
