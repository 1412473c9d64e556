"""Fit the example's reference distribution (what "absent" means) on the MNIST training images.

    PROVEX_DATA=../shared/data python examples/make_reference.py

Writes ``examples/mnist-reference.safetensors``: per-pixel mean and variance and a background
image of the 60,000 training digits, in raw pixels (0..1), the space of ``--input``
(``provex explain --reference`` normalises it with ``--mean/--std`` like the images). A few seconds.
"""

from __future__ import annotations

from pathlib import Path

import provex

HERE = Path(__file__).resolve().parent


def main() -> None:
    x, _ = provex.data.load_mnist("train")
    ref = provex.Reference.fit(x, name="MNIST training images")
    path = ref.save(HERE / "mnist-reference.safetensors")
    print(f"wrote {path}: {ref.describe()}")


if __name__ == "__main__":
    main()
