"""The two supernets the seeds describe (seed 003), and their resumable training loops.

- `GumbelSupernet` (EfficientFormer V1's latency-driven slimming). Built over the `efficientformer`
  space's largest spec: the stem, the downsampling convs and the head are the spec's; every other block
  position is a `MetaPath` whose candidates are {MB4D, Identity} in stages 1-3 and {MB4D, MB3D, Identity}
  in stage 4. Each MetaPath has learnable logits `alpha`; its output is the candidates' outputs mixed by
  hard (straight-through) Gumbel-softmax weights, at a temperature annealed over training. Weights
  (AdamW) and alphas (Adam, own learning rate) train jointly on the training data. softmax(alpha) is
  the importance the slimming (`latvit.search.algorithms.importance_slimming`) acts on.
  MB3D works on tokens, and a latvit spec reshapes to tokens once, before the MB3D blocks at the end of
  the last stage; so MB3D is a candidate in stage 4 only (the seed also allows it in stage 3: such a
  network would not be a latvit spec, and a latency table of the space has no stage-3 MB3D to price it).
  Inside the supernet the stage-4 MB3D candidates flatten their (B, C, H, W) input and fold it back, so
  every candidate of a path sees the same layout.
- `SandwichSupernet` (EfficientFormerV2's slimmable supernet). The `efficientformerv2` space's largest
  network holds the shared weights; a subnet (any `Choice` of the space) is its own module, built once
  and cached, run with `torch.func.functional_call` on leading slices (views) of the shared tensors (the
  slicing rule of `latvit.search.inherit`), so its gradients land in the supernet. Switchable BatchNorm:
  every BatchNorm keeps, in `norms`, separate affine parameters and running statistics per channel
  count it runs at; a subnet's BatchNorms use (and in training, update) those of their own width. Each
  sandwich step trains the largest, the smallest and two random subnets (random depths give elastic
  depth, with drop path inside each) and accumulates their gradients into one optimiser step.

Both train with `train_gumbel` / `train_sandwich`: batches from `latvit.data` (deterministic per
(seed, epoch, index)), each step reseeded from (seed, epoch, batch), an atomic checkpoint
(`RUN/last.pt`) every `checkpoint_every` steps and at the end, so a killed run resumes where it stopped
and ends with the weights an uninterrupted run would have.
"""

from __future__ import annotations

import math
import random
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from latvit.data import Subset, Transformed, open_dataset, train_transform
from latvit.errors import LatvitError
from latvit.models.spaces import Choice, SearchSpace
from latvit.search.algorithms import PathState
from latvit.search.inherit import _source_name, block_map, fused_projections, inherit_weights, leading_slice
from latvit.space.blocks import BLOCK_KINDS
from latvit.space.builder import LatvitNet, build_model
from latvit.space.plan import plan_network
from latvit.space.spec import BlockSpec
from latvit.train import checkpointing as ckpt
from latvit.train.engine import seed_all, step_seed
from latvit.train.sampler import ScaleBatchSampler

IDENTITY = "identity"


# ---------------------------------------------------------------------------------------------------------
# EfficientFormer V1: Gumbel MetaPath supernet
# ---------------------------------------------------------------------------------------------------------
class MetaPath(nn.Module):
    """One block position: candidate blocks mixed by Gumbel-softmax weights. (B, C, H, W) -> (B, C, H, W).

    `kinds` orders the candidates (and `alpha`); "identity" has no module. An MB3D candidate works on
    tokens, so the path flattens (B, C, H, W) -> (B, N, C) around it and folds the result back.
    """

    def __init__(self, ops: dict[str, nn.Module], kinds: tuple[str, ...]):
        super().__init__()
        self.kinds = kinds
        self.ops = nn.ModuleDict(ops)
        self.alpha = nn.Parameter(torch.zeros(len(kinds)))

    def run(self, kind: str, x: torch.Tensor) -> torch.Tensor:
        if kind == IDENTITY:
            return x
        if kind == "meta3d":
            B, C, H, W = x.shape
            y = self.ops[kind](x.flatten(2).transpose(1, 2))  # (B, N, C)
            return y.transpose(1, 2).reshape(B, C, H, W)
        return self.ops[kind](x)

    def forward(self, x: torch.Tensor, tau: float) -> torch.Tensor:
        if not self.training:  # evaluation: the most likely candidate only
            return self.run(self.kinds[int(self.alpha.argmax())], x)
        # one-hot in value, softmax((alpha + g) / tau) in gradient: every candidate runs, so each alpha
        # learns from its candidate's output even when another one was drawn
        w = F.gumbel_softmax(self.alpha, tau=tau, hard=True)  # (K,)
        return sum(w[i] * self.run(kind, x) for i, kind in enumerate(self.kinds))

    def probabilities(self) -> torch.Tensor:
        return self.alpha.detach().softmax(0)  # (K,)

    def importance(self) -> float:
        """The seed's MetaPath score: (p_4D [+ p_3D]) / p_I."""
        p = self.probabilities()
        p_id = float(p[self.kinds.index(IDENTITY)])
        return (1.0 - p_id) / max(p_id, 1e-12)


class GumbelSupernet(nn.Module):
    """EfficientFormer V1 MetaPath supernet over `space` (the `efficientformer` space or one built with
    its spec generator). Input (B, 3, S, S) at `img_size`; output logits (B, num_classes)."""

    def __init__(self, space: SearchSpace, img_size: int, num_classes: int):
        super().__init__()
        self.space, self.img_size, self.num_classes = space, img_size, num_classes
        self.spec = space.spec(space.largest(), img_size)
        self.tau = 1.0  # set by the training loop (`temperature`)
        plan = plan_network(self.spec, num_classes=num_classes)
        base = LatvitNet(self.spec, num_classes=num_classes)  # stem, downsampling convs, head: named as a subnet's
        if not base.tokens_out:
            raise LatvitError(f"space {space.name}: the Gumbel supernet needs MB3D blocks in the last stage")
        self.stem, self.head = base.stem, base.head
        last = len(self.spec.stages) - 1
        downs, paths = [], []
        for si, stage in enumerate(self.spec.stages):
            planned = [p for p in plan.blocks if p.module_path.startswith(f"stages.{si}.")]
            has_down = stage.blocks[0].kind == "conv_bn_act"
            downs.append(base.stages[si].blocks[0] if has_down else nn.Identity())
            templates = {b.kind: b for b in stage.blocks if b.kind in ("meta4d", "meta3d")}
            kinds = ("meta4d", "meta3d", IDENTITY) if si == last else ("meta4d", IDENTITY)
            stage_paths = []
            for p in planned[1 if has_down else 0 :]:
                ops = {}
                for kind in kinds[:-1]:
                    block = templates.get(kind) or BlockSpec(kind, p.c_in)
                    ops[kind] = BLOCK_KINDS[kind].module.from_spec(block, p.c_in, p.h, p.w, 0.0)
                stage_paths.append(MetaPath(ops, kinds))
            paths.append(nn.ModuleList(stage_paths))
        self.downs, self.paths = nn.ModuleList(downs), nn.ModuleList(paths)
        for m in self.paths.modules():  # as LatvitNet initialises its linears
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # (B, C0, S/4, S/4)
        for down, paths in zip(self.downs, self.paths):
            x = down(x)
            for path in paths:
                x = path(x, self.tau)
        x = x.flatten(2).transpose(1, 2)  # (B, C, H, W) -> (B, N, C): the head reads tokens, as a subnet's
        return self.head(self.head.forward_norm(x))

    def alphas(self) -> list[nn.Parameter]:
        return [p.alpha for stage in self.paths for p in stage]

    def importance(self) -> tuple[tuple[float, ...], ...]:
        """Per stage, per MetaPath: the seed's importance score (see `MetaPath.importance`)."""
        return tuple(tuple(p.importance() for p in stage) for stage in self.paths)

    def start_state(self) -> PathState:
        """The supernet's own layout: MB4D everywhere, MB3D in the last `extra` paths of the last stage."""
        big = self.space.largest()
        kinds = [["meta4d"] * len(stage) for stage in self.paths]
        for pi in range(len(kinds[-1]) - big.extra, len(kinds[-1])):
            kinds[-1][pi] = "meta3d"
        return PathState(tuple(map(tuple, kinds)), big.widths, self.space.expansions[-1])

    def source_name(self, name: str, state: PathState) -> str:
        """Subnet parameter name -> the supernet tensor it inherits (the kept candidate of each path)."""
        if not name.startswith("stages."):
            return name
        _, si, _, bi, rest = name.split(".", 4)
        si, bi = int(si), int(bi)
        offset = 0 if isinstance(self.downs[si], nn.Identity) else 1
        if bi < offset:
            return f"downs.{si}.{rest}"
        kept = [pi for pi, kind in enumerate(state.kinds[si]) if kind != IDENTITY]
        pi = kept[bi - offset]
        return f"paths.{si}.{pi}.ops.{state.kinds[si][pi]}.{rest}"

    def subnet(self, state: PathState) -> LatvitNet:
        """The subnet `state` describes, as a plain latvit network with the supernet's weights (leading
        slices where a stage is narrower). Its BatchNorm statistics are the supernet's: re-estimate them
        (`latvit.search.inherit.recalibrate_bn`) before evaluating a narrowed subnet."""
        sub = build_model(self.space.spec(state.choice(), self.img_size), num_classes=self.num_classes)
        own = self.state_dict()
        return inherit_weights(_Weights({n: own[self.source_name(n, state)] for n in sub.state_dict()}), sub)


class _Weights:
    """A state dict dressed as a module, for `inherit_weights` (which slices what `state_dict()` returns)."""

    def __init__(self, state: dict[str, torch.Tensor]):
        self._state = state

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self._state


def temperature(step: int, total: int, start: float = 5.0, end: float = 0.5) -> float:
    """Gumbel-softmax temperature at `step` of `total`: exponential annealing from `start` to `end`
    (high early: soft, exploratory mixing; low late: close to the discrete choice)."""
    return start * (end / start) ** (min(step, total) / max(total - 1, 1))


# ---------------------------------------------------------------------------------------------------------
# EfficientFormerV2: slimmable supernet, sandwich rule, switchable BatchNorm
# ---------------------------------------------------------------------------------------------------------
def sandwich_choices(space: SearchSpace, rng: random.Random) -> list[Choice]:
    """The sandwich rule's subnets of one step: the largest, the smallest and two random ones."""
    return [space.largest(), space.smallest(), space.sample(rng), space.sample(rng)]


def _norm_key(name: str) -> str:
    return name.replace(".", "/")  # module-dict keys may not hold dots


@dataclass
class _Subnet:
    module: LatvitNet
    sources: dict[str, tuple[str, tuple[int, ...], int]]  # subnet tensor -> (supernet tensor, shape, fused chunks)
    norms: dict[str, tuple[str, int]]  # subnet BatchNorm module -> (norm key, width)


class SandwichSupernet(nn.Module):
    """EfficientFormerV2 slimmable supernet over `space`. `forward(x, choice)` runs one subnet on the
    shared weights: (B, 3, S, S) -> (B, num_classes); `subnet(choice)` gives it as a standalone network."""

    def __init__(
        self, space: SearchSpace, img_size: int, num_classes: int, drop_path: float = 0.1, cache_size: int = 8
    ):
        super().__init__()
        self.space, self.img_size, self.num_classes, self.drop_path = space, img_size, num_classes, drop_path
        self.net = build_model(space.spec(space.largest(), img_size), num_classes=num_classes)
        self.spec = self.net.spec
        self.norm_paths = {n for n, m in self.net.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
        # the widths every BatchNorm runs at, from subnets covering every (previous width, width, expansion)
        # of every stage (the depth of a stage does not change any BatchNorm's width)
        widths: dict[str, set[int]] = {}
        for choice in self._norm_covering():
            for key, width in self._describe(
                build_model(space.spec(choice, img_size), num_classes=num_classes)
            ).norms.values():
                widths.setdefault(key, set()).add(width)
        self.norms = nn.ModuleDict(
            {key: nn.ModuleDict({str(w): nn.BatchNorm2d(w) for w in sorted(ws)}) for key, ws in sorted(widths.items())}
        )
        self._cache: OrderedDict[Choice, _Subnet] = OrderedDict()
        self.cache_size = cache_size

    def _norm_covering(self) -> list[Choice]:
        s, big = self.space, self.space.largest()
        out = [big, s.smallest()]
        for si in range(len(s.widths)):
            for prev in s.widths[si - 1] if si else (None,):
                for width in s.widths[si]:
                    for e in s.expansions:
                        widths, exps = list(big.widths), list(big.expansions)
                        widths[si], exps[si] = width, (e,) * big.depths[si]
                        if prev is not None:
                            widths[si - 1] = prev
                        out.append(Choice(tuple(widths), big.depths, tuple(exps), big.extra))
        return list(dict.fromkeys(out))

    def _describe(self, sub: LatvitNet) -> _Subnet:
        mapping = block_map(self.spec, sub.spec)
        own = self.net.state_dict()
        sources, norms, fused = {}, {}, fused_projections(sub)
        bn_modules = {n: m for n, m in sub.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
        for name, m in bn_modules.items():
            source = _source_name(name + ".", mapping)[:-1]
            if source not in self.norm_paths:
                raise LatvitError(
                    f"subnet BatchNorm {name} has no counterpart in the supernet: not from space {self.space.name}?"
                )
            norms[name] = (_norm_key(source), m.num_features)
        for name, t in sub.state_dict().items():
            if name.rpartition(".")[0] in bn_modules:
                continue
            source = _source_name(name, mapping)
            if (
                source not in own
                or own[source].dim() != t.dim()
                or any(s < d for s, d in zip(own[source].shape, t.shape))
            ):
                raise LatvitError(
                    f"subnet tensor {name} {tuple(t.shape)} does not fit the supernet's "
                    f"{source}: is the subnet from space {self.space.name}?"
                )
            sources[name] = (source, tuple(t.shape), fused.get(name, 1))
        return _Subnet(sub, sources, norms)

    def _entry(self, choice: Choice) -> _Subnet:
        if choice in self._cache:
            self._cache.move_to_end(choice)
            return self._cache[choice]
        sub = build_model(
            self.space.spec(choice, self.img_size), num_classes=self.num_classes, drop_path_rate=self.drop_path
        )  # drop path: elastic depth within each subnet
        entry = self._describe(sub)
        for name, (key, width) in entry.norms.items():
            if key not in self.norms or str(width) not in self.norms[key]:
                raise LatvitError(
                    f"BatchNorm {name} runs at {width} channels, a width the supernet of "
                    f"{self.space.name} has no statistics for: is the choice from this space?"
                )
        self._cache[choice] = entry
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return entry

    def tensors(self, choice: Choice) -> dict[str, torch.Tensor]:
        """The subnet's parameters and buffers as views of the supernet's: leading slices of the shared
        tensors, and the BatchNorm tensors of each norm's own width (updated in place in training)."""
        entry = self._entry(choice)
        shared = dict(self.net.named_parameters()) | dict(self.net.named_buffers())
        out = {
            name: leading_slice(shared[src], shape, chunks) if shape else shared[src]
            for name, (src, shape, chunks) in entry.sources.items()
        }
        for name, (key, width) in entry.norms.items():
            bn = self.norms[key][str(width)]
            for leaf in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
                out[f"{name}.{leaf}"] = getattr(bn, leaf)
        return out

    def forward(self, x: torch.Tensor, choice: Choice) -> torch.Tensor:
        sub = self._entry(choice).module
        sub.train(self.training)
        return torch.func.functional_call(sub, self.tensors(choice), (x,))

    @torch.no_grad()
    def subnet(self, choice: Choice) -> LatvitNet:
        """The subnet as a standalone network (no drop path, eval mode) with copies of its inherited
        weights and its own width's BatchNorm statistics: ready to evaluate, no re-estimation."""
        sub = build_model(self.space.spec(choice, self.img_size), num_classes=self.num_classes)
        sub.load_state_dict({k: v.detach().clone() for k, v in self.tensors(choice).items()})
        return sub.eval()


# ---------------------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------------------
@dataclass
class SupernetTraining:
    """How a supernet trains. lr/weight_decay: AdamW on the weights (cosine decay to 0 over the run);
    alpha_lr: Adam on the Gumbel alphas (constant); tau: the Gumbel temperature's (start, end)."""

    data: str = "synthetic"
    epochs: int = 1
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    alpha_lr: float = 3e-3
    tau: tuple[float, float] = (5.0, 0.5)
    drop_path: float = 0.1
    train_subset: int | None = None
    seed: int = 0
    threads: int | None = None
    checkpoint_every: int = 50
    progress: bool = True


def train_gumbel(
    space: SearchSpace,
    img_size: int,
    cfg: SupernetTraining,
    run: Path,
    on_step: Callable[[int, float], None] | None = None,
) -> GumbelSupernet:
    """Train (or resume, or load if finished) the Gumbel MetaPath supernet in `run`; returns it in eval mode."""
    num_classes = _num_classes(cfg)
    torch.manual_seed(cfg.seed)
    net = GumbelSupernet(space, img_size, num_classes)
    alphas = {id(a) for a in net.alphas()}
    weights = torch.optim.AdamW(
        [p for p in net.parameters() if id(p) not in alphas], lr=cfg.lr, weight_decay=cfg.weight_decay
    )
    arch = torch.optim.Adam(net.alphas(), lr=cfg.alpha_lr, betas=(0.5, 0.999))

    def step(x, y, t, total):
        net.tau = temperature(t, total, *cfg.tau)
        loss = F.cross_entropy(net(x), y)
        weights.zero_grad(set_to_none=True)
        arch.zero_grad(set_to_none=True)
        loss.backward()
        weights.step()
        arch.step()
        return loss.item()

    return _fit("gumbel", net, [weights, arch], step, space, img_size, cfg, Path(run), on_step)


def train_sandwich(
    space: SearchSpace,
    img_size: int,
    cfg: SupernetTraining,
    run: Path,
    on_step: Callable[[int, float], None] | None = None,
) -> SandwichSupernet:
    """Train (or resume, or load if finished) the slimmable supernet in `run` with the sandwich rule."""
    num_classes = _num_classes(cfg)
    torch.manual_seed(cfg.seed)
    net = SandwichSupernet(space, img_size, num_classes, drop_path=cfg.drop_path)
    shared_norms = {id(p) for n, p in net.net.named_parameters() if n.rpartition(".")[0] in net.norm_paths}
    optimizer = torch.optim.AdamW(
        [p for p in net.parameters() if id(p) not in shared_norms], lr=cfg.lr, weight_decay=cfg.weight_decay
    )

    def step(x, y, t, total):
        optimizer.zero_grad(set_to_none=True)
        losses = []
        for choice in sandwich_choices(space, random.Random(cfg.seed * 1_000_003 + t)):
            loss = F.cross_entropy(net(x, choice), y)
            loss.backward()  # gradients of the four subnets add up in the shared tensors
            losses.append(loss.item())
        optimizer.step()
        return sum(losses) / len(losses)

    return _fit("sandwich", net, [optimizer], step, space, img_size, cfg, Path(run), on_step)


def _num_classes(cfg: SupernetTraining) -> int:
    return len(open_dataset(cfg.data, "train").classes)


def _fit(
    kind: str,
    net: nn.Module,
    optimizers: list,
    step_fn,
    space: SearchSpace,
    img_size: int,
    cfg: SupernetTraining,
    run: Path,
    on_step,
) -> nn.Module:
    """The loop both supernets share: deterministic batches, cosine lr on the first optimiser, reseeded
    steps, atomic checkpoints; a finished run is loaded, an unfinished one resumed."""
    meta = {
        "kind": kind,
        "space": space.name,
        "img_size": img_size,
        "num_classes": net.num_classes,
        "epochs": cfg.epochs,
        "batch_size": cfg.batch_size,
        "seed": cfg.seed,
        "train_subset": cfg.train_subset,
    }
    last = run / ckpt.LAST
    payload = ckpt.load_checkpoint(last) if last.is_file() else None
    if payload is not None:
        saved = payload["meta"]
        changed = ", ".join(f"{k}={saved.get(k)!r}" for k, v in meta.items() if saved.get(k) != v)
        if changed:
            raise LatvitError(
                f"{run} holds a {saved.get('kind')} supernet trained with other settings ({changed}); "
                "use the same settings to resume, or another --output"
            )
        net.load_state_dict(payload["supernet"])
        for opt, state in zip(optimizers, payload["optimizers"]):
            opt.load_state_dict(state)
    if payload is not None and payload.get("done"):
        return net.eval()
    step, history = (payload["step"], payload["history"]) if payload else (0, [])
    base = open_dataset(cfg.data, "train")
    base = Subset(base, cfg.train_subset) if cfg.train_subset else base
    spec = net.spec
    data = Transformed(base, partial(train_transform, mean=spec.mean, std=spec.std), img_size, seed=cfg.seed)
    sampler = ScaleBatchSampler(len(base), min(cfg.batch_size, len(base)), img_size, seed=cfg.seed)
    per_epoch = len(sampler.epoch_batches(0))
    total = per_epoch * cfg.epochs

    def save(done: bool) -> None:
        run.mkdir(parents=True, exist_ok=True)
        ckpt.save_checkpoint(
            last,
            {
                "meta": meta,
                "supernet": net.state_dict(),
                "step": step,
                "done": done,
                "optimizers": [o.state_dict() for o in optimizers],
                "history": history,
            },
        )

    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    progress = _progress(cfg.progress)
    try:
        task = progress.add_task(f"{kind} supernet", total=total, completed=step, info="") if progress else None
        net.train()
        while step < total:
            epoch, batch = divmod(step, per_epoch)
            sampler.set_epoch(epoch, batch)
            data.set_epoch(epoch)
            for indices in sampler:
                items = [data[k] for k in indices]
                x = torch.stack([img for img, _ in items])  # (B, 3, S, S)
                y = torch.tensor([label for _, label in items])  # (B,)
                seed_all(step_seed(cfg.seed, epoch, batch, 0))  # Gumbel noise, drop path, sampled subnets
                for group in optimizers[0].param_groups:
                    group["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * step / total))
                loss = step_fn(x, y, step, total)
                if not math.isfinite(loss):
                    raise LatvitError(f"the {kind} supernet's loss became {loss} at step {step}; lower the lr")
                step, batch = step + 1, batch + 1
                history.append(loss)
                if progress:
                    progress.update(task, completed=step, info=f"loss {loss:.4f}")
                if step < total and cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                    save(False)
                if on_step:
                    on_step(step, loss)
        save(True)
    finally:
        if progress:
            progress.stop()
        torch.set_num_threads(threads)
    return net.eval()


def _progress(enabled: bool):
    if not enabled:
        return None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"),
        console=Console(stderr=True),
    )
    progress.start()
    return progress


__all__ = [
    "GumbelSupernet",
    "MetaPath",
    "SandwichSupernet",
    "SupernetTraining",
    "sandwich_choices",
    "temperature",
    "train_gumbel",
    "train_sandwich",
]
