"""latvit's device agent: times one artifact on the machine it runs on, with latvit's own measurement loop.

An SSH target ships this file with `latvit/targets/protocol.py` (and `latvit/errors.py`, which that imports)
into a content-addressed directory on the device, checks their hashes there, and runs

    python3 agent.py probe WORKDIR   -> one JSON object: CPU, board, cores, OS, Python, runtimes, governor, disk
    python3 agent.py hash PATH       -> {"sha256": ...} of an artifact that arrived (as Artifact.sha256)
    python3 agent.py run             -> reads one job (a JSON line) on stdin, prints one JSON object: the raw
                                        per-call seconds and the device's state around them (with the
                                        reference workload's seconds, or ONNX Runtime's profile events,
                                        when the job asks for them)

It needs the standard library, numpy and the runtime's own package (onnxruntime, openvino, executorch,
ai-edge-litert, coremltools, tensorrt, or TensorRT's `trtexec`), never torch or latvit's training stack. The
warm-up and the timed loop are `protocol.collect_samples`, the same code a local measurement runs; the
statistics are computed on the workstation (`Timing.from_samples`), so a remote number means what a local
one means. What it prints is data, read there with `json.loads`.

After the job line, stdin stays open for as long as the workstation is connected: its end (the SSH
connection dropping) stops the agent at once, so a lost workstation never leaves it holding the device lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any


class _BundleFirst:
    """Run as the shipped bundle (`python agent.py ...`), the latvit modules beside this file are the ones to
    use, even where a latvit install on the device has an import hook (an editable install) that Python
    would ask before sys.path."""

    def __init__(self, root: str):
        self.root = root

    def find_spec(self, name: str, path=None, target=None):
        if name != "latvit" and not name.startswith("latvit."):
            return None
        from importlib.machinery import PathFinder

        return PathFinder.find_spec(name, [self.root] if name == "latvit" else path, target)


if __name__ == "__main__":
    sys.meta_path.insert(0, _BundleFirst(os.path.dirname(os.path.abspath(__file__))))

from latvit.targets.protocol import (  # noqa: E402
    NETWORK_SESSIONS,
    collect_samples,
    collect_with_reference,
    cpu_model,
    cpu_times,
    device_state,
)

AGENT_VERSION = 3  # 2: the reference workload beside the work, ONNX Runtime's per-node profile; 3: sessions
GEMM_SIZE = 256  # the reference GEMM, as latvit.targets.reference's (here in numpy: torch is not on the device)
PROFILE_RUNS = 50  # profiled inferences whose events come back (the last ones): enough for per-node means
# Python distributions whose versions `probe` reports: the runtimes a job can use, and numpy
PACKAGES = (
    "numpy",
    "onnxruntime",
    "openvino",
    "executorch",
    "ai-edge-litert",
    "tflite-runtime",
    "coremltools",
    "tensorrt",
)
TRTEXEC_PATHS = ("/usr/src/tensorrt/bin/trtexec", "/usr/local/tensorrt/bin/trtexec")
COMPUTE_UNITS = {"cpu": "CPU_ONLY", "gpu": "CPU_AND_GPU", "ne": "CPU_AND_NE", "all": "ALL"}


class MissingRuntime(Exception):
    """The job's runtime package is not installed for this Python."""


# -- what the device is --------------------------------------------------------------------------------
def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace").strip().strip("\0") or None
    except OSError:
        return None


def cpu_name() -> str:
    """The CPU's name: /proc/cpuinfo's model name, on a Mac the brand string, else the machine."""
    if platform.system() == "Darwin":
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, timeout=10
            ).stdout.strip()
            if out:
                return out
    return cpu_model()


def board_name() -> str | None:
    """The board (Raspberry Pi 5, Jetson AGX Orin, ...) where the device tree says; on a Mac its model id."""
    board = _read("/proc/device-tree/model")
    if board is None and platform.system() == "Darwin":
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            board = (
                subprocess.run(["sysctl", "-n", "hw.model"], capture_output=True, text=True, timeout=10).stdout.strip()
                or None
            )
    return board


def package_versions() -> dict[str, str]:
    """Installed versions of PACKAGES (metadata only: nothing heavy is imported)."""
    found = {}
    for name in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    return found


def trtexec_path() -> str | None:
    return shutil.which("trtexec") or next((p for p in TRTEXEC_PATHS if os.access(p, os.X_OK)), None)


def free_bytes(path: str) -> int | None:
    """Free bytes on the filesystem holding `path` (its nearest existing parent)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    with contextlib.suppress(OSError):
        st = os.statvfs(p)
        return st.f_bavail * st.f_frsize
    return None


def probe(workdir: str) -> dict[str, Any]:
    """Identity and readiness of this device for the workstation's fingerprint and `latvit target check`."""
    return {
        "agent_version": AGENT_VERSION,
        "cpu": cpu_name(),
        "board": board_name(),
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "system": platform.system(),
        "platform": platform.platform(terse=True),
        "python": platform.python_version(),
        "python_path": sys.executable,
        "packages": package_versions(),
        "trtexec": trtexec_path(),
        "governor": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "workdir": str(Path(workdir).absolute()),
        "free_bytes": free_bytes(workdir),
    }


def temperature_c() -> float | None:
    """The hottest thermal zone in degrees C, where the kernel exposes them (Linux boards, Android)."""
    temps = []
    for zone in Path("/sys/class/thermal").glob("thermal_zone*/temp"):
        value = _read(str(zone))
        if value and value.lstrip("-").isdigit() and 0 < int(value) < 150_000:  # millidegrees; drop bogus zones
            temps.append(int(value) / 1000)
    return max(temps) if temps else None


def conditions(since: tuple[int, ...] | None = None) -> dict[str, Any]:
    """The measurement conditions: `protocol.device_state` (frequency, governor, load, steal) and temperature."""
    return {**device_state(since), "temperature_c": temperature_c()}


# -- loading an artifact with its runtime's own package -------------------------------------------------------
def _need(module: str, package: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingRuntime(f"{package} is not installed for {sys.executable} ({e}): pip install {package}") from None


def ort_session(path: str, threads: int, profile_prefix: str | None = None):
    """An ONNX Runtime CPU session with the options of `latvit.runtimes.ort` (all graph optimisations,
    explicit intra-op threads, one inter-op thread, sequential execution), its profiler on where asked."""
    ort = _need("onnxruntime", "onnxruntime")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    if profile_prefix:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile_prefix
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"]), f"onnxruntime {ort.__version__}"


def load_ort(path: str, threads: int, options: dict) -> tuple[Callable, str]:
    sess, version = ort_session(path, threads)
    name = sess.get_inputs()[0].name
    return (lambda x: sess.run(None, {name: x})[0]), version


def load_openvino(path: str, threads: int, options: dict) -> tuple[Callable, str]:
    """OpenVINO, CPU plugin, with the compile config the workstation computed (`runtimes.openvino.compile_config`)."""
    ov = _need("openvino", "openvino")
    config = options.get("openvino_config") or {"INFERENCE_NUM_THREADS": str(threads), "PERFORMANCE_HINT": "LATENCY"}
    request = ov.Core().compile_model(path, "CPU", config).create_infer_request()
    return (lambda x: request.infer({0: x})[0]), f"openvino {ov.__version__.split('-')[0]}"


def load_executorch(path: str, threads: int, options: dict) -> tuple[Callable, str]:
    """ExecuTorch's Python runtime (XNNPACK programs); it takes torch tensors, so torch comes with it."""
    runtime = _need("executorch.runtime", "executorch")
    torch = _need("torch", "executorch")
    torch.set_num_threads(threads)
    method = runtime.Runtime.get().load_program(Path(path)).load_method("forward")
    version = f"executorch {metadata.version('executorch')} (xnnpack)"
    return (lambda x: method.execute([torch.from_numpy(x)])[0]), version


def load_litert(path: str, threads: int, options: dict) -> tuple[Callable, str]:
    """LiteRT (TFLite) through ai-edge-litert, or the older tflite-runtime package."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        version = f"ai-edge-litert {metadata.version('ai-edge-litert')}"
    except ImportError:
        Interpreter = _need("tflite_runtime.interpreter", "ai-edge-litert").Interpreter
        version = f"tflite-runtime {metadata.version('tflite-runtime')}"
    interpreter = Interpreter(model_path=path, num_threads=threads)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]

    def run(x):
        interpreter.set_tensor(inp["index"], x.reshape(inp["shape"]))  # NHWC models take the same values
        interpreter.invoke()
        return interpreter.get_tensor(out["index"])

    return run, version


def load_coreml(path: str, threads: int, options: dict) -> tuple[Callable, str]:
    """CoreML on a Mac through coremltools `predict`, on the compute units the job names (cpu, gpu, ne, all)."""
    units = options.get("compute_units") or "cpu"
    if units not in COMPUTE_UNITS:
        raise ValueError(f"unknown compute units '{units}'; choose {', '.join(COMPUTE_UNITS)}")
    if platform.system() != "Darwin":
        raise MissingRuntime(f"CoreML runs only on macOS; this device is {platform.system()}")
    ct = _need("coremltools", "coremltools")
    model = ct.models.MLModel(path, compute_units=getattr(ct.ComputeUnit, COMPUTE_UNITS[units]))
    spec = model.get_spec().description
    in_name, out_name = spec.input[0].name, spec.output[0].name
    return (lambda x: model.predict({in_name: x})[out_name]), f"coremltools {ct.__version__} ({units})"


def load_tensorrt(path: str, threads: int, options: dict) -> tuple[Callable, str]:
    """TensorRT through its Python package, with torch's CUDA tensors as buffers (as `latvit.runtimes.tensorrt`
    does): a call copies the input in, runs the engine and copies the output back."""
    trt = _need("tensorrt", "tensorrt")
    torch = _need("torch", "torch (CUDA buffers for TensorRT)")
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(Path(path).read_bytes())
    context = engine.create_execution_context()
    stream = torch.cuda.Stream()
    buffers = {}
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        dtype = torch.from_numpy(__import__("numpy").empty(0, trt.nptype(engine.get_tensor_dtype(name)))).dtype
        buffers[name] = torch.empty(tuple(engine.get_tensor_shape(name)), dtype=dtype, device="cuda")
        context.set_tensor_address(name, buffers[name].data_ptr())
    inputs = [n for n in buffers if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    x_buf, y_buf = buffers[inputs[0]], buffers[next(n for n in buffers if n not in inputs)]

    def run(x):
        with torch.cuda.stream(stream):
            x_buf.copy_(torch.from_numpy(x))
            context.execute_async_v3(stream.cuda_stream)
            y = y_buf.float().cpu()
        stream.synchronize()
        return y

    return run, f"tensorrt {trt.__version__}"


LOADERS = {
    "ort": load_ort,
    "openvino": load_openvino,
    "openvino_bf16": load_openvino,
    "executorch": load_executorch,
    "litert": load_litert,
    "coreml": load_coreml,
    "tensorrt": load_tensorrt,
    "tensorrt_fp16": load_tensorrt,
}


# -- TensorRT without its Python package: trtexec ------------------------------------------------------------
def run_trtexec(job: dict, binary: str) -> dict[str, Any]:
    """Time a TensorRT engine with `trtexec --exportTimes`: per-iteration latencies (host-to-device copy,
    compute, device-to-host copy) written to a JSON file, sent back as text for the workstation to parse."""
    protocol = job["protocol"]
    with tempfile.TemporaryDirectory(prefix="latvit-trtexec-") as tmp:
        times = os.path.join(tmp, "times.json")
        argv = [
            binary,
            f"--loadEngine={job['artifact']}",
            f"--iterations={protocol['iters']}",
            f"--duration={max(0, int(protocol.get('min_seconds', 0)))}",
            "--warmUp=500",
            "--avgRuns=1",
            f"--exportTimes={times}",
        ]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=job.get("timeout_s", 3600))
        log = (proc.stdout + proc.stderr)[-20000:]
        if proc.returncode != 0 or not os.path.isfile(times):
            lines = [ln for ln in log.splitlines() if ln.strip()]
            return {
                "ok": False,
                "reason": "error",
                "error": f"trtexec failed (exit {proc.returncode}): {lines[-1][:300] if lines else 'no output'}",
            }
        return {"ok": True, "runner": "trtexec", "trtexec_times": Path(times).read_text(), "trtexec_log": log}


# -- one job ----------------------------------------------------------------------------------------------
@contextlib.contextmanager
def device_lock(workdir: str, wait_s: float):
    """Hold the device's lock (an flock on WORKDIR/device.lock) for the job: two workstations never time
    on one device at once. Yields the seconds waited; raises TimeoutError after `wait_s`."""
    os.makedirs(workdir, exist_ok=True)
    fd = os.open(os.path.join(workdir, "device.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    start = time.monotonic()
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() - start >= wait_s:
                    raise TimeoutError from None
                time.sleep(0.2)
        yield time.monotonic() - start
    finally:
        os.close(fd)  # releases the flock


def cool_down(workdir: str, seconds: float) -> float:
    """Sleep until `seconds` have passed since the last job on this device ended (any workstation's);
    return the seconds slept."""
    stamp = _read(os.path.join(workdir, "last_job_end"))
    try:
        wait = float(stamp) + seconds - time.time() if stamp else 0.0
    except ValueError:
        wait = 0.0
    wait = min(max(wait, 0.0), seconds)
    time.sleep(wait)
    return wait


def sha256_of(path: str) -> str:
    """The content hash `latvit.targets.base.Artifact.sha256` computes: each file's path relative to the
    artifact's parent, then its bytes, files in name order."""
    root = Path(path)
    digest = hashlib.sha256()
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    for f in files:
        digest.update(f.relative_to(root.parent).as_posix().encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def run_job(job: dict) -> dict[str, Any]:
    """Lock the device, cool down, load the artifact, time it with `collect_samples`; the result as a dict."""
    workdir, path = job["workdir"], job["artifact"]
    if not os.path.exists(path):
        return {"ok": False, "reason": "error", "error": f"artifact {path} is missing on the device"}
    try:
        with device_lock(workdir, float(job.get("lock_wait_s", 600))) as waited:
            try:
                return _timed(job, workdir, path, waited)
            finally:
                with open(os.path.join(workdir, "last_job_end"), "w") as f:
                    f.write(repr(time.time()))
    except TimeoutError:
        return {
            "ok": False,
            "reason": "busy",
            "error": f"the device is busy: another job held its lock for {job.get('lock_wait_s')} s",
        }


def _timed(job: dict, workdir: str, path: str, lock_waited: float) -> dict[str, Any]:
    cooled = cool_down(workdir, float(job.get("cooldown_s", 0)))
    runtime, options = job["runtime"], job.get("options") or {}
    if runtime in ("tensorrt", "tensorrt_fp16") and (options.get("runner") == "trtexec" or not _importable("tensorrt")):
        binary = trtexec_path()
        if binary is None:
            raise MissingRuntime(
                "neither the tensorrt Python package nor trtexec is on the device: install TensorRT "
                "(JetPack ships /usr/src/tensorrt/bin/trtexec)"
            )
        before = conditions()
        snapshot = cpu_times()
        result = run_trtexec(job, binary)
        return {
            **result,
            "state": {
                "before": before,
                "after": conditions(snapshot),
                "cooldown_s": cooled,
                "lock_wait_s": lock_waited,
            },
        }
    if runtime not in LOADERS:
        return {
            "ok": False,
            "reason": "error",
            "error": f"the agent cannot run runtime '{runtime}' (it runs {', '.join(LOADERS)})",
        }
    np = _need("numpy", "numpy")
    x = np.random.default_rng(0).standard_normal(tuple(job["input_shape"]), dtype=np.float32)  # as LocalTarget
    state = {"cooldown_s": cooled, "lock_wait_s": lock_waited}
    if job.get("profile"):
        before, snapshot = conditions(), cpu_times()
        answer = profile_ort(job, path, x)
        return {"ok": True, **answer, "state": {"before": before, "after": conditions(snapshot), **state}}
    threads = int(job["threads"])
    # several loads of the artifact, timed in turn (Protocol.sessions: one load carries its own offset)
    loaded = [LOADERS[runtime](path, threads, options) for _ in range(max(1, int(job.get("sessions", 1))))]
    timed = [lambda run=run: run(x) for run, _ in loaded]
    answer: dict[str, Any] = {"ok": True, "runtime_version": loaded[0][1], "sessions": len(loaded)}
    before = conditions()
    snapshot = cpu_times()
    if job.get("reference"):  # the reference workload on the same runtime and threads, in alternating rounds
        ref = job["reference"]
        ref_x = np.random.default_rng(0).standard_normal(tuple(ref["input_shape"]), dtype=np.float32)
        ref_loads = [LOADERS[runtime](ref["artifact"], threads, options)[0] for _ in range(NETWORK_SESSIONS)]
        ref_timed = [lambda ref_run=ref_run: ref_run(ref_x) for ref_run in ref_loads]
        a, b = (np.random.default_rng(i).standard_normal((GEMM_SIZE, GEMM_SIZE), dtype=np.float32) for i in (1, 2))
        collected = collect_with_reference(timed, ref_timed, lambda: a @ b, **job["protocol"])
        answer |= {"samples": collected.work, "reference": {"net": collected.net, "gemm": collected.gemm}}
    else:
        answer["samples"] = collect_samples(timed, **job["protocol"])
    return answer | {"state": {"before": before, "after": conditions(snapshot), **state}}


def profile_ort(job: dict, path: str, x) -> dict[str, Any]:
    """Time the artifact with ONNX Runtime's profiler on: the samples, and the profiler's events of the last
    PROFILE_RUNS inferences (whole runs, node kernel times, the executor), as plain JSON for the workstation
    to attribute to the model's blocks (`latvit.analysis.profile.ort`)."""
    if job["runtime"] != "ort":
        raise ValueError(f"the agent profiles only ort, not '{job['runtime']}'")
    with tempfile.TemporaryDirectory(prefix="latvit-profile-") as tmp:
        sess, version = ort_session(path, int(job["threads"]), os.path.join(tmp, "ort_profile"))
        name = sess.get_inputs()[0].name
        samples = collect_samples(lambda: sess.run(None, {name: x}), **job["protocol"])
        with open(sess.end_profiling()) as f:
            events = json.load(f)
    runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])[-PROFILE_RUNS:]
    first = runs[0]["ts"] if runs else 0
    kept = [
        {"name": e["name"], "cat": e.get("cat"), "ts": e["ts"], "dur": e["dur"], "args": {"op_name": op}}
        for e in events
        if e.get("ts", -1) >= first
        and (
            e.get("name") in ("model_run", "SequentialExecutor::Execute")
            or (e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time"))
        )
        for op in [str((e.get("args") or {}).get("op_name", "?"))]
    ]
    return {"samples": samples, "runtime_version": version, "profile_events": kept}


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _stop_when_stdin_closes() -> None:
    """The workstation keeps stdin open while it waits: EOF means it is gone, so stop (freeing the lock)."""

    def watch():
        while sys.stdin.buffer.read(65536):
            pass
        os._exit(3)

    threading.Thread(target=watch, daemon=True).start()


def main(argv: list[str]) -> int:
    out = os.fdopen(os.dup(1), "w")  # the answer's channel; runtimes' own prints go to stderr instead
    os.dup2(2, 1)
    if len(argv) == 3 and argv[1] == "probe":
        out.write(json.dumps({"ok": True, **probe(argv[2])}) + "\n")
        return 0
    if len(argv) == 3 and argv[1] == "hash":
        out.write(json.dumps({"ok": True, "sha256": sha256_of(argv[2])}) + "\n")
        return 0
    if len(argv) != 2 or argv[1] != "run":
        sys.stderr.write("usage: agent.py probe WORKDIR | agent.py hash PATH | agent.py run < JOB.json\n")
        return 2
    job = json.loads(sys.stdin.readline())
    _stop_when_stdin_closes()
    try:
        result = run_job(job)
    except MissingRuntime as e:
        result = {"ok": False, "reason": "missing_runtime", "error": str(e)}
    except Exception as e:  # noqa: BLE001 - any failure of the runtime becomes the job's one-line reason
        lines = str(e).strip().splitlines()
        result = {"ok": False, "reason": "error", "error": f"{type(e).__name__}: {lines[0][:500] if lines else ''}"}
    out.write(json.dumps(result) + "\n")
    out.flush()
    sys.stderr.flush()
    os._exit(0)  # answered: end now, before the stdin watcher can mistake the workstation's goodbye for a loss


if __name__ == "__main__":
    sys.exit(main(sys.argv))
