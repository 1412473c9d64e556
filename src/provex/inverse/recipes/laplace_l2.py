"""Reproduce ``lpn-laplace-l2``: the Laplace-toy LPN trained with the l2 loss (the MMSE comparison).

``provex train lpn-laplace-l2 [options]`` is ``provex train lpn-laplace --loss l2 [options]``.
"""

from __future__ import annotations

from provex.inverse.recipes.laplace import evaluate

__all__ = ["evaluate", "main"]


def main(argv: list[str] | None = None) -> int:
    from provex.inverse.recipes.laplace import main as laplace_main

    argv = list(argv or [])
    if "--out" not in argv:
        argv += ["--out", "provex-out/lpn-laplace-l2.pt"]
    return laplace_main(["--loss", "l2", *argv])
