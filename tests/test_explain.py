"""The explain() registry, the sensitivity method against independent truths, and bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import provex
from provex.explanation import Explanation


def test_registry_lists_sensitivity() -> None:
    assert "sensitivity" in provex.methods()
    spec = {s.name: s for s in provex.methods(details=True)}["sensitivity"]
    assert spec.options == {"absolute": False}


def test_sensitivity_matches_finite_differences(tiny_model: nn.Module) -> None:
    torch.manual_seed(1)
    x = torch.rand(2, 1, 6, 6, dtype=torch.float64)
    exp = provex.explain(tiny_model, x, "sensitivity", target=torch.tensor([0, 2]))
    eps = 1e-6
    for n, t in enumerate([0, 2]):
        fd = torch.zeros(36, dtype=torch.float64)
        for i in range(36):
            e = torch.zeros(36, dtype=torch.float64)
            e[i] = eps
            up = tiny_model((x[n].flatten() + e).view(1, 1, 6, 6))[0, t]
            dn = tiny_model((x[n].flatten() - e).view(1, 1, 6, 6))[0, t]
            fd[i] = (up - dn) / (2 * eps)
        torch.testing.assert_close(exp.relevance[n].flatten(), fd, rtol=1e-5, atol=1e-7)


def test_batch_equals_one_at_a_time_and_default_target(mnist_model: nn.Module, mnist_samples) -> None:
    x, _ = mnist_samples
    x = x[:5]
    batch = provex.explain(mnist_model, x, "sensitivity")
    pred = mnist_model(x).argmax(1)
    assert batch.target.tolist() == pred.tolist() == batch.prediction.tolist()
    for i in range(5):
        single = provex.explain(mnist_model, x[i : i + 1], "sensitivity", absolute=True)
        torch.testing.assert_close(single.relevance[0], batch.relevance[i].abs(), rtol=1e-4, atol=1e-6)
    assert "seconds" in batch.info and batch.info["options"] == {"absolute": False}
    # one forward+backward pass per image: the prediction comes from the gradient's own forward
    assert batch.info["model_calls"] == 5


def test_parameters_gradients_untouched(mnist_model: nn.Module, mnist_samples) -> None:
    x, _ = mnist_samples
    provex.explain(mnist_model, x[:2], "sensitivity")
    assert all(p.grad is None for p in mnist_model.parameters())


def test_unknown_method_lists_valid(mnist_model: nn.Module, mnist_samples) -> None:
    with pytest.raises(ValueError, match=r"unknown method .*; available: .*sensitivity"):
        provex.explain(mnist_model, mnist_samples[0][:1], "magic")


def test_unknown_option(mnist_model: nn.Module, mnist_samples) -> None:
    with pytest.raises(ValueError, match="valid options: \\['absolute'\\]"):
        provex.explain(mnist_model, mnist_samples[0][:1], "sensitivity", rate=3)


@pytest.mark.parametrize(
    ("x", "match"),
    [
        (torch.rand(1, 28, 28), "shape \\(N, C, H, W\\).*unsqueeze"),
        (torch.zeros(1, 1, 28, 28, dtype=torch.int64), "floating dtype"),
        (torch.full((1, 1, 28, 28), float("nan")), "x contains NaN"),
        (torch.full((1, 1, 28, 28), float("inf")), "x contains inf"),
        ([[0.0]], "torch.Tensor"),
    ],
)
def test_bad_x(mnist_model: nn.Module, x, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        provex.explain(mnist_model, x, "sensitivity")


@pytest.mark.parametrize(
    ("target", "match"),
    [
        (10, "target out of range"),
        (-1, "target out of range"),
        (torch.tensor([1, 2, 3]), "target must"),
        (1.5, "integer"),
    ],
)
def test_bad_target(mnist_model: nn.Module, mnist_samples, target, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        provex.explain(mnist_model, mnist_samples[0][:2], "sensitivity", target=target)


def test_explanation_save_load_roundtrip(tmp_path, mnist_model: nn.Module, mnist_samples) -> None:
    exp = provex.explain(mnist_model, mnist_samples[0][:3], "sensitivity")
    exp.info["curve"] = [0.1, 0.2]
    exp.ordering = torch.arange(3 * 784).view(3, 1, 28, 28)
    path = exp.save(tmp_path / "e.pt")
    back = Explanation.load(path)
    torch.testing.assert_close(back.relevance, exp.relevance)
    assert back.method == "sensitivity" and back.target.tolist() == exp.target.tolist()
    assert back.info["curve"] == [0.1, 0.2] and back.info["options"] == {"absolute": False}
    assert torch.equal(back.ordering, exp.ordering) and torch.equal(back.prediction, exp.prediction)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.pt"]


def test_load_rejects_foreign_file(tmp_path) -> None:
    torch.save({"a": torch.zeros(1)}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="not a provex explanation"):
        Explanation.load(tmp_path / "x.pt")


def test_plot_writes_png(tmp_path, mnist_model: nn.Module, mnist_samples) -> None:
    x = mnist_samples[0][:3]
    exp = provex.explain(mnist_model, x, "sensitivity")
    path = exp.plot(tmp_path / "p.png", images=x)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.png"]


def test_failed_save_leaves_nothing(tmp_path, monkeypatch, mnist_model: nn.Module, mnist_samples) -> None:
    exp = provex.explain(mnist_model, mnist_samples[0][:1], "sensitivity")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        exp.save(tmp_path / "e.pt")
    assert list(tmp_path.iterdir()) == []


def test_explanation_validates_shapes() -> None:
    with pytest.raises(ValueError, match="relevance must be"):
        Explanation(torch.zeros(3, 3), "m", torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="target must have shape"):
        Explanation(torch.zeros(2, 1, 3, 3), "m", torch.zeros(3, dtype=torch.long))


# --- the audit cases of the Python API: each gets a result or a one-line error naming the argument


class SmallCNN(nn.Sequential):
    """A new user's model: 3 channels, BatchNorm and MaxPool, no model card."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        super().__init__(
            nn.Conv2d(3, 6, 3, padding=1),
            nn.BatchNorm2d(6),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(6 * 4 * 4, 4),
        )
        self.eval()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_input_is_cast_to_the_models_dtype(dtype: torch.dtype) -> None:
    model = SmallCNN()
    x = torch.rand(2, 3, 8, 8).to(dtype)
    want = provex.explain(model, x.float(), "sensitivity")  # the same values, given as float32
    got = provex.explain(model, x, "sensitivity")
    assert got.relevance.dtype == torch.float32 and torch.equal(got.relevance, want.relevance)


def test_half_model_runs_in_half_and_overflow_is_refused() -> None:
    model = SmallCNN().half()
    exp = provex.explain(model, torch.rand(2, 3, 8, 8), "sensitivity")
    assert exp.relevance.dtype == torch.float16 and bool(torch.isfinite(exp.relevance).all())
    with pytest.raises(ValueError, match=r"^x has values beyond the range of the model's dtype torch.float16"):
        provex.explain(model, torch.full((1, 3, 8, 8), 1e6), "sensitivity")


@pytest.mark.parametrize("method", ["sensitivity", "guided-backprop", "lrp-alpha-beta", "deep-taylor", "smoothgrad"])
def test_gradient_methods_work_inside_no_grad_and_inference_mode(method: str) -> None:
    model = SmallCNN()
    x = torch.rand(2, 3, 8, 8)
    opts = {"n_samples": 3, "progress": False} if method == "smoothgrad" else {}
    want = provex.explain(model, x, method, **opts).relevance
    with torch.no_grad():
        a = provex.explain(model, x, method, **opts).relevance
    with torch.inference_mode():
        xi = x.clone()  # an inference tensor
        b = provex.explain(model, xi, method, **opts).relevance
    assert torch.equal(a, want) and torch.equal(b, want) and float(want.abs().sum()) > 0


def test_model_made_in_inference_mode_is_refused_for_gradients() -> None:
    with torch.inference_mode():
        model = SmallCNN()
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match=r"^model: its parameters were created inside torch.inference_mode"):
        provex.explain(model, x, "sensitivity")


def test_model_calls_count_inputs_through_the_model() -> None:
    """Forward pre-hook count: the prediction pass (N) plus the method's own passes."""
    model = SmallCNN()
    x = torch.rand(3, 3, 8, 8)
    calls = [0]
    model[0].register_forward_hook(lambda m, i, o: calls.__setitem__(0, calls[0] + i[0].shape[0]))
    graph = [0]  # inputs whose forward recorded a graph (counted here on the first layer)
    model[0].register_forward_hook(lambda m, i, o: graph.__setitem__(0, graph[0] + i[0].shape[0] * o.requires_grad))
    for method, opts, want, back in [
        ("sensitivity", {}, 3, 3),
        ("guided-backprop", {}, 3, 3),
        ("smoothgrad", {"n_samples": 5, "progress": False}, 3 + 3 * 5, 3 * 5),
        ("lime", {"n_samples": 7, "progress": False}, 3 + 3 * 7, 0),
    ]:
        calls[0] = graph[0] = 0
        exp = provex.explain(model, x, method, **opts)
        assert exp.info["model_calls"] == want == calls[0], method
        # forward+backward passes: the gradient methods' own passes; LIME runs without a graph
        assert exp.info["model_calls_backward"] == back == graph[0], method
        assert exp.info["seconds"] > 0


def test_explanation_per_image_values_survive_save_and_load(tmp_path) -> None:
    exp = provex.explain(SmallCNN(), torch.rand(2, 3, 8, 8), "deep-taylor")
    assert exp.info["per_image"]["conservation"].shape == (2,)
    back = Explanation.load(exp.save(tmp_path / "e.pt"))
    torch.testing.assert_close(back.info["per_image"]["conservation"], exp.info["per_image"]["conservation"])
    assert back.info["model_calls"] == exp.info["model_calls"]


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda b: b.pop("relevance"), r"lacks \['relevance'\]"),
        (lambda b: b.pop("target"), r"lacks \['target'\]"),
        (lambda b: b["relevance"].fill_(float("nan")), "relevance contains NaN"),
        (lambda b: b["relevance"].fill_(float("inf")), "relevance contains inf"),
        (lambda b: b.__setitem__("relevance", [1.0]), "relevance must be a tensor"),
        (lambda b: b.__setitem__("target", torch.zeros(5, dtype=torch.long)), "target must have shape"),
        (lambda b: b.__setitem__("target", torch.zeros(2)), "target must hold integers"),
        (
            lambda b: b.__setitem__("maps", {"m": torch.full((2, 1, 28, 28), float("nan"))}),
            "maps\\['m'\\] contains NaN",
        ),
    ],
)
def test_load_refuses_damaged_files(tmp_path, mnist_model: nn.Module, mnist_samples, edit, match: str) -> None:
    exp = provex.explain(mnist_model, mnist_samples[0][:2], "sensitivity")
    blob = torch.load(exp.save(tmp_path / "e.pt"), weights_only=True)
    edit(blob)
    torch.save(blob, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=match):
        Explanation.load(tmp_path / "bad.pt")


def test_load_refuses_missing_and_garbage_files(tmp_path) -> None:
    with pytest.raises(ValueError, match="no such explanation file"):
        Explanation.load(tmp_path / "none.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="is not a provex explanation file"):
        Explanation.load(tmp_path / "junk.pt")


def test_methods_are_found_without_an_import_list() -> None:
    """Every registered method lives in a module the source scan finds, so registering a method in
    a new module is the whole change; the apps are never scanned."""
    from provex import _families

    found = _families.registering_modules()
    assert "provex.rde.rc_rde" in found and "provex.shapley" in found
    assert not any(m.split(".")[1] in ("cli", "benchmarks", "runs", "reporting") for m in found)
    for spec in provex.methods(details=True):  # derived methods ("NAME+test") come from DERIVED, imported last
        assert spec.fn.__module__ in found or spec.fn.__module__ in _families.DERIVED, spec.name
    assert set(_families.DERIVED).isdisjoint(found)
