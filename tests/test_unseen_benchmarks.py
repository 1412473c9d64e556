"""The issue-12 benchmarks run end to end on small settings and write their files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from provex.benchmarks import BENCHMARKS, batch_independence, explain_cost, unseen_models


def test_registered() -> None:
    assert {"unseen-models", "explain-cost", "batch-independence"} <= set(BENCHMARKS)


def test_unseen_models_records_a_status_per_pair(tmp_path: Path) -> None:
    argv = ["--models", "gray-cnn-20", "tiny-vit-32", "--methods", "sensitivity", "lrp-alpha-beta"]
    assert unseen_models.main([*argv, "--images", "1", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "results.json").read_text())
    rows = [r for rs in res["results"].values() for r in rs]
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows), rows
    assert res["counts"]["ok"] == 4 and (tmp_path / "unseen_models.png").is_file() and (tmp_path / "table.md").is_file()


def test_unseen_models_sorts_failures() -> None:
    import torch
    from torch import nn

    class Broken(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1)[:, :3] @ torch.ones(2, 2)  # a bug in the model: shapes do not match

    class Scores(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1).sum(1)  # one score per image: not a classifier's logits

    row = unseen_models.run_one(Scores(), torch.rand(1, 1, 2, 2), "h-shap", 60)
    assert row["status"] == "refused" and "(N, classes) logits" in row["message"]
    # a 2 x 2 image is a valid input: h-Shap's default cells shrink to fit it (grid="auto")
    row = unseen_models.run_one(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), torch.rand(1, 1, 2, 2), "h-shap", 60)
    assert row["status"] == "ok"
    row = unseen_models.run_one(Broken(), torch.rand(1, 1, 2, 2), "sensitivity", 60)
    assert row["status"] == "error" and "RuntimeError" in row["message"]


def test_batch_independence_quick(tmp_path: Path) -> None:
    argv = [
        "--quick",
        "--methods",
        "sensitivity",
        "smoothgrad",
        "--step",
        "98",
        "--n-samples",
        "4",
        "--out",
        str(tmp_path),
    ]
    assert batch_independence.main(argv) == 0
    res = json.loads((tmp_path / "results.json").read_text())["methods"]
    assert res["sensitivity"]["max_abs_diff_auc_distortion"] < 1e-6 and res["smoothgrad"]["identical_maps"]


@pytest.mark.slow
def test_explain_cost_quick(tmp_path: Path) -> None:
    assert explain_cost.main(["--quick", "--images", "1", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["timing"]["provex_model_calls_per_image"] == 1
    assert abs(res["conservation"]["deep-taylor"]["provex"][0] - 1) < 1e-3
    assert res["conservation"]["deep-taylor"]["zennit_without_canonization"][0] > 100
