"""RDE maps optimised under the noise of the ordering test instead of the training statistics.

The relevance ordering test replaces pixels by uniform noise in [x.min, x.max] (= [0, 1] on
the shipped MNIST images); the RDE methods optimise under N(data mean, data var) by default.
This script computes RDE maps under a Gaussian with the uniform noise's moments (mean 1/2,
variance 1/12 on every pixel) and saves them as ``OUT/maps/NAME.pt``, for
``provex benchmark ordering --maps-from OUT/maps``. Used in notes/issue-7.md:

    PYTHONPATH=src python benchmarks/relevance_ordering/matched_noise.py /tmp/i7/q8w 8 ord-rde mr-rde
    PYTHONPATH=src python -m provex benchmark ordering --images 8 --step 10 --n-noise 16 --threads 1 \
        --no-compile --methods mr-rde ord-rde --maps-from /tmp/i7/q8w/maps --out /tmp/i7/q8w
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

import provex
from provex import models
from provex.data.samples import samples
from provex.reference import Reference


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print("usage: matched_noise.py OUT IMAGES METHOD [METHOD ...]", file=sys.stderr)
        return 2
    out, images, names = Path(argv[0]), int(argv[1]), argv[2:]
    torch.set_num_threads(1)
    model = models.load("mnist-cnn")
    x, _ = samples("mnist")
    x = x[:images]
    lo, hi = float(x.min()), float(x.max())
    shape = tuple(x.shape[1:])
    reference = Reference(torch.full(shape, (lo + hi) / 2), torch.full(shape, (hi - lo) ** 2 / 12))
    for name in names:
        exp = provex.explain(model, x, name, reference=reference)
        exp.save(out / "maps" / f"{name}.pt")
        print(f"{name}: {exp.info['seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
