"""Train ``examples/my_model.py:make_model`` on MNIST and write the example's files.

    PROVEX_DATA=../shared/data python examples/train_my_model.py

Writes ``examples/my_model.pt`` (the state dict), ``examples/images/*.png`` (six MNIST test
digits, named after their test-set index and label) and ``examples/labels.txt`` (class names).
One epoch of Adam, batch 128, seed 0: about a minute on two CPU cores; test accuracy printed.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import provex
from provex.io import atomic_write

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from my_model import MEAN, STD, make_model  # noqa: E402

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
IMAGES = [0, 1, 2, 3, 4, 7]  # test-set indices: digits 7, 2, 1, 0, 4, 9


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    x, y = provex.data.load_mnist("train")
    xt, yt = provex.data.load_mnist("test")
    model = make_model()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    start = time.perf_counter()
    model.train()
    order = torch.randperm(x.shape[0])
    for i in range(0, x.shape[0], 128):
        idx = order[i : i + 128]
        loss = torch.nn.functional.cross_entropy(model((x[idx] - MEAN) / STD), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model((xt[i : i + 1000] - MEAN) / STD).argmax(1) for i in range(0, xt.shape[0], 1000)])
    acc = float((pred == yt).float().mean())
    print(f"test accuracy {acc:.4f} after one epoch ({time.perf_counter() - start:.0f} s)")
    with atomic_write(HERE / "my_model.pt") as tmp:
        torch.save(model.state_dict(), tmp)
    (HERE / "images").mkdir(exist_ok=True)
    for i in IMAGES:
        pixels = (xt[i, 0].numpy() * 255).round().astype(np.uint8)
        with atomic_write(HERE / "images" / f"test{i:05d}-{NAMES[int(yt[i])]}.png") as tmp:
            Image.fromarray(pixels, mode="L").save(tmp, format="PNG")
    with atomic_write(HERE / "labels.txt") as tmp:
        tmp.write_text("\n".join(NAMES) + "\n")


if __name__ == "__main__":
    main()
