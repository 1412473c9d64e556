"""RC-RDE vs sensitivity/random masks and ADF vs Monte Carlo; see provex.benchmarks.rde_acceptance."""

import sys

from provex.benchmarks.rde_acceptance import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["--out", "benchmarks/rde_acceptance/results"]))
