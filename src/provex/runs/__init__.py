"""Dataset runs: explain a whole dataset in shards, resumably, in-process, in processes or on Ray.

>>> import provex
>>> run = provex.run("mnist-cnn", "mnist-test", ["sensitivity", "rc-rde"], out="runs/mnist",
...                  limit=200, score="ordering", workers=2)             # doctest: +SKIP
>>> run = provex.load_run("runs/mnist")                                   # doctest: +SKIP
>>> run.maps["rc-rde"].shape, run.table.head(), run.manifest["seed"]      # doctest: +SKIP

An app layer (like ``provex.benchmarks``): the library never imports it. Modules: ``api``
(:func:`run`, the driver), ``task`` (one shard), ``local`` / ``ray_engine`` (engines),
``packing`` (models as bytes for workers), ``data`` (datasets), ``store`` (the results
folder), ``results`` (:func:`load_run`), ``summary`` (``provex runs show``).
"""

from provex.runs.api import ORDERING_DEFAULTS, run
from provex.runs.results import Run, load_run
from provex.runs.summary import format_summary, summarize

__all__ = ["ORDERING_DEFAULTS", "Run", "format_summary", "load_run", "run", "summarize"]
