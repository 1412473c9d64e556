"""Forward / forward+backward timing of a zoo model; see provex.benchmarks.model_speed."""

import sys

from provex.benchmarks.model_speed import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["--out", "benchmarks/model_speed/results"]))
