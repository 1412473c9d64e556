"""Convergence and speed of the RDE solvers; see provex.benchmarks.rde_convergence."""

import sys

from provex.benchmarks.rde_convergence import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["--out", "benchmarks/rde_convergence/results"]))
