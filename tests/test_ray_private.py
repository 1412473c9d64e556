"""A private Ray (``engine="ray"`` without ``address``) runs its workers at the driver's priority.

Ray nices its workers to 15 by default; a niced worker gets a small share of a core as soon as
any normal process wants it, which made the Ray engine slower than the local one on a busy
machine. Its own module: the test needs a process without a running Ray.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

import provex


class NiceProbe(nn.Module):
    """A small classifier that writes the niceness of every worker process that runs it."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(28 * 28, 10)
        self.folder = str(folder)
        self.driver = os.getpid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if os.getpid() != self.driver:
            Path(self.folder, f"nice-{os.getpid()}").write_text(str(os.nice(0)))
        return self.fc(x.flatten(1))


def test_private_ray_workers_run_at_the_driver_priority(tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    if ray.is_initialized():  # left by another module; this test needs its own private Ray
        ray.shutdown()
    probes = tmp_path / "probes"
    probes.mkdir()
    x, _ = provex.data.samples("mnist")
    run = provex.run(
        NiceProbe(probes), x[:4], ["sensitivity"], out=tmp_path / "run", engine="ray", workers=1, progress=False
    )
    assert run.complete
    seen = [int(p.read_text()) for p in probes.glob("nice-*")]
    assert seen and set(seen) == {os.nice(0)}
    assert not ray.is_initialized()  # the private Ray is shut down at the end
