"""The distortion ``D(s) = 1/2 E_n[(Phi(x) - Phi(s*x + (1-s)*n))^2]`` and its gradient in ``s``.

``Phi`` is the pre-softmax logit of the explained class, ``n ~ N(m, diag(v))``
(:class:`~provex.rde.noise.GaussianNoise`). A distortion object is built once for N images
and then evaluated on any batch of M masks over components, each mask paired with one of
the N images (``image[j]``), in ONE batched computation chunked by ``batch_size`` model
inputs. This is what lets every Frank-Wolfe problem of every image advance with one model
pass per iteration.

- :class:`MonteCarloDistortion`: B noise draws per evaluation, shared by all masks of that
  evaluation (common random numbers), M*B obfuscated inputs through the model. Fresh draws
  each call (a stochastic objective) or, with ``fixed=True``, the same draws every call (a
  deterministic sample-average objective, e.g. for finite-difference checks).
- :class:`ADFDistortion`: assumed density filtering with ``torch-adf``: the input mean
  ``s*x + (1-s)*m`` and variance ``(1-s)^2 v`` go through the ADF twin of the network, and
  ``D ~= 1/2 [(E Phi(y) - Phi(x))^2 + Var Phi(y)]``: deterministic, one pass of M inputs.
  ``distortion="adf"`` is the paper's diagonal ADF (cheap, biased where the noise becomes
  strongly correlated); ``distortion="adf-lowrank"`` carries a covariance square root with
  one column per pixel (tracks Monte Carlo closely; costs ~one forward pass per pixel).

Both count their calls, model inputs and the seconds spent in model passes.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from provex.rde.adf import to_adf
from provex.rde.components import Components
from provex.rde.noise import GaussianNoise

__all__ = ["ADFDistortion", "Distortion", "MonteCarloDistortion", "make_distortion"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Distortion:
    """Base class: images, targets, reference logits, noise, components and counters."""

    stochastic: bool = False
    kind: str = ""  # the ``distortion=`` name that builds this estimator

    def __init__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        target: torch.Tensor,
        noise: GaussianNoise,
        components: Components,
        batch_size: int = 512,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        noise.check_shape(tuple(x.shape[1:]))
        self.model = model
        self.x = x.detach()
        self.target = target.to(x.device)
        self.noise = noise.to(x.device, x.dtype)
        self.components = components
        self.batch_size = batch_size
        self.evaluations = 0
        self.inputs = 0
        self.model_seconds = 0.0
        with torch.no_grad():
            self.phi = model(self.x).gather(1, self.target.view(-1, 1)).squeeze(1)

    @property
    def n(self) -> int:
        return self.components.n

    def counters(self) -> dict[str, float]:
        return {"evaluations": self.evaluations, "model_inputs": self.inputs, "model_seconds": self.model_seconds}

    def __call__(
        self, s: torch.Tensor, image: torch.Tensor, need_grad: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``D`` (M,) of masks ``s`` (M, n) on images ``image`` (M,), and ``dD/ds`` (M, n)."""
        self.evaluations += 1
        values, grads = self._evaluate(s.detach().to(self.x.dtype), image.to(self.x.device), need_grad)
        bad = ~torch.isfinite(values)
        if bool(bad.any()):
            raise ValueError(
                f"distortion is NaN/inf for image(s) {sorted(set(image[bad].tolist()))[:10]}; "
                "check the model's outputs and the noise statistics"
            )
        return values, grads

    def _evaluate(
        self, s: torch.Tensor, image: torch.Tensor, need_grad: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError


class MonteCarloDistortion(Distortion):
    """Monte Carlo estimate with ``n_samples`` noise draws per evaluation."""

    kind = "mc"

    def __init__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        target: torch.Tensor,
        noise: GaussianNoise,
        components: Components,
        n_samples: int = 64,
        batch_size: int = 512,
        seed: int | None = 0,
        fixed: bool = False,
    ) -> None:
        super().__init__(model, x, target, noise, components, batch_size)
        if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
            raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
        self.n_samples = n_samples
        self.generator = torch.Generator(device=x.device)
        if seed is not None:
            self.generator.manual_seed(int(seed))
        else:
            self.generator.seed()
        self.fixed = fixed
        self.stochastic = not fixed
        self._draws = self._draw() if fixed else None

    def _draw(self) -> torch.Tensor:
        return self.noise.sample(self.n_samples, self.generator, tuple(self.x.shape[1:]))

    def _evaluate(
        self, s: torch.Tensor, image: torch.Tensor, need_grad: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        m, b = s.shape[0], self.n_samples
        draws = self._draws if self._draws is not None else self._draw()
        values = torch.zeros(m, dtype=s.dtype, device=s.device)
        grads = torch.zeros_like(s) if need_grad else None
        per_mask = max(1, self.batch_size // b)  # masks per chunk
        per_draw = min(b, self.batch_size)  # draws per chunk
        for a in range(0, m, per_mask):
            rows = slice(a, min(a + per_mask, m))
            img = image[rows]
            xs, phi, tgt = self.x[img].unsqueeze(1), self.phi[img].unsqueeze(1), self.target[img]
            for d0 in range(0, b, per_draw):
                noise = draws[d0 : d0 + per_draw].unsqueeze(0)
                s_c = s[rows].detach().requires_grad_(need_grad)
                with torch.set_grad_enabled(need_grad):
                    pix = self.components.expand(s_c).unsqueeze(1)
                    y = (noise + pix * (xs - noise)).flatten(0, 1)
                    _sync(s.device)
                    start = time.perf_counter()
                    out = self.model(y).view(pix.shape[0], noise.shape[1], -1)
                    out = out.gather(2, tgt.view(-1, 1, 1).expand(-1, noise.shape[1], 1)).squeeze(2)
                    loss = 0.5 * (out - phi).square().sum(1) / b
                    if need_grad:
                        (g,) = torch.autograd.grad(loss.sum(), s_c)
                    _sync(s.device)
                    self.model_seconds += time.perf_counter() - start
                self.inputs += y.shape[0]
                values[rows] += loss.detach()
                if need_grad:
                    grads[rows] += g
        return values, grads


class ADFDistortion(Distortion):
    """Assumed-density-filtering estimate (deterministic) through a ``torch-adf`` twin."""

    def __init__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        target: torch.Tensor,
        noise: GaussianNoise,
        components: Components,
        batch_size: int = 512,
        mode: str = "diag",
    ) -> None:
        self.adf_model = to_adf(model, mode=mode)
        self.mode = mode
        self.kind = "adf" if mode == "diag" else "adf-lowrank"
        super().__init__(model, x, target, noise, components, batch_size)
        # model inputs one mask costs: the low-rank square root has one column per pixel
        self.rank = 1 if mode == "diag" else self.x[0].numel()

    def moments(self, s: torch.Tensor, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ADF mean and variance of the target logit under the masks ``s`` (differentiable)."""
        pix = self.components.expand(s)
        xs = self.x[image]
        mean_in = xs + (1 - pix) * (self.noise.mean - xs)
        tgt = self.target[image].view(-1, 1)
        if self.mode == "diag":
            out_mean, out_var = self.adf_model(mean_in, (1 - pix).square() * self.noise.var)
            return out_mean.gather(1, tgt).squeeze(1), out_var.gather(1, tgt).squeeze(1)
        sd = ((1 - pix) * self.noise.var.sqrt()).expand_as(mean_in)
        root = torch.diag_embed(sd.flatten(1)).view(*mean_in.shape, self.rank)
        out_mean, out_root = self.adf_model(mean_in, root)
        var = out_root.gather(1, tgt.unsqueeze(-1).expand(-1, 1, self.rank)).square().sum(-1)
        return out_mean.gather(1, tgt).squeeze(1), var.squeeze(1)

    def _evaluate(
        self, s: torch.Tensor, image: torch.Tensor, need_grad: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        m = s.shape[0]
        values = torch.empty(m, dtype=s.dtype, device=s.device)
        grads = torch.empty_like(s) if need_grad else None
        chunk = max(1, self.batch_size // self.rank)
        for a in range(0, m, chunk):
            rows = slice(a, min(a + chunk, m))
            s_c = s[rows].detach().requires_grad_(need_grad)
            with torch.set_grad_enabled(need_grad):
                _sync(s.device)
                start = time.perf_counter()
                mu, var = self.moments(s_c, image[rows])
                loss = 0.5 * ((mu - self.phi[image[rows]]).square() + var)
                if need_grad:
                    (g,) = torch.autograd.grad(loss.sum(), s_c)
                    grads[rows] = g
                _sync(s.device)
                self.model_seconds += time.perf_counter() - start
            self.inputs += s_c.shape[0] * self.rank
            values[rows] = loss.detach()
        return values, grads


KINDS = ("adf", "adf-lowrank", "mc")


def make_distortion(
    kind: str,
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    noise: GaussianNoise,
    components: Components,
    *,
    n_samples: int = 64,
    batch_size: int = 512,
    seed: int | None = 0,
    fixed_noise: bool = False,
) -> Distortion:
    """``kind`` is ``"adf"``, ``"adf-lowrank"`` or ``"mc"`` (Monte Carlo); a clear error otherwise."""
    if kind == "adf":
        return ADFDistortion(model, x, target, noise, components, batch_size)
    if kind == "adf-lowrank":
        return ADFDistortion(model, x, target, noise, components, batch_size, mode="lowrank")
    if kind == "mc":
        return MonteCarloDistortion(model, x, target, noise, components, n_samples, batch_size, seed, fixed_noise)
    raise ValueError(f"distortion must be one of {KINDS}, got {kind!r}")
