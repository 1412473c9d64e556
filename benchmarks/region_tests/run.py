"""Region tests: validity, FDR, power and MNIST faithfulness; see provex.benchmarks.region_tests."""

import sys

from provex.benchmarks.region_tests import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["--out", "benchmarks/region_tests/results"]))
