"""h-Shap against KernelSHAP, LIME, gradient and SmoothGrad on crosses; see provex.benchmarks.hshap."""

import sys

from provex.benchmarks.hshap import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["--out", "benchmarks/hshap/results"]))
