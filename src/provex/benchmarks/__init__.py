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
    "report": "provex.benchmarks.report",
}
