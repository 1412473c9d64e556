"""The contract every registered method keeps, on small classifiers of several architectures.

Parametrised over ``provex.methods()`` (a new method is covered by its registration alone) and
a handful of architectures the zoo does not have: a plain ``Sequential``, BatchNorm + MaxPool,
a residual block with BatchNorm, a GELU + LayerNorm MLP; 1 and 3 channels; 8x8 to 64x64. Each
method runs with its registered ``cheap_options`` (small budgets, same code path) and checks:

* relevance of ``x``'s shape, in the model's dtype, on ``x``'s device, finite; target and
  prediction (N,);
* an image's map is the same alone as in a batch (given as float64 alone: the input is cast);
* the same seed gives the same map, also inside ``torch.no_grad()`` / ``torch.inference_mode()``
  (the repeat of the single image);
* the input, the model (parameters, buffers, modes, hooks, gradients) and the global random
  streams are untouched;
* unknown options are refused;
* ``info["model_calls"]`` counts inputs through the model (checked against a hook on the
  model's first layer: passes through a converted copy may add ``model_calls_converted``)
  and ``info["seconds"]`` is the wall time.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

import provex
from provex.reference import ReferenceWarning


class Residual(nn.Module):
    """conv-BN-ReLU stem, one basic residual block, global average pool, dense head."""

    def __init__(self, c: int, classes: int = 3) -> None:
        super().__init__()
        self.stem, self.bn0 = nn.Conv2d(c, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6)
        self.conv1, self.bn1 = nn.Conv2d(6, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6)
        self.conv2, self.bn2 = nn.Conv2d(6, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(6, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu(self.bn0(self.stem(x)))
        out = self.relu(self.bn1(self.conv1(h)))
        out = self.relu(self.bn2(self.conv2(out)) + h)
        return self.head(torch.flatten(self.pool(out), 1))


def _sequential(c: int, s: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(c, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(s * s, 3))


def _bn_maxpool(c: int, s: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(c, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 6, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(24, 3),
    )


def _gelu_mlp(c: int, s: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(c * s * s, 16), nn.GELU(), nn.LayerNorm(16), nn.Linear(16, 3))


ARCHITECTURES: dict[str, Callable[[int, int], nn.Module]] = {
    "sequential": _sequential,
    "bn-maxpool": _bn_maxpool,
    "residual": lambda c, s: Residual(c),
    "gelu-mlp": _gelu_mlp,
}
# (architecture, channels, side)
CASES = [("sequential", 1, 8), ("bn-maxpool", 3, 16), ("residual", 3, 12), ("gelu-mlp", 1, 20)]
SLOW_CASES = [("bn-maxpool", 3, 64), ("residual", 1, 32), ("gelu-mlp", 3, 64)]


def _model(arch: str, c: int, s: int) -> nn.Module:
    torch.manual_seed(0)
    model = ARCHITECTURES[arch](c, s)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):  # statistics that are not the identity
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _first_leaf(model: nn.Module) -> nn.Module:
    return next(m for m in model.modules() if not list(m.children()))


def _hooks(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) + len(m._backward_pre_hooks)
        for m in model.modules()
    )


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    scale = float(b.abs().max()) if b.numel() else 0.0
    return bool(torch.allclose(a.double(), b.double(), rtol=1e-3, atol=1e-4 * scale + 1e-7))


def _check(method: str, arch: str, c: int, s: int, in_inference_mode: bool) -> None:
    spec = provex.registry.get_method(method)
    model = _model(arch, c, s)
    torch.manual_seed(1)
    x = torch.rand(2, c, s, s)
    x0 = x.clone()
    opts = dict(spec.cheap_options)
    if "seed" in spec.options:
        opts["seed"] = 3
    state = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    hooks = _hooks(model)
    leaf_calls = [0]
    handle = _first_leaf(model).register_forward_pre_hook(
        lambda _m, a: leaf_calls.__setitem__(0, leaf_calls[0] + a[0].shape[0])
    )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReferenceWarning)  # no card, no reference: per-image statistics
        exp = provex.explain(model, x, method, **opts)
        calls_first = leaf_calls[0]
        handle.remove()

        # the input and the model are untouched
        assert torch.equal(x, x0) and not x.requires_grad
        after = model.state_dict()
        assert set(after) == set(state) and all(torch.equal(after[k], v) for k, v in state.items())
        assert [m.training for m in model.modules()] == modes
        assert _hooks(model) == hooks and all(p.grad is None for p in model.parameters())

        # shape, dtype, device, finite
        rel = exp.relevance
        assert rel.shape == x.shape and rel.dtype == x.dtype and rel.device == x.device
        assert bool(torch.isfinite(rel).all()), "non-finite relevance"
        assert exp.method == method and exp.target.shape == (2,) and exp.prediction.shape == (2,)
        assert exp.target.dtype == torch.long and exp.target.tolist() == model(x).argmax(1).tolist()

        # cost keys with one meaning: inputs through the model (+ through a converted copy)
        calls = exp.info["model_calls"]
        converted = sum(int(exp.info.get(k, 0) or 0) for k in provex.registry.CONVERTED_CALL_KEYS)
        assert isinstance(calls, int) and calls >= 2
        assert calls_first <= calls <= calls_first + converted, (calls, calls_first, converted)
        assert isinstance(exp.info["seconds"], float) and exp.info["seconds"] > 0

        # one image, one answer: alone (and as float64) equals its row in the batch
        alone = provex.explain(model, x[1:2].double(), method, **opts)
        assert alone.relevance.dtype == torch.float32
        assert _close(alone.relevance[0], rel[1]), "the map depends on the batch"

        # same seed, same map (inside no_grad / inference_mode too); the global random streams
        # are untouched (checked on this repeat: a first call may import modules that draw)
        torch.manual_seed(123)
        np.random.seed(123)
        random.seed(123)
        rng = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
        context = torch.inference_mode() if in_inference_mode else torch.no_grad()
        with context:
            again = provex.explain(model, x[1:2].double(), method, **opts)
        assert torch.equal(torch.get_rng_state(), rng[0]), "the global torch RNG was used"
        assert np.array_equal(np.random.get_state()[1], rng[1]), "the global numpy RNG was used"
        assert random.getstate() == rng[2], "Python's global RNG was used"
        assert _close(again.relevance, alone.relevance), "same seed gave another map"

    with pytest.raises(ValueError, match="unknown option"):
        provex.explain(model, x, method, no_such_option=1)


METHODS = provex.methods()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("arch", "channels", "side"), CASES, ids=[f"{a}-{c}x{s}" for a, c, s in CASES])
def test_contract(method: str, arch: str, channels: int, side: int) -> None:
    _check(method, arch, channels, side, in_inference_mode=arch == "sequential")


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("arch", "channels", "side"), SLOW_CASES, ids=[f"{a}-{c}x{s}" for a, c, s in SLOW_CASES])
def test_contract_large(method: str, arch: str, channels: int, side: int) -> None:
    _check(method, arch, channels, side, in_inference_mode=False)


def test_every_method_has_cheap_options_within_its_options() -> None:
    for spec in provex.methods(details=True):
        assert set(spec.cheap_options) <= set(spec.options), spec.name
        for old, new in spec.deprecated.items():
            assert new in spec.options and old not in spec.options, spec.name
