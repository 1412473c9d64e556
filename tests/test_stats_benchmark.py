"""``provex benchmark betting --blocks``: a block run alone reproduces it and merges into results.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from provex.benchmarks.betting import main

TINY = [
    *("--repeats", "2", "--tau-max", "30", "--fdr-repeats", "2"),
    *("--xrt-repeats", "4", "--xrt-k", "4", "--bound-repeats", "2"),
]


def _numbers(res: dict, key: str) -> str:
    """A block's results without its wall-clock timings."""
    v = res[key]
    if isinstance(v, list):
        v = [{k: x for k, x in r.items() if k != "seconds"} for r in v]
    return json.dumps(v, sort_keys=True)


def test_blocks_run_alone_reproduce_and_merge(tmp_path: Path) -> None:
    together, apart = tmp_path / "together", tmp_path / "apart"
    assert main([*TINY, "--blocks", "fdr,xrt", "--out", str(together)]) == 0
    assert main([*TINY, "--blocks", "xrt", "--out", str(apart)]) == 0
    assert main([*TINY, "--blocks", "fdr", "--out", str(apart)]) == 0
    a = json.loads((together / "results.json").read_text())
    b = json.loads((apart / "results.json").read_text())
    for key in ("fdr", "shap_xrt"):
        assert _numbers(a, key) == _numbers(b, key)
    assert set(b["timings_seconds"]) == {"fdr", "xrt"} and "synthetic" not in b
    assert b["figures"] == ["xrt.png"] and (apart / "xrt.png").is_file()
    with pytest.raises(ValueError, match="other settings"):
        main([*TINY, "--repeats", "4", "--blocks", "xrt", "--out", str(apart)])
    with pytest.raises(ValueError, match="--blocks must be"):
        main([*TINY, "--blocks", "xrt,nope", "--out", str(apart)])
