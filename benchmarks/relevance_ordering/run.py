"""Relevance ordering test of every method on MNIST; see provex.benchmarks.relevance_ordering."""

import sys

from provex.benchmarks.relevance_ordering import main

if __name__ == "__main__":
    args = sys.argv[1:]
    if "--out" not in args:
        args += ["--out", "benchmarks/relevance_ordering/results"]
    sys.exit(main(args))
