"""``provex test-concepts`` end to end on small data, the experiment API, and the CLI's errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from provex.cli import main
from provex.concepts.experiment import (
    CONTROL_PREFIX,
    ConceptData,
    load_concept_sets,
    prepare_mnist_concepts,
    run_concept_tests,
    summary_rows,
)


@pytest.fixture(scope="module")
def small_data(mnist_root: Path) -> ConceptData:
    return prepare_mnist_concepts(root=mnist_root, n_train=1000, n_test=300, n_examples=100)


def test_prepared_concepts_are_consistent(small_data: ConceptData) -> None:
    d = small_data
    assert d.names[-1] == CONTROL_PREFIX + d.names[0] and len(d.names) == 8
    assert d.z_test.shape == (300, 8) and d.z_train.shape == (1000, 8)
    # the control column is a permutation of the first concept's scores
    assert torch.allclose(d.z_test[:, -1].sort().values, d.z_test[:, 0].sort().values)
    with torch.no_grad():
        assert torch.allclose(d.head(d.h_test), d.logits_test.float(), atol=1e-5)


@pytest.mark.parametrize("test", ["skit", "cskit", "xskit"])
def test_run_concept_tests_shapes_and_fdr(small_data: ConceptData, test: str) -> None:
    res, fdr = run_concept_tests(small_data, 1, test, "rbf", 0.05, 60, repeats=3, fdr=True)
    assert res.rejected.shape == (3, 8) and res.test == test
    assert bool((fdr.rejected <= (res.final_wealth() >= 20)).all())
    rows = summary_rows(res, small_data.names, fdr)
    assert [r["mean_tau"] for r in rows] == sorted(r["mean_tau"] for r in rows)
    assert all(r["fdr_rejection_rate"] <= r["rejection_rate"] + 1e-12 for r in rows)


def test_cli_writes_table_json_and_figure(mnist_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    argv = [
        "test-concepts",
        "--data",
        str(mnist_root),
        "--classes",
        "1",
        "--test",
        "skit",
        "--repeats",
        "3",
        "--tau-max",
        "60",
        "--n-train",
        "1000",
        "--n-test",
        "300",
        "--n-examples",
        "100",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "rejection rate" in text and "control: shuffled closed loop" in text
    res = json.loads((out / "results.json").read_text())
    rows = res["results"]["1"]["rows"]
    assert len(rows) == 8 and all(0.0 <= r["rejection_rate"] <= 1.0 and 0.0 < r["mean_tau"] <= 1.0 for r in rows)
    assert (out / "class1-skit.png").read_bytes()[:4] == b"\x89PNG"
    # the wealth paths: one per repeat and concept, from K_0 = 1 to the stop; a repeat is a
    # rejection exactly when its path reached 1 / alpha (the rates in the table come from them)
    wealth = res["results"]["1"]["wealth"]
    assert list(wealth) == res["concepts"]
    for r in rows:  # the table is sorted by rejection time; the paths are keyed by concept
        paths = wealth[r["concept"]]
        assert len(paths) == 3 and all(p[0] == 1.0 and 1 <= len(p) <= 61 for p in paths)
        reached = [max(p) >= 1 / 0.05 for p in paths]
        assert sum(reached) / 3 == pytest.approx(r["rejection_rate"])


def test_user_concept_file(tmp_path: Path) -> None:
    pool = torch.rand(50, 1, 28, 28)
    path = tmp_path / "c.npz"
    np.savez(path, stripes=np.random.rand(5, 1, 28, 28).astype(np.float32), blobs=np.random.rand(4, 28, 28))
    sets = load_concept_sets(path, pool)
    assert set(sets) == {"stripes", "blobs"} and sets["blobs"][0].shape == (4, 1, 28, 28)
    assert sets["stripes"][1].shape == (10, 1, 28, 28)  # counterexamples drawn from the pool
    np.savez(path, bad=np.random.rand(5, 1, 10, 10))
    with pytest.raises(ValueError, match="must hold >= 2 images of shape"):
        load_concept_sets(path, pool)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--alpha", "2"], "alpha must be in (0, 1)"),
        (["--tau-max", "1"], "tau_max (1) must be larger than the warm-up"),
        (["--tau-max", "300", "--test", "skit", "--n-test", "400"], "needs 600 test images"),
        (["--concepts", "/nonexistent.npz"], "no such file"),
        (["--classes", "12"], "class must be in 0..9"),
    ],
)
def test_cli_errors(extra: list[str], message: str, tmp_path: Path, capsys) -> None:
    argv = [
        "test-concepts",
        "--n-test",
        "400",
        "--repeats",
        "1",
        "--tau-max",
        "50",
        "--out",
        str(tmp_path / "o"),
        *extra,
    ]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
