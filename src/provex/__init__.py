"""provex: what did my model learn? Explanations with a precise meaning for PyTorch models.

>>> import provex
>>> model = provex.models.load("mnist-cnn")
>>> x, y = provex.data.samples("mnist")
>>> exp = provex.explain(model, x[:4], "sensitivity")
>>> exp.plot("sensitivity.png", images=x[:4])
"""

from provex import data, models
from provex._version import __version__
from provex.explanation import Explanation
from provex.registry import explain, methods, register_method

__all__ = ["Explanation", "__version__", "data", "explain", "load_model", "methods", "models", "register_method"]

load_model = models.load
