"""Rate-distortion explanations (RDE): which few components keep the prediction?

For an input x with n components, a mask s in [0,1]^n keeps component i (s_i = 1) or
replaces it by noise (s_i = 0): ``y = s*x + (1-s)*n`` with ``n ~ N(m, diag(v))``. The
*distortion* ``D(s) = 1/2 E[(Phi(x) - Phi(y))^2]`` measures how much the target logit
``Phi`` moves. Four explanations trade distortion against the rate ``sum(s)``:

| method | problem | solver | output |
|---|---|---|---|
| ``"rc-rde"`` | min D(s), sum(s) <= k | FW over the k-sparse polytope | mask at rate k |
| ``"mr-rde"`` | RC-RDE at rates k_1..k_R | one batched FW run, all rates | mean mask, per-rate masks |
| ``"ord-rde"`` | min mean_k D(S p_k), S doubly stoch. | (stochastic) FW, Birkhoff polytope | component ordering |
| ``"l-rde"`` | min D(s) + mu Phi(x)^2 mean(s) | projected gradient + momentum | mask |

Usage::

    import provex
    model = provex.models.load("mnist-cnn")
    x, _ = provex.data.samples("mnist")
    exp = provex.explain(model, x[:8], "rc-rde", rate=100)        # ADF distortion, FW
    exp = provex.explain(model, x[:8], "mr-rde", distortion="mc", n_samples=64)
    exp.plot("mr-rde.png", images=x[:8])                           # mean + one column per rate
    exp = provex.explain(model, x[:8], "ord-rde")                  # 2x2-pixel components
    exp.ordering                                                    # rank of each component

Pieces: :class:`GaussianNoise` (per-pixel or global statistics, ``from_data``,
``from_model``), :class:`Components` (pixels or b x b blocks), :class:`MonteCarloDistortion`
and :class:`ADFDistortion` (torch-adf, :func:`to_adf` converts ``nn.Sequential`` models),
:class:`OrderingObjective` (Ord-RDE) and :func:`projected_gradient` (L-RDE). The
Frank-Wolfe machinery itself is model-agnostic and lives in :mod:`provex.fw`. Every image's
problems (and every rate's) advance together: one batched model pass per iteration.
"""

from provex.fw.projected import projected_gradient
from provex.rde.adf import FusedReLU, to_adf
from provex.rde.components import Components
from provex.rde.distortion import ADFDistortion, Distortion, MonteCarloDistortion, make_distortion
from provex.rde.noise import GaussianNoise
from provex.rde.ordering import OrderingObjective

__all__ = [
    "ADFDistortion",
    "Components",
    "Distortion",
    "FusedReLU",
    "GaussianNoise",
    "MonteCarloDistortion",
    "OrderingObjective",
    "make_distortion",
    "projected_gradient",
    "to_adf",
]
