"""A small CNN that detects crosses in the synthetic images of :func:`provex.data.crosses`.

conv4x4/2(8)-maxpool2-conv3x3(16)-conv3x3(16)-global max pool-dense(2), ReLU. The global max
pool makes the output a "does any place of the image hold a cross?" detector, the multiple
instance structure that h-Shap's guarantees assume, and keeps a forward pass cheap
(about 3 M multiply-adds for a 100 x 120 image) so that perturbation baselines with thousands
of model evaluations per image stay affordable on a CPU. It is a plain ``nn.Sequential`` of
standard layers so captum and zennit see ordinary modules.
"""

from __future__ import annotations

from torch import nn

__all__ = ["CrossesCNN"]


class CrossesCNN(nn.Sequential):
    """Binary classifier: input (N, 3, H, W) in [0, 1] (any H, W >= 24), logits (N, 2); class 1 = cross."""

    def __init__(self, width: int = 16) -> None:
        super().__init__(
            nn.Conv2d(3, 8, 4, stride=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, width, 3),
            nn.ReLU(),
            nn.Conv2d(width, width, 3),
            nn.ReLU(),
            nn.AdaptiveMaxPool2d(1),
            nn.Flatten(),
            nn.Linear(width, 2),
        )
