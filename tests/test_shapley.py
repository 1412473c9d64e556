"""Exact Shapley values and h-Shap against independent truths (permutations, brute-force games)."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import pytest
import torch
from torch import nn

import provex
from provex.shapley import HShap, cell_edges, coalitions, cycle_shifts, exact_shapley, shapley_from_table


@pytest.fixture(autouse=True)
def _one_thread():
    """These games are tiny: one thread avoids thread contention on a shared CPU (10x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def permutation_shapley(table: list[float], n: int) -> list[Fraction]:
    """Shapley values from the definition: average marginal contribution over all n! orders, exactly."""
    vals = [Fraction(v) for v in table]
    phi = [Fraction(0)] * n
    for order in itertools.permutations(range(n)):
        mask = 0
        for p in order:
            phi[p] += vals[mask | (1 << p)] - vals[mask]
            mask |= 1 << p
    return [f / math.factorial(n) for f in phi]


class TableModel(nn.Module):
    """A 2 x 2 image whose 4 pixels are the quadrants: logit 1 = table[pixels shown as bits]."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("table", table)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bits = (x.flatten(1) > 0.5).long()  # pixel order TL, TR, BL, BR = quadrant order
        idx = (bits * (2 ** torch.arange(4))).sum(1)
        val = self.table[idx]
        return torch.stack([torch.zeros_like(val), val], 1)


class Detector(nn.Module):
    """The h-Shap assumption: output 1 exactly when some pixel (a 'cross') exceeds 0.5."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hit = (x.amax(dim=(1, 2, 3)) > 0.5).to(x.dtype)
        return torch.stack([torch.zeros_like(hit), hit], 1)


def _quadrant_explain(table: torch.Tensor, **kw) -> torch.Tensor:
    x = torch.ones(1, 1, 2, 2)
    exp = HShap(TableModel(table), torch.zeros(1, 2, 2), min_size=1, score="logit", **kw).explain(x, 1)
    return exp.relevance[0, 0].flatten()


# ----------------------------------------------------------------------------- exact Shapley


@pytest.mark.parametrize("n", [1, 3, 4, 5])
def test_exact_shapley_equals_permutation_definition(n: int) -> None:
    gen = torch.Generator().manual_seed(n)
    table = torch.randn(2**n, generator=gen, dtype=torch.float64)
    truth = permutation_shapley(table.tolist(), n)

    def value_fn(s: torch.Tensor) -> torch.Tensor:
        idx = (s.long() * (2 ** torch.arange(n))).sum(1)
        return table[idx]

    phi = exact_shapley(value_fn, n, batch_size=3)
    assert phi.dtype == torch.float64
    torch.testing.assert_close(phi, torch.tensor([float(f) for f in truth], dtype=torch.float64), rtol=0, atol=1e-14)
    # Efficiency: the values add up to v(all) - v(empty).
    assert abs(float(phi.sum()) - float(table[-1] - table[0])) < 1e-12


def test_exact_shapley_several_games_and_coalition_order() -> None:
    c = coalitions(3)
    assert c.shape == (8, 3) and c[5].tolist() == [True, False, True]
    weights = torch.tensor([1.0, 2.0, -3.0], dtype=torch.float64)
    phi = exact_shapley(lambda s: torch.stack([s.double() @ weights, (s.double() @ weights) ** 2], 1), 3)
    assert phi.shape == (3, 2)
    torch.testing.assert_close(phi[:, 0], weights)  # additive game: each player's own weight
    truth = permutation_shapley([float((c[m].double() @ weights) ** 2) for m in range(8)], 3)
    torch.testing.assert_close(phi[:, 1], torch.tensor([float(f) for f in truth], dtype=torch.float64))


def _null_player_table(seed: int) -> torch.Tensor:
    """Random float32 4-player game in which player 3 is null: v(S + 3) = v(S)."""
    gen = torch.Generator().manual_seed(seed)
    base = torch.rand(8, generator=gen).float()
    table = torch.empty(16)
    for m in range(16):
        table[m] = base[m & 7]
    return table


def test_zero_shapley_value_is_exactly_zero() -> None:
    table = _null_player_table(5)
    # The naive float32 computation (one weighted sum of all 16 values, as in the reference
    # package) leaves a residue that passes `> 0`; the test is meaningful only if it does.
    w = [1 / 4, 1 / 12, 1 / 12, 1 / 4]
    naive = torch.zeros((), dtype=torch.float32)
    for m in range(16):
        size = bin(m & 7).count("1")
        sign = 1.0 if m & 8 else -1.0
        naive = naive + torch.tensor(sign * w[size], dtype=torch.float32) * table[m]
    assert float(naive) > 0.0
    phi = shapley_from_table(table, 4)
    assert float(phi[3]) == 0.0 and not bool(phi[3] > 0)
    # Exact cancellation of non-zero contributions: +a, +b, -(a + b) at the same weight.
    a, b = 0.1, 0.7
    v = {0b000: 0.0, 0b001: 0.3, 0b010: 0.5, 0b100: 0.9, 0b011: 0.3 + a, 0b101: 0.9 + b, 0b110: 0.5 - (a + b)}
    v[0b111] = 2.0
    tab3 = [0.0] * 16
    for m in range(8):
        tab3[m] = v.get(m, 0.0)
        tab3[m | 8] = tab3[m]  # player 3 null
    truth = permutation_shapley(tab3, 4)
    phi = shapley_from_table(torch.tensor(tab3, dtype=torch.float64), 4)
    for f, p in zip(truth, phi.tolist()):
        assert (f == 0) == (p == 0.0)
        assert abs(float(f) - p) < 1e-15


def test_exact_shapley_bad_input() -> None:
    with pytest.raises(ValueError, match="n_players"):
        exact_shapley(lambda s: s.sum(1), 0)
    with pytest.raises(ValueError, match="n_players"):
        exact_shapley(lambda s: s.sum(1), 30)
    with pytest.raises(ValueError, match="value_fn must return"):
        exact_shapley(lambda s: s.sum(), 3)


# ----------------------------------------------------------------------------- h-Shap games


@pytest.mark.parametrize("seed", range(5))
def test_local_four_player_values_equal_brute_force(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    table = torch.randn(16, generator=gen)
    # Root score 1 times the local values; threshold -inf keeps every quadrant.
    rel = _quadrant_explain(table, threshold=float("-inf"))
    truth = permutation_shapley(table.double().tolist(), 4)
    torch.testing.assert_close(rel, torch.tensor([float(f) for f in truth], dtype=torch.float64), rtol=0, atol=1e-12)


def test_null_quadrant_is_not_kept_on_float32_residue() -> None:
    table = _null_player_table(5)
    exp = HShap(TableModel(table), torch.zeros(1, 2, 2), min_size=1, score="logit").explain(torch.ones(1, 1, 2, 2), 1)
    rel = exp.relevance[0, 0].flatten()
    assert float(rel[3]) == 0.0
    truth = permutation_shapley(table.double().tolist(), 4)
    assert [bool(r > 0) for r in rel] == [f > 0 for f in truth]


def test_absolute_and_relative_thresholds() -> None:
    weights = torch.tensor([0.1, 0.2, 0.3, 0.4])
    table = torch.tensor([float(sum(weights[i] for i in range(4) if m >> i & 1)) for m in range(16)])
    # Additive game: each quadrant's value is its weight.
    torch.testing.assert_close(_quadrant_explain(table), weights.double(), rtol=0, atol=1e-7)
    rel = _quadrant_explain(table, threshold=0.2)  # strictly above 0.2
    assert (rel > 0).tolist() == [False, False, True, True]
    q70 = torch.quantile(weights.double(), 0.7)  # 0.31
    rel = _quadrant_explain(table, threshold=0.7, threshold_mode="relative")
    assert (rel > 0).tolist() == (weights.double() >= q70).tolist() == [False, False, False, True]
    rel = _quadrant_explain(table, threshold=0.5, threshold_mode="relative")
    assert (rel > 0).tolist() == [False, False, True, True]


def _leaf_game_shapley(x: torch.Tensor, bg: torch.Tensor, s: int) -> torch.Tensor:
    """Brute force: exact Shapley values of the game whose players are all min_size cells."""
    _, _, h, w = x.shape
    re, ce = cell_edges(h, s), cell_edges(w, s)
    nr, nc = re.numel() - 1, ce.numel() - 1
    row_cell = torch.bucketize(torch.arange(h), re[1:], right=True)
    col_cell = torch.bucketize(torch.arange(w), ce[1:], right=True)
    pixel_player = row_cell[:, None] * nc + col_cell[None, :]  # (H, W)

    def value_fn(coal: torch.Tensor) -> torch.Tensor:
        shown = coal[:, pixel_player]  # (M, H, W)
        inputs = torch.where(shown[:, None], x.expand(coal.shape[0], -1, -1, -1), bg)
        return Detector()(inputs)[:, 1]

    return exact_shapley(value_fn, nr * nc).view(nr, nc), pixel_player


@pytest.mark.parametrize(("h", "w", "s"), [(8, 8, 2), (6, 10, 2)])
def test_hshap_leaves_equal_exact_shapley_under_the_assumption(h: int, w: int, s: int) -> None:
    """One cross: h-Shap's leaf values are the exact Shapley values of the cell game (A1)."""
    bg = torch.zeros(1, h, w)
    nr, nc = h // s, w // s
    gen = torch.Generator().manual_seed(h * w)
    for cell in range(nr * nc):
        x = torch.rand(1, 1, h, w, generator=gen) * 0.4
        r, c = divmod(cell, nc)
        dr, dc = torch.randint(s, (2,), generator=gen).tolist()
        x[0, 0, r * s + dr, c * s + dc] = 1
        exp = HShap(Detector(), bg, min_size=s, score="logit").explain(x, 1)
        phi, pixel_player = _leaf_game_shapley(x, bg, s)
        torch.testing.assert_close(exp.relevance[0, 0], phi.flatten()[pixel_player], rtol=0, atol=1e-12)


def test_hshap_support_and_efficiency_with_several_crosses() -> None:
    """Several crosses: h-Shap keeps exactly the cells with positive Shapley value, and both sum to 1.

    The values agree when the crosses split evenly down the tree (one per root quadrant: 1/4
    each); otherwise the hierarchical values differ from the flat ones (2 crosses in one
    quadrant and 1 in another: 1/4, 1/4, 1/2 against 1/3 each).
    """
    h = w = 8
    bg = torch.zeros(1, h, w)
    cases = {
        ((0, 0), (0, 7), (7, 0), (7, 7)): ([0.25] * 4, [0.25] * 4),
        ((0, 0), (2, 2), (7, 7)): ([0.25, 0.25, 0.5], [1 / 3] * 3),
    }
    for pix, (h_vals, flat_vals) in cases.items():
        x = torch.zeros(1, 1, h, w)
        for r, c in pix:
            x[0, 0, r, c] = 1.0
        rel = HShap(Detector(), bg, min_size=2, score="logit").explain(x, 1).relevance[0, 0]
        phi, pixel_player = _leaf_game_shapley(x, bg, 2)
        flat = phi.flatten()[pixel_player]
        assert torch.equal(rel > 0, flat > 0)
        assert abs(float(rel[::2, ::2].sum()) - 1) < 1e-12 and abs(float(phi.sum()) - 1) < 1e-12
        torch.testing.assert_close(torch.stack([rel[r, c] for r, c in pix]), torch.tensor(h_vals, dtype=torch.float64))
        torch.testing.assert_close(
            torch.stack([flat[r, c] for r, c in pix]), torch.tensor(flat_vals, dtype=torch.float64)
        )


def test_cells_have_exactly_min_size_on_uneven_images() -> None:
    assert cell_edges(100, 4).diff().unique().tolist() == [4]
    assert cell_edges(120, 4).numel() == 31
    assert cell_edges(30, 4).diff().tolist() == [4] * 6 + [6]  # the last cell absorbs the rest
    # Every cell explored (threshold -inf) on a 10 x 14 image with min_size 3: 3 x 4 cells.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Flatten(), nn.Linear(2 * 140, 2)).double().eval()
    x = torch.rand(1, 1, 10, 14, dtype=torch.float64)
    exp = HShap(model, torch.zeros(1, 10, 14, dtype=torch.float64), min_size=3, threshold=float("-inf")).explain(x)
    assert exp.info["cell_grid"] == [3, 4] and exp.info["leaf_cells_per_image"] == [12]
    assert exp.info["levels"] == 2 and exp.info["regions_per_level"] == [1, 4]
    rel = exp.relevance[0, 0]
    for r0, r1 in zip([0, 3, 6], [3, 6, 10]):
        for c0, c1 in zip([0, 3, 6, 9], [3, 6, 9, 14]):
            block = rel[r0:r1, c0:c1]
            assert torch.all(block == block[0, 0])


def test_cycle_radius_zero_equals_plain_and_shifts_match_rolled_explanations() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 96, 2)).double().eval()
    x = torch.rand(2, 1, 8, 12, dtype=torch.float64)
    bg = torch.full((1, 8, 12), 0.5, dtype=torch.float64)
    kw = {"min_size": 2, "threshold": float("-inf")}
    plain = HShap(model, bg, **kw).explain(x, 1)
    zero = HShap(model, bg, radii=(0,), angles=(0, 90, 180, 270), **kw).explain(x, 1)
    assert torch.equal(plain.relevance, zero.relevance)
    assert cycle_shifts((0, 3), (0, 90)) == [(0, 0), (0, 3), (-3, 0)]
    # A shifted partition equals explaining the rolled image with a model that rolls it back.
    cyc = HShap(model, bg, radii=(0, 3), angles=(0, 90), **kw).explain(x, 1)
    maps = [plain.relevance]
    for dr, dc in [(0, 3), (-3, 0)]:
        rolled = nn.Sequential()
        rolled.forward = lambda z, dr=dr, dc=dc: model(torch.roll(z, (dr, dc), (2, 3)))  # type: ignore[method-assign]
        e = HShap(rolled, torch.roll(bg, (-dr, -dc), (1, 2)), **kw).explain(torch.roll(x, (-dr, -dc), (2, 3)), 1)
        maps.append(torch.roll(e.relevance, (dr, dc), (2, 3)))
    torch.testing.assert_close(cyc.relevance, torch.stack(maps).mean(0), rtol=1e-10, atol=1e-12)


def test_inputs_are_not_modified_and_batches_agree(tiny_model: nn.Module) -> None:
    torch.manual_seed(3)
    x = torch.rand(3, 1, 6, 6, dtype=torch.float64)
    bg = torch.rand(1, 6, 6, dtype=torch.float64)
    x0, bg0 = x.clone(), bg.clone()
    exp = HShap(tiny_model, bg, min_size=1, batch_size=7, radii=(0, 1), angles=(0, 90)).explain(x, 2)
    assert torch.equal(x, x0) and torch.equal(bg, bg0)
    exp2 = provex.explain(tiny_model, x, "h-shap", target=2, reference=bg, grid=1, radii=(0, 1), angles=(0, 90))
    assert torch.equal(x, x0) and torch.equal(bg, bg0)
    torch.testing.assert_close(exp.relevance, exp2.relevance, rtol=1e-6, atol=1e-7)  # float32 map from explain
    with pytest.warns(FutureWarning, match="'min_size' of 'h-shap' is deprecated"):
        old = provex.explain(tiny_model, x, "h-shap", target=2, background=bg, min_size=1, radii=(0, 1), angles=(0, 90))
    assert torch.equal(old.relevance, exp2.relevance)
    for i in range(3):
        one = HShap(tiny_model, bg, min_size=1, batch_size=1000, radii=(0, 1), angles=(0, 90))
        single = one.explain(x[i : i + 1], 2)
        torch.testing.assert_close(single.relevance[0], exp.relevance[i], rtol=1e-9, atol=1e-12)
        assert single.info["per_image"]["model_calls"][0] == exp.info["per_image"]["model_calls"][i]
    # every input through the model: each image's coalitions and itself, plus the shared background
    assert exp.relevance.shape == x.shape
    assert exp2.info["model_calls"] == int(exp.info["per_image"]["model_calls"].sum()) + 1


def test_nothing_survives_gives_zero_map_and_says_so(tiny_model: nn.Module) -> None:
    x = torch.rand(2, 1, 6, 6, dtype=torch.float64)
    exp = HShap(tiny_model, torch.zeros(1, 6, 6, dtype=torch.float64), min_size=1, threshold=1.5).explain(x)
    assert torch.count_nonzero(exp.relevance) == 0
    assert exp.info["empty"] == [0, 1] and "no cell" in exp.info["note"]


def test_bad_input_names_the_argument(tiny_model: nn.Module) -> None:
    x = torch.rand(1, 1, 6, 6, dtype=torch.float64)
    bg = torch.zeros(1, 6, 6, dtype=torch.float64)
    for bad in (0, -2, 2.5, True, "4"):
        with pytest.raises(ValueError, match="min_size"):
            HShap(tiny_model, bg, min_size=bad)
    with pytest.raises(ValueError, match="min_size=7 is larger than the image"):
        HShap(tiny_model, bg, min_size=7).explain(x)
    with pytest.raises(ValueError, match="background has shape"):
        HShap(tiny_model, torch.zeros(1, 5, 6, dtype=torch.float64), min_size=2).explain(x)
    with pytest.raises(ValueError, match="background must be"):
        HShap(tiny_model, torch.zeros(6, 6), min_size=2)
    with pytest.raises(ValueError, match="target out of range"):
        HShap(tiny_model, bg, min_size=2).explain(x, 3)
    with pytest.raises(ValueError, match="target out of range"):
        provex.explain(tiny_model, x, "h-shap", target=5, reference=bg)
    with pytest.raises(ValueError, match="grid=7 is larger than the image"):
        provex.explain(tiny_model, x, "h-shap", grid=7, reference=bg)
    with pytest.raises(ValueError, match="relative threshold is a quantile"):
        HShap(tiny_model, bg, min_size=2, threshold=70, threshold_mode="relative")
    with pytest.raises(ValueError, match="threshold_mode"):
        HShap(tiny_model, bg, min_size=2, threshold_mode="percent")
    with pytest.raises(ValueError, match="score"):
        HShap(tiny_model, bg, min_size=2, score="prob")
    with pytest.raises(ValueError, match="radii"):
        HShap(tiny_model, bg, min_size=2, radii=(-1,))
    with pytest.raises(ValueError, match="reference: a background tensor must have shape"):
        provex.explain(tiny_model, x, "h-shap", reference=torch.zeros(1, 5, 5))


def test_without_a_reference_each_image_uses_its_own_channel_means(tiny_model: nn.Module) -> None:
    """No card, no reference: the background of image i is image i's per-channel mean (a warning
    names the fix), so the map equals HShap with that background and does not depend on batch-mates."""
    from provex.reference import ReferenceWarning

    x = torch.rand(3, 1, 6, 6, dtype=torch.float64)
    with pytest.warns(ReferenceWarning, match="Reference.fit"):
        exp = provex.explain(tiny_model, x, "h-shap", grid=2, target=1)
    assert exp.info["reference"]["per_image"] is True
    for i in range(3):
        bg = x[i].mean((1, 2), keepdim=True).expand(1, 6, 6)
        want = HShap(tiny_model, bg, min_size=2).explain(x[i : i + 1], 1).relevance
        torch.testing.assert_close(exp.relevance[i : i + 1], want, rtol=1e-12, atol=1e-12)


def test_channels_share_the_cell_score() -> None:
    """For C channels each component holds score / C: the channel sum is the one-channel map."""
    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, 5, 2] = 1.0
    one = HShap(Detector(), torch.zeros(1, 8, 8), min_size=2, score="logit").explain(x, 1).relevance
    three = HShap(Detector(), torch.zeros(3, 8, 8), min_size=2, score="logit").explain(x.expand(1, 3, 8, 8), 1)
    assert three.relevance.shape == (1, 3, 8, 8)
    torch.testing.assert_close(three.relevance.sum(1), one[:, 0], rtol=0, atol=1e-15)
    assert float(one.max()) == 1.0
