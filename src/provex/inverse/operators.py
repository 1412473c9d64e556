"""Linear forward operators y = A x for image inverse problems, with their adjoints.

Every operator works on batches x of shape (N, *in_shape) and returns (N, *out_shape); it
checks the shape (a mismatch is a ``ValueError`` naming the argument), and provides:

* ``adjoint(y)``: A^T y, exact (tested by <Ax, y> = <x, A^T y>);
* ``norm_sq()``: sigma_max(A)^2, the Lipschitz constant of grad 1/2 ||Ax - y||^2 (closed form
  where there is one, power iteration otherwise), for the PnP-PGD step-size condition;
* ``normal_solve(b, rho)``: (A^T A + rho I)^{-1} b, the ADMM x-update (closed form in Fourier
  space for blur, elementwise for inpainting and denoising, Cholesky for compressed sensing);
* ``initial_guess(y)``: where iterative solvers start. A^T y, except for inpainting, where the
  missing pixels of A^T y are zeros: there it is a normalised-convolution fill of the observed
  pixels. A denoiser trained at a small noise level (an LPN at sigma = 0.1) repairs zeros in
  large holes only very slowly, so PnP started at A^T y stalls when most pixels are missing.

Operators: :class:`Denoising` (identity), :class:`GaussianBlur` (circular convolution by FFT),
:class:`RandomInpainting` (keep a random subset of pixels) and :class:`CompressedSensing`
(a Gaussian matrix with N(0, 1/m) entries). Use ``measure(x, noise_std, generator)`` to simulate data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from provex.checks import choose

__all__ = [
    "OPERATORS",
    "CompressedSensing",
    "Denoising",
    "GaussianBlur",
    "LinearOperator",
    "RandomInpainting",
    "make_operator",
]


def _shape(shape: Sequence[int], name: str = "shape") -> tuple[int, ...]:
    s = tuple(int(v) for v in shape)
    if not s or any(v <= 0 for v in s):
        raise ValueError(f"{name} must be a non-empty tuple of positive sizes, got {tuple(shape)}")
    return s


class LinearOperator:
    """Base class: subclasses set ``in_shape``/``out_shape`` and implement ``_apply``/``_adjoint``."""

    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]

    def _apply(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _check(self, t: torch.Tensor, shape: tuple[int, ...], name: str, what: str) -> None:
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise ValueError(f"{name} must be a floating torch.Tensor")
        if t.ndim != len(shape) + 1 or tuple(t.shape[1:]) != shape:
            raise ValueError(
                f"{name} has shape {tuple(t.shape)} but this {type(self).__name__} expects {what} of shape (N, "
                f"{', '.join(map(str, shape))})"
            )

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """A x."""
        self._check(x, self.in_shape, "x", "images")
        return self._apply(x)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """A^T y."""
        self._check(y, self.out_shape, "y", "measurements")
        return self._adjoint(y)

    def measure(
        self, x: torch.Tensor, noise_std: float = 0.0, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Simulated measurements A x + noise_std * N(0, I)."""
        if noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std}")
        y = self(x)
        if noise_std > 0:
            y = y + noise_std * torch.randn(y.shape, generator=generator, dtype=y.dtype).to(y.device)
        return y

    def initial_guess(self, y: torch.Tensor) -> torch.Tensor:
        """A starting image for iterative solvers: A^T y (subclasses may do better)."""
        return self.adjoint(y)

    def norm_sq(self, iters: int = 200, seed: int = 0) -> float:
        """sigma_max(A)^2 by power iteration on A^T A (subclasses override with closed forms)."""
        gen = torch.Generator().manual_seed(seed)
        v = torch.randn((1, *self.in_shape), generator=gen, dtype=torch.float64)
        v = v / v.norm()
        lam = 0.0
        for _ in range(iters):
            w = self._adjoint(self._apply(v))
            lam = float(w.norm())
            if lam == 0:
                return 0.0
            v = w / lam
        return lam

    def normal_solve(self, b: torch.Tensor, rho: float, tol: float = 1e-10, max_iter: int = 500) -> torch.Tensor:
        """(A^T A + rho I)^{-1} b by conjugate gradient, per sample (subclasses override with closed forms)."""
        if rho <= 0:
            raise ValueError(f"rho must be positive, got {rho}")
        x = torch.zeros_like(b)
        r = b.clone()
        p = r.clone()
        rs = r.flatten(1).pow(2).sum(1)
        b_norm = b.flatten(1).norm(dim=1).clamp_min(1e-30)
        for _ in range(max_iter):
            if bool((rs.sqrt() <= tol * b_norm).all()):
                break
            ap = self._adjoint(self._apply(p)) + rho * p
            step = rs / (p * ap).flatten(1).sum(1).clamp_min(1e-30)
            x = x + step.view(-1, *[1] * (b.ndim - 1)) * p
            r = r - step.view(-1, *[1] * (b.ndim - 1)) * ap
            rs_new = r.flatten(1).pow(2).sum(1)
            p = r + (rs_new / rs.clamp_min(1e-30)).view(-1, *[1] * (b.ndim - 1)) * p
            rs = rs_new
        return x

    def __repr__(self) -> str:
        return f"{type(self).__name__}(in_shape={self.in_shape}, out_shape={self.out_shape})"


class Denoising(LinearOperator):
    """A = I (the measurement is the noisy image itself)."""

    def __init__(self, shape: Sequence[int] = (1, 28, 28)):
        self.in_shape = self.out_shape = _shape(shape)

    def _apply(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return y.clone()

    def norm_sq(self, iters: int = 0, seed: int = 0) -> float:
        return 1.0

    def normal_solve(self, b: torch.Tensor, rho: float, tol: float = 0.0, max_iter: int = 0) -> torch.Tensor:
        if rho <= 0:
            raise ValueError(f"rho must be positive, got {rho}")
        return b / (1.0 + rho)


class GaussianBlur(LinearOperator):
    """Circular convolution of each channel with a normalised Gaussian kernel of std ``sigma`` pixels."""

    def __init__(self, shape: Sequence[int] = (1, 28, 28), sigma: float = 1.0, radius: int | None = None):
        self.in_shape = self.out_shape = _shape(shape)
        if len(self.in_shape) != 3:
            raise ValueError(f"shape must be (C, H, W), got {self.in_shape}")
        if not (sigma > 0 and math.isfinite(sigma)):
            raise ValueError(f"sigma must be positive, got {sigma}")
        _, h, w = self.in_shape
        radius = math.ceil(3 * sigma) if radius is None else int(radius)
        if radius < 0 or 2 * radius + 1 > min(h, w):
            raise ValueError(f"radius must be in [0, {(min(h, w) - 1) // 2}] for images of {h}x{w}, got {radius}")
        self.sigma, self.radius = float(sigma), radius
        t = torch.arange(-radius, radius + 1, dtype=torch.float64)
        g = torch.exp(-0.5 * (t / sigma) ** 2)
        k2 = torch.outer(g, g)
        self.kernel = k2 / k2.sum()
        # Kernel centred at pixel (0, 0) with wrap-around, so the blur does not shift the image.
        full = torch.zeros(h, w, dtype=torch.float64)
        for i, di in enumerate(range(-radius, radius + 1)):
            for j, dj in enumerate(range(-radius, radius + 1)):
                full[di % h, dj % w] += self.kernel[i, j]
        self._freq = torch.fft.rfft2(full)

    def _mult(self, x: torch.Tensor, freq: torch.Tensor) -> torch.Tensor:
        h, w = self.in_shape[1:]
        return torch.fft.irfft2(torch.fft.rfft2(x) * freq.to(x.device), s=(h, w)).to(x.dtype)

    def _apply(self, x: torch.Tensor) -> torch.Tensor:
        return self._mult(x, self._freq)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self._mult(y, self._freq.conj())

    def norm_sq(self, iters: int = 0, seed: int = 0) -> float:
        return float(self._freq.abs().max() ** 2)

    def normal_solve(self, b: torch.Tensor, rho: float, tol: float = 0.0, max_iter: int = 0) -> torch.Tensor:
        if rho <= 0:
            raise ValueError(f"rho must be positive, got {rho}")
        return self._mult(b, 1.0 / (self._freq.abs() ** 2 + rho))


class RandomInpainting(LinearOperator):
    """Keep each pixel (all channels) with probability ``1 - missing``; A x = mask * x (missing pixels 0)."""

    def __init__(self, shape: Sequence[int] = (1, 28, 28), missing: float = 0.5, seed: int = 0):
        self.in_shape = self.out_shape = _shape(shape)
        if len(self.in_shape) != 3:
            raise ValueError(f"shape must be (C, H, W), got {self.in_shape}")
        if not (0.0 <= missing < 1.0):
            raise ValueError(f"missing (fraction of pixels removed) must be in [0, 1), got {missing}")
        self.missing, self.seed = float(missing), int(seed)
        gen = torch.Generator().manual_seed(seed)
        keep = (torch.rand(self.in_shape[1:], generator=gen) >= missing).double()
        self.mask = keep.expand(self.in_shape).clone()

    def _apply(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mask.to(x)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.mask.to(y)

    def norm_sq(self, iters: int = 0, seed: int = 0) -> float:
        return float(self.mask.max())

    def initial_guess(self, y: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
        """Normalised convolution: G * (mask y) / G * mask (Gaussian G of std ``sigma`` pixels).

        A weighted mean of the nearby observed pixels, exact on constant images; a pixel with no
        observed pixel within 3 sigma gets the image's mean observed value.
        """
        self._check(y, self.out_shape, "y", "measurements")
        if not (sigma > 0 and math.isfinite(sigma)):
            raise ValueError(f"sigma must be positive, got {sigma}")
        radius = math.ceil(3 * sigma)
        t = torch.arange(-radius, radius + 1, dtype=y.dtype, device=y.device)
        g = torch.exp(-0.5 * (t / sigma) ** 2)
        c = self.in_shape[0]
        kh = g.view(1, 1, 1, -1).expand(c, 1, 1, -1)
        kv = g.view(1, 1, -1, 1).expand(c, 1, -1, 1)

        def smooth(t_: torch.Tensor) -> torch.Tensor:
            t_ = torch.nn.functional.conv2d(t_, kh, padding=(0, radius), groups=c)
            return torch.nn.functional.conv2d(t_, kv, padding=(radius, 0), groups=c)

        mask = self.mask.to(y).unsqueeze(0)
        masked = y * mask
        num, den = smooth(masked), smooth(mask.expand_as(y).contiguous())
        mean = masked.flatten(2).sum(2) / mask.flatten(2).sum(2).clamp_min(1.0)
        fill = mean.view(*mean.shape, 1, 1).expand_as(y)
        ok = den > 1e-6 * float(g.sum()) ** 2
        return torch.where(ok, num / den.clamp_min(1e-30), fill)

    def normal_solve(self, b: torch.Tensor, rho: float, tol: float = 0.0, max_iter: int = 0) -> torch.Tensor:
        if rho <= 0:
            raise ValueError(f"rho must be positive, got {rho}")
        return b / (self.mask.to(b) + rho)


class CompressedSensing(LinearOperator):
    """y = G vec(x) with G an (m, d) matrix of i.i.d. N(0, 1/m) entries (seeded)."""

    def __init__(self, shape: Sequence[int] = (1, 28, 28), m: int = 300, seed: int = 0):
        self.in_shape = _shape(shape)
        d = math.prod(self.in_shape)
        if int(m) != m or m < 1:
            raise ValueError(f"m (number of measurements) must be a positive integer, got {m}")
        self.out_shape = (int(m),)
        self.m, self.seed = int(m), int(seed)
        gen = torch.Generator().manual_seed(seed)
        self.matrix = torch.randn(self.m, d, generator=gen, dtype=torch.float64) / math.sqrt(self.m)
        self._gram = self.matrix.T @ self.matrix
        self._chol: dict[float, torch.Tensor] = {}

    def _apply(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.matrix.T.to(x)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return (y @ self.matrix.to(y)).reshape(y.shape[0], *self.in_shape)

    def norm_sq(self, iters: int = 0, seed: int = 0) -> float:
        return float(torch.linalg.matrix_norm(self.matrix, ord=2) ** 2)

    def normal_solve(self, b: torch.Tensor, rho: float, tol: float = 0.0, max_iter: int = 0) -> torch.Tensor:
        if rho <= 0:
            raise ValueError(f"rho must be positive, got {rho}")
        key = float(rho)
        if key not in self._chol:
            eye = torch.eye(self._gram.shape[0], dtype=torch.float64)
            self._chol[key] = torch.linalg.cholesky(self._gram + rho * eye)
        sol = torch.cholesky_solve(b.flatten(1).double().T, self._chol[key].to(b.device)).T
        return sol.to(b.dtype).reshape(b.shape)


OPERATORS = {"denoise": Denoising, "blur": GaussianBlur, "inpaint": RandomInpainting, "cs": CompressedSensing}


def make_operator(name: str, shape: Sequence[int] = (1, 28, 28), **kwargs: float) -> LinearOperator:
    """Build an operator by name ("denoise", "blur", "inpaint", "cs") with its keyword settings."""
    return choose("operator", name, OPERATORS)(shape, **kwargs)  # type: ignore[arg-type]
