"""Region tests (issue 16) against independent truth: explicit models of known regions, replayed draws,
brute-force multiplicity control, hand-built region maps."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

import provex
from provex.seeding import derive, generator
from provex.stats import RegionTestResult, block_regions, ebh, label_map, map_regions, wealth_process
from provex.stats import test_regions as run_tests
from provex.stats.region_tests import _control


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


class RegionModel(nn.Module):
    """Class-1 logit = sum_j w_j * (mean of x over region j); class-0 logit 0. An explicit function of known regions."""

    def __init__(self, regions: torch.Tensor, weights: list[float]) -> None:
        super().__init__()
        self.register_buffer("avg", regions.double() / regions.sum((1, 2), keepdim=True))
        self.w = nn.Parameter(torch.tensor(weights, dtype=torch.float64), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        means = torch.einsum("nchw,rhw->nr", x.double(), self.avg) / x.shape[1]
        logit = means @ self.w
        return torch.stack([torch.zeros_like(logit), logit], 1)


QUADS = block_regions(8, 8, 4)  # 4 quadrants of an 8 x 8 image


def _ref(mean: float, var: float, shape: tuple[int, ...] = (1, 8, 8)) -> provex.Reference:
    return provex.Reference(torch.full(shape, mean), torch.full(shape, var))


def _brute_bh(p: list[float], alpha: float, c: float = 1.0) -> list[bool]:
    """Step-up BH by its definition: reject the k* smallest, k* = max{k : p_(k) <= k alpha / (m c)}."""
    m = len(p)
    order = sorted(range(m), key=lambda j: p[j])
    kstar = max([k for k in range(1, m + 1) if p[order[k - 1]] <= k * alpha / (m * c)], default=0)
    out = [False] * m
    for j in order[:kstar]:
        out[j] = True
    return out


# ----- independent truth: a model that is an explicit function of known regions -----


@pytest.mark.parametrize("test", ["xrt", "betting"])
@pytest.mark.parametrize(("fdr", "context"), [(True, "rest"), (False, "rest"), (True, "others")])
def test_regions_that_enter_the_model_are_rejected_and_the_others_are_not(test: str, fdr: bool, context: str) -> None:
    model = RegionModel(QUADS, [2.0, 1.0, 0.0, 0.0]).eval()
    x = torch.ones(3, 1, 8, 8)
    regions = torch.cat([QUADS, torch.zeros(1, 8, 8, dtype=torch.bool)])  # an empty mask is padding
    res = run_tests(
        model, x, None, reference=_ref(0.0, 0.01), regions=regions, test=test, fdr=fdr, context=context, seed=[0, 1, 2]
    )
    assert res.valid.tolist() == [[True] * 4 + [False]] * 3
    assert bool(res.values[:, 4].isnan().all()) and not bool(res.rejected[:, 4].any())
    assert res.rejected[:, :4].tolist() == [[True, True, False, False]] * 3
    extra = 1 if context == "others" else 0  # the tested side is random there: M = 1 draw of it
    if test == "xrt":
        k = res.settings["K"][0]
        # removing an entering region always lowers the score: p = 1 / (K + 1); the others tie: p = 1
        assert torch.equal(res.p_values[:, :2], torch.full((3, 2), 1 / (k + 1), dtype=torch.float64))
        assert torch.equal(res.p_values[:, 2:4], torch.ones(3, 2, dtype=torch.float64))
        assert k == (99 if not fdr else max(99, math.ceil(4 / 0.05) - 1))
        assert bool((res.model_calls[:, :4] == k + extra).all())
    else:
        assert torch.equal(res.e_values[:, 2:4], torch.ones(3, 2, dtype=torch.float64))  # wealth never moves
        level = (4 if fdr else 1) / 0.05
        assert bool((res.e_values[:, :2] >= level).all())
        assert bool((res.stopping_time[:, 2:4] == 200).all()) and bool((res.stopping_time[:, :2] < 30).all())
        assert bool((res.model_calls[:, :2] < res.model_calls[:, 2:4]).all())  # clear regions cost fewer calls


def test_xrt_p_value_matches_the_formula_on_replayed_draws() -> None:
    """p = (1 + #{T - T~_k <= 0}) / (K + 1), recomputed from the documented streams, contexts rest and empty."""
    model = RegionModel(QUADS, [3.0, -1.0, 0.5, 2.0]).eval()
    torch.manual_seed(5)
    x = torch.rand(2, 1, 8, 8) * 0.4 + 0.4
    ref = _ref(0.5, 0.25)
    k, m_draws, seeds = 30, 3, [11, 12]
    for context in ("rest", "empty"):
        res = run_tests(
            model, x, None, reference=ref, regions=QUADS, K=k, M=m_draws, fdr=False, context=context, seed=seeds
        )
        for i in range(2):
            score = lambda xs: torch.log_softmax(model(xs), 1)[:, 1]  # noqa: E731
            for r in range(4):
                keep_null = ~QUADS[r] if context == "rest" else torch.zeros(8, 8, dtype=torch.bool)
                eps = torch.randn((k * m_draws, 1, 8, 8), generator=generator(derive(seeds[i], r, 0)))
                null = score(torch.where(keep_null, x[i], 0.5 + 0.5 * eps)).view(k, m_draws).mean(1)
                if context == "rest":
                    t = score(x[i : i + 1])[0]
                else:
                    eps_a = torch.randn((m_draws, 1, 8, 8), generator=generator(derive(seeds[i], r, 1)))
                    t = score(torch.where(QUADS[r], x[i], 0.5 + 0.5 * eps_a)).mean()
                p = (1 + int((t - null <= 0).sum())) / (k + 1)
                assert res.p_values[i, r].item() == pytest.approx(p, abs=1e-12), (context, i, r)
                assert res.statistic[i, r].item() == pytest.approx(float(t), rel=1e-9)
        calls = k * m_draws + (m_draws if context == "empty" else 0)
        assert bool((res.model_calls == calls).all())
        assert res.total_model_calls == 2 + 8 * calls  # + one pass per image for its own score
    assert len({round(float(p), 6) for p in res.p_values.flatten()}) > 3  # not a degenerate case


def test_two_sided_xrt_detects_a_region_that_raises_the_score() -> None:
    model = RegionModel(QUADS, [0.0, -4.0, 0.0, 4.0]).eval()
    x = torch.ones(1, 1, 8, 8)
    kw = {"reference": _ref(0.0, 0.01), "regions": QUADS, "fdr": False, "target": 1}
    greater = run_tests(model, x, None, alternative="greater", **kw)
    two = run_tests(model, x, None, alternative="two-sided", **kw)
    assert greater.rejected.tolist() == [[False, False, False, True]]
    assert two.rejected.tolist() == [[False, True, False, True]]
    assert greater.p_values[0, 1] == 1.0


def test_betting_e_value_is_the_wealth_of_the_replayed_payoffs() -> None:
    model = RegionModel(QUADS, [3.0, 0.5, 0.0, 1.0]).eval()
    torch.manual_seed(1)
    x = torch.rand(1, 1, 8, 8) * 0.5 + 0.5
    ref = _ref(0.5, 0.2)
    tau_max, chunk, seed = 60, 7, 3
    res = run_tests(
        model, x, None, reference=ref, regions=QUADS, test="betting", fdr=False, tau_max=tau_max, chunk=chunk, seed=seed
    )
    score = lambda xs: torch.log_softmax(model(xs), 1)[:, 1]  # noqa: E731
    t = score(x)[0]
    for r in range(4):
        gen = generator(derive(seed, r, 0))
        draws = []
        for start in range(0, tau_max, chunk):
            c = min(chunk, tau_max - start)
            eps = torch.randn((c, 1, 8, 8), generator=gen)
            draws.append(score(torch.where(~QUADS[r], x[0], 0.5 + torch.full((1, 8, 8), 0.2).sqrt() * eps)))
        yn = torch.cat(draws)
        g = (t - yn)[1:]  # the first pair is the warm-up
        wealth = wealth_process(g[None])[0]
        crossed = (wealth >= 20).nonzero()
        stop = int(crossed[0]) if crossed.numel() else tau_max - 1
        assert res.stopping_time[0, r].item() == stop + 1, r
        assert res.e_values[0, r].item() == pytest.approx(float(wealth[stop]), rel=1e-9), r
        assert bool(res.rejected[0, r]) == bool(crossed.numel())
        assert res.model_calls[0, r].item() == min(tau_max, math.ceil((stop + 1) / chunk) * chunk)
    assert res.rejected[0].tolist() == [True, True, False, True]
    assert res.e_values[0, 2].item() == 1.0


def test_an_image_gets_the_same_result_alone_and_in_a_batch() -> None:
    model = RegionModel(QUADS, [3.0, 0.4, 0.2, 1.0]).eval()
    torch.manual_seed(2)
    x = torch.rand(3, 1, 8, 8)
    ref = _ref(0.5, 0.2)
    for test in ("xrt", "betting"):
        kw = {"reference": ref, "regions": QUADS, "test": test, "seed": [4, 5, 6], "batch_size": 37}
        batch = run_tests(model, x, None, **kw)
        alone = run_tests(model, x[1:2], None, **{**kw, "seed": [5], "batch_size": 5})
        assert torch.allclose(batch.values[1], alone.values[0], rtol=1e-9, atol=0)
        assert torch.equal(batch.rejected[1], alone.rejected[0])
        assert torch.equal(batch.model_calls[1], alone.model_calls[0])
        if test == "betting":
            assert torch.equal(batch.stopping_time[1], alone.stopping_time[0])


def test_a_blind_region_keeps_the_level_when_the_statistic_is_random() -> None:
    """Context "empty": a region the model ignores gives uniform p-values (chi-square) and rejects at most alpha."""
    model = RegionModel(QUADS, [1.0, 1.0, 0.0, 1.0]).eval()
    x = torch.full((1, 1, 8, 8), 0.9)
    ref = _ref(0.5, 0.1)
    reps = 300
    res = run_tests(
        model, x.expand(reps, -1, -1, -1), None, reference=ref, regions=QUADS[2:3], K=19, fdr=False, context="empty",
        seed=list(range(reps)),
    )  # fmt: skip
    p = res.p_values[:, 0]
    rate = float((p <= 0.05).double().mean())
    assert rate <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / reps)
    # discrete uniform on {1/20, ..., 1}: compare with its CDF
    u = (p * 20).round().long()
    counts = torch.bincount(u, minlength=21)[1:].double()
    chi2 = float(((counts - reps / 20) ** 2 / (reps / 20)).sum())
    assert chi2 < 43.8  # 0.999 quantile of chi2 with 19 degrees of freedom


# ----- multiplicity control against brute force -----


def test_bh_and_by_decisions_equal_the_step_up_definition() -> None:
    rng = np.random.default_rng(0)
    for trial in range(30):
        n, r = 3, 6
        p = torch.tensor(rng.uniform(0, 0.1, (n, r)) ** rng.uniform(0.5, 2.0), dtype=torch.float64)
        valid = torch.tensor(rng.uniform(size=(n, r)) < 0.8)
        valid[:, 0] = True
        p = torch.where(valid, p, torch.nan)
        for method, harmonic in (("bh", False), ("by", True)):
            rej, _, text = _control(p, valid, "p", 0.05, "image", method)
            for i in range(n):
                ps = p[i][valid[i]].tolist()
                c = sum(1 / j for j in range(1, len(ps) + 1)) if harmonic else 1.0
                assert rej[i][valid[i]].tolist() == _brute_bh(ps, 0.05, c), (trial, method)
                assert not bool(rej[i][~valid[i]].any())
            assert "each image" in text
        rej, _, text = _control(p, valid, "p", 0.05, "dataset", "bh")
        assert rej[valid].tolist() == _brute_bh(p[valid].tolist(), 0.05)
        assert "all regions" in text
        rej, _, text = _control(p, valid, "p", 0.05, "none", "bh")
        assert torch.equal(rej, valid & (p <= 0.05)) and "none" in text


def test_e_bh_decisions_per_image_and_over_the_dataset() -> None:
    rng = np.random.default_rng(1)
    e = torch.tensor(rng.exponential(30, (4, 5)), dtype=torch.float64)
    valid = torch.ones(4, 5, dtype=torch.bool)
    valid[2, 3:] = False
    e = torch.where(valid, e, torch.nan)
    rej, adj, text = _control(e, valid, "e", 0.1, "image", "bh")
    assert adj is None and "e-BH" in text
    for i in range(4):
        ev = e[i][valid[i]]
        m = ev.numel()
        kstar = max(
            [k for k in range(1, m + 1) if sorted(ev.tolist(), reverse=True)[k - 1] >= m / (0.1 * k)], default=0
        )
        expect = ev >= (sorted(ev.tolist(), reverse=True)[kstar - 1] if kstar else math.inf)
        assert rej[i][valid[i]].tolist() == expect.tolist()
    rej, _, _ = _control(e, valid, "e", 0.1, "dataset", "bh")
    assert rej[valid].tolist() == ebh(e[valid], 0.1).tolist()


# ----- regions -----


def test_components_are_the_connected_parts_of_the_support() -> None:
    m = torch.zeros(1, 1, 10, 10)
    m[0, 0, 1:3, 1:4] = 1.0  # 6 px, total 6
    m[0, 0, 3, 4] = 1.0  # touches the first blob diagonally: same component (8-neighbours) -> 7 px
    m[0, 0, 6:9, 6:9] = 2.0  # 9 px, total 18: first
    m[0, 0, 0, 9] = 2.0  # a single pixel: below min_size
    m[0, 0, 5, 0] = 0.4  # below threshold * max = 1.0: not in the support
    masks, valid = map_regions(m, "components", min_size=2, max_regions=4)
    assert masks.shape == (1, 4, 10, 10) and valid.tolist() == [[True, True, False, False]]
    assert masks[0, 0].nonzero().tolist() == [[r, c] for r in range(6, 9) for c in range(6, 9)]
    expect = torch.zeros(10, 10, dtype=torch.bool)
    expect[1:3, 1:4] = True
    expect[3, 4] = True
    assert torch.equal(masks[0, 1], expect)
    assert not bool(masks[0, 2:].any())
    lab = label_map(masks)
    assert lab[0, 7, 7] == 1 and lab[0, 2, 2] == 2 and lab[0, 0, 0] == 0


def test_top_k_blocks_and_positive_cells_follow_the_block_sums() -> None:
    torch.manual_seed(0)
    rel = torch.randn(2, 3, 12, 16)
    blocks = block_regions(12, 16, 4)  # 3 x 4 blocks
    sums = torch.einsum("nchw,rhw->nr", rel.double(), blocks.double())
    masks, valid = map_regions(rel, "top-k", k=3, grid=4)
    assert masks.shape == (2, 3, 12, 16) and bool(valid.all())
    for i in range(2):
        top = torch.argsort(sums[i], descending=True)[:3]
        for j, b in enumerate(top.tolist()):
            assert torch.equal(masks[i, j], blocks[b])
    cells, cvalid = map_regions(rel, "cells", grid=4, max_regions=12)
    for i in range(2):
        assert int(cvalid[i].sum()) == int((sums[i] > 0).sum())
        for j in range(int(cvalid[i].sum())):
            b = int((blocks == cells[i, j]).flatten(1).all(1).nonzero()[0])
            assert sums[i, b] > 0
    # uneven sides: the last block absorbs the remainder (h-Shap's cells)
    odd = block_regions(10, 7, 3)
    assert odd.shape[0] == 3 * 2 and odd[-1].sum() == 4 * 4 and bool(odd.sum(0).eq(1).all())


def test_auto_regions_follow_the_method() -> None:
    model = RegionModel(QUADS, [1.0, 1.0, 1.0, 1.0]).eval()
    x = torch.rand(1, 1, 8, 8)
    rel = torch.zeros(1, 1, 8, 8)
    rel[0, 0, :3, :3] = 1.0
    ref = _ref(0.5, 0.1)
    rde = provex.Explanation(rel, "rc-rde", torch.tensor([1]))
    hs = provex.Explanation(rel, "h-shap", torch.tensor([1]), info={"min_size": 2})
    other = provex.Explanation(rel, "smoothgrad", torch.tensor([1]))
    assert run_tests(model, x, rde, reference=ref, K=9).settings["regions"]["kind"] == "components"
    cells = run_tests(model, x, hs, reference=ref, K=9)
    assert cells.settings["regions"]["kind"] == "cells" and cells.settings["regions"]["grid"] == 2
    assert int(cells.n_regions[0]) == 4  # the 3 x 3 square covers 4 cells of 2 px
    assert run_tests(model, x, other, reference=ref, K=9).settings["regions"]["kind"] == "top-k"


# ----- results, methods, errors -----


def test_result_round_trips_and_plots(tmp_path) -> None:
    model = RegionModel(QUADS, [2.0, 1.0, 0.0, 0.0]).eval()
    x = torch.rand(2, 1, 8, 8)
    for test in ("xrt", "betting"):
        res = run_tests(model, x, None, reference=_ref(0.0, 0.01), regions=QUADS[:3], test=test, tau_max=40)
        back = RegionTestResult.load(res.save(tmp_path / f"{test}.safetensors"))
        for name in ("masks", "valid", "rejected", "target", "model_calls", "images"):
            assert torch.equal(getattr(back, name), getattr(res, name))
        assert torch.equal(back.values.nan_to_num(-1), res.values.nan_to_num(-1))
        assert back.control == res.control and back.settings == res.settings
        d = json.loads(json.dumps(res.to_dict(), allow_nan=False))
        assert d["summary"]["rejected"] == int(res.rejected.sum()) and len(d["images"][0]["regions"]) == 3
        png = res.plot(tmp_path / f"{test}.png")
        assert png.stat().st_size > 5000
        per = res.per_image()
        assert per["regions"].tolist() == [3, 3]
        assert torch.equal(res.decision_map()[0][QUADS[0]], torch.ones(16))
    with pytest.raises(ValueError, match="not a provex region-test file"):
        (tmp_path / "bad.safetensors").write_bytes(b"nonsense")
        RegionTestResult.load(tmp_path / "bad.safetensors")


def test_combined_method_returns_the_map_and_its_decisions(tmp_path) -> None:
    model = RegionModel(QUADS, [2.0, 1.0, 0.0, 0.0]).eval()
    x = torch.ones(2, 1, 8, 8)
    assert "sensitivity+test" in provex.methods() and "shap-xrt+test" not in provex.methods()
    exp = provex.explain(
        model, x, "sensitivity+test", reference=_ref(0.0, 0.01), test="betting",
        test_options={"k": 2, "grid": 4, "tau_max": 50},
    )  # fmt: skip
    assert exp.method == "sensitivity+test"
    assert set(exp.maps) == {"region_labels", "region_decisions"}
    per = exp.info["per_image"]
    assert per["regions"].tolist() == [2, 2] and per["region_e_values"].shape == (2, 2)
    # the gradient map puts weight 2 on quadrant 0 and 1 on quadrant 1: both are tested and significant
    assert per["regions_rejected"].tolist() == [2, 2]
    assert exp.maps["region_decisions"][0, 0, 0, 0] == 1.0 and exp.maps["region_decisions"][0, 0, 7, 7] == 0.0
    back = provex.Explanation.load(exp.save(tmp_path / "e.pt"))
    assert back.info["region_tests"]["summary"]["rejected"] == 4
    with pytest.raises(ValueError, match="test_options"):
        provex.explain(model, x, "sensitivity+test", reference=_ref(0.0, 0.01), test_options={"bogus": 1})
    res = exp.test(model, x, reference=_ref(0.0, 0.01), k=2, grid=4)
    assert res.rejected.tolist() == [[True, True], [True, True]]


def test_a_conditional_sampler_replaces_the_reference() -> None:
    model = RegionModel(QUADS, [2.0, 0.0, 0.0, 0.0]).eval()
    x = torch.ones(1, 1, 8, 8)
    seen: list[torch.Tensor] = []

    def zeros(xs: torch.Tensor, keep: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
        seen.append(keep)
        return torch.where(keep[:, None], xs, torch.zeros_like(xs))

    res = run_tests(model, x, None, regions=QUADS[:2], sampler=zeros, K=9, fdr=False)
    assert res.settings["fill"].startswith("conditional") and res.settings["reference"] is None
    assert res.p_values.tolist() == [[0.1, 1.0]]
    assert torch.equal(seen[0][0], ~QUADS[0])


def test_bad_input_names_the_argument() -> None:
    model = RegionModel(QUADS, [1.0, 1.0, 0.0, 0.0]).eval()
    x = torch.rand(2, 1, 8, 8)
    ref = _ref(0.5, 0.1)
    cases = [
        ({"regions": QUADS, "test": "t"}, "test must be"),
        ({"regions": QUADS, "context": "all"}, "context must be"),
        ({"regions": QUADS, "fdr": "maybe"}, "fdr must be"),
        ({"regions": QUADS, "fdr_method": "holm"}, "fdr_method must be"),
        ({"regions": QUADS, "score": "margin"}, "score must be"),
        ({"regions": QUADS, "K": 0}, "K must be"),
        ({"regions": QUADS, "M": 1.5}, "M must be"),
        ({"regions": QUADS, "tau_max": 1}, "tau_max must be"),
        ({"regions": QUADS, "alpha": 1.5}, "alpha must be"),
        ({"regions": "components"}, "explanation"),
        ({"regions": "blobs"}, "regions must be"),
        ({"regions": torch.zeros(4, 7, 8, dtype=torch.bool)}, "regions masks must be"),
        ({"regions": torch.zeros(4, 8, 8, dtype=torch.bool)}, "every mask is empty"),
        ({"regions": torch.full((2, 8, 8), 0.5)}, "boolean"),
        ({"regions": QUADS, "sampler": 3}, "sampler must be"),
    ]
    for kw, msg in cases:
        with pytest.raises(ValueError, match=msg):
            run_tests(model, x, None, reference=ref, **kw)
    with pytest.raises(ValueError, match="explanation has shape"):
        run_tests(model, x, torch.zeros(2, 1, 4, 4), reference=ref)
    with pytest.raises(ValueError, match="reference describes"):
        run_tests(model, x, None, reference=_ref(0.5, 0.1, (1, 4, 4)), regions=QUADS)
