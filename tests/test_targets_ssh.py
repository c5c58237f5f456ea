"""SSH targets against a real OpenSSH server on 127.0.0.1 (`latvit.targets.loopback`), with a separate Python
environment holding only numpy and onnxruntime as the "device": host keys, the agent, timing end to end,
resuming a killed job list, a server stopped mid-run, two devices at once, and the error lines.

Needs /usr/sbin/sshd (Debian openssh-server) and pip access to build the device environment once (cached
under the temp directory); skipped with the reason otherwise.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from targets_support import fast_protocol, tiny_onnx

from latvit.cli import main
from latvit.targets import Artifact, TimingJob, get_target, result_record
from latvit.targets.loopback import LoopbackDevice, device_python, find_sshd
from latvit.targets.remote import RemoteRunError, TargetError
from latvit.targets.schedule import run_on_targets
from latvit.targets.ssh import SSHTarget

pytestmark = pytest.mark.skipif(find_sshd() is None, reason="sshd not installed (apt-get install openssh-server)")
WEIRD = "we ird'; touch PWNED; \"x"  # would run `touch` if it reached the device's shell unquoted


@pytest.fixture(scope="session")
def device_py():
    try:
        return device_python(["numpy", "onnxruntime"])
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"cannot build the device's Python environment: {e}")


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    try:
        device = LoopbackDevice(tmp_path_factory.mktemp("sshd")).start()
    except RuntimeError as e:
        pytest.skip(str(e))
    yield device
    device.stop()


@pytest.fixture
def client(sshd, tmp_path, monkeypatch):
    """This test's workstation: the loopback key in its ~/.ssh/config, its own latvit config and known_hosts."""
    for k, v in sshd.client_env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    if sshd.proc is None:  # a test stopped it
        sshd.start()
    return sshd


def add(client, name: str, python, workdir: Path, *extra: str) -> SSHTarget:
    assert (
        main(
            [
                "target",
                "add",
                name,
                client.url,
                "--python",
                str(python),
                "--workdir",
                str(workdir),
                "--cooldown",
                "0",
                *extra,
            ]
        )
        == 0
    )
    return get_target(name, retries=1, backoff_s=0.2)


def ort_job(path: Path, **protocol) -> TimingJob:
    return TimingJob(Artifact("ort", tiny_onnx(path), (1, 3, 8, 8)), threads=1, protocol=fast_protocol(**protocol))


def test_unknown_host_is_refused_until_accepted(client, device_py, tmp_path, capsys):
    assert main(["target", "add", "lb", client.url, "--python", str(device_py), "--workdir", str(tmp_path / "w")]) == 0
    capsys.readouterr()
    assert main(["target", "check", "lb"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"latvit target add lb {client.url} --accept-new-host-key" in err
    assert not (Path(os.environ["XDG_CONFIG_HOME"]) / "latvit" / "known_hosts").exists()
    assert (
        main(
            [
                "target",
                "add",
                "lb",
                client.url,
                "--python",
                str(device_py),
                "--workdir",
                str(tmp_path / "w"),
                "--accept-new-host-key",
            ]
        )
        == 0
    )
    known = Path(os.environ["XDG_CONFIG_HOME"]) / "latvit" / "known_hosts"
    assert known.read_text().startswith(f"[127.0.0.1]:{client.port} ssh-ed25519 ")
    assert known.stat().st_mode & 0o777 == 0o600
    assert not (Path(os.environ["HOME"]) / ".ssh" / "known_hosts").exists()  # the user's file is never edited
    capsys.readouterr()
    assert main(["target", "check", "lb"]) == 0
    out = capsys.readouterr().out
    assert "reachable" in out and f"python    {device_py}" in out and "onnxruntime" in out and "free disk" in out
    assert "torch" not in out


def test_times_an_onnx_model_end_to_end(client, device_py, tmp_path):
    target = add(client, "lb", device_py, tmp_path / "work", "--accept-new-host-key")
    job = ort_job(tmp_path / "m.onnx")
    result = target.time(job)
    record = result_record(target, result, job)
    assert record["target"] == "lb" and record["target_kind"] == "ssh" and record["stats_source"] == "samples"
    assert record["runtime_version"].startswith("onnxruntime ") and record["iters"] >= 5
    assert record["target_fingerprint"]["cores"] == os.cpu_count()
    assert {"before", "after", "cooldown_s", "lock_wait_s"} <= set(record["conditions"])
    cached = list((tmp_path / "work" / "artifacts").iterdir())
    assert [p.name for p in cached] == [job.artifact.sha256()]  # cached by content hash
    target.close()
    mtime = (cached[0] / "m.onnx").stat().st_mtime_ns
    target.time(job)  # a new connection: the cached artifact is reused, not copied again
    assert (cached[0] / "m.onnx").stat().st_mtime_ns == mtime
    # with the reference workload: its network (shipped too) and a GEMM alternate with the work on the device
    with_ref = TimingJob(job.artifact, threads=1, protocol=job.protocol, reference=True)
    record = result_record(target, target.time(with_ref), with_ref)
    assert record["ref_ms"] > 0 and record["ref_gemm_ms"] > 0 and record["ref_runtime"] == "ort"
    assert record["ref_ratio"] == pytest.approx(record["median_ms"] / record["ref_ms"])
    assert len(list((tmp_path / "work" / "artifacts").iterdir())) == 2
    target.close()


def test_profile_on_the_device_is_attributed_to_blocks_here(client, device_py, tmp_path):
    """`latvit profile --target`: ONNX Runtime's per-node events taken on the device come back as data and
    land on the model's blocks as a local profile's do."""
    add(client, "lb", device_py, tmp_path / "work", "--accept-new-host-key")
    out = tmp_path / "p.json"
    argv = ["profile", "mobilevit_xxs", "--img-size", "64", "--threads", "1", "--iters", "5", "--warmup", "2"]
    assert main([*argv, "--target", "lb", "--json", str(out)]) == 0
    d = json.loads(out.read_text())
    assert d["machine"]["target"] == "lb" and d["runtime_version"].startswith("onnxruntime ")
    # coverage: the profiled ops' sum over the end-to-end median, two separate timings of a 5-call profile on a
    # busy 2-core host (1.052 seen once); an attribution that counted ops twice would be near 2
    assert d["e2e"]["iters"] >= 5 and 0.5 < d["coverage"] <= 1.25
    blocks = {b["block"] for b in d["blocks"] if b["ms"] > 0}
    assert any(b.startswith("stem") for b in blocks) and {"stages[2][1]", "head"} <= blocks
    assert d["categories"]["token_mixer"] > 0 and d["categories"]["mlp"] > 0


def test_quotes_spaces_and_semicolons_stay_arguments(client, device_py, tmp_path):
    odd = tmp_path / f"py {WEIRD}"
    odd.mkdir()
    (odd / "python").symlink_to(device_py)
    target = add(client, "lb", odd / "python", tmp_path / f"work {WEIRD}", "--accept-new-host-key")
    result = target.time(ort_job(tmp_path / f"model {WEIRD}.onnx"))
    assert len(result.samples) >= 5
    target.close()
    assert not list(tmp_path.rglob("PWNED")) and not (Path.home() / "PWNED").exists() and not Path("PWNED").exists()


def test_device_problems_are_one_line_naming_target_and_fix(client, device_py, tmp_path, monkeypatch, capsys):
    target = add(client, "lb", device_py, tmp_path / "w", "--accept-new-host-key")
    model = tiny_onnx(tmp_path / "m.onnx")
    with pytest.raises(TargetError, match=r"^target 'lb': openvino is not installed for .*: pip install openvino"):
        target.time(TimingJob(Artifact("openvino", model, (1, 3, 8, 8)), threads=1, protocol=fast_protocol()))
    monkeypatch.setitem(target.probe(), "free_bytes", 1000)
    with pytest.raises(
        TargetError,
        match=r"^target 'lb': not enough disk space in .* \(0.0 MB free, [0-9.]+ MB "
        r"needed\): free some space there or set another --workdir",
    ):
        target.time(ort_job(tmp_path / "other.onnx"))
    assert not (tmp_path / "w" / "artifacts").exists()  # nothing copied, nothing half-written
    target.close()

    for name, url, python, message in (
        ("nopy", client.url, "/nonexistent/python3", "no Python at '/nonexistent/python3' on the device"),
        ("closed", "ssh://nobody@127.0.0.1:9", device_py, "connection failed"),
        ("stranger", f"ssh://nosuchuser@127.0.0.1:{client.port}", device_py, "refused the key (permission denied)"),
    ):
        assert main(["target", "add", name, url, "--python", str(python), "--workdir", str(tmp_path / "w")]) == 0
        capsys.readouterr()
        assert main(["target", "check", name]) == 2, name
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"latvit: error: target '{name}'") and message in err and "\n" not in err, err


def test_a_runner_crash_is_a_failed_job(client, device_py, tmp_path):
    wrapper = tmp_path / "python-that-crashes"
    wrapper.write_text(f'#!/bin/sh\ncase "$2" in run) kill -SEGV $$;; esac\nexec {device_py} "$@"\n')
    wrapper.chmod(0o755)
    target = add(client, "lb", wrapper, tmp_path / "w", "--accept-new-host-key")
    with pytest.raises(RemoteRunError, match=r"^target 'lb': the runner crashed on the device \(killed by signal SEGV"):
        target.time(ort_job(tmp_path / "m.onnx"))
    target.close()


def test_sshd_stopped_mid_run_retries_then_says_so(client, device_py, tmp_path):
    target = add(client, "lb", device_py, tmp_path / "w", "--accept-new-host-key")
    retries: list[str] = []
    target.on_retry, target.retries, target.backoff_s = retries.append, 2, 0.5
    job = ort_job(tmp_path / "m.onnx", min_seconds=3.0)
    target.probe()
    threading.Timer(1.5, client.stop).start()  # the device goes away while the job runs
    restart = threading.Timer(2.5, client.start)  # ... and comes back during the backoff
    restart.start()
    result = target.time(job)
    restart.join()
    assert 1 <= len(retries) <= 2 and "connection failed" in retries[0] and "retrying in 0.5 s (1/2)" in retries[0]
    assert len(result.samples) >= 5  # the clean retry measured the whole job again
    client.stop()  # gone for good
    target.close()
    retries.clear()
    with pytest.raises(
        TargetError,
        match=r"^target 'lb' \(ssh://.*\): connection failed .* gave up after 3 tries: "
        r"check that the device is on and reachable",
    ):
        target.time(job)
    assert len(retries) == 2
    client.start()


def test_two_devices_at_once_and_a_killed_job_list_resumes(client, device_py, tmp_path):
    for name in ("dev1", "dev2"):
        add(client, name, device_py, tmp_path / name, "--accept-new-host-key").close()
    log = tmp_path / "results.jsonl"
    models = [str(tiny_onnx(tmp_path / f"m{i}.onnx", size=8 + 2 * i)) for i in range(3)]
    script = f"""
import sys
from pathlib import Path
from targets_support import fast_protocol
from latvit.targets import Artifact, TimingJob
from latvit.targets.schedule import run_on_targets
jobs = [TimingJob(Artifact("ort", Path(p), (1, 3, 8 + 2 * i, 8 + 2 * i)), threads=1,
                  protocol=fast_protocol(min_seconds=1.0)) for i, p in enumerate({models!r})]
run_on_targets(jobs, sys.argv[1], log=sys.argv[2])
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent.parent), str(Path(__file__).parent)])}
    proc = subprocess.Popen([sys.executable, "-c", script, "dev1", str(log)], env=env, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 1):
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # killed mid-way: one result is in the log
    proc.wait()
    done_before = len(log.read_text().splitlines())
    assert 1 <= done_before < 3

    outcomes = run_on_targets(
        [
            TimingJob(
                Artifact("ort", Path(p), (1, 3, 8 + 2 * i, 8 + 2 * i)),
                threads=1,
                protocol=fast_protocol(min_seconds=1.0),
            )
            for i, p in enumerate(models)
        ],
        "dev1,dev2",
        log=log,
    )
    assert all(o.ok for o in outcomes), [o.error for o in outcomes]
    dev1 = [o for o in outcomes if o.spec == "dev1"]
    dev2 = [o for o in outcomes if o.spec == "dev2"]
    assert sum(o.resumed for o in dev1) == done_before and not any(o.resumed for o in dev2)
    lines = [json.loads(ln) for ln in log.read_text().splitlines()]
    assert len(lines) == 6 and {ln["target"] for ln in lines} == {"dev1", "dev2"}
    # the two devices measured at the same time (each >= 1 s a job), each one job at a time
    fresh1 = [o for o in dev1 if not o.resumed]
    assert any(a.started < b.finished and b.started < a.finished for a in fresh1 for b in dev2)
    for jobs in (fresh1, dev2):
        spans = sorted((o.started, o.finished) for o in jobs)
        assert all(end <= nxt for (_, end), (nxt, _) in zip(spans, spans[1:]))


def test_lut_build_on_the_device_resumes_after_a_kill(client, device_py, tmp_path, monkeypatch):
    """`latvit lut build --target lb`: every block exported here, timed on the device; a build killed part-way
    resumes without measuring again, and the table records the device."""
    from latvit.latency import lut_build as B
    from latvit.latency.lut import LatencyTable, build_reference_ms
    from latvit.models.spaces import SPACES, SearchSpace, _efficientformer

    monkeypatch.setitem(
        SPACES,
        "tiny_lb",
        SearchSpace(
            "tiny_lb",
            widths=((32,), (48,), (64,), (96,)),
            depths=((1,), (1,), (1,), (1,)),
            expansions=(4.0,),
            extras=(1,),
            make_spec=_efficientformer,
            img_size=32,
        ),
    )
    add(client, "lb", device_py, tmp_path / "work", "--accept-new-host-key")
    real, targets = B.measure_item, []

    def dies_after_3(*args, target=None, **kwargs):
        targets.append(target.name)
        if len(targets) > 3:
            raise KeyboardInterrupt  # the user's Ctrl-C
        return real(*args, target=target, **kwargs)

    monkeypatch.setattr(B, "measure_item", dies_after_3)
    out = tmp_path / "lb.json"
    with pytest.raises(KeyboardInterrupt):
        B.build_lut("tiny_lb", "ort", out, threads=1, calibrate=1, progress=False, target="lb")
    assert len(LatencyTable.load(out).entries) == 3 and set(targets) == {"lb"}
    monkeypatch.setattr(B, "measure_item", real)
    table = B.build_lut("tiny_lb", "ort", out, threads=1, calibrate=1, progress=False, target="lb", retime=False)
    assert table.meta["target"] == "lb" and table.meta["target_kind"] == "ssh" and len(table.networks) == 1
    assert all(e["median_ms"] > 0 for e in table.entries.values()) and not table.missing(B.space_items("tiny_lb", 32))
    # every entry was timed beside the reference on the device: the table follows the device's drift, measured
    # there (this machine's reference is never asked for)
    assert all(e["ref_ms"] > 0 for e in table.entries.values()) and build_reference_ms(table) > 0
    from latvit.latency import predictor as P

    monkeypatch.setattr(P.LOCAL, "reference", lambda *a: pytest.fail("measured this machine, not the device"))
    drift = P.follow_device(table, networks=0)
    assert drift is not None and 0.5 < drift.reference_factor < 2.0
