"""explain() overhead and LRP conservation on resnet18; see provex.benchmarks.explain_cost."""

import sys

from provex.benchmarks.explain_cost import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["--out", "benchmarks/explain_cost/results"]))
