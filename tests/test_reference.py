"""Reference distributions: streaming moments against torch's two-pass statistics, storage, resolution."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

import provex
from provex.reference import Reference, ReferenceWarning, resolve_reference


def _data(n: int = 37, shape=(3, 5, 4), seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, *shape, generator=g) * 3 + torch.arange(shape[0]).view(-1, 1, 1)


@pytest.mark.parametrize("batch_size", [1, 4, 37, 100])
def test_fit_tensor_matches_two_pass_statistics(batch_size: int) -> None:
    x = _data().double()
    ref = Reference.fit(x, batch_size=batch_size)
    torch.testing.assert_close(ref.mean.double(), x.mean(0), atol=1e-6, rtol=0)
    torch.testing.assert_close(ref.var.double(), x.var(0, unbiased=False), atol=1e-6, rtol=0)
    torch.testing.assert_close(ref.background, ref.mean)
    assert ref.count == 37 and ref.shape == (3, 5, 4)


def test_fit_dataset_loader_and_max_images_agree() -> None:
    x = _data()
    labels = torch.arange(37)
    a = Reference.fit(TensorDataset(x, labels), batch_size=5, max_images=20)
    b = Reference.fit(DataLoader(TensorDataset(x, labels), batch_size=7), max_images=20)
    torch.testing.assert_close(a.mean, x[:20].mean(0), atol=1e-5, rtol=0)
    torch.testing.assert_close(b.var, x[:20].var(0, unbiased=False), atol=1e-5, rtol=0)
    assert a.count == b.count == 20


def test_fit_folder_of_pngs(tmp_path) -> None:
    rng = np.random.default_rng(0)
    arrays = rng.integers(0, 256, size=(6, 8, 10, 3), dtype=np.uint8)
    for i, a in enumerate(arrays):
        Image.fromarray(a).save(tmp_path / f"img{i}.png")
    ref = Reference.fit(tmp_path, batch_size=4)
    x = torch.from_numpy(arrays).permute(0, 3, 1, 2).double() / 255
    torch.testing.assert_close(ref.mean.double(), x.mean(0), atol=1e-6, rtol=0)
    assert ref.count == 6 and str(tmp_path) in ref.source
    small = Reference.fit(str(tmp_path / "*.png"), resize=4, channels=1)
    assert small.shape == (1, 4, 4)


def test_fit_uint8_tensor_is_rescaled() -> None:
    x = torch.randint(0, 256, (10, 1, 3, 3), dtype=torch.uint8)
    ref = Reference.fit(x)
    torch.testing.assert_close(ref.mean.double(), (x.double() / 255).mean(0), atol=1e-6, rtol=0)


def test_fit_bad_input_names_argument() -> None:
    with pytest.raises(ValueError, match="max_images"):
        Reference.fit(_data(), max_images=0)
    with pytest.raises(ValueError, match="data"):
        Reference.fit(torch.rand(3, 4))
    with pytest.raises(ValueError, match="NaN"):
        Reference.fit(torch.full((2, 1, 2, 2), float("nan")))
    with pytest.raises(ValueError, match="no such file"):
        Reference.fit("/nonexistent/folder")


def test_save_load_roundtrip_and_refusals(tmp_path) -> None:
    ref = Reference.fit(_data())
    path = ref.save(tmp_path / "ref.safetensors")
    back = Reference.load(path)
    for key in ("mean", "var", "background"):
        torch.testing.assert_close(getattr(back, key), getattr(ref, key))
    assert back.count == ref.count and back.digest() == ref.digest()
    bogus = tmp_path / "bogus.safetensors"
    bogus.write_bytes(b"\x80\x04not a safetensors file")
    with pytest.raises(ValueError, match="not a provex reference"):
        Reference.load(bogus)
    assert not list(tmp_path.glob(".*.tmp"))


def test_resolution_order_and_per_image_fallback(mnist_model) -> None:
    x = torch.rand(3, 1, 28, 28)
    card = resolve_reference(None, mnist_model, x)
    assert "card" in card.source and not card.per_image
    given = Reference(torch.zeros(1, 28, 28), torch.ones(1, 28, 28))
    assert resolve_reference(given, mnist_model, x) is not given  # moved to x's device/dtype: a copy
    plain = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 3))
    with pytest.warns(ReferenceWarning, match="Reference.fit"):
        fb = resolve_reference(None, plain, x)
    assert fb.per_image and fb.mean.shape == x.shape
    # an image's fallback statistics are its own: the same alone as in the batch
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReferenceWarning)
        alone = resolve_reference(None, plain, x[1:2])
    torch.testing.assert_close(alone.mean[0], fb.mean[1])
    torch.testing.assert_close(alone.var[0], fb.var[1])
    torch.testing.assert_close(fb.mean[1, 0, 0, 0], x[1].mean())
    with pytest.raises(ValueError, match="reference describes images of shape"):
        resolve_reference(Reference(torch.zeros(3, 28, 28), torch.ones(3, 28, 28)), mnist_model, x)


def test_sample_moments() -> None:
    ref = Reference(torch.tensor([[[1.0, -2.0]]]), torch.tensor([[[4.0, 0.25]]]))
    draws = ref.sample(200_000, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(draws.mean(0), ref.mean, atol=0.02, rtol=0)
    torch.testing.assert_close(draws.var(0), ref.var, atol=0.05, rtol=0.02)


def test_provex_exports() -> None:
    assert provex.Reference is Reference
    assert provex.stats.shap_xrt is not None and provex.evaluate.relevance_ordering is not None
