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
    exp = provex.explain(model, x[:8], "rc-rde", rate=100)        # ADF distortion ("auto"), FW
    exp = provex.explain(model, x[:8], "rc-rde", rate=0.05)       # 5% of the components
    exp = provex.explain(model, x[:8], "mr-rde", distortion="mc", n_samples=64)
    exp.plot("mr-rde.png", images=x[:8])                           # mean + one column per rate
    exp = provex.explain(model, x[:8], "ord-rde")                  # 2x2-pixel components
    exp.ordering                                                    # rank of each component

Pieces: :class:`GaussianNoise` (the noise of a :class:`provex.Reference`, per pixel or one
global scalar pair, per image when the reference is), :class:`Components` (pixels or b x b
blocks, :func:`auto_grid`), :class:`MonteCarloDistortion` and :class:`ADFDistortion`
(torch-adf; :func:`to_adf` converts ``nn.Sequential`` models, :func:`make_distortion` with
``"auto"`` picks ADF where the model converts and Monte Carlo otherwise),
:class:`OrderingObjective` (Ord-RDE), the options (:class:`DistortionOptions`,
:class:`SolverOptions`, :data:`DEFAULTS`) and one module per method (``rc_rde``, ``mr_rde``,
``ord_rde``, ``l_rde``; :mod:`provex.rde.methods` registers all four). The solvers
(Frank-Wolfe, the projected gradient of L-RDE) are model-agnostic and live in
:mod:`provex.fw`. Every image's problems (and every rate's) advance together: one batched
model pass per iteration.
"""

from provex.fw.projected import projected_gradient
from provex.rde.adf import FusedReLU, to_adf
from provex.rde.components import Components, auto_grid
from provex.rde.distortion import ADFDistortion, Distortion, Meter, MonteCarloDistortion, make_distortion
from provex.rde.noise import GaussianNoise
from provex.rde.options import DEFAULTS, DistortionOptions, SolverOptions
from provex.rde.ordering import OrderingObjective

__all__ = [
    "DEFAULTS",
    "ADFDistortion",
    "Components",
    "Distortion",
    "DistortionOptions",
    "FusedReLU",
    "GaussianNoise",
    "Meter",
    "MonteCarloDistortion",
    "OrderingObjective",
    "SolverOptions",
    "auto_grid",
    "make_distortion",
    "projected_gradient",
    "to_adf",
]
