"""Dataset runs (``provex.run``): store layout, per-image seeds, resume, refusals, failures, data sources.

The truth each test compares with is computed independently: ``provex.explain`` /
``relevance_ordering`` called directly on the same images, the seeds a method records
itself, files deleted or left half-written by hand.
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import provex
from provex.cli import main as cli_main
from provex.evaluate import gaussian_noise, relevance_ordering
from provex.explanation import Explanation
from provex.registry import _REGISTRY, register_method
from provex.runs.store import RunStore
from provex.seeding import image_seeds

SAMPLES = "samples:mnist"


@pytest.fixture
def test_methods():
    """Two methods that exist only in this process: one echoes its seeds, one fails on image 4."""

    def seed_echo(model, x, target, seed=0, progress=True):
        seeds = image_seeds(seed, x.shape[0])
        rel = torch.tensor(seeds, dtype=x.dtype).view(-1, 1, 1, 1).expand_as(x).clone()
        per_image = {"seed_seen": torch.tensor(seeds), "area": rel.flatten(1).sum(1)}
        if len(x) == 9:  # exact per-image counts (the run's table prefers them to the shared-out total)
            per_image["model_calls"] = torch.arange(9)
        info = {"per_image": per_image, "model_calls": 2 * len(x)}
        return Explanation(rel, "seed-echo", target, info)

    def picky(model, x, target, seed=0):
        bad = int(os.environ.get("PROVEX_TEST_BAD_IMAGE", -1))
        if bad in image_seeds(seed, x.shape[0]):
            raise RuntimeError(f"picky: image {bad} is bad")
        return Explanation(x.clone(), "picky", target, {})

    register_method("seed-echo", family="test", description="echo seeds")(seed_echo)
    register_method("picky", family="test", description="fails on one image")(picky)
    yield
    del _REGISTRY["seed-echo"], _REGISTRY["picky"]


def test_store_layout_manifest_and_load_run(tmp_path: Path, mnist_model: nn.Module, mnist_samples) -> None:
    x, y = mnist_samples
    out = tmp_path / "run"
    methods = ["sensitivity", "deep-taylor"]
    run = provex.run("mnist-cnn", SAMPLES, methods, out=out, limit=10, shard_size=4, progress=False)
    names = sorted(p.name for p in (out / "shards").iterdir())
    assert names == [f"shard-00000{k}.{ext}" for k in range(3) for ext in ("parquet", "safetensors")]
    m = json.loads((out / "manifest.json").read_text())
    assert set(m) == {
        "format",
        "provex_version",
        "model",
        "reference",
        "data",
        "labels",
        "methods",
        "score",
        "seed",
        "shard_size",
        "created",
    }
    assert m["format"] == "provex.run/1" and m["provex_version"] == provex.__version__
    assert m["model"]["spec"] == "mnist-cnn" and m["model"]["state_digest"]
    assert m["reference"]["source"] == "model card of mnist-cnn"
    assert m["data"]["spec"] == SAMPLES and m["data"]["n"] == 10 and m["data"]["shape"] == [1, 28, 28]
    assert m["methods"] == {"sensitivity": {}, "deep-taylor": {}} and m["score"] == {} and m["shard_size"] == 4
    assert run.complete and torch.equal(run.index, torch.arange(10))
    assert torch.equal(run.inputs, x[:10]) and torch.equal(run.labels, y[:10])
    for method in ("sensitivity", "deep-taylor"):
        assert run.maps[method].shape == (10, 1, 28, 28)
        for k in range(3):  # each shard's maps = the method run directly on that shard's images
            sl = slice(4 * k, min(10, 4 * k + 4))
            direct = provex.explain(mnist_model, x[sl], method).relevance
            assert torch.equal(run.maps[method][sl], direct)
    t = run.table
    assert len(t) == 20 and list(t.method[:2]) == methods and list(t["index"][::2]) == list(range(10))
    logits = mnist_model(x[:10]).argmax(1)
    assert (t.prediction.to_numpy()[::2] == logits.numpy()).all() and (t.target == t.prediction).all()
    assert (t.label.to_numpy()[::2] == y[:10].numpy()).all() and t.auc_distortion.isna().all()
    exp = run.explanation("sensitivity")
    assert torch.equal(exp.relevance, run.maps["sensitivity"]) and torch.equal(exp.target, logits)
    # loading again from the folder gives the same
    again = provex.load_run(out)
    assert torch.equal(again.maps["deep-taylor"], run.maps["deep-taylor"]) and again.failed == []


def test_per_image_seeds_independent_of_shard_size(tmp_path: Path, test_methods) -> None:
    runs = [
        provex.run("mnist-cnn", SAMPLES, ["seed-echo"], out=tmp_path / f"s{s}", seed=100, limit=9, shard_size=s)
        for s in (2, 9)
    ]
    for run in runs:  # image i gets run seed + dataset index, whatever the shard it is in
        assert torch.equal(run.maps["seed-echo"][:, 0, 0, 0], torch.arange(100, 109, dtype=torch.float32))
        assert list(run.table.seed) == list(range(100, 109)) == list(run.table.seed_seen)
        assert run.get("seed-echo/per_image/seed_seen").tolist() == list(range(100, 109))
    # model calls: a method's exact per-image counts where it gives them (here: in a batch of 9),
    # else its total as explain reports it, shared out over the shard's images
    assert runs[1].table.model_calls.tolist() == list(range(9))
    x, _ = provex.data.samples("mnist")
    model = provex.models.load("mnist-cnn")
    for k in range(5):
        lo, hi = 2 * k, min(9, 2 * k + 2)
        total = provex.explain(model, x[lo:hi], "seed-echo", seed=list(range(100 + lo, 100 + hi))).info["model_calls"]
        assert runs[0].table.model_calls[lo:hi].tolist() == [total / (hi - lo)] * (hi - lo)
    fixed = provex.run("mnist-cnn", SAMPLES, {"seed-echo": {"seed": 5}}, out=tmp_path / "fixed", limit=3)
    assert fixed.maps["seed-echo"].unique().tolist() == [5.0] and fixed.table.seed.tolist() == [5, 5, 5]


def test_smoothgrad_gets_per_image_seeds(tmp_path: Path, mnist_model: nn.Module, mnist_samples) -> None:
    """Needs sequence seeds in smoothgrad (conventions); skipped until that lands."""
    x, _ = mnist_samples
    try:
        provex.explain(mnist_model, x[:2], "smoothgrad", n_samples=2, seed=[0, 1])
    except ValueError:
        pytest.skip("smoothgrad does not take a sequence of seeds yet")
    opts = {"smoothgrad": {"n_samples": 4}}
    a = provex.run(mnist_model, SAMPLES, opts, out=tmp_path / "a", seed=7, limit=6, shard_size=2, progress=False)
    b = provex.run(mnist_model, SAMPLES, opts, out=tmp_path / "b", seed=7, limit=6, shard_size=6, progress=False)
    for i in range(6):
        alone = provex.explain(mnist_model, x[i : i + 1], "smoothgrad", n_samples=4, seed=[7 + i]).relevance
        torch.testing.assert_close(a.maps["smoothgrad"][i : i + 1], alone, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(b.maps["smoothgrad"][i : i + 1], alone, rtol=1e-5, atol=1e-7)
    assert not torch.equal(a.maps["smoothgrad"][0], a.maps["smoothgrad"][1])


def test_ordering_score_matches_a_direct_evaluation(tmp_path: Path, mnist_model: nn.Module, mnist_samples) -> None:
    x, _ = mnist_samples
    score = {"ordering": {"step": 98, "n_samples": 3}}
    run = provex.run(mnist_model, SAMPLES, ["sensitivity"], out=tmp_path, score=score, seed=3, limit=5, shard_size=2)
    curves = run.curves["sensitivity"]
    assert curves["distortion"].shape == (5, 9) and curves["fraction_kept"].shape == (9,)
    for i in range(5):
        c = relevance_ordering(mnist_model, x[i : i + 1], run.maps["sensitivity"][i : i + 1], seed=3 + i, **_draws(3))
        assert torch.equal(curves["distortion"][i], c.per_image_distortion[0])
        assert run.table.auc_distortion[i] == pytest.approx(float(c.per_image_auc_distortion[0]), abs=0)
        assert run.table.auc_accuracy[i] == pytest.approx(float(c.per_image_auc_accuracy[0]), abs=0)
    s = run.summary()
    assert s["methods"]["sensitivity"]["auc_distortion"] == pytest.approx(run.table.auc_distortion.mean())
    assert sum(c["images"] for c in s["per_class"]["sensitivity"].values()) == 5 and s["class_by"] == "label"


def _draws(n: int) -> dict:
    """Step 98 and ``n`` draws per step, in the vocabulary of the installed relevance_ordering."""
    name = "n_samples" if "n_samples" in inspect.signature(relevance_ordering).parameters else "n_noise"
    return {"step": 98, name: n}


def test_ordering_score_under_the_reference_noise(tmp_path: Path, mnist_model: nn.Module, mnist_samples) -> None:
    """noise='reference': Gaussian draws from the model card's training statistics."""
    x, _ = mnist_samples
    score = {"ordering": {"step": 98, "n_samples": 3, "noise": "reference"}}
    run = provex.run(mnist_model, SAMPLES, ["sensitivity"], out=tmp_path, score=score, limit=3, progress=False)
    card = mnist_model.card
    for i in range(3):
        c = relevance_ordering(
            mnist_model,
            x[i : i + 1],
            run.maps["sensitivity"][i : i + 1],
            seed=i,
            noise=gaussian_noise(card.data_mean, card.data_var),
            **_draws(3),
        )
        assert run.table.auc_distortion[i] == pytest.approx(float(c.per_image_auc_distortion[0]), rel=1e-6)
    score["ordering"]["noise"] = "uniform"
    uniform = provex.run(mnist_model, SAMPLES, ["sensitivity"], out=tmp_path / "u", score=score, limit=3)
    assert (uniform.table.auc_distortion - run.table.auc_distortion).abs().max() > 1e-2  # other noise


def test_resume_skips_done_shards_and_redoes_broken_ones(tmp_path: Path) -> None:
    kw = {"out": tmp_path, "limit": 12, "shard_size": 3, "progress": False}
    first = provex.run("mnist-cnn", SAMPLES, ["sensitivity"], **kw)
    maps = first.maps["sensitivity"].clone()
    store = RunStore(tmp_path)
    store.table_path(1).unlink()  # killed between the two files of shard 1
    store.tensor_path(2).unlink()
    store.table_path(2).unlink()  # shard 2 never written
    stale = store.shards / ".shard-000002.safetensors.999999999.tmp"  # a killed writer's temporary
    stale.write_bytes(b"half")
    untouched = store.tensor_path(0).stat().st_mtime_ns
    again = provex.run("mnist-cnn", SAMPLES, ["sensitivity"], **kw)
    assert again.session["shards_done"] == 2 and again.session["shards_skipped"] == 2
    assert not stale.exists() and store.tensor_path(0).stat().st_mtime_ns == untouched
    assert torch.equal(again.maps["sensitivity"], maps) and again.index.tolist() == list(range(12))
    done = provex.run("mnist-cnn", SAMPLES, ["sensitivity"], **kw)
    assert done.session["shards_done"] == 0 and done.session["shards_skipped"] == 4


def test_changed_settings_are_refused_unless_new(tmp_path: Path) -> None:
    kw = {"out": tmp_path, "limit": 4, "shard_size": 2, "progress": False}
    provex.run("mnist-cnn", SAMPLES, ["sensitivity"], **kw)
    with pytest.raises(ValueError, match=r"other settings \(methods: .*--new"):
        provex.run("mnist-cnn", SAMPLES, {"sensitivity": {"absolute": True}}, **kw)
    with pytest.raises(ValueError, match=r"other settings \(seed: 0 there, 1 now\)"):
        provex.run("mnist-cnn", SAMPLES, ["sensitivity"], seed=1, **kw)
    with pytest.raises(ValueError, match=r"data: .*\"n\": 4.*\"n\": 3"):
        provex.run("mnist-cnn", SAMPLES, ["sensitivity"], **{**kw, "limit": 3})
    # the same weights loaded another way are the same model; other weights are not
    same = provex.models.load("mnist-cnn")
    assert provex.run(same, SAMPLES, ["sensitivity"], **kw).session["shards_skipped"] == 2
    with torch.no_grad():
        next(same.parameters())[0, 0, 0, 0] += 1e-3
    with pytest.raises(ValueError, match=r"other settings \(model: .*state_digest"):
        provex.run(same, SAMPLES, ["sensitivity"], **kw)
    run = provex.run("mnist-cnn", SAMPLES, {"sensitivity": {"absolute": True}}, new=True, **kw)
    assert run.manifest["methods"] == {"sensitivity": {"absolute": True}} and bool((run.maps["sensitivity"] >= 0).all())


def test_a_failing_shard_is_recorded_and_the_run_goes_on(
    tmp_path: Path, test_methods, monkeypatch: pytest.MonkeyPatch
) -> None:
    kw = {"out": tmp_path, "limit": 8, "shard_size": 2, "progress": False, "max_attempts": 2}
    monkeypatch.setenv("PROVEX_TEST_BAD_IMAGE", "4")
    run = provex.run("mnist-cnn", SAMPLES, ["picky"], **kw)
    assert run.index.tolist() == [0, 1, 2, 3, 6, 7] and not run.complete
    assert len(run.failed) == 1
    f = run.failed[0]
    assert f["shard"] == 2 and f["indices"] == [4, 5] and f["attempts"] == 2 and "picky: image 4 is bad" in f["error"]
    s = run.summary()
    assert s["images"] == {"total": 8, "done": 6, "failed": 2, "pending": 0} and s["shards"]["failed"] == 1
    # a rerun retries only the failed shard; once it succeeds its failure record goes away
    again = provex.run("mnist-cnn", SAMPLES, ["picky"], **kw)
    assert again.session["shards_failed"] == 1 and again.session["shards_skipped"] == 3
    monkeypatch.delenv("PROVEX_TEST_BAD_IMAGE")
    fixed = provex.run("mnist-cnn", SAMPLES, ["picky"], **kw)
    assert fixed.session["shards_done"] == 1 and fixed.complete and fixed.failed == []
    assert not (tmp_path / "failed" / "shard-000002.json").exists()


def test_lock_refuses_a_second_run_on_the_same_folder(tmp_path: Path) -> None:
    with RunStore(tmp_path).lock(), pytest.raises(ValueError, match="in use by another provex run"):
        provex.run("mnist-cnn", SAMPLES, ["sensitivity"], out=tmp_path, limit=2, progress=False)


class _Flat(nn.Module):
    """A linear classifier on any image size (for data-source tests)."""

    def __init__(self, pixels: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(pixels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def test_data_sources(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 6, 7, 3), dtype=np.uint8)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, im in enumerate(images):
        Image.fromarray(im).save(folder / f"img{i}.png")
    expected = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    model = _Flat(3 * 6 * 7)
    a = provex.run(model, str(folder), ["sensitivity"], out=tmp_path / "a", limit=4, progress=False)
    assert torch.equal(a.inputs, expected[:4]) and a.labels.tolist() == [-1] * 4 and a.manifest["data"]["digest"]
    torch.save({"images": expected, "labels": torch.arange(5)}, tmp_path / "d.pt")
    b = provex.run(model, tmp_path / "d.pt", ["sensitivity"], out=tmp_path / "b", progress=False)
    assert torch.equal(b.inputs, expected) and b.labels.tolist() == [0, 1, 2, 3, 4]
    assert torch.equal(b.maps["sensitivity"][:4], a.maps["sensitivity"])
    norm = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    c = provex.run(model, (expected, torch.arange(5)), ["sensitivity"], out=tmp_path / "c", normalize=norm)
    assert torch.allclose(c.inputs, (expected - 0.5) / 0.25) and c.manifest["data"]["normalize"] == norm
    ds = torch.utils.data.TensorDataset(expected, torch.arange(5))
    d = provex.run(model, ds, ["sensitivity"], out=tmp_path / "d", shard_size=2, progress=False)
    assert torch.equal(d.maps["sensitivity"], b.maps["sensitivity"])
    assert d.manifest["data"]["spec"] == "python:TensorDataset"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"methods": ["magic"]}, "unknown method 'magic'"),
        ({"methods": {"sensitivity": {"rate": 3}}}, r"unknown option\(s\) \['rate'\] for method 'sensitivity'"),
        ({"engine": "spark"}, "engine must be 'local' or 'ray'"),
        ({"workers": 0}, "workers must be a positive integer"),
        ({"shard_size": 0}, "shard_size must be a positive integer"),
        ({"score": "auc"}, "score: unknown score 'auc'"),
        ({"score": {"ordering": {"steps": 2}}}, r"unknown ordering option\(s\) \['steps'\]"),
        ({"data": "no/such/folder"}, "no such file or folder"),
        ({"data": torch.rand(2, 1, 5, 5)}, "model: fails on the data's first image"),
        ({"address": "auto"}, "address is for engine='ray'"),
        ({"limit": 0}, "limit must be a positive integer"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict, match: str) -> None:
    args = {"model": "mnist-cnn", "data": SAMPLES, "methods": ["sensitivity"], **kwargs}
    with pytest.raises(ValueError, match=match):
        provex.run(args.pop("model"), args.pop("data"), args.pop("methods"), out=tmp_path / "r", **args)
    assert not (tmp_path / "r" / "shards").exists()


def test_cli_run_and_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "r")
    argv = ["run", "--model", "mnist-cnn", "--data", SAMPLES, "--limit", "6", "--methods", "sensitivity", "deep-taylor"]
    argv += ["-O", "sensitivity:absolute=True", "--score", "ordering"]
    argv += ["-O", "ordering:step=196", "-O", "ordering:n_samples=2"]
    argv += ["--shard-size", "4", "--no-progress", "--out", out]
    assert cli_main(argv) == 0
    text = capsys.readouterr().out
    assert "6 images explained" in text and "AUC distortion per class (label)" in text
    assert cli_main(argv) == 0  # the same command again: nothing left to do
    again = capsys.readouterr().out
    assert "0 images explained" in again and "(0 shards; 2 already done; 0 failed)" in again
    assert cli_main(["runs", "show", out]) == 0
    shown = capsys.readouterr().out
    assert "images: 6/6 done, 0 failed" in shown and "sensitivity" in shown
    assert cli_main(["runs", "show", out, "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["images"]["done"] == 6 and s["methods"]["sensitivity"]["images"] == 6
    assert s["methods_options"]["sensitivity"] == {"absolute": True} and s["score"]["ordering"]["step"] == 196


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["-O", "absolute=True"], "METHOD:KEY=VALUE"),
        (["-O", "lime:n_samples=3"], "not among --methods"),
        (["--workers", "0"], "--workers must be a positive integer"),
        (["-O", "ordering:step=3"], "needs --score ordering"),
    ],
)
def test_cli_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], match: str) -> None:
    argv = ["run", "--model", "mnist-cnn", "--data", SAMPLES, "--methods", "sensitivity", "--out", str(tmp_path)]
    argv += extra
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert match in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert cli_main(["runs", "show", str(tmp_path / "nothing")]) == 2
    assert "not a provex run folder" in capsys.readouterr().err


def test_env_is_restored(tmp_path: Path) -> None:
    """The in-process engine runs with its own thread count and restores the caller's."""
    torch.set_num_threads(2)
    provex.run("mnist-cnn", SAMPLES, ["sensitivity"], out=tmp_path, limit=2, threads=1, progress=False)
    assert torch.get_num_threads() == 2 and not torch.are_deterministic_algorithms_enabled()
