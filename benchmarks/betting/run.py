"""Synthetic betting tests, FDR and SHAP-XRT checks; see provex.benchmarks.betting."""

import sys

from provex.benchmarks.betting import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["--out", "benchmarks/betting/results"]))
