"""Helpers shared by the target tests: a tiny ONNX model, fast protocols, a fake `adb` on PATH."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import numpy as np

DATA = Path(__file__).parent / "data" / "targets"


def tiny_onnx(path: Path, size: int = 8, classes: int = 10) -> Path:
    """A (1, 3, size, size) -> (1, classes) ONNX model (reshape + matmul), IR 8 so older runtimes load it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = np.random.default_rng(0).standard_normal((3 * size * size, classes)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Reshape", ["image", "shape"], ["flat"]),
            helper.make_node("MatMul", ["flat", "w"], ["logits"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, classes])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(np.array([1, -1], dtype=np.int64), "shape")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def fast_protocol(min_seconds: float = 0.0, iters: int = 5):
    from latvit.targets import Protocol

    return Protocol(warmup=2, iters=iters, min_seconds=min_seconds, max_seconds=30.0, target_rel=None)


def executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


FAKE_ADB = r'''#!{python}
"""A fake adb: `-s SERIAL get-state|push|shell` mapped onto this machine (device paths are local paths)."""
import json, os, shutil, subprocess, sys
args = sys.argv[1:]
with open(os.environ["FAKE_ADB_LOG"], "a") as log:
    log.write(json.dumps(args) + "\n")
serial = args[1] if args[:1] == ["-s"] else None
args = args[2:] if serial else args
state = os.environ.get("FAKE_ADB_STATE", "device")
if state == "missing" or serial != os.environ.get("FAKE_ADB_SERIAL"):
    sys.stderr.write(f"error: device '{{serial}}' not found\n"); sys.exit(1)
if state == "unauthorized":
    sys.stderr.write("error: device unauthorized.\nThis adb server's $ADB_VENDOR_KEYS is not set\n"
                     "Try 'adb kill-server' if that seems wrong.\n"
                     "Otherwise check for a confirmation dialog on your device.\n")
    sys.exit(1)
if args == ["get-state"]:
    print("device"); sys.exit(0)
if args[0] == "push":
    src, dst = args[1], args[2]
    (shutil.copytree if os.path.isdir(src) else shutil.copyfile)(src, dst)
    print(f"{{src}}: 1 file pushed, 0 skipped."); sys.exit(0)
if args[0] == "shell":
    ran = subprocess.run(["sh", "-c", " ".join(args[1:])])  # adb joins its shell words with spaces, like this
    sys.exit(ran.returncode)
sys.stderr.write(f"fake adb: unsupported {{args}}\n"); sys.exit(1)
'''

GETPROP = """#!/bin/sh
echo '[ro.product.manufacturer]: [Google]'
echo '[ro.product.model]: [Pixel Fake]'
echo '[ro.build.version.release]: [15]'
echo '[ro.build.version.sdk]: [35]'
echo '[ro.product.cpu.abi]: [arm64-v8a]'
echo '[ro.soc.model]: [Tensor G3]'
"""


def install_fake_adb(bin_dir: Path, log: Path, serial: str = "FAKE123") -> dict[str, str]:
    """Write `adb` and `getprop` into `bin_dir`; returns the environment variables to set (PATH first)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    executable(bin_dir / "adb", FAKE_ADB.format(python=sys.executable))
    executable(bin_dir / "getprop", GETPROP)
    return {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "FAKE_ADB_LOG": str(log),
        "FAKE_ADB_SERIAL": serial,
        "FAKE_ADB_STATE": "device",
    }


def adb_calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
