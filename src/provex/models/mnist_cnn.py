"""The MNIST CNN of the FW-RDE paper (Macdonald et al.).

conv5x5(32)-avgpool2-conv5x5(64)-avgpool2-conv5x5(64)-avgpool2-dense(1024)-dense(10), ReLU,
"same" padding. It is a plain ``nn.Sequential`` of standard layers so that captum, zennit
and the torch-adf converter all see ordinary modules.
"""

from __future__ import annotations

from torch import nn

__all__ = ["MnistCNN"]


class MnistCNN(nn.Sequential):
    """The paper's MNIST classifier; input (N, 1, 28, 28) in [0, 1], output 10 logits."""

    def __init__(self) -> None:
        super().__init__(
            nn.Conv2d(1, 32, 5, padding=2),
            nn.ReLU(),
            nn.AvgPool2d(2),
            nn.Conv2d(32, 64, 5, padding=2),
            nn.ReLU(),
            nn.AvgPool2d(2),
            nn.Conv2d(64, 64, 5, padding=2),
            nn.ReLU(),
            nn.AvgPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * 3 * 3, 1024),
            nn.ReLU(),
            nn.Linear(1024, 10),
        )
