"""Figures a reader understands: labelled colour bars, stated scales, channel reduction, thresholds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from provex import Explanation
from provex.stats.regions import grid_regions
from provex.viz.style import map_style


def _exp(method: str, rel: torch.Tensor, info: dict | None = None, **kw) -> Explanation:
    n = rel.shape[0]
    return Explanation(rel, method, torch.arange(n) % 3, info=info or {}, prediction=torch.arange(n) % 3, **kw)


def _map_images(fig: Figure) -> list:
    """The heat-map artists (second image of each panel that has an underlay, else the only one)."""
    out = []
    for ax in fig.axes:
        ims = ax.get_images()
        if ims and ax.get_label() != "<colorbar>":
            out.append(ims[-1])
    return out


def _colorbar_labels(fig: Figure) -> list[str]:
    return [ax.get_ylabel() for ax in fig.axes if ax.get_label() == "<colorbar>" and ax.get_ylabel()]


def test_mask_over_three_channels_is_averaged_on_its_own_range() -> None:
    # a kept pixel is 1 in each of 3 channels: summing would show 3 (the 0-1.8 scale bug)
    rel = torch.zeros(2, 3, 8, 8)
    rel[:, :, 2:4, 2:4] = 1.0
    rel[1, :, 5, 5] = 0.6
    fig = _exp("rc-rde", rel).plot(images=torch.rand(2, 3, 8, 8))
    arts = _map_images(fig)
    assert len(arts) == 2
    for art in arts:
        assert art.get_clim() == (0.0, 1.0)
        assert np.nanmax(art.get_array()) == pytest.approx(1.0)
    assert float(arts[1].get_array()[5, 5]) == pytest.approx(0.6)
    labels = _colorbar_labels(fig)
    assert labels and all("mask value" in s and "mean over 3 channels" in s for s in labels)
    assert "colour scale shared by all panels" in fig._suptitle.get_text()


def test_gradient_is_summed_and_per_map_scale_is_stated() -> None:
    rel = torch.zeros(2, 3, 6, 6)
    rel[0, :, 1, 1] = torch.tensor([1.0, 2.0, -0.5])  # channel sum 2.5
    rel[1, 0, 2, 2] = -4.0
    fig = _exp("sensitivity", rel).plot(images=torch.rand(2, 3, 6, 6), scale="per-map")
    arts = _map_images(fig)
    assert float(arts[0].get_array()[1, 1]) == pytest.approx(2.5)
    assert arts[0].get_clim() == pytest.approx((-2.5, 2.5))  # signed: centred at zero, own range
    assert arts[1].get_clim() == pytest.approx((-4.0, 4.0))
    assert any("logit / input unit" in s and "sum over 3 channels" in s for s in _colorbar_labels(fig))
    assert "colour scale per map" in fig._suptitle.get_text()
    shared = _exp("sensitivity", rel).plot(scale="shared")
    assert {a.get_clim() for a in _map_images(shared)} == {(-4.0, 4.0)}


def test_hshap_values_below_its_threshold_are_not_drawn() -> None:
    rel = torch.zeros(1, 1, 8, 8, dtype=torch.float64)
    rel[0, 0, :4, :4] = 8e-19  # float residue that passed threshold 0 (drawn solid before)
    rel[0, 0, 4:, 4:] = 0.25
    info = {"threshold": 0.0, "threshold_mode": "absolute", "score": "softmax"}
    art = _map_images(_exp("h-shap", rel, info).plot())[0]
    drawn = np.ma.masked_invalid(art.get_array())
    assert drawn.mask[:4, :4].all() and not drawn.mask[4:, 4:].any()
    # the method's own absolute threshold hides what it discards
    style = map_style("h-shap", {"threshold": 0.3, "threshold_mode": "absolute"})
    assert style.threshold == 0.3
    art = _map_images(_exp("h-shap", rel, {"threshold": 0.3}).plot())[0]
    assert np.ma.masked_invalid(art.get_array()).mask.all()


def test_shap_xrt_draws_region_p_values_and_decisions() -> None:
    regions = grid_regions(8, 8, 2)
    p = torch.tensor([[0.01, 0.5, 0.04, 0.9]], dtype=torch.float64)
    rel = torch.full((1, 1, 8, 8), 0.3)  # Shapley values: must not be what is drawn
    info = {"p_values": p, "regions": regions, "options": {"alpha": 0.05, "K": 100}, "context": "empty"}
    fig = _exp("shap-xrt", rel, info).plot(images=torch.rand(1, 1, 8, 8))
    texts = sorted(t.get_text() for ax in fig.axes for t in ax.texts)
    assert texts == sorted(["0.01*", "0.5", "0.04*", "0.9"])
    grid = _map_images(fig)[0].get_array()
    assert float(grid[0, 0]) == pytest.approx(2.0)  # -log10 0.01, top-left region
    assert float(grid[7, 7]) == pytest.approx(-np.log10(0.9))
    assert any("p-value" in s for s in _colorbar_labels(fig))
    assert "rejected at alpha = 0.05" in fig._suptitle.get_text()


def test_plot_returns_figure_writes_png_and_names_labels(tmp_path) -> None:
    exp = _exp("sensitivity", torch.randn(3, 1, 6, 6))
    fig = exp.plot(labels=["cat", "dog", "owl"])
    assert isinstance(fig, Figure)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles[1] == "target 1 dog\npred 1 dog"
    path = exp.plot(tmp_path / "a.png")
    assert path == tmp_path / "a.png" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fig2 = exp.plot(tmp_path / "b.png", return_figure=True)
    assert isinstance(fig2, Figure) and (tmp_path / "b.png").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png"]


@pytest.mark.parametrize(
    "images",
    [torch.rand(3, 1, 5, 6), torch.rand(2, 1, 6, 6), torch.rand(3, 6, 6)],
    ids=["height", "count", "ndim"],
)
def test_plot_refuses_images_of_another_size(tmp_path, images) -> None:
    exp = _exp("sensitivity", torch.randn(3, 1, 6, 6))
    with pytest.raises(ValueError, match=r"^images must be \(N=3, C, H=6, W=6\)") as err:
        exp.plot(tmp_path / "x.png", images=images)
    assert "\n" not in str(err.value)
    assert not any(tmp_path.iterdir())


def test_plot_refuses_bad_scale_and_labels() -> None:
    exp = _exp("sensitivity", torch.randn(2, 1, 4, 4))
    with pytest.raises(ValueError, match=r"^scale must be"):
        exp.plot(scale="log")
    with pytest.raises(ValueError, match=r"^labels must be"):
        exp.plot(labels="cat")


def test_mr_rde_columns_share_one_labelled_scale() -> None:
    maps = {"k=1": torch.zeros(2, 1, 4, 4), "k=2": torch.ones(2, 1, 4, 4) * 0.5}
    maps["k=1"][:, :, 0, 0] = 1.0
    exp = _exp("mr-rde", (maps["k=1"] + maps["k=2"]) / 2, maps=maps)
    fig = exp.plot(images=torch.rand(2, 1, 4, 4))
    arts = [a for a in _map_images(fig) if a.get_cmap().name.startswith("provex")]
    assert len(arts) == 2 * 3  # mean + 2 rates, 2 images
    assert {a.get_clim() for a in arts} == {(0.0, 1.0)}
    assert [ax.get_title() for ax in fig.axes[:4]] == ["input", "mean", "k=1", "k=2"]
    assert _colorbar_labels(fig) == ["mean mask value over rates"]
