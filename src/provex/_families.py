"""Importing this module registers every method family with :mod:`provex.registry`.

Each family adds one import line here; the registry imports this module on first use.
"""

from provex.baselines import gradient, guided_backprop, lrp, perturbation, smoothgrad  # noqa: F401
