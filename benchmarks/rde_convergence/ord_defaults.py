"""How Ord-RDE's rates per iteration and iterations trade cost for ordering quality.

Exploratory run behind Ord-RDE's defaults (2x2-pixel components, 10 rates per iteration,
100 iterations): 5 shipped MNIST images (every 10th), ADF distortion. Quality = the full
Ord-RDE objective (mean ADF distortion over all 195 rates) of the *hard* ordering
(the permutation given by ``Explanation.ordering``); lower is better. Run from the
repository root: ``PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/rde_convergence/ord_defaults.py``.
"""

import time

import torch

import provex
from provex.rde import ADFDistortion, Components, GaussianNoise
from provex.rde.ordering import OrderingObjective

CONFIGS = [  # (rates per iteration, iterations, step rule); the reference used ~n/10 rates, 200 iterations
    (20, 200, "1/sqrt(t+1)"),
    (10, 200, "1/sqrt(t+1)"),
    (5, 200, "1/sqrt(t+1)"),
    (10, 100, "1/sqrt(t+1)"),
    (10, 100, "2/(t+2)"),
    (10, 50, "1/sqrt(t+1)"),
    (5, 100, "1/sqrt(t+1)"),
    (20, 50, "1/sqrt(t+1)"),
    (10, 25, "1/sqrt(t+1)"),
]

if __name__ == "__main__":
    torch.set_num_threads(1)
    model = provex.models.load("mnist-cnn")
    x = provex.data.samples()[0][::10][:5]
    target = model(x).argmax(1)
    images = torch.arange(5)
    dist = ADFDistortion(model, x, target, GaussianNoise.from_model(model), Components((1, 28, 28), 2), batch_size=64)
    full = OrderingObjective(dist, images, None)  # all 195 rates

    def quality(perm: torch.Tensor) -> float:
        with torch.no_grad():
            return float(full(perm, images, False)[0].mean())

    print(f"identity ordering: {quality(torch.eye(196).expand(5, 196, 196).clone()):.3f}")
    for m, iters, step in CONFIGS:
        start = time.perf_counter()
        e = provex.explain(model, x, "ord-rde", rates_per_iter=m, max_iter=iters, step=step, progress=False)
        sec = time.perf_counter() - start
        rank = e.ordering.view(5, 14, 2, 14, 2)[:, :, 0, :, 0].reshape(5, 196)
        perm = torch.zeros(5, 196, 196).scatter_(2, rank.unsqueeze(2), 1.0)
        print(
            f"rates/iter {m:2d}  iterations {iters:3d}  {step:11s}  masks/image {m * iters:5d}  "
            f"hard-ordering objective {quality(perm):.3f}  seconds {sec:.1f}  "
            f"outside model {100 * e.info['overhead_fraction']:.1f}%"
        )
