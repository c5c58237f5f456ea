"""Datasets and transforms for `latvit train` / `latvit validate`.

Three sources, each giving PIL RGB images and integer labels:
- `fashion-mnist`: the idx `.gz` files of Debian's `dataset-fashion-mnist` package (or any directory
  holding the four files); 28x28 grayscale, replicated to 3 channels and resized to the model's input;
- `synthetic`: class-dependent coloured gratings generated in memory (tests, smoke runs);
- an ImageFolder root with `train/` and `val/` class folders (`write_synthetic_imagefolder` makes one).

Augmentation is made deterministic per sample: every image is transformed under RNG seeds derived from
(run seed, epoch, index), so a run resumed mid-epoch, or run with another `num_workers`, sees the very
same crops and flips as an uninterrupted one.

In-memory uint8 sources (Fashion-MNIST, synthetic) skip PIL: `Transformed.batch` crops, resizes, flips and
normalises a whole batch as tensors (`batch_transform`), bit-identical to timm's PIL transform of each image
(the same random draws per image; Pillow's fixed-point bicubic resampling done as two exact float64 matrix
products). Sources that decode per item (ImageFolder) and augmentations without a tensor twin (RandAugment,
colour jitter) keep the PIL path.
"""

from __future__ import annotations

import gzip
import random
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import numpy as np
import torch
from torch.profiler import record_function
from torch.utils.data import Dataset, default_collate

from latvit.errors import LatvitError, first_line


class DataError(LatvitError):
    """A dataset is missing, malformed or does not fit the request."""


FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "val": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
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

    def uint8_batch(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Images `indices` as one uint8 tensor (B, C, H, W), C = 1 for grayscale, 3 for RGB, and their
        labels (B,) int64: what `__getitem__` gives as PIL images, without PIL."""
        images = torch.from_numpy(self.images[np.asarray(indices, dtype=np.int64)])  # (B, H, W) or (B, H, W, 3)
        images = images[:, None] if images.ndim == 3 else images.permute(0, 3, 1, 2)  # (B, C, H, W)
        return images, torch.from_numpy(self.labels[np.asarray(indices, dtype=np.int64)])


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
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
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
    wave = np.sin(2 * np.pi * freq[:, None, None] * direction + phase[:, None, None])  # (N, S, S)
    hue = 2 * np.pi * labels / num_classes
    colour = 0.5 + 0.5 * np.stack([np.cos(hue), np.cos(hue + 2.1), np.cos(hue + 4.2)], 1)  # (N, 3)
    img = 0.5 + 0.35 * wave[..., None] * colour[:, None, None, :] + g.normal(0, 0.08, (num, size, size, 3))
    images = (np.clip(img, 0, 1) * 255).astype(np.uint8)  # (N, S, S, 3)
    return ArrayImages(images, labels, tuple(f"class{c}" for c in range(num_classes)))


def write_synthetic_imagefolder(
    root: str | Path,
    *,
    num_classes: int = 4,
    train_per_class: int = 16,
    val_per_class: int = 4,
    size: int = 32,
    seed: int = 0,
) -> Path:
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


def open_dataset(
    data: str, split: str, *, synthetic_classes: int = 4, synthetic_size: int = 512, seed: int = 0
) -> Dataset:
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
    sub = next(
        (root / s for s in ((split,) if split == "train" else ("val", "validation", "test")) if (root / s).is_dir()),
        None,
    )
    if sub is None:
        if split == "val" and root.is_dir() and not (root / "train").is_dir():
            return image_folder(root)  # `latvit validate` on a bare class-folder root
        raise DataError(
            f"{root} has no {split}/ folder: an ImageFolder dataset needs {root}/train/<class>/... "
            f"and {root}/val/<class>/..."
        )
    return image_folder(sub)


class Subset(Dataset):
    """The first `n` items of a dataset (keeps `classes`); with `spread`, `n` items evenly spaced over it
    instead (a class-sorted ImageFolder's first items are one or two classes)."""

    def __init__(self, base: Dataset, n: int, spread: bool = False):
        self.base, self.n, self.classes = base, min(n, len(base)), base.classes
        self.step = len(base) / self.n if spread and self.n else 1.0

    def __len__(self) -> int:
        return self.n

    def source_index(self, index: int) -> int:
        if not 0 <= index < self.n:
            raise IndexError(index)
        return int(index * self.step)

    def __getitem__(self, index: int):
        return self.base[self.source_index(index)]

    def uint8_batch(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.base.uint8_batch([self.source_index(i) for i in indices])


def holds_arrays(dataset: Dataset) -> bool:
    """Whether `dataset` is in-memory uint8 images (ArrayImages, possibly under Subsets): `uint8_batch` works."""
    while isinstance(dataset, Subset):
        dataset = dataset.base
    if not isinstance(dataset, ArrayImages):
        return False
    return dataset.images.ndim == 3 or (dataset.images.ndim == 4 and dataset.images.shape[-1] == 3)


# -- transforms --------------------------------------------------------------------------------------------
def train_transform(
    size: int,
    mean,
    std,
    *,
    crop_scale=(0.08, 1.0),
    hflip: float = 0.5,
    randaugment: str | None = None,
    color_jitter: float = 0.0,
):
    """timm's training transform: RandomResizedCrop (bicubic) + flip [+ RandAugment] [+ colour jitter],
    to tensor, normalise. PIL in, (3, size, size) float out. Colour jitter is off by default (the seeds'
    recipe has none, and timm turns it off under RandAugment anyway)."""
    from timm.data import create_transform

    try:
        return create_transform(
            size,
            is_training=True,
            scale=tuple(crop_scale),
            hflip=hflip,
            color_jitter=color_jitter or None,
            auto_augment=randaugment or None,
            interpolation="bicubic",
            mean=tuple(map(float, mean)),
            std=tuple(map(float, std)),
        )
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

    return create_transform(
        size,
        is_training=False,
        crop_pct=crop_pct,
        interpolation="bicubic",
        mean=tuple(map(float, mean)),
        std=tuple(map(float, std)),
    )


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
    `batch(keys)` gives the stacked items of a whole batch, as tensors end to end where the source holds
    uint8 arrays and the transform has an exact batch twin (`batch_transform`).
    """

    def __init__(self, base: Dataset, make_transform, size: int, seed: int | None = None):
        self.base, self.make_transform, self.size, self.seed = base, make_transform, size, seed
        self.classes = base.classes
        self.epoch = 0
        self._transforms: dict[int, object] = {}
        self._batch_transforms: dict[int, BatchTransform | None] = {}
        self.arrays = holds_arrays(base)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.base)

    def item_seed(self, index: int) -> int:
        """The RNG seed of item `index`'s augmentation in the current epoch."""
        return ((self.seed * 1_000_003 + self.epoch) * 10_000_019 + index) % 2**63

    def transform(self, size: int):
        if size not in self._transforms:
            self._transforms[size] = self.make_transform(size)
        return self._transforms[size]

    def batch_transform(self, size: int) -> BatchTransform | None:
        """The exact whole-batch twin of the transform at `size`, or None (PIL path)."""
        if size not in self._batch_transforms:
            self._batch_transforms[size] = batch_transform(self.transform(size)) if self.arrays else None
        return self._batch_transforms[size]

    def __getitem__(self, key):
        index, size = key if isinstance(key, tuple) else (key, self.size)
        img, label = self.base[index]
        if self.seed is None:
            return self.transform(size)(img), label
        with seeded_rngs(self.item_seed(index)):
            return self.transform(size)(img), label

    def batch(self, keys: list) -> tuple[torch.Tensor, torch.Tensor]:
        """Items `keys` (indices or (index, size) pairs of one size) stacked: images (B, 3, S, S) float32,
        labels (B,) int64; equal, bit for bit, to stacking `self[key]` for every key."""
        pairs = [key if isinstance(key, tuple) else (key, self.size) for key in keys]
        sizes = {size for _, size in pairs}
        exact = self.batch_transform(pairs[0][1]) if len(sizes) == 1 else None
        with record_function("decode+augment"):
            if exact is not None:
                indices = [index for index, _ in pairs]
                images, labels = self.base.uint8_batch(indices)  # (B, C, H, W) uint8
                seeds = None if self.seed is None else [self.item_seed(i) for i in indices]
                out = exact(images, seeds) if exact.fits(*images.shape[-2:]) else None
                if out is not None:  # None: a shape without a batch twin; the PIL path draws the same numbers
                    return out, labels
            return tuple(default_collate([self[key] for key in keys]))


class BatchFetcher(Dataset):
    """A dataset whose items are whole batches: `fetcher[keys]` is `dataset.batch(keys)` (or the stacked
    items for datasets without `batch`). Give it to a DataLoader with `batch_size=None` and a sampler that
    yields lists of keys: the batch is then built in one call, in a loader worker or inline."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __getitem__(self, keys: list):
        batch = getattr(self.dataset, "batch", None)
        return batch(keys) if batch is not None else tuple(default_collate([self.dataset[k] for k in keys]))


# -- exact batch augmentation -------------------------------------------------------------------------------
PRECISION_BITS = 22  # Pillow's fixed-point resampling of 8-bit images: 32 - 8 - 2 bits for the weights


def _pil_bicubic(x: float) -> float:
    """Pillow's bicubic kernel (a = -0.5), evaluated in the order of its C source."""
    x = -x if x < 0.0 else x
    if x < 1.0:
        return (1.5 * x - 2.5) * x * x + 1
    if x < 2.0:
        return (((x - 5) * x + 8) * x - 4) * -0.5
    return 0.0


@cache
def pil_bicubic_weights(in_size: int, out_size: int) -> torch.Tensor:
    """(out_size, in_size) float64 matrix of the integer weights Pillow resizes `in_size` pixels to
    `out_size` with (bicubic, antialiased: `precompute_coeffs` + `normalize_coeffs_8bpc` in
    libImaging/Resample.c, ported line by line; Python floats are C doubles). Row `o` holds output pixel
    o's weights, scaled by 2^22 and rounded as Pillow rounds them."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 2.0 * filterscale
    inverse = 1.0 / filterscale
    weights = torch.zeros(out_size, in_size, dtype=torch.float64)
    for out in range(out_size):
        center = (out + 0.5) * scale
        first = max(int(center - support + 0.5), 0)  # C truncation, as Pillow's (int) casts
        count = min(int(center + support + 0.5), in_size) - first
        taps = [_pil_bicubic((x + first - center + 0.5) * inverse) for x in range(count)]
        total = 0.0
        for w in taps:  # summed in order, as Pillow does
            total += w
        for x, w in enumerate(taps):
            w = w / total if total != 0.0 else w
            scaled = w * (1 << PRECISION_BITS)
            weights[out, first + x] = int(scaled - 0.5) if w < 0 else int(scaled + 0.5)
    return weights


def _clip8(acc: torch.Tensor) -> torch.Tensor:
    """Pillow's rounding of a fixed-point sum to a byte: (acc + 2^21) >> 22, clipped to [0, 255] (exact in float64)."""
    return torch.floor((acc + (1 << (PRECISION_BITS - 1))) * 2.0**-PRECISION_BITS).clamp_(0, 255)


def pil_resample(
    images: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, vertical_first: torch.Tensor | bool = False
) -> torch.Tensor:
    """Pillow's two-pass 8-bit resampling of a uint8 batch: images (B, C, H, W), per-image (or shared)
    weights rows (B|1, S, H) and cols (B|1, T, W) from `pil_bicubic_weights` (cropping and flipping are
    zero columns and reversed rows), each image's pass order (`pil_vertical_first`; bool or (B,) bool).
    Returns the (B, C, S, T) result as float64 integers in [0, 255]. Exact: every product and partial
    sum is an integer below 2^31, so float64 matrix products lose nothing; each pass rounds and clips to
    bytes as Pillow's does."""
    x = images.to(torch.float64)
    if torch.is_tensor(vertical_first) and bool((vertical_first == vertical_first[0]).all()):
        vertical_first = bool(vertical_first[0])  # one order for the whole batch (the usual case)
    rows, cols_t = rows[:, None], cols.transpose(1, 2)[:, None]  # (B|1, 1, S, H), (B|1, 1, W, T)
    if not torch.is_tensor(vertical_first):
        return _clip8(_clip8(rows @ x) @ cols_t) if vertical_first else _clip8(rows @ _clip8(x @ cols_t))
    out = torch.empty(x.shape[0], x.shape[1], rows.shape[-2], cols_t.shape[-1], dtype=torch.float64)
    for order in (False, True):
        pick = (vertical_first == order).nonzero().flatten()
        if len(pick):
            out[pick] = pil_resample(
                x[pick],
                rows[pick, 0] if rows.shape[0] > 1 else rows[:, 0],
                cols[pick] if cols.shape[0] > 1 else cols,
                order,
            )
    return out


def _probe_images(height: int, width: int) -> list[np.ndarray]:
    """Two fixed uint8 images whose resampling shows the pass order: noise, and a 0/255 checkerboard
    (its overshoots clip differently in the two orders)."""
    noise = np.random.default_rng(height * 1000 + width).integers(0, 256, (height, width), dtype=np.uint8)
    checker = ((np.indices((height, width)).sum(0) % 2) * 255).astype(np.uint8)
    return [noise, checker]


@cache
def pil_vertical_first(in_h: int, in_w: int, out_h: int, out_w: int) -> bool | None:
    """Whether Pillow (bicubic) resizes (in_h, in_w) to (out_h, out_w) with the vertical pass first: Pillow
    picks the order from the sizes, and the rule has changed between versions (13 runs the vertical pass
    first where the height shrinks more), so it is read off the installed Pillow with probe images. None
    when neither order reproduces it (the PIL path then serves that shape)."""
    from PIL import Image

    rows, cols = pil_bicubic_weights(in_h, out_h)[None], pil_bicubic_weights(in_w, out_w)[None]
    matches = {False: True, True: True}
    for probe in _probe_images(in_h, in_w):
        reference = torch.from_numpy(np.array(Image.fromarray(probe).resize((out_w, out_h), Image.BICUBIC)))
        for order in matches:
            ours = pil_resample(torch.from_numpy(probe)[None, None], rows, cols, order)[0, 0]
            matches[order] &= torch.equal(ours, reference.to(torch.float64))
    return False if matches[False] else (True if matches[True] else None)


class BatchTransform:
    """Base of the exact batch twins: `self(images uint8 (B, C, H, W), seeds or None)` -> normalised
    (B, 3, S, S) float32, what ToTensor + Normalize make of the PIL result of every image (or None where
    a shape has no exact twin: the caller then takes the PIL path)."""

    def __init__(self, mean, std):
        self.mean = torch.as_tensor(mean, dtype=torch.float32).view(-1, 1, 1)  # as torchvision's normalize
        self.std = torch.as_tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def fits(self, height: int, width: int) -> bool:
        """Whether images of this size have an exact batch path (else the PIL path serves them)."""
        return True

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, C, S, T) byte values (C = 1: grayscale, which PIL's convert replicates to RGB) -> ToTensor,
        then Normalize, element for element as torchvision computes them."""
        scaled = pixels.to(torch.float32).div(255)
        return scaled.expand(-1, 3, -1, -1).sub(self.mean).div(self.std)  # (B, 3, S, T)


class RandomCropFlipBatch(BatchTransform):
    """timm's RandomResizedCropAndInterpolation (bicubic) + RandomHorizontalFlip, per image, on a batch.

    Each image's crop comes from timm's own `get_params` under python's `random` and its flip from
    `torch.rand(1)`, both seeded with the image's seed as the PIL path seeds them, so the draws match."""

    def __init__(self, crop, flip_p: float | None, mean, std):
        super().__init__(mean, std)
        self.crop, self.flip_p = crop, flip_p
        self.size = crop.size  # (S, T)

    def __call__(self, images: torch.Tensor, seeds: list[int] | None) -> torch.Tensor:
        n, _, height, width = images.shape
        probe = torch.empty(0, height, width)  # get_params reads only the image size
        rows = torch.zeros(n, self.size[0], height, dtype=torch.float64)  # (B, S, H)
        cols = torch.zeros(n, self.size[1], width, dtype=torch.float64)  # (B, T, W)
        vertical_first = []
        python_state = random.getstate()
        generator = torch.Generator()
        try:
            for b in range(n):
                if seeds is not None:
                    random.seed(seeds[b])
                    generator.manual_seed(seeds[b])
                top, left, h, w = self.crop.get_params(probe, self.crop.scale, self.crop.ratio)
                flip = self.flip_p is not None and bool(
                    torch.rand(1, generator=generator if seeds is not None else None) < self.flip_p
                )
                order = pil_vertical_first(h, w, *self.size)
                if order is None:
                    return None
                vertical_first.append(order)
                rows[b, :, top : top + h] = pil_bicubic_weights(h, self.size[0])
                across = pil_bicubic_weights(w, self.size[1])
                cols[b, :, left : left + w] = across.flip(0) if flip else across  # the flip reverses output columns
        finally:
            if seeds is not None:
                random.setstate(python_state)
        return self.normalise(pil_resample(images, rows, cols, torch.tensor(vertical_first)))


class ResizeCenterCropBatch(BatchTransform):
    """torchvision Resize (bicubic) + CenterCrop, as timm's evaluation transform, on a batch."""

    def __init__(self, resize, crop_size: tuple[int, int], mean, std):
        super().__init__(mean, std)
        self.resize, self.crop_size = resize, crop_size

    def resized(self, height: int, width: int) -> tuple[int, int]:
        """torchvision's output size of Resize(self.resize) for an (height, width) image."""
        size = [self.resize] if isinstance(self.resize, int) else list(self.resize)
        if len(size) == 2:
            return size[0], size[1]
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = size[0], int(size[0] * long / short)
        return (new_long, new_short) if width <= height else (new_short, new_long)

    def fits(self, height: int, width: int) -> bool:
        new_h, new_w = self.resized(height, width)
        return self.crop_size[0] <= new_h and self.crop_size[1] <= new_w  # torchvision pads otherwise

    def __call__(self, images: torch.Tensor, seeds: list[int] | None = None) -> torch.Tensor:
        height, width = images.shape[-2:]
        new_h, new_w = self.resized(height, width)
        crop_h, crop_w = self.crop_size
        top, left = int(round((new_h - crop_h) / 2.0)), int(round((new_w - crop_w) / 2.0))
        rows = pil_bicubic_weights(height, new_h)[top : top + crop_h][None]  # (1, S, H)
        cols = pil_bicubic_weights(width, new_w)[left : left + crop_w][None]  # (1, T, W)
        order = pil_vertical_first(height, width, new_h, new_w)  # the crop comes after the resize
        return None if order is None else self.normalise(pil_resample(images, rows, cols, order))


def batch_transform(transform) -> BatchTransform | None:
    """The exact batch twin of a timm transform made by `train_transform` (random-resized-crop + flip)
    or `eval_transform` (resize + centre crop), both bicubic, then ToTensor + Normalize; None for any
    other pipeline (RandAugment, colour jitter, random interpolation...), which keeps the PIL path."""
    from timm.data.transforms import MaybeToTensor, RandomResizedCropAndInterpolation
    from torchvision import transforms as T

    steps = list(getattr(transform, "transforms", ()))
    if len(steps) < 3 or type(steps[-1]) is not T.Normalize or type(steps[-2]) not in (MaybeToTensor, T.ToTensor):
        return None
    normalize, head = steps[-1], steps[:-2]
    bicubic = (T.InterpolationMode.BICUBIC, 3)  # the enum, or PIL's constant on old torchvision
    first = head[0] if head else None
    if type(first) is RandomResizedCropAndInterpolation and first.interpolation in bicubic:
        rest = head[1:]
        flip = None
        if rest and type(rest[0]) is T.RandomHorizontalFlip:
            flip, rest = rest[0].p, rest[1:]
        return None if rest else RandomCropFlipBatch(first, flip, normalize.mean, normalize.std)
    if (
        len(head) == 2
        and type(first) is T.Resize
        and first.interpolation in bicubic
        and first.max_size is None
        and type(head[1]) is T.CenterCrop
    ):
        return ResizeCenterCropBatch(first.size, tuple(head[1].size), normalize.mean, normalize.std)
    return None


__all__ = [
    "ArrayImages",
    "BatchFetcher",
    "BatchTransform",
    "DataError",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIR",
    "Subset",
    "Transformed",
    "batch_transform",
    "eval_transform",
    "holds_arrays",
    "idx_dataset",
    "image_folder",
    "open_dataset",
    "pil_bicubic_weights",
    "pil_resample",
    "read_idx",
    "seeded_rngs",
    "synthetic_images",
    "train_transform",
    "write_synthetic_imagefolder",
]
