"""Learned proximal networks acceptance run; see provex.benchmarks.lpn."""

import sys

from provex.benchmarks.lpn import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["--out", "benchmarks/lpn/results"]))
