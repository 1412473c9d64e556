"""Every method on torchvision's ResNet-18 at 224 x 224; see provex.benchmarks.own_model."""

import sys

from provex.benchmarks.own_model import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["--out", "benchmarks/own_model/results"]))
