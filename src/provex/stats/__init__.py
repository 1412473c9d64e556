"""Statistical importance with error control: SHAP-XRT p-values and testing by betting.

Two families of tests answer "is this feature / concept important?" with a guarantee on
false positives instead of a score.

SHAP-XRT (Teneggi, Bharti, Romano & Sulam, TMLR 2023), one input at a time::

    from provex.stats import shap_xrt, GaussianSampler
    res = shap_xrt(f, GaussianSampler(mean, cov), x, j=0, C=[2], K=100)
    res.p_value, res.gamma, res.shapley      # p-value, marginal contribution, Shapley value

For images the features are regions (``grid_regions``, ``quadrant_regions``) with a
``RegionSampler``; ``provex.explain(model, x, "shap-xrt", grid=2)`` tests every region.

Semantic importance by betting (Teneggi & Sulam, NeurIPS 2024), on concept scores
Z = H c^T of a concept bottleneck (see :mod:`provex.concepts`):

- ``skit(y, z)``: global, H0: Y independent of Z_j (HSIC witness);
- ``cskit(y, z, j, sampler)``: global conditional, H0: Y independent of Z_j given Z_-j;
- ``xskit(z, j, C, sampler, classifier)``: local conditional, for one input (MMD witness).

Each returns ``rejected``, the rejection time ``tau`` and the wealth path; the type I error is
at most alpha at any stopping time (Ville's inequality). Inputs broadcast over leading axes
(repeats, concepts), which run as one batched tensor computation. ``fdr_betting`` applies
e-BH over concepts; ``rank_concepts`` orders them by mean rejection time over repeats.
Samplers: ``GaussianSampler`` (exact Gaussian conditionals; ``synthetic_sampler`` for the
paper's synthetic experiment), ``KDESampler`` (kernel-weighted KDE with an effective sample
size bandwidth, and a nearest-neighbour lift to embeddings).

Region tests of any relevance map (``test_regions``, :mod:`provex.stats.region_tests`): for
each region a map highlights (``map_regions``: connected components, top-k blocks, h-Shap's
cells, or your masks), is the model's output dependent on it? SHAP-XRT p-values or
anytime-valid betting e-values, BH/BY or e-BH over the regions; a ``RegionTestResult``.
"""

from provex.stats._engine import BatchBettingResult, BettingResult, check_alpha, check_budget
from provex.stats.betting import OnlineNewtonBettor, TanhBet, wealth_process
from provex.stats.cskit import cskit
from provex.stats.fdr import ConceptImportance, FDRResult, ebh, fdr_betting, rank_concepts
from provex.stats.kernels import Kernel, LinearKernel, RBFKernel, get_kernel
from provex.stats.region_result import RegionTestResult
from provex.stats.region_tests import test_regions
from provex.stats.regions import block_regions, grid_regions, label_map, map_regions, paint, quadrant_regions
from provex.stats.samplers import ConditionalSampler, GaussianSampler, KDESampler, RegionSampler
from provex.stats.skit import skit
from provex.stats.synthetic import sample_synthetic, synthetic_model, synthetic_sampler
from provex.stats.xrt import ValueFunction, XRTResult, shap_xrt, xrt_features
from provex.stats.xskit import xskit, xskit_scores

__all__ = [
    "BatchBettingResult",
    "BettingResult",
    "ConceptImportance",
    "ConditionalSampler",
    "FDRResult",
    "GaussianSampler",
    "KDESampler",
    "Kernel",
    "LinearKernel",
    "OnlineNewtonBettor",
    "RBFKernel",
    "RegionSampler",
    "RegionTestResult",
    "TanhBet",
    "ValueFunction",
    "XRTResult",
    "block_regions",
    "check_alpha",
    "check_budget",
    "cskit",
    "ebh",
    "fdr_betting",
    "get_kernel",
    "grid_regions",
    "label_map",
    "map_regions",
    "paint",
    "quadrant_regions",
    "rank_concepts",
    "sample_synthetic",
    "shap_xrt",
    "skit",
    "synthetic_model",
    "synthetic_sampler",
    "test_regions",
    "wealth_process",
    "xrt_features",
    "xskit",
    "xskit_scores",
]
