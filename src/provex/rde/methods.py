"""The four rate-distortion methods; importing this module registers them with :func:`provex.explain`.

One module per method: :mod:`provex.rde.rc_rde`, :mod:`provex.rde.mr_rde`,
:mod:`provex.rde.ord_rde`, :mod:`provex.rde.l_rde`. Their shared options are the frozen
dataclasses of :mod:`provex.rde.options` (defaults in :data:`provex.rde.options.DEFAULTS`),
their shared set-up and ``info`` live in :mod:`provex.rde.problem`.
"""

from provex.rde.l_rde import l_rde
from provex.rde.mr_rde import DEFAULT_MNIST_RATES, mr_rde
from provex.rde.ord_rde import ord_rde
from provex.rde.rc_rde import rc_rde

__all__ = ["DEFAULT_MNIST_RATES", "l_rde", "mr_rde", "ord_rde", "rc_rde"]
