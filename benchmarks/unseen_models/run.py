"""Every method at default options on never-seen classifiers; see provex.benchmarks.unseen_models."""

import sys

from provex.benchmarks.unseen_models import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["--out", "benchmarks/unseen_models/results"]))
