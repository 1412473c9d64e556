"""Ord-RDE's objective over the Birkhoff polytope: a relevance *ordering* of n components.

For a doubly stochastic S (n x n) and ``p_k`` the vector with ones in its last k entries,
``S p_k`` (the sum of the last k columns of S) is a mask of total rate k. Ord-RDE minimises
the mean distortion over the rates k = 1..n-1,

    F(S) = 1/(n-1) sum_k D(S p_k),   grad F = 1/(n-1) sum_k grad D(S p_k) p_k^T,

so for a permutation S, component i placed at position j is kept by every mask of rate
k >= n - j: late positions are the most relevant. With ``rates_per_iter = m < n - 1`` each
evaluation uses m rates drawn uniformly without replacement (an unbiased estimate of F and
its gradient: the stochastic variant); every image draws its rates from its own stream
(``seed`` per image, :mod:`provex.seeding`), so its ordering never depends on its
batch-mates. All masks of all images go through the distortion in one batched call.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from provex.rde.distortion import Distortion
from provex.seeding import derive, generator, image_seeds

__all__ = ["OrderingObjective", "rate_matrix"]


STREAM_RATES = 2  # sub-stream of an image's seed for its sampled rates (provex.seeding.derive)


def rate_matrix(n: int, rates: torch.Tensor, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(..., n, m) matrices whose column r is ``p_{rates[..., r]}`` (ones in the last ``rates[..., r]`` entries)."""
    pos = torch.arange(n, device=device).unsqueeze(1)
    return (pos >= n - rates.to(device).unsqueeze(-2)).to(dtype)


class OrderingObjective:
    """``F(S)`` and its gradient for P images at once (problem p explains image ``image[p]``).

    ``seed``: an int (every image's rates from its own stream seeded with it), one int per
    image of the distortion, or None.
    """

    def __init__(
        self,
        distortion: Distortion,
        image: torch.Tensor,
        rates_per_iter: int | None = None,
        seed: int | Sequence[int] | None = 0,
    ) -> None:
        self.distortion = distortion
        self.image = image
        n = distortion.n
        if n < 2:
            raise ValueError("Ord-RDE needs at least 2 components")
        m = n - 1 if rates_per_iter is None else rates_per_iter
        if isinstance(m, bool) or not isinstance(m, int) or not 1 <= m <= n - 1:
            raise ValueError(f"rates_per_iter must be an integer in 1..{n - 1} (n - 1 = all rates), got {m!r}")
        self.m = m
        self.stochastic = m < n - 1 or distortion.stochastic
        seeds = image_seeds(seed, distortion.x.shape[0])
        self.generators = [generator(derive(s, STREAM_RATES)) for s in seeds]

    def sample_rates(self, images: list[int]) -> torch.Tensor:
        """(P, m) sorted rates, one row per problem, each from its image's own stream."""
        n = self.distortion.n
        if self.m == n - 1:
            return torch.arange(1, n).expand(len(images), n - 1)
        rows = [torch.randperm(n - 1, generator=self.generators[i])[: self.m].sort().values + 1 for i in images]
        return torch.stack(rows)

    def __call__(
        self, s: torch.Tensor, index: torch.Tensor, need_grad: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        p, n, _ = s.shape
        images = self.image[index]
        pk = rate_matrix(n, self.sample_rates(images.tolist()), s.dtype, s.device)  # (P, n, m)
        masks = (s @ pk).transpose(1, 2).reshape(p * self.m, n)  # rows: problem-major, then rate
        values, grads = self.distortion(masks, images.repeat_interleave(self.m), need_grad)
        f = values.view(p, self.m).mean(1)
        if not need_grad:
            return f, None
        g = grads.view(p, self.m, n).transpose(1, 2) @ pk.transpose(1, 2) / self.m  # sum_k g_k p_k^T / m
        return f, g
