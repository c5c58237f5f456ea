import os

import pytest
import torch

from latvit.utils import repair_signal_stack

# Tests share 2 cores with nothing else in CI; keep torch from oversubscribing them.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give normalisation statistics and affine parameters, layer scales, attention biases and all biases
    random values (in place); conv and linear weights keep their initialisation so logits stay O(1).

    A fresh model has BN as identity, LayerScale at 1e-5 and zero biases, which would hide wrong key
    mappings and wrong folding; tests that compare two models use this first.
    """
    g = torch.Generator().manual_seed(seed)
    norms = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.LayerNorm)
    with torch.no_grad():
        for module in model.modules():
            for name, t in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
                if not t.dtype.is_floating_point:
                    continue
                noise = torch.randn(t.shape, generator=g) * 0.1
                if name == "running_var":
                    t.copy_(torch.rand(t.shape, generator=g) + 0.5)
                elif name == "gamma":  # LayerScale: trained values are O(0.1-1), not 1e-5
                    t.copy_(torch.rand(t.shape, generator=g) * 0.5 + 0.25)
                elif isinstance(module, norms) and name == "weight":
                    t.copy_(1.0 + noise)
                elif name in ("bias", "running_mean", "attention_biases") or isinstance(module, norms):
                    t.copy_(noise)
    return model


@pytest.fixture
def randomize():
    return randomize_


@pytest.fixture(autouse=True)
def _mend_the_signal_stack():
    """Tests compile OpenVINO models directly too; whatever they leave, the next test starts with a valid
    alternate signal stack (`latvit.utils.repair_signal_stack` says why it can dangle)."""
    yield
    repair_signal_stack()


@pytest.fixture(autouse=True)
def _no_waiting_for_the_host(monkeypatch):
    """A record whose reference ran 15% slower than the fastest seen is timed again after 20 s
    (`latvit.targets.Settle`); on a noisy CI machine a short test protocol can trip that. Tests retry
    without the pause (tests/test_targets.py checks the pauses themselves)."""
    from latvit.targets import base

    monkeypatch.setattr(base, "wait_seconds", lambda seconds: None)


@pytest.fixture(autouse=True)
def _peak_probes_in_process(request, monkeypatch):
    """`latvit bench` probes the machine's GEMM peak in child processes (before the rows, per runtime, after
    them): each pays an interpreter start and torch's import, ~4 s, three per bench run. Tests run the same
    probe functions in this process on a small GEMM instead; a test marked `real_probes` keeps the children
    (tests/test_bench.py's CLI test does, so the isolated path stays tested)."""
    if request.node.get_closest_marker("real_probes"):
        return
    from latvit.latency import bench
    from latvit.targets.worker import resolve_function

    def in_process(target: str, kwargs: dict, threads: int) -> float:
        return resolve_function(target)(**kwargs, size=256, seconds=0.05)

    monkeypatch.setattr(bench, "_probe", in_process)
