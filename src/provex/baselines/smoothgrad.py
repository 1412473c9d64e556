"""SmoothGrad (Smilkov et al. 2017): the gradient averaged over noisy copies of the input.

Built on captum's ``NoiseTunnel`` around ``Saliency`` (signed gradients). The noise standard
deviation is ``noise_level`` times each image's value range (max - min), as in the paper.
Each image is attributed on its own (its ``n_samples`` noisy copies in batches of
``batch_size`` rows) with its own seed (``seed``: an int gives every image that seed, a
sequence gives image ``i`` the seed ``seed[i]``; see :mod:`provex.seeding`), so an image's map
does not depend on which other images share its batch, or on its position there.
``square=True`` averages the squared gradients instead (captum's "smoothgrad_sq"; this is
what the RDE reference code used for its MNIST comparison: 64 draws, noise level 0.3).
captum is imported on first use. Draws come from captum's use of the global RNG, seeded with
the image's seed inside a forked RNG scope so the caller's random stream is untouched.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from provex.baselines._common import seeded
from provex.checks import check_bool, check_float, check_int
from provex.explanation import Explanation
from provex.registry import register_method
from provex.seeding import image_seeds

__all__ = ["smoothgrad"]


@register_method(
    "smoothgrad",
    family="classic attribution",
    description="gradient averaged over Gaussian-noise copies of the input (Smilkov et al. 2017; captum)",
    cheap_options={"n_samples": 4},
)
def smoothgrad(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    n_samples: int = 50,
    noise_level: float = 0.15,
    square: bool = False,
    batch_size: int = 512,
    seed: int | Sequence[int] | None = 0,
    progress: bool = True,
) -> Explanation:
    """Mean (or mean square, ``square=True``) of target-logit gradients over ``n_samples`` draws."""
    n_samples = check_int(n_samples, "n_samples")
    noise_level = check_float(noise_level, "noise_level", low=0)
    check_bool(square, "square")
    batch_size = check_int(batch_size, "batch_size")
    seeds = image_seeds(seed, x.shape[0])
    from captum.attr import NoiseTunnel, Saliency  # imported on use: keeps `import provex` light

    def forward(z: torch.Tensor) -> torch.Tensor:  # captum's noise is float32: back to the model's dtype
        return model(z.to(x.dtype))

    nt = NoiseTunnel(Saliency(forward))
    flat = x.flatten(1)
    ranges = flat.max(1).values - flat.min(1).values
    rel = torch.empty_like(x)
    for i in tqdm(range(x.shape[0]), desc="smoothgrad", disable=not progress, leave=False):
        with seeded(seeds[i], x.device):
            rel[i : i + 1] = nt.attribute(
                x[i : i + 1],
                nt_type="smoothgrad_sq" if square else "smoothgrad",
                nt_samples=n_samples,
                nt_samples_batch_size=min(batch_size, n_samples),
                stdevs=float(noise_level * ranges[i]),
                target=target[i : i + 1],
                abs=False,
            ).detach()
    return Explanation(
        relevance=rel,
        method="smoothgrad",
        target=target.detach().clone(),
        info={"per_image": {"noise_std": (noise_level * ranges).detach().cpu()}, "seeds": seeds},
    )
