"""Faithfulness measures for relevance maps: does the map point at what the model uses?

The relevance ordering test of the RDE papers (Macdonald et al. 2019, 2022) replaces the least
relevant components of an image by noise, a few more at each step, and records how far the
target's softmax probability moves (distortion) and whether the prediction survives
(accuracy). Lower distortion area = the map found the components the model relies on.

>>> import provex
>>> from provex.evaluate import relevance_ordering, plot_ordering_curves
>>> model = provex.models.load("mnist-cnn")
>>> x, _ = provex.data.samples("mnist")
>>> exp = provex.explain(model, x[:4], "sensitivity", absolute=True)
>>> curve = relevance_ordering(model, x[:4], exp, step=5, n_samples=64)
>>> curve.auc_distortion, curve.auc_accuracy
>>> plot_ordering_curves({"sensitivity": curve}, "ordering.png")

``provex benchmark ordering`` runs the test for every method on the shipped MNIST images.
"""

from provex.evaluate.ordering import NoiseFn, OrderingCurve, component_ranks, gaussian_noise, relevance_ordering
from provex.evaluate.plots import plot_map_grid, plot_ordering_curves

__all__ = [
    "NoiseFn",
    "OrderingCurve",
    "component_ranks",
    "gaussian_noise",
    "plot_map_grid",
    "plot_ordering_curves",
    "relevance_ordering",
]
