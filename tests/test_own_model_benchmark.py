"""The own-model benchmark's bookkeeping (the run itself is the benchmark, not a test)."""

from __future__ import annotations

import pytest

from provex.benchmarks.own_model import BUDGET, _fb_equivalents, _summarise, _table, benchmark_images


def test_fb_equivalents_count_forward_only_inputs_at_the_measured_ratio() -> None:
    info = {"model_calls": 1000, "model_calls_backward": 600}
    assert _fb_equivalents(info, 0.25, 2) == pytest.approx((600 + 400 * 0.25) / 2)
    assert _fb_equivalents({}, 0.25, 1) is None


def test_summary_aggregates_images_and_judges_the_goal() -> None:
    def run(calls: int, back: int, seconds: float) -> dict:
        info = {"model_calls": calls, "model_calls_backward": back, "distortion_kind": "mc"}
        return {"ok": True, "seconds": seconds, "info": info, "peak_rss_mb": 900.0}

    results = {
        "settings": {"images": 8, "size": 224, "threads": 1},
        "budget_fb_per_image": BUDGET,
        "methods": {
            "rc-rde@rate": {"per_image": {"0": run(1800, 1700, 10.0), "1": run(2200, 2100, 12.0)}},
            "lime": {"per_image": {"0": {"ok": False, "error": "ValueError: no"}}},
        },
    }
    goal = {
        "rate_fraction": 0.05,
        "score_draws": 256,
        "per_image": {
            "0": {"rate": 39, "rc_rde_lower": True, "rc_rde_distortion": 1.0, "sensitivity_top_k_distortion": 2.0},
            "1": {"rate": 39, "rc_rde_lower": False, "rc_rde_distortion": 3.0, "sensitivity_top_k_distortion": 2.0},
        },
    }
    _summarise(results, (0.25, 1.0), goal)
    rc = results["methods"]["rc-rde@rate"]
    assert rc["images_done"] == 2 and rc["seconds_per_image"] == 11.0 and rc["fb_multiple_per_image"] == 11.0
    assert rc["fb_per_image"] == pytest.approx((3800 + 200 * 0.25) / 2)
    assert rc["fb_per_image_max"] == pytest.approx(2100 + 100 * 0.25)
    assert not results["methods"]["lime"]["ok"] and results["methods"]["lime"]["error"] == "ValueError: no"
    g = results["rc_rde_goal"]
    assert g["images_rc_rde_lower"] == 1 and g["images_needed"] == 7 and not g["within_budget"]
    assert not g["complete"] and not g["goal_met"]
    text = _table(results)
    assert "| lime | 0 | failed: ValueError: no" in text and "(incomplete run)" in text


def test_benchmark_images_are_three_channel_and_in_range() -> None:
    x = benchmark_images(2, 64)
    assert x.shape == (2, 3, 64, 64) and float(x.min()) >= 0.05 - 1e-6 and float(x.max()) <= 0.95 + 1e-6


def test_merge_keeps_every_run_s_methods_and_images(tmp_path) -> None:
    """A ``--merge`` run with other methods adds them and keeps the earlier ones, in results and settings."""
    import json

    from provex.benchmarks.own_model import main

    args = ["--quick", "--no-memory-check", "--out", str(tmp_path)]
    assert main([*args, "--methods", "sensitivity"]) == 0
    first = json.loads((tmp_path / "results.json").read_text())
    seconds = first["methods"]["sensitivity"]["per_image"]["0"]["seconds"]
    assert main([*args, "--merge", "--methods", "guided-backprop"]) == 0
    merged = json.loads((tmp_path / "results.json").read_text())
    assert merged["settings"]["methods"] == ["guided-backprop", "sensitivity"]
    assert set(merged["methods"]) == {"sensitivity", "guided-backprop"}
    assert merged["methods"]["guided-backprop"]["images_done"] == 1
    # the earlier method's image was kept, not recomputed
    assert merged["methods"]["sensitivity"]["per_image"]["0"]["seconds"] == seconds
    # without --merge the settings name this run's methods only
    assert main([*args, "--methods", "sensitivity"]) == 0
    assert json.loads((tmp_path / "results.json").read_text())["settings"]["methods"] == ["sensitivity"]
