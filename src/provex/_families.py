"""Importing this module registers every method family with :mod:`provex.registry`.

Each family adds one import line here; the registry imports this module on first use.
"""

from provex import shapley  # noqa: F401
from provex.baselines import gradient, guided_backprop, lrp, perturbation, smoothgrad  # noqa: F401
from provex.rde import methods as rde_methods  # noqa: F401
from provex.stats import xrt  # noqa: F401

# Must stay last: registers "NAME+test" for every method registered above.
from provex.stats import region_methods  # noqa: F401  # isort: skip
