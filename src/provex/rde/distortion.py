"""The distortion ``D(s) = 1/2 E_n[(Phi(x) - Phi(s*x + (1-s)*n))^2]`` and its gradient in ``s``.

``Phi`` is the pre-softmax logit of the explained class, ``n ~ N(m, diag(v))``
(:class:`~provex.rde.noise.GaussianNoise`, possibly one row of statistics per image). A
distortion object is built once for N images and then evaluated on any batch of M masks over
components, each mask paired with one of the N images (``image[j]``), in ONE batched
computation chunked by ``batch_size`` model inputs. This is what lets every Frank-Wolfe
problem of every image advance with one model pass per iteration.

- :class:`MonteCarloDistortion`: ``n_samples`` noise draws per image and evaluation, shared
  by all masks of that image in that evaluation (common random numbers across rates). Each
  image draws from its own stream (``seed`` per image, :mod:`provex.seeding`), so its value
  never depends on its batch-mates. Fresh draws each call (a stochastic objective) or, with
  ``fixed=True``, the same draws every call (a deterministic sample-average objective: the
  monotone step rule and gap-based stopping apply). Memory: at most ``max(batch_size,
  n_samples)`` noisy inputs at a time, whatever N.
- :class:`ADFDistortion`: assumed density filtering with ``torch-adf``: the input mean
  ``s*x + (1-s)*m`` and variance ``(1-s)^2 v`` go through the ADF twin of the network, and
  ``D ~= 1/2 [(E Phi(y) - Phi(x))^2 + Var Phi(y)]``: deterministic, one pass of M inputs.
  ``distortion="adf"`` is the paper's diagonal ADF (cheap, biased where the noise becomes
  strongly correlated); ``distortion="adf-lowrank"`` carries a covariance square root with
  one column per pixel (tracks Monte Carlo closely; costs ~one forward pass per pixel).
- :func:`make_distortion` builds either; ``"auto"`` takes ADF where every layer of the model
  converts (checked on the images) and Monte Carlo otherwise, and says why.

Every estimator counts its work in a :class:`Meter` (objective calls, model inputs, inputs
that also went backward, seconds in model passes); a call can charge another meter instead.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from provex.checks import check_choice
from provex.rde.adf import check_twin, convert, to_adf
from provex.rde.components import Components
from provex.rde.noise import GaussianNoise
from provex.seeding import derive, generator, image_seeds

__all__ = [
    "KINDS",
    "ADFDistortion",
    "Choice",
    "Distortion",
    "Meter",
    "MonteCarloDistortion",
    "build",
    "choose",
    "make_distortion",
]

KINDS = ("auto", "adf", "adf-lowrank", "mc")
STREAM_DRAWS = 1  # sub-stream of an image's seed for its Monte Carlo draws (provex.seeding.derive)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Meter:
    """Work done by an estimator: ``calls`` (batched evaluations), ``inputs`` through the model
    (one input's forward, or forward+backward, counts 1; one ADF input counts 1 per covariance
    column), ``backward`` (of those, the ones that also went backward), ``adf`` (of those, the
    ones that went through the ADF twin rather than the model itself), ``seconds`` in model passes."""

    calls: int = 0
    inputs: int = 0
    backward: int = 0
    adf: int = 0
    seconds: float = 0.0

    def add(self, inputs: int, backward: bool, seconds: float, adf: bool = False) -> None:
        self.inputs += inputs
        self.backward += inputs if backward else 0
        self.adf += inputs if adf else 0
        self.seconds += seconds


class Distortion:
    """Base class: images, targets, reference logits, noise, components and the meter."""

    stochastic: bool = False
    kind: str = ""  # the ``distortion=`` name that builds this estimator
    reason: str = ""  # why ``distortion="auto"`` chose this estimator (empty otherwise)
    by_image: bool = False
    """Every model pass holds the rows of one image only, chunked the same way alone or in a batch,
    so an image's passes are bit-identical whatever its batch-mates (set by :func:`build`)."""

    def __init__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        target: torch.Tensor,
        noise: GaussianNoise,
        components: Components,
        batch_size: int = 512,
        logits: torch.Tensor | None = None,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        noise.check_shape(tuple(x.shape[1:]), x.shape[0])
        self.model = model
        self.x = x.detach()
        self.target = target.to(x.device)
        self.noise = noise.to(x.device, x.dtype)
        self.components = components
        self.batch_size = batch_size
        self.meter = Meter()
        if logits is None:
            with torch.no_grad():
                start = time.perf_counter()
                logits = model(self.x)
                self.meter.add(self.x.shape[0], False, time.perf_counter() - start)
        self.logits = logits.detach()
        self.phi = self.logits.gather(1, self.target.view(-1, 1)).squeeze(1)

    @property
    def n(self) -> int:
        return self.components.n

    # kept for callers of the first release
    @property
    def evaluations(self) -> int:
        return self.meter.calls

    @property
    def inputs(self) -> int:
        return self.meter.inputs

    @property
    def model_seconds(self) -> float:
        return self.meter.seconds

    def counters(self) -> dict[str, float]:
        return {"evaluations": self.meter.calls, "model_inputs": self.meter.inputs, "model_seconds": self.meter.seconds}

    def __call__(
        self, s: torch.Tensor, image: torch.Tensor, need_grad: bool = True, *, meter: Meter | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``D`` (M,) of masks ``s`` (M, n) on images ``image`` (M,), and ``dD/ds`` (M, n).

        The work is charged to ``meter`` (default: this estimator's own)."""
        meter = self.meter if meter is None else meter
        meter.calls += 1
        image = image.to(self.x.device)
        values, grads = self._evaluate(s.detach().to(self.x.dtype), image, need_grad, meter)
        bad = ~torch.isfinite(values)
        if bool(bad.any()):
            raise ValueError(
                f"distortion is NaN/inf for image(s) {sorted(set(image[bad].tolist()))[:10]}; "
                "check the model's outputs and the noise statistics"
            )
        return values, grads

    def _evaluate(
        self, s: torch.Tensor, image: torch.Tensor, need_grad: bool, meter: Meter
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    def chunks(self, image: torch.Tensor, size: int) -> list[torch.Tensor]:
        """Row indices of each model pass: ``size`` rows at a time; with :attr:`by_image`, per image."""
        rows = torch.arange(image.shape[0], device=image.device)
        if not self.by_image:
            return list(rows.split(size))
        out: list[torch.Tensor] = []
        for i in torch.unique(image).tolist():
            out.extend(rows[image == i].split(size))
        return out

    def linear_scores(self, meter: Meter | None = None) -> torch.Tensor:
        """(N, n) first-order importance of each component: ``(sum g.(x-m))^2 + sum g^2 v``.

        With ``g = dPhi/dx`` at the image, this is twice the linearised distortion of replacing
        that component alone by noise. One forward+backward pass of the model per image; its
        top-k is the start vertex of the budgeted solvers (``init="gradient"``).
        """
        meter = self.meter if meter is None else meter
        n_img = self.x.shape[0]
        out = torch.empty(n_img, self.n, dtype=self.x.dtype, device=self.x.device)
        for rows in self.chunks(torch.arange(n_img, device=self.x.device), self.batch_size):
            xs = self.x[rows].detach().requires_grad_(True)
            _sync(xs.device)
            start = time.perf_counter()
            with torch.enable_grad():
                logit = self.model(xs).gather(1, self.target[rows].view(-1, 1)).sum()
                (g,) = torch.autograd.grad(logit, xs)
            _sync(xs.device)
            meter.add(rows.numel(), True, time.perf_counter() - start)
            mean, var = self.noise.rows(rows)
            first = self.components.reduce(g * (self.x[rows] - mean))
            second = self.components.reduce(g.square() * var.expand_as(g))
            out[rows] = first.square() + second
        return out


class MonteCarloDistortion(Distortion):
    """Monte Carlo estimate with ``n_samples`` noise draws per image and evaluation.

    ``seed``: an int (every image draws from its own stream seeded with it), one int per
    image, or None (fresh entropy). ``fixed=True`` reuses each image's first draws at every
    evaluation (common random numbers: a deterministic objective).
    """

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
        seed: int | Sequence[int] | None = 0,
        fixed: bool = False,
        logits: torch.Tensor | None = None,
    ) -> None:
        super().__init__(model, x, target, noise, components, batch_size, logits)
        if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
            raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
        self.n_samples = n_samples
        self.seeds = image_seeds(seed, x.shape[0])
        self.fixed = fixed
        self.stochastic = not fixed
        self.draw_count = [0] * x.shape[0]  # evaluations each image took part in (its fresh-draw counter)

    def draws(self, image: int, evaluation: int = 0) -> torch.Tensor:
        """The ``n_samples`` noise draws (n_samples, C, H, W) of ``image`` at its ``evaluation``-th call."""
        gen = generator(derive(self.seeds[image], STREAM_DRAWS, evaluation), self.x.device)
        return self.noise.sample(self.n_samples, gen, tuple(self.x.shape[1:]), image if self.noise.per_image else None)

    def _evaluate(
        self, s: torch.Tensor, image: torch.Tensor, need_grad: bool, meter: Meter
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        m, b = s.shape[0], self.n_samples
        which = {}
        for i in sorted(set(image.tolist())):  # each image's draws for this evaluation
            which[i] = 0 if self.fixed else self.draw_count[i]
            self.draw_count[i] += 1
        values = torch.zeros(m, dtype=s.dtype, device=s.device)
        grads = torch.zeros_like(s) if need_grad else None
        per_mask = max(1, self.batch_size // b)  # masks per chunk
        per_draw = min(b, self.batch_size)  # draws per chunk
        for rows in self.chunks(image, per_mask):
            img = image[rows]
            bank = {i: self.draws(i, which[i]) for i in sorted(set(img.tolist()))}
            xs, phi, tgt = self.x[img].unsqueeze(1), self.phi[img].unsqueeze(1), self.target[img]
            for d0 in range(0, b, per_draw):
                noise = torch.stack([bank[i][d0 : d0 + per_draw] for i in img.tolist()])
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
                    meter.add(y.shape[0], need_grad, time.perf_counter() - start)
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
        twin: nn.Module | None = None,
        logits: torch.Tensor | None = None,
    ) -> None:
        self.adf_model = to_adf(model, mode=mode) if twin is None else twin
        self.mode = mode
        self.kind = "adf" if mode == "diag" else "adf-lowrank"
        super().__init__(model, x, target, noise, components, batch_size, logits)
        # model inputs one mask costs: the low-rank square root has one column per pixel
        self.rank = 1 if mode == "diag" else self.x[0].numel()

    def moments(self, s: torch.Tensor, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ADF mean and variance of the target logit under the masks ``s`` (differentiable)."""
        pix = self.components.expand(s)
        xs = self.x[image]
        mean, var = self.noise.rows(image)
        mean_in = xs + (1 - pix) * (mean - xs)
        tgt = self.target[image].view(-1, 1)
        if self.mode == "diag":
            out_mean, out_var = self.adf_model(mean_in, (1 - pix).square() * var)
            return out_mean.gather(1, tgt).squeeze(1), out_var.gather(1, tgt).squeeze(1)
        sd = ((1 - pix) * var.sqrt()).expand_as(mean_in)
        root = torch.diag_embed(sd.flatten(1)).view(*mean_in.shape, self.rank)
        out_mean, out_root = self.adf_model(mean_in, root)
        out_var = out_root.gather(1, tgt.unsqueeze(-1).expand(-1, 1, self.rank)).square().sum(-1)
        return out_mean.gather(1, tgt).squeeze(1), out_var.squeeze(1)

    def _evaluate(
        self, s: torch.Tensor, image: torch.Tensor, need_grad: bool, meter: Meter
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        m = s.shape[0]
        values = torch.empty(m, dtype=s.dtype, device=s.device)
        grads = torch.empty_like(s) if need_grad else None
        chunk = max(1, self.batch_size // self.rank)
        for rows in self.chunks(image, chunk):
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
                meter.add(s_c.shape[0] * self.rank, need_grad, time.perf_counter() - start, adf=True)
            values[rows] = loss.detach()
        return values, grads


@dataclass
class Choice:
    """The resolved estimator: ``kind`` ("adf", "adf-lowrank" or "mc"), the ADF ``twin`` (or None),
    the ``reason`` ``"auto"`` chose it, and the images and seconds the twin's check cost."""

    kind: str
    twin: nn.Module | None = None
    reason: str = ""
    check_inputs: int = 0
    seconds: float = 0.0


def choose(kind: str, model: nn.Module, x: torch.Tensor, logits: torch.Tensor) -> Choice:
    """Resolve ``distortion=kind`` for ``model`` on ``x``.

    ``"auto"`` converts the model to its diagonal ADF twin and checks on ``x`` that the twin
    reproduces ``logits``; if a layer has no exact ADF form or the check fails it chooses
    ``"mc"`` and says why. ``"adf"``/``"adf-lowrank"`` raise instead (every unsupported layer
    listed); ``"mc"`` needs nothing.
    """
    check_choice(kind, "distortion", KINDS)
    if kind == "mc":
        return Choice("mc")
    mode = "lowrank" if kind == "adf-lowrank" else "diag"
    if kind == "auto":
        twin, bad = convert(model, mode)
        if twin is None:
            return Choice("mc", reason=f"auto: Monte Carlo because layer {bad[0]} has no exact ADF form")
    else:
        twin = to_adf(model, mode=mode)  # raises with every unsupported layer
    start = time.perf_counter()
    problem = check_twin(twin, x, logits, mode)  # one ADF pass of the images
    seconds = time.perf_counter() - start
    if problem and kind != "auto":
        raise ValueError(f"distortion={kind!r}: {problem}; use distortion='mc' or 'auto'")
    if problem:
        return Choice("mc", None, f"auto: Monte Carlo because {problem}", x.shape[0], seconds)
    if kind == "auto":
        return Choice("adf", twin, "auto: every layer converts to ADF", x.shape[0], seconds)
    return Choice(kind, twin, "", x.shape[0], seconds)


def build(
    choice: Choice,
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    noise: GaussianNoise,
    components: Components,
    logits: torch.Tensor,
    *,
    n_samples: int = 64,
    batch_size: int = 512,
    seed: int | Sequence[int] | None = 0,
    fixed_noise: bool = False,
    by_image: bool = False,
) -> Distortion:
    """The estimator of ``choice``; its meter starts with the twin's check.

    ``by_image``: see :attr:`Distortion.by_image`."""
    if choice.kind == "mc":
        dist: Distortion = MonteCarloDistortion(
            model, x, target, noise, components, n_samples, batch_size, seed, fixed_noise, logits
        )
    else:
        mode = "lowrank" if choice.kind == "adf-lowrank" else "diag"
        dist = ADFDistortion(model, x, target, noise, components, batch_size, mode, choice.twin, logits)
    dist.meter.add(choice.check_inputs, False, choice.seconds, adf=True)
    dist.reason = choice.reason
    dist.by_image = by_image
    return dist


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
    seed: int | Sequence[int] | None = 0,
    fixed_noise: bool = False,
) -> Distortion:
    """``kind``: ``"auto"``, ``"adf"``, ``"adf-lowrank"`` or ``"mc"`` (Monte Carlo); see :func:`choose`.

    The estimator's ``reason`` says why ``"auto"`` chose it; its meter includes the logits
    pass (N inputs) and the ADF twin's check.
    """
    with torch.no_grad():
        start = time.perf_counter()
        logits = model(x.detach())
        seconds = time.perf_counter() - start
    choice = choose(kind, model, x, logits)
    dist = build(
        choice,
        model,
        x,
        target,
        noise,
        components,
        logits,
        n_samples=n_samples,
        batch_size=batch_size,
        seed=seed,
        fixed_noise=fixed_noise,
    )
    dist.meter.add(x.shape[0], False, seconds)
    return dist
