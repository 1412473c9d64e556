"""A researcher's own small classifier: the model behind the README's "your own files" example.

``make_model()`` builds a 10-class MNIST CNN with BatchNorm and MaxPool (layers that the
paper's ADF distortion does not cover), taking images normalised with MNIST's mean 0.1307 and
standard deviation 0.3081. Its trained weights are the state dict ``my_model.pt`` beside this
file (reproduce them with ``python examples/train_my_model.py``):

    provex explain --model examples/my_model.py:make_model --weights examples/my_model.pt \\
        --input examples/images --mean 0.1307 --std 0.3081 --labels examples/labels.txt --method mr-rde
"""

from __future__ import annotations

from torch import nn

MEAN, STD = 0.1307, 0.3081


def make_model() -> nn.Module:
    """conv3x3(16)-BN-ReLU-maxpool2 - conv3x3(32)-BN-ReLU-maxpool2 - dense(10); 1 x 28 x 28 inputs."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 7 * 7, 10),
    )
