"""Reproducible experiments behind ``provex benchmark NAME``.

Each module named in :data:`BENCHMARKS` has ``main(argv) -> int``; it writes ``results.json``
and PNG figures into its ``--out`` folder and prints a short table. Thin scripts in the
repository's ``benchmarks/`` folder call the same ``main``.
"""

BENCHMARKS: dict[str, str] = {
    "model-speed": "provex.benchmarks.model_speed",
    "hshap": "provex.benchmarks.hshap",
    "rde-convergence": "provex.benchmarks.rde_convergence",
    "rde-acceptance": "provex.benchmarks.rde_acceptance",
    "betting": "provex.benchmarks.betting",
    "lpn": "provex.benchmarks.lpn",
    "ordering": "provex.benchmarks.relevance_ordering",
    "own-model": "provex.benchmarks.own_model",
    "unseen-models": "provex.benchmarks.unseen_models",
    "explain-cost": "provex.benchmarks.explain_cost",
    "batch-independence": "provex.benchmarks.batch_independence",
    "run-scaling": "provex.benchmarks.run_scaling",
    "readme": "provex.benchmarks.readme",
    "region-tests": "provex.benchmarks.region_tests",
    "report": "provex.benchmarks.report",
}
