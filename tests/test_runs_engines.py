"""Dataset-run engines: worker processes and Ray give the in-process maps bit for bit; workers that
die are retried; a run SIGKILLed midway resumes to exactly the uninterrupted result.

Ray: with ``PROVEX_RAY_ADDRESS`` set (CI starts a loopback head with 2 CPUs, see .ci/run) the
Ray tests join that cluster; otherwise they start a private in-process Ray with 2 CPUs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

import provex
from provex.runs.local import PROVEX_ROOT
from provex.runs.ray_engine import private_ray_options

N = 200  # the acceptance size
SHARD = 16


def _methods(model: nn.Module) -> dict[str, dict]:
    """sensitivity + smoothgrad; smoothgrad with the engine's per-image seeds once it takes a
    sequence of seeds (conventions), with one fixed seed for every image until then."""
    x, _ = provex.data.samples("mnist")
    try:
        provex.explain(model, x[:2], "smoothgrad", n_samples=1, seed=[0, 1])
        smooth = {"n_samples": 4}
    except ValueError:
        smooth = {"n_samples": 4, "seed": 0}
    return {"sensitivity": {}, "smoothgrad": smooth}


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory: pytest.TempPathFactory, mnist_root: Path) -> provex.runs.Run:
    """200 MNIST test images, two methods, in this process (one thread)."""
    model = provex.models.load("mnist-cnn")
    out = tmp_path_factory.mktemp("w1")
    return provex.run(model, "mnist-test", _methods(model), out=out, limit=N, shard_size=SHARD, progress=False)


def _assert_same(a: provex.runs.Run, b: provex.runs.Run) -> None:
    assert a.index.tolist() == b.index.tolist() == list(range(N))
    for m in a.methods:
        assert torch.equal(a.maps[m], b.maps[m]), m
    cols = ["index", "method", "target", "prediction", "label", "seed"]
    assert a.table[cols].equals(b.table[cols])


def test_two_worker_processes_give_identical_maps(reference_run, tmp_path: Path) -> None:
    model = provex.models.load("mnist-cnn")
    run = provex.run(
        model, "mnist-test", _methods(model), out=tmp_path, limit=N, shard_size=SHARD, workers=2, progress=False
    )
    _assert_same(reference_run, run)
    assert len(run.table) == 2 * N and not run.table.duplicated(["index", "method"]).any()


def test_sigkill_midway_then_resume(reference_run, tmp_path: Path) -> None:
    """Kill a 2-worker CLI run with SIGKILL after a few shards; the same command finishes it."""
    model = provex.models.load("mnist-cnn")
    argv = [sys.executable, "-m", "provex", "run", "--model", "mnist-cnn", "--data", "mnist-test"]
    argv += ["--limit", str(N), "--shard-size", str(SHARD), "--methods", *_methods(model), "--no-progress"]
    for name, opts in _methods(model).items():
        argv += [f"-O{name}:{k}={v}" for k, v in opts.items()]
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (PROVEX_ROOT, os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.Popen([*argv, "--workers", "2", "--out", str(out)], env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while len(list((out / "shards").glob("*.parquet"))) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_with = len(list((out / "shards").glob("*.parquet")))
    assert 2 <= killed_with < N // SHARD + 1, proc.stderr.read().decode()[-2000:]  # killed midway
    # resume in this process with one worker: the shards already written are kept as they are
    from provex.cli import main as cli_main

    assert cli_main([*argv[3:], "--out", str(out)]) == 0
    run = provex.load_run(out)
    assert run.session is None and run.complete and run.failed == []
    assert (run.table.groupby("method").size() == N).all() and not run.table.duplicated(["index", "method"]).any()
    _assert_same(reference_run, run)
    assert not list((out / "shards").glob(".*.tmp"))


class Killer(nn.Module):
    """A small classifier that kills the worker process that runs it on marked images.

    Pixel (0, 0) == 2: the worker always dies. == 3: it dies the first time (a flag file
    remembers). In the driver process it behaves normally.
    """

    def __init__(self, flag: Path) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(64, 3)
        self.flag = str(flag)
        self.driver = os.getpid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if os.getpid() != self.driver:
            marks = x[:, 0, 0, 0]
            if bool((marks == 2).any()):
                os._exit(3)
            if bool((marks == 3).any()) and not os.path.exists(self.flag):
                Path(self.flag).touch()
                os._exit(3)
        return self.fc(x.flatten(1))


def _marked_images() -> torch.Tensor:
    torch.manual_seed(1)
    x = torch.rand(12, 1, 8, 8)
    x[5, 0, 0, 0] = 2.0  # shard 2 (shards of 2): always kills its worker
    x[8, 0, 0, 0] = 3.0  # shard 4: kills its worker once
    return x


def _check_deaths(run: provex.runs.Run, tmp_path: Path) -> None:
    assert run.index.tolist() == [0, 1, 2, 3, 6, 7, 8, 9, 10, 11]
    (failure,) = run.failed
    assert failure["shard"] == 2 and failure["attempts"] == 2 and failure["indices"] == [4, 5]
    assert (tmp_path / "flag").exists()  # shard 4 died once and succeeded on its second attempt
    alone = provex.run(Killer(tmp_path / "flag"), _marked_images(), ["sensitivity"], out=tmp_path / "ref")
    keep = [0, 1, 2, 3, 6, 7, 8, 9, 10, 11]
    assert torch.equal(run.maps["sensitivity"], alone.maps["sensitivity"][keep])


def test_worker_process_death_is_retried_then_recorded(tmp_path: Path) -> None:
    model = Killer(tmp_path / "flag")
    kw = {"out": tmp_path / "run", "shard_size": 2, "workers": 2, "max_attempts": 2, "progress": False}
    run = provex.run(model, _marked_images(), ["sensitivity"], **kw)
    assert "worker process died (exit code 3)" in run.failed[0]["error"]
    _check_deaths(run, tmp_path)


def test_user_model_file_is_shipped_to_workers(tmp_path: Path) -> None:
    """A FILE.py:FACTORY model lives in a module workers cannot import: its code goes by value."""
    (tmp_path / "usernet.py").write_text(
        "import torch\nfrom torch import nn\n\n"
        "class UserNet(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.conv = nn.Conv2d(1, 2, 5)\n"
        "        self.fc = nn.Linear(2 * 24 * 24, 10)\n\n"
        "    def forward(self, x):\n"
        "        return self.fc(torch.relu(self.conv(x)).flatten(1))\n\n"
        "def make():\n"
        "    return UserNet()\n"
    )
    torch.manual_seed(0)
    weights = tmp_path / "w.pt"
    net = provex.load_model(f"{tmp_path / 'usernet.py'}:make")
    torch.save(net.state_dict(), weights)
    spec = f"{tmp_path / 'usernet.py'}:make"
    kw = {"limit": 8, "shard_size": 2, "weights": weights, "progress": False}
    one = provex.run(spec, "samples:mnist", ["sensitivity"], out=tmp_path / "w1", **kw)
    two = provex.run(spec, "samples:mnist", ["sensitivity"], out=tmp_path / "w2", workers=2, **kw)
    assert two.complete and two.failed == []
    assert torch.equal(one.maps["sensitivity"], two.maps["sensitivity"])
    assert two.manifest["model"]["spec"] == spec and two.manifest["model"]["weights_digest"]


# ----- Ray -----


@pytest.fixture(scope="module")
def ray_address() -> str | None:
    ray = pytest.importorskip("ray")
    address = os.environ.get("PROVEX_RAY_ADDRESS")
    if address:
        yield address
        return
    ray.init(logging_level="WARNING", log_to_driver=False, **private_ray_options(2))
    yield None
    ray.shutdown()


def test_ray_gives_identical_maps(reference_run, ray_address: str | None, tmp_path: Path) -> None:
    model = provex.models.load("mnist-cnn")
    run = provex.run(
        model,
        "mnist-test",
        _methods(model),
        out=tmp_path,
        limit=N,
        shard_size=SHARD,
        engine="ray",
        workers=2,
        address=ray_address,
        progress=False,
    )
    _assert_same(reference_run, run)


def test_ray_worker_death_is_retried_then_recorded(ray_address: str | None, tmp_path: Path) -> None:
    model = Killer(tmp_path / "flag")
    kw = {"out": tmp_path / "run", "shard_size": 2, "max_attempts": 2, "progress": False}
    run = provex.run(model, _marked_images(), ["sensitivity"], engine="ray", address=ray_address, **kw)
    assert "Ray task failed" in run.failed[0]["error"]
    _check_deaths(run, tmp_path)
