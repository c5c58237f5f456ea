"""`latvit train` / `latvit validate`: a short run learns, a killed run resumes exactly, two gloo processes
train under torchrun with the multi-scale sampler, distillation, data readers and config errors.

Everything runs a ~50k-parameter spec at 32px on generated data, one thread per process."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import latvit
from latvit.cli import main as cli
from latvit.data import FASHION_MNIST_DIR, idx_dataset, open_dataset, write_synthetic_imagefolder
from latvit.space.spec import BlockSpec, HeadSpec, NetSpec, StageSpec
from latvit.train import ConfigError, DataError, make_config, train, validate
from latvit.train.checkpointing import load_checkpoint
from latvit.train.distill import distillation_loss
from latvit.train.sampler import ScaleBatchSampler, scaled_batch_size

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
# small and quick: 128 generated images of 4 classes, 8 steps of 16 per epoch, no workers, one thread
QUICK = dict(
    data="synthetic",
    synthetic_train=128,
    batch_size=16,
    num_workers=0,
    threads=1,
    progress=False,
    warmup_epochs=0.5,
    lr=5e-3,
    ema_decay=0.7,
    seed=3,
)


def tiny_spec() -> NetSpec:
    """Conv stem, a V2 FFN stage, and a MobileViT stage: accepts any multiple of 8 (for multi-scale)."""
    return NetSpec(
        name="tiny",
        img_size=32,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        stem=(BlockSpec("conv_bn_act", 16, stride=2, act="relu"),),
        stages=(
            StageSpec((BlockSpec("conv_bn_act", 24, stride=2, act="relu"), BlockSpec("ffn_local", 24))),
            StageSpec(
                (
                    BlockSpec("mv2", 32, stride=2, expansion=2.0),
                    BlockSpec("mobilevit", 32, dim=32, depth=1, heads=2, expansion=2.0),
                )
            ),
        ),
        head=HeadSpec(),
    )


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("spec") / "tiny.json"
    tiny_spec().to_json(path)
    return str(path)


@pytest.fixture(scope="module")
def trained(spec_file, tmp_path_factory) -> dict:
    """Two short epochs, shared by the tests that need a trained run."""
    out = tmp_path_factory.mktemp("run") / "tiny"
    return train(make_config(model=spec_file, epochs=2, output=str(out), **QUICK))


def test_short_run_learns_and_writes_its_files(trained):
    out = Path(trained["output"])
    first, last = trained["epochs"]
    assert last["train_loss"] < first["train_loss"] - 0.05
    assert last["val_top1"] > 40.0 > first["val_top1"]  # 4 classes: chance is 25%
    assert trained["steps"] == 16
    for name in ("config.yaml", "last.pt", "metrics.csv", "metrics.json", "model/model.safetensors", "best/spec.json"):
        assert (out / name).is_file(), name
    assert len((out / "metrics.csv").read_text().splitlines()) == 3
    saved = make_config(__import__("yaml").safe_load((out / "config.yaml").read_text()))
    assert saved.lr == QUICK["lr"] and saved.output == str(out)
    # the saved model dir holds the EMA weights that were evaluated: validate reproduces the metric
    again = validate(str(out / "model"), "synthetic")  # the run's config.yaml gives its crop and sizes
    assert again["top1"] == pytest.approx(last["val_top1"]) and again["images"] == 128
    from_ckpt = validate(str(out / "model" / "spec.json"), "synthetic", checkpoint=out / "last.pt")
    assert from_ckpt["top1"] == pytest.approx(last["val_top1"])
    report = out / "validate.json"
    assert (
        cli(
            [
                "validate",
                str(out / "best"),
                "--data",
                "synthetic",
                "--workers",
                "0",
                "--threads",
                "1",
                "--json",
                str(report),
            ]
        )
        == 0
    )
    assert set(json.loads(report.read_text())) >= {"top1", "top5", "loss", "images_per_sec"}


def test_validate_a_merged_or_pruned_model(trained, capsys):
    """`validate --tome/--sparsity` evaluates the trained model with merging / pruning and no fine-tuning."""
    model = str(Path(trained["output"]) / "model")
    plain = validate(model, "synthetic")
    merged = validate(model, "synthetic", tome="keep0.5")
    pruned = validate(model, "synthetic", sparsity="0.9")
    assert (plain["tome"], plain["sparsity"], merged["tome"], pruned["sparsity"]) == ("0", None, "keep0.5", 0.9)
    assert merged["loss"] != pytest.approx(plain["loss"]) and pruned["loss"] != pytest.approx(plain["loss"])
    assert cli(["validate", model, "--data", "synthetic", "--workers", "0", "--sparsity", "2:4", "--tome", "1"]) == 0
    assert "tiny, tome 1, sparsity 2:4 on synthetic" in capsys.readouterr().out
    # the one model resolver: a timm model validates like a latvit one, its head sized to the data's classes
    timm_row = validate("timm:mobilenetv3_small_050", "synthetic", img_size=32, subset=16)
    assert (timm_row["model"], timm_row["images"], timm_row["img_size"]) == ("timm:mobilenetv3_small_050", 16, 32)
    for bad in (["--workers", "-1"], ["--threads", "-1"], ["--crop-pct", "0"]):  # were tracebacks, or ignored
        with pytest.raises(SystemExit) as exit_:
            cli(["validate", model, "--data", "synthetic", *bad])
        assert exit_.value.code == 2
    capsys.readouterr()
    assert cli(["validate", model, "--data", "synthetic", "--sparsity", "2"]) == 2
    assert capsys.readouterr().err.strip() == (
        "latvit: error: sparsity '2': expected a pruned fraction in (0, 1), e.g. 0.5, or 2:4"
    )


KILL_AFTER_MID_EPOCH_CHECKPOINT = """
import sys, time
from pathlib import Path
import latvit.train.checkpointing as ckpt
save = ckpt.save_checkpoint
def save_then_wait(path, payload):
    save(path, payload)
    if payload["epoch"] == 1 and payload["batch"] == 4:  # mid-epoch 2: tell the test, wait for SIGKILL
        Path(sys.argv[1]).write_text(str(payload["step"]))
        time.sleep(600)
ckpt.save_checkpoint = save_then_wait
from latvit.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_resume_after_sigkill_matches_uninterrupted_run(spec_file, tmp_path):
    args = dict(QUICK, checkpoint_every=3, drop_path=0.1, mixup=0.2)  # mixup and drop path draw random numbers
    flags = [f"--set={k}={v}" for k, v in args.items()]
    run = tmp_path / "killed"
    marker = tmp_path / "marker"
    cmd = [
        sys.executable,
        "-c",
        KILL_AFTER_MID_EPOCH_CHECKPOINT,
        str(marker),
        "train",
        spec_file,
        "--epochs",
        "2",
        "--output",
        str(run),
        *flags,
    ]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert marker.exists(), proc.communicate(timeout=5) if proc.poll() is not None else "timed out"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    state = load_checkpoint(run / "last.pt")
    assert (state["epoch"], state["batch"], state["step"]) == (1, 4, 12)
    assert len((run / "metrics.csv").read_text().splitlines()) == 2  # header + epoch 1: killed in epoch 2

    resumed = subprocess.run(
        [sys.executable, "-m", "latvit", "train", "--resume", "--output", str(run)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert resumed.returncode == 0, resumed.stderr
    straight = train(make_config(model=spec_file, epochs=2, output=str(tmp_path / "straight"), **args))

    a, b = load_checkpoint(run / "last.pt"), load_checkpoint(tmp_path / "straight" / "last.pt")
    assert a["step"] == b["step"] == 16
    for part in ("model", "ema"):
        for key, tensor in b[part].items():
            assert torch.allclose(a[part][key].double(), tensor.double(), rtol=0, atol=1e-6), (part, key)
    for ra, rb in zip(a["metrics"], b["metrics"]):
        assert ra["train_loss"] == pytest.approx(rb["train_loss"], abs=1e-6)
        assert ra["val_top1"] == rb["val_top1"]
    assert straight["epochs"][-1]["train_loss"] == pytest.approx(a["metrics"][-1]["train_loss"], abs=1e-6)


def test_ddp_two_gloo_processes_with_multiscale(spec_file, tmp_path):
    out = tmp_path / "ddp"
    sets = dict(QUICK, multiscale=True, multiscale_sizes="[24,32,40]", checkpoint_every=2)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "latvit",
        "train",
        spec_file,
        "--epochs",
        "1",
        "--output",
        str(out),
        *[f"--set={k}={v}" for k, v in sets.items()],
    ]
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(done.stdout.strip().splitlines()) == 1  # only rank 0 prints the result
    assert json.loads(done.stdout)["output"] == str(out)
    for warning in ("Grad strides do not match bucket view strides", "worker processes in total"):
        assert warning not in done.stderr
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["world_size"] == 2 and summary["sizes"] == [24, 32, 40]
    # both ranks took the same batches-per-epoch as the sampler says for one rank of two
    expected = len(
        ScaleBatchSampler(128, 16, 32, (24, 32, 40), seed=QUICK["seed"], rank=0, world_size=2).epoch_batches(0)
    )
    state = load_checkpoint(out / "last.pt")
    assert state["step"] == expected and state["world_size"] == 2 and len(state["rng"]) == 2
    assert np.isfinite(summary["epochs"][0]["train_loss"]) and summary["epochs"][0]["val_top1"] > 0


def test_explicit_gpu_index_under_torchrun_is_refused(monkeypatch):
    from latvit.train.distributed import init_distributed

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(latvit.LatvitError, match="device cuda:1 under torchrun .2 processes.: use device=cuda"):
        init_distributed("cuda:1")


def test_multiscale_sampler_shards_and_sizes():
    samplers = [ScaleBatchSampler(400, 8, 32, (24, 32, 40), seed=1, rank=r, world_size=2) for r in range(2)]
    b0, b1 = (s.epoch_batches(0) for s in samplers)
    assert len(b0) == len(b1) > 0
    for x, y in zip(b0, b1):  # every rank: the same size and batch size at every step
        assert {s for _, s in x} == {s for _, s in y} and len({s for _, s in x}) == 1
        size = x[0][1]
        assert len(x) == len(y) == scaled_batch_size(8, 32, size)
    assert scaled_batch_size(8, 32, 24) == 14 and scaled_batch_size(8, 32, 40) == 5
    assert scaled_batch_size(8, 32, 40, multiple=2) == 6
    seen0 = {i for b in b0 for i, _ in b}
    seen1 = {i for b in b1 for i, _ in b}
    assert not seen0 & seen1  # disjoint shards
    assert {s for b in b0 for _, s in b} == {24, 32, 40}
    assert samplers[0].epoch_batches(1) != b0  # reshuffled every epoch
    samplers[0].set_epoch(0, start_batch=3)  # resuming mid-epoch skips what was done
    assert list(samplers[0]) == b0[3:] and len(samplers[0]) == len(b0) - 3
    # the smallest size's larger batch must fit too: else some epochs would draw it first and have no step
    with pytest.raises(latvit.LatvitError, match=r"batch size 32 \(multi-scale: 57 at 24 px\) x 1 process"):
        ScaleBatchSampler(40, 32, 32, (24, 32, 40))
    fits = ScaleBatchSampler(40, 16, 32, (24, 32, 40))
    assert all(len(fits.epoch_batches(epoch)) > 0 for epoch in range(20))


def test_distillation_loss_and_run(trained, spec_file, tmp_path):
    cls, dist = torch.randn(6, 4), torch.randn(6, 4)
    teacher, target = torch.randn(6, 4), torch.randint(0, 4, (6,))
    base = torch.nn.CrossEntropyLoss()
    assert torch.allclose(
        distillation_loss((cls, dist), target, teacher, base, alpha=1.0), F.cross_entropy(dist, teacher.argmax(1))
    )
    assert torch.allclose(distillation_loss((cls, dist), target, teacher, base, alpha=0.0), base(cls, target))
    mixed = distillation_loss((cls, dist), target, teacher, base, alpha=0.5)
    assert torch.allclose(mixed, 0.5 * base(cls, target) + 0.5 * F.cross_entropy(dist, teacher.argmax(1)))

    # the trained run's saved model teaches a fresh student through an added distillation head
    out = tmp_path / "student"
    teacher = str(Path(trained["output"]) / "best")
    result = train(make_config(model=spec_file, epochs=1, output=str(out), teacher=teacher, **QUICK))
    state = load_checkpoint(out / "last.pt")
    assert "head.fc_dist.weight" in state["model"] and np.isfinite(result["final"]["train_loss"])
    assert latvit.create_model(str(out / "model")).spec.head.distill
    again = validate(spec_file, "synthetic", checkpoint=out / "last.pt")
    assert again["top1"] == pytest.approx(result["final"]["val_top1"])
    saved = validate(str(out / "model"), "synthetic")  # the saved directory's weights, not a fresh model's
    assert saved["loss"] == pytest.approx(again["loss"])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(latvit.LatvitError):  # one line (CheckpointError), not an unpickling traceback
        validate(spec_file, "synthetic", checkpoint=garbage)


def test_init_fine_tunes_a_spec_edit_from_trained_weights(trained, tmp_path, capsys):
    """--init loads a trained model's weights into MODEL: here its spec with every activation swapped (the
    int8 route of docs/compression.md). With a vanishing learning rate the result keeps those weights."""
    best = Path(trained["output"]) / "best"
    swapped = tmp_path / "tiny_silu.json"
    latvit.create_model(str(best)).spec.with_act("silu", name="tiny_silu").to_json(swapped)
    out = tmp_path / "silu"
    quiet = dict(QUICK, lr=1e-12, warmup_lr=0.0, min_lr=0.0, weight_decay=0.0)
    train(make_config(model=str(swapped), init=str(best), epochs=1, output=str(out), **quiet))
    before = latvit.create_model(str(best)).state_dict()
    after = latvit.create_model(str(out / "model"))
    assert {b.act for s in after.spec.stages for b in s.blocks} == {"silu"}
    for name, tensor in after.state_dict().items():
        if not name.endswith(("running_mean", "running_var", "num_batches_tracked")):  # BN statistics move
            assert torch.allclose(tensor, before[name], atol=1e-6), name
    # without --init the same spec starts from random weights
    fresh = train(make_config(model=str(swapped), epochs=1, output=str(tmp_path / "fresh"), **quiet))
    assert not torch.allclose(
        latvit.create_model(str(tmp_path / "fresh" / "model")).state_dict()["head.fc.weight"], before["head.fc.weight"]
    )
    assert fresh["steps"] == 8
    # a missing --init path is a one-line error, and no run directory is made
    assert (
        cli(
            [
                "train",
                str(swapped),
                "--data",
                "synthetic",
                "--init",
                str(tmp_path / "nope"),
                "--output",
                str(tmp_path / "z"),
            ]
        )
        == 2
    )
    assert "config.init" in capsys.readouterr().err and not (tmp_path / "z").exists()
    with pytest.raises(ConfigError, match="saved model directory"):  # a directory without weights
        make_config(model=str(swapped), init=str(tmp_path), data="synthetic")


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_idx_reader_and_imagefolder(tmp_path):
    g = np.random.default_rng(0)
    for split, n in (("train", 40), ("t10k", 20)):
        write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", g.integers(0, 255, (n, 28, 28)))
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", g.integers(0, 10, n))
    train_set, val_set = open_dataset(str(tmp_path), "train"), open_dataset(str(tmp_path), "val")
    assert len(train_set) == 40 and len(val_set) == 20 and len(train_set.classes) == 10
    img, label = train_set[3]
    assert img.mode == "RGB" and img.size == (28, 28) and 0 <= label < 10
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x05ab"))
    with pytest.raises(DataError, match="truncated"):
        open_dataset(str(tmp_path), "val")

    root = write_synthetic_imagefolder(tmp_path / "folder", num_classes=3, train_per_class=4, val_per_class=2)
    assert len(open_dataset(str(root), "train")) == 12 and len(open_dataset(str(root), "val").classes) == 3
    with pytest.raises(DataError, match="no such directory"):
        open_dataset(str(tmp_path / "missing"), "train")
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(DataError, match="class sub-directories"):
        open_dataset(str(tmp_path / "empty"), "train")


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="apt-get install dataset-fashion-mnist for this test")
def test_fashion_mnist_from_the_debian_package():
    val = idx_dataset(FASHION_MNIST_DIR, "val")
    assert len(val) == 10_000 and val.classes[0] == "T-shirt/top"


def test_bad_configs_give_one_line_errors(spec_file, tmp_path, capsys):
    with pytest.raises(ConfigError, match="did you mean lr"):
        make_config(model="m", data="synthetic", lrr=0.1)
    with pytest.raises(ConfigError, match="label_smoothing"):
        make_config(model="m", data="synthetic", label_smoothing=1.5)
    with pytest.raises(ConfigError, match="expected an integer"):
        make_config(model="m", data="synthetic", epochs="ten")
    with pytest.raises(ConfigError, match="multiscale"):  # EfficientFormer takes one input size
        train(
            make_config(
                model="efficientformer_l1", img_size=64, epochs=1, multiscale=True, output=str(tmp_path / "x"), **QUICK
            )
        )
    with pytest.raises(ConfigError, match="did you mean adamw"):
        make_config(model="m", data="synthetic", optimizer="adamww")
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1\n")
    assert cli(["train", spec_file, "--data", "synthetic", "--config", str(bad)]) == 2
    assert cli(["train", spec_file, "--data", str(tmp_path / "nope")]) == 2
    assert cli(["train", spec_file, "--data", "synthetic", "--output", str(tmp_path / "y"), "--resume"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and all(line.startswith("latvit: error: ") for line in err)
    assert "cannot be parsed" in err[0] and "no such directory" in err[1] and "without --resume" in err[2]


def test_resume_refuses_a_changed_config_and_existing_runs(trained, spec_file):
    out = trained["output"]
    with pytest.raises(ConfigError, match="lr=0.1"):
        train(make_config(model=spec_file, epochs=2, output=out, **{**QUICK, "lr": 0.1}), resume=True)
    with pytest.raises(latvit.LatvitError, match="pass --resume"):
        train(make_config(model=spec_file, epochs=2, output=out, **QUICK))
    # resuming a finished run with more epochs continues it
    config = make_config(model=spec_file, epochs=3, output=out, **QUICK)
    more = train(config, resume=True)
    assert [r["epoch"] for r in more["epochs"]] == [1, 2, 3] and more["steps"] == 24
    # on the schedule of a 3-epoch run (the 2-epoch schedule would have pinned epoch 3 at min_lr)
    from timm.scheduler import CosineLRScheduler

    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=config.lr)
    CosineLRScheduler(
        opt,
        t_initial=3,
        lr_min=config.min_lr,
        warmup_t=config.warmup_epochs,
        warmup_lr_init=config.warmup_lr,
        t_in_epochs=True,
    ).step(2 + 7 / 8)  # epoch 3's last step
    stretched = opt.param_groups[0]["lr"]
    assert more["epochs"][2]["lr"] == pytest.approx(stretched) and stretched > 1.05 * config.min_lr


def test_recipe_configs_are_valid():
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        assert make_config(__import__("yaml").safe_load(path.read_text()), model="m", data="synthetic").epochs >= 1


# -- speed work (issue 30): exact batch augmentation, core split, profiling, AMP/channels-last flags -------------
def test_batch_augmentation_is_bit_identical_to_the_pil_path():
    """`Transformed.batch` (whole uint8 batches as tensors) gives exactly the stacked PIL items: grayscale
    (Fashion-MNIST-like) and RGB sources, crops that upscale and downscale (Pillow picks the pass order
    from the sizes), flips, the evaluation resize + centre crop; RandAugment keeps the PIL path."""
    from functools import partial

    from latvit.data import ArrayImages, Subset, Transformed, eval_transform, synthetic_images, train_transform

    g = np.random.default_rng(0)
    gray = ArrayImages(g.integers(0, 256, (90, 28, 28), dtype=np.uint8), g.integers(0, 10, 90), tuple("abcdefghij"))
    rgb = synthetic_images(90, 4, 32, seed=5)
    mean, std = (0.3, 0.4, 0.5), (0.2, 0.25, 0.3)
    cases = [
        (gray, 64, dict()),
        (Subset(gray, 60, spread=True), 24, dict(hflip=0.3)),
        (rgb, 40, dict(crop_scale=(0.5, 1.0))),
        (rgb, 17, dict(hflip=0.0)),
    ]
    for base, size, kw in cases:
        data = Transformed(base, partial(train_transform, mean=mean, std=std, **kw), size, seed=11)
        data.set_epoch(2)
        keys = [(i, size) for i in range(len(base))]
        assert data.batch_transform(size) is not None
        images, labels = data.batch(keys)
        expected = torch.stack([data[k][0] for k in keys])
        assert images.shape == (len(base), 3, size, size) and torch.equal(images, expected), (size, kw)
        assert torch.equal(labels, torch.tensor([data[k][1] for k in keys]))
    for crop_pct in (0.875, 1.0):
        data = Transformed(rgb, partial(eval_transform, mean=mean, std=std, crop_pct=crop_pct), 48)
        assert torch.equal(data.batch(list(range(90)))[0], torch.stack([data[i][0] for i in range(90)]))
    augmented = Transformed(
        gray, partial(train_transform, mean=mean, std=std, randaugment="rand-m9-mstd0.5"), 32, seed=1
    )
    assert augmented.batch_transform(32) is None  # no tensor twin: the PIL path, still one call per batch
    assert torch.equal(augmented.batch(list(range(8)))[0], torch.stack([augmented[i][0] for i in range(8)]))


def test_core_split_never_oversubscribes():
    from latvit.train.loader import split_cores

    # in-memory batches on CPU: every core computes; per-item decoding: no worker on 2 cores
    assert (split_cores(device_type="cpu", batched=True, cores=2, processes=1).workers, 2) == (0, 2)
    assert split_cores(device_type="cpu", batched=True, cores=2, processes=1).threads == 2
    assert split_cores(device_type="cpu", batched=False, cores=2, processes=1).workers == 0
    big = split_cores(device_type="cpu", batched=False, cores=16, processes=1)
    assert (big.workers, big.threads) == (4, 12)
    assert split_cores(device_type="cuda", batched=True, cores=16, processes=1).workers == 2
    assert split_cores(device_type="cpu", batched=False, cores=16, processes=1, threads=15).workers == 1
    assert split_cores(device_type="cpu", batched=True, cores=2, processes=1, workers=1).threads == 1
    for cores in (1, 2, 3, 4, 8, 16, 64):
        for ranks in (1, 2, 4, 8):
            for device_type in ("cpu", "cuda"):
                for batched in (True, False):
                    s = split_cores(device_type=device_type, batched=batched, cores=cores, processes=ranks)
                    assert s.threads >= 1 and s.workers >= 0
                    assert ranks * (s.workers + s.threads) <= max(cores, ranks), (cores, ranks, device_type, s)


def test_ema_keeps_timm_s_numbers():
    from timm.utils import ModelEmaV3

    from latvit.train.ema import ModelEma

    torch.manual_seed(0)
    model = latvit.create_model(tiny_spec(), num_classes=4)
    ours, timms = ModelEma(model, decay=0.9, use_warmup=True), ModelEmaV3(model, decay=0.9, use_warmup=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(4):
        model(torch.randn(4, 3, 32, 32)).sum().backward()
        optimizer.step()
        ours.update(model, step=step)
        timms.update(model, step=step)
    for (name, a), b in zip(ours.module.state_dict().items(), timms.module.state_dict().values()):
        assert torch.equal(a, b), name


def test_profile_steps_prints_the_breakdown_and_writes_nothing(spec_file, tmp_path, capsys):
    out = tmp_path / "profiled"
    flags = [f"--set={k}={v}" for k, v in dict(QUICK, checkpoint_every=4).items()]
    assert cli(["train", spec_file, "--epochs", "1", "--output", str(out), "--profile-steps", "3", *flags]) == 0
    table = capsys.readouterr().out
    for phase in (
        "data",
        "decode+augment",
        "forward",
        "backward",
        "optimizer",
        "ema",
        "metrics",
        "logging",
        "checkpoint",
        "other",
        "ms/step",
        "images/s over 3 profiled steps",
    ):
        assert phase in table, phase
    assert not out.exists()
    result = train(make_config(model=spec_file, epochs=1, output=str(out), **QUICK), profile_steps=2)
    rows = {r["phase"].strip(): r for r in result["rows"]}
    assert result["steps"] == 2 and result["rank"] == 0 and not out.exists()
    assert rows["forward"]["ms_per_step"] > 0 and rows["backward"]["ms_per_step"] > 0
    assert sum(r["percent"] for r in result["rows"] if not r["phase"].startswith(" ")) == pytest.approx(100, abs=1)


def test_amp_bf16_on_cpu_and_speed_flags(spec_file, tmp_path):
    """amp: bf16 runs CPU autocast; the speed flags are accepted, checked, and recorded in config.yaml."""
    from latvit.train.distributed import Dist
    from latvit.train.engine import Trainer, amp_dtype, memory_format

    config = make_config(
        model=spec_file,
        epochs=1,
        output=str(tmp_path / "bf16"),
        **dict(QUICK, amp="bf16", channels_last=True, pin_memory=False, num_workers="auto", log_every=3, compile=False),
    )
    trainer = Trainer(config, Dist(), scratch=tmp_path / "scratch")
    assert trainer.amp_dtype == torch.bfloat16 and trainer.memory_format == torch.channels_last
    images, targets = next(iter(trainer.loader))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert trainer.net(images).dtype == torch.bfloat16  # the forward really runs in bf16
    result = train(config)
    assert np.isfinite(result["final"]["train_loss"]) and result["steps"] == 8
    assert "amp: bf16" in (tmp_path / "bf16" / "config.yaml").read_text()
    assert amp_dtype(True, torch.device("cpu")) is None and amp_dtype(False, torch.device("cpu")) is None
    assert memory_format("auto", torch.device("cpu")) == torch.channels_last
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        amp_dtype("fp16", torch.device("cpu"))
    with pytest.raises(ConfigError, match="expected true or false or bf16 / fp16"):
        make_config(model="m", data="synthetic", amp="fp32")
    with pytest.raises(ConfigError, match="expected a number or auto"):
        make_config(model="m", data="synthetic", num_workers="many")
    with pytest.raises(ConfigError, match="log_every"):
        make_config(model="m", data="synthetic", log_every=0)


def test_ddp_gradients_live_in_the_buckets(tmp_path):
    """`wrap_ddp` keeps gradients as views of DDP's buckets: a 1x1 conv fed by a permuted activation (MobileViT's
    fold) gets a channels-last weight gradient, which plain DDP copies into its bucket with a warning at every
    step; here the gradient has the bucket's strides and the same values."""
    import warnings

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from latvit.train.distributed import Dist, wrap_ddp

    class PermutedConv(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.conv = torch.nn.Conv2d(96, 80, 1)

        def forward(self, x):
            return self.conv(x.permute(0, 3, 1, 2))  # (B, H, W, C) -> (B, C, H, W), channels-last strides

    x = torch.randn(16, 2, 2, 96)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'group'}", rank=0, world_size=1)
    try:
        ours, plain = PermutedConv(), PermutedConv()
        with warnings.catch_warnings(record=True) as ours_warnings:
            warnings.simplefilter("always")
            model = wrap_ddp(ours, Dist())
            for _ in range(2):  # DDP checks the layout from its second step on (after rebuilding its buckets)
                model(x).sum().backward()
        with warnings.catch_warnings(record=True) as plain_warnings:
            warnings.simplefilter("always")
            model = DDP(plain)
            for _ in range(2):
                model(x).sum().backward()
    finally:
        dist.destroy_process_group()
    stride_warning = "Grad strides do not match bucket view strides"
    assert not any(stride_warning in str(w.message) for w in ours_warnings)
    assert ours.conv.weight.grad.stride() == ours.conv.weight.stride()
    assert torch.equal(ours.conv.weight.grad, plain.conv.weight.grad)
    if plain.conv.weight.grad.stride() != plain.conv.weight.stride():  # this machine's kernels do produce it
        assert any(stride_warning in str(w.message) for w in plain_warnings)
