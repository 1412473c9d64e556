"""Dataset-run scaling (local engine and Ray); see provex.benchmarks.run_scaling."""

import sys

from provex.benchmarks.run_scaling import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
