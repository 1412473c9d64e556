"""Maps and ordering areas alone vs in a batch; see provex.benchmarks.batch_independence."""

import sys

from provex.benchmarks.batch_independence import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["--out", "benchmarks/batch_independence/results"]))
