"""Datasets and transforms for `latvit train` / `latvit validate`.

Three sources, each giving PIL RGB images and integer labels:
- `fashion-mnist`: the idx `.gz` files of Debian's `dataset-fashion-mnist` package (or any directory
  holding the four files); 28x28 grayscale, replicated to 3 channels and resized to the model's input;
- `synthetic`: class-dependent coloured gratings generated in memory (tests, smoke runs);
- an ImageFolder root with `train/` and `val/` class folders (`write_synthetic_imagefolder` makes one).

Augmentation is made deterministic per sample: every image is transformed under RNG seeds derived from
(run seed, epoch, index), so a run resumed mid-epoch, or run with another `num_workers`, sees the very
same crops and flips as an uninterrupted one.
"""
from __future__ import annotations

import gzip
import random
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from latvit.errors import LatvitError, first_line


class DataError(LatvitError):
    """A dataset is missing, malformed or does not fit the request."""


FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot")
IDX_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
             "val": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".ppm", ".tif", ".tiff")


# -- sources ------------------------------------------------------------------------------------------------
class ArrayImages(Dataset):
    """In-memory uint8 images (N, H, W) or (N, H, W, 3) with labels (N,); items are (PIL RGB, int)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, classes: tuple[str, ...]):
        self.images, self.labels, self.classes = images, labels.astype(np.int64), tuple(classes)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        from PIL import Image

        img = Image.fromarray(self.images[index])
        return img.convert("RGB"), int(self.labels[index])


def read_idx(path: Path) -> np.ndarray:
    """Read one gzipped idx file (the MNIST format: magic 0x0000 08 <ndim>, big-endian sizes, uint8 data)."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path} is not a readable gzip file ({e}); reinstall dataset-fashion-mnist") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or raw[3] not in (1, 3):
        raise DataError(f"{path} is not an idx file of unsigned bytes (bad magic number)")
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    if len(raw) - offset != int(np.prod(dims)):
        raise DataError(f"{path} is truncated: header says {dims} but holds {len(raw) - offset} bytes")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)


def is_idx_dir(path: Path) -> bool:
    return all((path / f).is_file() for f in IDX_FILES["train"])


def idx_dataset(root: Path, split: str) -> ArrayImages:
    """Fashion-MNIST (or MNIST) from a directory of idx .gz files; split 'train' or 'val' (the test set)."""
    image_file, label_file = (root / f for f in IDX_FILES[split])
    for f in (image_file, label_file):
        if not f.is_file():
            hint = "apt-get install dataset-fashion-mnist" if root == FASHION_MNIST_DIR else "check the directory"
            raise DataError(f"Fashion-MNIST file {f} is missing: {hint}")
    images, labels = read_idx(image_file), read_idx(label_file)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"{root}: {image_file.name} {images.shape} and {label_file.name} {labels.shape} do not match")
    if labels.max() >= len(FASHION_MNIST_CLASSES):
        raise DataError(f"{label_file} has label {labels.max()}; expected 0-9")
    return ArrayImages(images, labels, FASHION_MNIST_CLASSES)


def synthetic_images(num: int, num_classes: int, size: int = 32, seed: int = 0) -> ArrayImages:
    """Coloured sinusoidal gratings: the class sets the orientation and the colour, each sample a random
    phase, frequency jitter and pixel noise. Learnable in a few hundred steps by a tiny network."""
    g = np.random.default_rng(seed)
    labels = g.integers(0, num_classes, num)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    angle = np.pi * labels / num_classes
    freq = 3.0 + g.uniform(-0.5, 0.5, num)
    phase = g.uniform(0, 2 * np.pi, num)
    direction = np.cos(angle)[:, None, None] * xx + np.sin(angle)[:, None, None] * yy  # (N, S, S)
    wave = np.sin(2 * np.pi * freq[:, None, None] * direction
                  + phase[:, None, None])  # (N, S, S)
    hue = 2 * np.pi * labels / num_classes
    colour = 0.5 + 0.5 * np.stack([np.cos(hue), np.cos(hue + 2.1), np.cos(hue + 4.2)], 1)  # (N, 3)
    img = 0.5 + 0.35 * wave[..., None] * colour[:, None, None, :] + g.normal(0, 0.08, (num, size, size, 3))
    images = (np.clip(img, 0, 1) * 255).astype(np.uint8)  # (N, S, S, 3)
    return ArrayImages(images, labels, tuple(f"class{c}" for c in range(num_classes)))


def write_synthetic_imagefolder(root: str | Path, *, num_classes: int = 4, train_per_class: int = 16,
                                val_per_class: int = 4, size: int = 32, seed: int = 0) -> Path:
    """Write a tiny ImageFolder (`root/train/<class>/*.png`, `root/val/<class>/*.png`) of synthetic images."""
    root = Path(root)
    for split, per_class, offset in (("train", train_per_class, 0), ("val", val_per_class, 1)):
        data = synthetic_images(per_class * num_classes * 3, num_classes, size, seed + offset)
        counts = dict.fromkeys(range(num_classes), 0)
        for i in range(len(data)):
            label = int(data.labels[i])
            if counts[label] >= per_class:
                continue
            folder = root / split / data.classes[label]
            folder.mkdir(parents=True, exist_ok=True)
            data[i][0].save(folder / f"{counts[label]:05d}.png")
            counts[label] += 1
    return root


def is_image_file(path: str) -> bool:
    return path.lower().endswith(IMAGE_EXTENSIONS)


def image_folder(root: Path):
    """torchvision ImageFolder with latvit's errors for empty or malformed directories."""
    from torchvision.datasets import ImageFolder

    if not root.is_dir():
        raise DataError(f"dataset directory {root} does not exist")
    class_dirs = [d for d in root.iterdir() if d.is_dir()]
    if not class_dirs:
        raise DataError(f"{root} has no class sub-directories (expected {root}/<class>/<image files>)")
    try:
        return ImageFolder(str(root), is_valid_file=is_image_file)
    except (FileNotFoundError, RuntimeError) as e:
        raise DataError(f"{root} is not a valid ImageFolder: {first_line(e)}") from None


def open_dataset(data: str, split: str, *, synthetic_classes: int = 4, synthetic_size: int = 512,
                 seed: int = 0) -> Dataset:
    """`data` ('fashion-mnist', 'synthetic' or a path) -> the dataset of `split` ('train' or 'val');
    every returned dataset has a `classes` attribute."""
    if data == "fashion-mnist":
        return idx_dataset(FASHION_MNIST_DIR, split)
    if data == "synthetic":
        # the validation set uses another generator seed, so it holds different images
        return synthetic_images(synthetic_size, synthetic_classes, 32, seed=1000 * (split == "val") + 17)
    root = Path(data)
    if not root.exists():
        raise DataError(f"dataset {data!r}: no such directory (use fashion-mnist, synthetic or an ImageFolder root)")
    if root.is_dir() and is_idx_dir(root):
        return idx_dataset(root, split)
    sub = next((root / s for s in ((split,) if split == "train" else ("val", "validation", "test"))
                if (root / s).is_dir()), None)
    if sub is None:
        if split == "val" and root.is_dir() and not (root / "train").is_dir():
            return image_folder(root)  # `latvit validate` on a bare class-folder root
        raise DataError(f"{root} has no {split}/ folder: an ImageFolder dataset needs {root}/train/<class>/... "
                        f"and {root}/val/<class>/...")
    return image_folder(sub)


class Subset(Dataset):
    """The first `n` items of a dataset (keeps `classes`); with `spread`, `n` items evenly spaced over it
    instead (a class-sorted ImageFolder's first items are one or two classes)."""

    def __init__(self, base: Dataset, n: int, spread: bool = False):
        self.base, self.n, self.classes = base, min(n, len(base)), base.classes
        self.step = len(base) / self.n if spread and self.n else 1.0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int):
        if not 0 <= index < self.n:
            raise IndexError(index)
        return self.base[int(index * self.step)]


# -- transforms --------------------------------------------------------------------------------------------
def train_transform(size: int, mean, std, *, crop_scale=(0.08, 1.0), hflip: float = 0.5,
                    randaugment: str | None = None, color_jitter: float = 0.0):
    """timm's training transform: RandomResizedCrop (bicubic) + flip [+ RandAugment] [+ colour jitter],
    to tensor, normalise. PIL in, (3, size, size) float out. Colour jitter is off by default (the seeds'
    recipe has none, and timm turns it off under RandAugment anyway)."""
    from timm.data import create_transform

    try:
        return create_transform(size, is_training=True, scale=tuple(crop_scale), hflip=hflip,
                                color_jitter=color_jitter or None, auto_augment=randaugment or None,
                                interpolation="bicubic", mean=tuple(map(float, mean)), std=tuple(map(float, std)))
    except Exception as e:  # timm raises AssertionError/ValueError/KeyError for bad augment strings
        raise DataError(f"randaugment '{randaugment}' is not a valid timm RandAugment string ({e})") from None


def check_crop_pct(crop_pct: float) -> None:
    """An evaluation crop is a fraction in (0, 1]; anything else is one clear error (before any work)."""
    if not 0.0 < crop_pct <= 1.0:
        raise DataError(f"crop_pct {crop_pct} must be in (0, 1]")


def eval_transform(size: int, mean, std, *, crop_pct: float = 0.875):
    """timm's evaluation transform: resize the short side to size / crop_pct (bicubic), centre-crop `size`,
    to tensor, normalise."""
    from timm.data import create_transform

    check_crop_pct(crop_pct)

    return create_transform(size, is_training=False, crop_pct=crop_pct, interpolation="bicubic",
                            mean=tuple(map(float, mean)), std=tuple(map(float, std)))


@contextmanager
def seeded_rngs(seed: int):
    """Run a block under fixed torch / numpy / random seeds and restore the callers' RNG states after."""
    torch_state, np_state, py_state = torch.get_rng_state(), np.random.get_state(), random.getstate()
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
    try:
        yield
    finally:
        torch.set_rng_state(torch_state)
        np.random.set_state(np_state)
        random.setstate(py_state)


class Transformed(Dataset):
    """Applies a per-size transform to a source dataset.

    Items are addressed by `(index, size)` (what `ScaleBatchSampler` yields) or a bare index (the
    default size). With `seed` set, the transform of an item runs under RNG seeds derived from
    (seed, epoch, index), so augmentation does not depend on worker processes or on where a run resumed.
    """

    def __init__(self, base: Dataset, make_transform, size: int, seed: int | None = None):
        self.base, self.make_transform, self.size, self.seed = base, make_transform, size, seed
        self.classes = base.classes
        self.epoch = 0
        self._transforms: dict[int, object] = {}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key):
        index, size = key if isinstance(key, tuple) else (key, self.size)
        if size not in self._transforms:
            self._transforms[size] = self.make_transform(size)
        img, label = self.base[index]
        if self.seed is None:
            return self._transforms[size](img), label
        with seeded_rngs(((self.seed * 1_000_003 + self.epoch) * 10_000_019 + index) % 2**63):
            return self._transforms[size](img), label


__all__ = ["ArrayImages", "DataError", "FASHION_MNIST_CLASSES", "FASHION_MNIST_DIR", "Subset", "Transformed",
           "eval_transform", "idx_dataset", "image_folder", "open_dataset", "read_idx", "seeded_rngs",
           "synthetic_images", "train_transform", "write_synthetic_imagefolder"]
