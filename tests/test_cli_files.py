"""``provex explain`` on a researcher's own files: models, images, references, labels, outputs.

Each audit case of issue 13 has a test here: the command ends with exit code 2 and exactly one
line on stderr (never a traceback), and the checks run before any model work (a factory that
leaves a marker file shows whether the model was ever built). Results are compared with the
library called directly on independently read pixels.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import provex
from provex.cli import main
from provex.explanation import Explanation

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
MY_MODEL = f"{EXAMPLES / 'my_model.py'}:make_model"
MY_WEIGHTS = str(EXAMPLES / "my_model.pt")
SRC = str(Path(provex.__file__).parents[1])


def _error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run ``provex argv`` expecting a user error: exit code 2 and one line on stderr."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("provex "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def marker_model(tmp_path: Path) -> tuple[str, Path]:
    """A FILE.py:FACTORY model (1 x 28 x 28 -> 10) whose factory leaves a marker file when called."""
    marker = tmp_path / "model-was-built"
    src = tmp_path / "net.py"
    src.write_text(
        textwrap.dedent(
            f"""
            from pathlib import Path
            import torch
            from torch import nn

            def make():
                Path({str(marker)!r}).write_text("built")
                torch.manual_seed(0)
                return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 28 * 28, 10))
            """
        )
    )
    return f"{src}:make", marker


@pytest.fixture
def png_folder(tmp_path: Path) -> Path:
    """Four 28 x 28 grey PNGs of shipped MNIST samples (integers 0..255, as files hold them)."""
    x, _ = provex.data.samples()
    folder = tmp_path / "digits"
    folder.mkdir()
    for i in range(4):
        pixels = (x[i, 0].numpy() * 255).round().astype(np.uint8)
        Image.fromarray(pixels, mode="L").save(folder / f"d{i}.png")
    return folder


def _pil_pixels(folder: Path) -> torch.Tensor:
    """The PNGs read independently of provex: Pillow -> numpy -> / 255."""
    files = sorted(folder.glob("*.png"))
    return torch.stack([torch.from_numpy(np.asarray(Image.open(f), dtype=np.float32) / 255.0)[None] for f in files])


# ----- the acceptance path: a folder of PNGs, a .py:FACTORY model, normalisation, labels -----


def test_png_folder_with_factory_model_normalised(tmp_path: Path, png_folder: Path, monkeypatch) -> None:
    drawn: list[torch.Tensor] = []
    titles: list[list[str]] = []
    plot = Explanation.plot

    def spy(self, path, images=None, **kw):
        drawn.append(images.clone())
        titles.append(kw.get("titles"))
        return plot(self, path, images=images, **kw)

    monkeypatch.setattr(Explanation, "plot", spy)
    out = tmp_path / "out"
    argv = ["explain", "--model", MY_MODEL, "--weights", MY_WEIGHTS, "--input", str(png_folder)]
    argv += ["--mean", "0.1307", "--std", "0.3081", "--labels", str(EXAMPLES / "labels.txt"), "--out", str(out)]
    assert main(argv) == 0
    exp = Explanation.load(out / "digits-sensitivity.pt")
    pixels = _pil_pixels(png_folder)
    model = provex.load_model(MY_MODEL, weights=MY_WEIGHTS)
    direct = provex.explain(model, (pixels - 0.1307) / 0.3081, "sensitivity")
    torch.testing.assert_close(exp.relevance, direct.relevance)  # the model saw the normalised pixels
    torch.testing.assert_close(drawn[0], pixels)  # the figure shows the original pixels
    names = (EXAMPLES / "labels.txt").read_text().split()
    assert titles[0][0] == f"d0.png\npred {names[int(direct.prediction[0])]}"
    assert exp.info["inputs"] == ["d0.png", "d1.png", "d2.png", "d3.png"]
    assert exp.info["model"]["spec"] == MY_MODEL
    assert (out / "digits-sensitivity.png").read_bytes()[:4] == b"\x89PNG"


def test_mr_rde_on_the_example_model(tmp_path: Path) -> None:
    """The README's command on the shipped example (BatchNorm + MaxPool), at a tiny budget."""
    out = tmp_path / "out"
    argv = ["explain", "--model", MY_MODEL, "--weights", MY_WEIGHTS, "--input", str(EXAMPLES / "images")]
    argv += ["--mean", "0.1307", "--std", "0.3081", "--labels", str(EXAMPLES / "labels.txt"), "--method", "mr-rde"]
    argv += ["-O", "distortion='mc'", "-O", "max_iter=2", "-O", "n_samples=2", "-O", "rates=[50, 100]"]
    argv += ["--no-progress", "--out", str(out)]
    assert main(argv) == 0
    exp = Explanation.load(out / "images-mr-rde.pt")
    n = len(list((EXAMPLES / "images").glob("*.png")))
    assert exp.relevance.shape == (n, 1, 28, 28) and set(exp.maps) == {"k=50", "k=100"}
    assert (out / "images-mr-rde.png").is_file()


def test_example_model_is_trained() -> None:
    """The shipped example weights classify the shipped example images as their file names say."""
    names = (EXAMPLES / "labels.txt").read_text().split()
    files = sorted((EXAMPLES / "images").glob("*.png"))
    x = torch.stack([torch.from_numpy(np.asarray(Image.open(f), dtype=np.float32) / 255.0)[None] for f in files])
    model = provex.load_model(MY_MODEL, weights=MY_WEIGHTS)
    pred = model((x - 0.1307) / 0.3081).argmax(1)
    assert [names[p] for p in pred.tolist()] == [f.stem.split("-")[1] for f in files]


def test_glob_and_file_list_and_resize(tmp_path: Path, png_folder: Path) -> None:
    out = tmp_path / "out"
    assert main(["explain", "--input", str(png_folder / "d[01].png"), "--out", str(out)]) == 0
    assert Explanation.load(out / "digits-sensitivity.pt").relevance.shape[0] == 2
    one = str(png_folder / "d2.png")
    assert main(["explain", "--input", one, "--out", str(out)]) == 0
    assert Explanation.load(out / "d2-sensitivity.pt").relevance.shape[0] == 1
    big = tmp_path / "big"
    big.mkdir()
    Image.open(png_folder / "d3.png").resize((56, 56)).save(big / "d3.png")
    assert main(["explain", "--input", str(big), "--resize", "28", "--out", str(out)]) == 0
    assert Explanation.load(out / "big-sensitivity.pt").relevance.shape == (1, 1, 28, 28)


def test_rgb_png_is_read_as_grey_for_a_grey_model(tmp_path: Path, png_folder: Path, capsys) -> None:
    rgb = tmp_path / "rgb"
    rgb.mkdir()
    Image.open(png_folder / "d0.png").convert("RGB").save(rgb / "d0.png")
    assert main(["explain", "--input", str(rgb), "--out", str(tmp_path / "o")]) == 0
    assert "converted to grey" in capsys.readouterr().err
    exp = Explanation.load(tmp_path / "o" / "rgb-sensitivity.pt")
    direct = provex.explain(provex.models.load("mnist-cnn"), _pil_pixels(png_folder)[:1], "sensitivity")
    torch.testing.assert_close(exp.relevance, direct.relevance)


def test_torchscript_and_torchvision_models(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 14 * 14, 5)
    )
    torch.jit.save(torch.jit.script(net), tmp_path / "net.ts")
    x = torch.rand(2, 3, 16, 16)
    torch.save(x, tmp_path / "x.pt")
    o = ["--out", str(tmp_path / "o")]
    assert main(["explain", "--model", str(tmp_path / "net.ts"), "--input", str(tmp_path / "x.pt"), *o]) == 0
    exp = Explanation.load(tmp_path / "o" / "x-sensitivity.pt")
    torch.testing.assert_close(exp.relevance, provex.explain(net.eval(), x, "sensitivity").relevance)

    import torchvision

    torch.save(torchvision.models.get_model("mobilenet_v3_small", weights=None).state_dict(), tmp_path / "tv.pt")
    img = tmp_path / "cat.jpg"
    Image.fromarray((np.random.default_rng(0).random((40, 48, 3)) * 255).astype(np.uint8)).save(img)
    argv = ["explain", "--model", "torchvision:mobilenet_v3_small", "--weights", str(tmp_path / "tv.pt")]
    argv += ["--input", str(img), "--resize", "32", "--normalize", "imagenet", "--out", str(tmp_path / "o")]
    assert main(argv) == 0
    assert Explanation.load(tmp_path / "o" / "cat-sensitivity.pt").relevance.shape == (1, 3, 32, 32)


# ----- the audit cases: one line on stderr, exit code 2, checked before the work -----


def test_uint8_tensor_is_rescaled(tmp_path: Path, capsys) -> None:
    x, _ = provex.data.samples()
    u8 = (x[:3] * 255).round().to(torch.uint8)
    torch.save(u8, tmp_path / "u8.pt")
    np.save(tmp_path / "u8.npy", u8.numpy())
    for name in ("u8.pt", "u8.npy"):
        out = tmp_path / name.replace(".", "-")
        assert main(["explain", "--input", str(tmp_path / name), "--out", str(out)]) == 0
        assert "uint8 pixels 0..255 rescaled to [0, 1]" in capsys.readouterr().err
        exp = Explanation.load(out / "u8-sensitivity.pt")
        direct = provex.explain(provex.models.load("mnist-cnn"), u8.float() / 255, "sensitivity")
        torch.testing.assert_close(exp.relevance, direct.relevance)


def test_integer_tensor_outside_0_255_is_refused(tmp_path: Path, capsys) -> None:
    torch.save(torch.arange(2 * 28 * 28).view(2, 1, 28, 28), tmp_path / "ints.pt")
    line = _error(capsys, ["explain", "--input", str(tmp_path / "ints.pt"), "--out", str(tmp_path / "o")])
    assert "integer tensor (torch.int64) with values 0..1567" in line
    assert not (tmp_path / "o").exists()


def test_out_pointing_at_a_file_is_refused_before_the_model(tmp_path: Path, capsys, marker_model) -> None:
    spec, marker = marker_model
    (tmp_path / "results").write_text("not a folder")
    line = _error(capsys, ["explain", "--model", spec, "--input", "x.pt", "--out", str(tmp_path / "results")])
    assert "--out" in line and "is a file, not a folder" in line
    line = _error(capsys, ["explain", "--model", spec, "--out", str(tmp_path / "results" / "sub")])
    assert "is a file" in line
    assert not marker.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_cuda_without_a_gpu_is_refused_before_the_model(tmp_path: Path, capsys, marker_model) -> None:
    spec, marker = marker_model
    line = _error(capsys, ["explain", "--model", spec, "--device", "cuda", "--out", str(tmp_path / "o")])
    assert "--device cuda: no CUDA GPU is available" in line
    assert not marker.exists()
    assert "--device" in _error(capsys, ["explain", "--device", "gpu0", "--out", str(tmp_path / "o")])
    assert "no CUDA GPU" in _error(capsys, ["test-concepts", "--device", "cuda", "--out", str(tmp_path / "o")])


def test_pickles_in_input_are_refused_without_running_them(tmp_path: Path, capsys) -> None:
    ran = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {ran}",))

    (tmp_path / "evil.pt").write_bytes(pickle.dumps(Payload()))
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (tmp_path / "junk.pt").write_bytes(b"\x00not a tensor file")
    for name, expect in [("evil.pt", "pickle"), ("obj.npy", "pickle"), ("junk.pt", "not a tensor file")]:
        line = _error(capsys, ["explain", "--input", str(tmp_path / name), "--out", str(tmp_path / "o")])
        assert f"--input: {tmp_path / name}" in line and expect in line
    assert not ran.exists()
    (tmp_path / "fake.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    assert "cannot read" in _error(
        capsys, ["explain", "--input", str(tmp_path / "fake.png"), "--out", str(tmp_path / "o")]
    )
    assert not (tmp_path / "o").exists()


def test_rgb_tensor_and_wrong_sizes_are_refused(tmp_path: Path, capsys, marker_model) -> None:
    x, _ = provex.data.samples()
    torch.save(x[:2].expand(-1, 3, -1, -1).clone(), tmp_path / "rgb.pt")
    line = _error(capsys, ["explain", "--input", str(tmp_path / "rgb.pt"), "--out", str(tmp_path / "o")])
    assert "3-channel images" in line and "the model takes 1-channel images" in line
    torch.save(torch.rand(2, 1, 32, 32), tmp_path / "big.pt")
    line = _error(capsys, ["explain", "--input", str(tmp_path / "big.pt"), "--out", str(tmp_path / "o")])
    assert "32x32 pixels" in line and "--resize 28 28" in line
    # a model without a card: the first layer's error, named and on one line
    spec, _ = marker_model
    line = _error(
        capsys, ["explain", "--model", spec, "--input", str(tmp_path / "big.pt"), "--out", str(tmp_path / "o")]
    )
    assert line.startswith("provex explain: error: --input: the model cannot take images of shape (1, 32, 32)")
    torch.save(torch.rand(2, 28, 28, 3), tmp_path / "nhwc.pt")
    assert "channels-last" in _error(
        capsys, ["explain", "--input", str(tmp_path / "nhwc.pt"), "--out", str(tmp_path / "o")]
    )
    assert not (tmp_path / "o").exists()


def test_folder_where_a_file_is_expected(tmp_path: Path, capsys, marker_model) -> None:
    spec, marker = marker_model
    d = tmp_path / "adir"
    d.mkdir()
    o = ["--out", str(tmp_path / "o")]
    assert "--weights: " in _error(capsys, ["explain", "--model", spec, "--weights", str(d), *o])
    assert "--labels: " in _error(capsys, ["explain", "--labels", str(d), *o])
    assert "--model: " in _error(capsys, ["explain", "--model", str(d), *o])
    assert "holds no image files" in _error(capsys, ["explain", "--input", str(d), *o])
    assert not marker.exists()
    assert "no such file" in _error(capsys, ["explain", "--input", str(tmp_path / "missing.png"), *o])


def test_bad_weights_and_factories(tmp_path: Path, capsys) -> None:
    o = ["--out", str(tmp_path / "o")]
    (tmp_path / "w.pt").write_bytes(pickle.dumps({"conv": "not a tensor"}))
    line = _error(capsys, ["explain", "--model", MY_MODEL, "--weights", str(tmp_path / "w.pt"), *o])
    assert line.startswith("provex explain: error: --weights:")
    torch.save({"0.weight": torch.zeros(3)}, tmp_path / "w2.pt")
    assert "does not fit the model" in _error(
        capsys, ["explain", "--model", MY_MODEL, "--weights", str(tmp_path / "w2.pt"), *o]
    )
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom')\n")
    assert "importing" in _error(capsys, ["explain", "--model", f"{tmp_path / 'broken.py'}:f", *o])
    assert "name the factory" in _error(capsys, ["explain", "--model", str(EXAMPLES / "my_model.py"), *o])
    torch.save(torch.zeros(3), tmp_path / "zoo.pt")
    assert "--weights" in _error(capsys, ["explain", "--weights", str(tmp_path / "zoo.pt"), *o])


def test_labels_and_targets(tmp_path: Path, capsys) -> None:
    o = ["--out", str(tmp_path / "o")]
    (tmp_path / "three.txt").write_text("a\nb\nc\n")
    assert "names 3 classes; the model has 10" in _error(
        capsys, ["explain", "--labels", str(tmp_path / "three.txt"), *o]
    )
    names = [f"digit {i}" for i in range(10)]
    (tmp_path / "names.json").write_text(json.dumps(names))
    assert main(["explain", "--labels", str(tmp_path / "names.json"), "--target", "digit 3", "--index", "0", *o]) == 0
    exp = Explanation.load(tmp_path / "o" / "mnist-samples-sensitivity.pt")
    assert exp.target.tolist() == [3] and exp.info["labels"] == names
    assert "is not a class index" in _error(
        capsys, ["explain", "--labels", str(tmp_path / "names.json"), "--target", "cat", *o]
    )
    (tmp_path / "bad.json").write_text("[1, 2")
    assert "not a valid JSON list" in _error(capsys, ["explain", "--labels", str(tmp_path / "bad.json"), *o])


def test_usage_errors_are_one_line(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["explain", "--no-such-option"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unrecognized arguments: --no-such-option" in err[0]


# ----- outputs: named after the input and the method; never silently overwritten -----


def test_outputs_are_not_overwritten_without_flag(tmp_path: Path, capsys, png_folder: Path) -> None:
    out = tmp_path / "out"
    argv = ["explain", "--input", str(png_folder), "--out", str(out)]
    assert main(argv) == 0
    first = (out / "digits-sensitivity.pt").read_bytes()
    capsys.readouterr()
    line = _error(capsys, [*argv, "--method", "sensitivity"])
    assert "digits-sensitivity.pt exists" in line and "--overwrite" in line
    assert (out / "digits-sensitivity.pt").read_bytes() == first
    assert main([*argv, "-O", "absolute=True", "--overwrite"]) == 0
    assert bool((Explanation.load(out / "digits-sensitivity.pt").relevance >= 0).all())
    # more images than --per-figure: numbered pages; the single-page figure of the earlier run goes
    assert main([*argv, "--per-figure", "3", "--overwrite"]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["digits-sensitivity-01.png", "digits-sensitivity-02.png"]
    assert "exists" in _error(capsys, [*argv, "--per-figure", "2"])


def test_killed_runs_temporaries_are_removed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    script = (
        "import os, signal, sys\n"
        "from provex.io import atomic_write\n"
        f"cm = atomic_write({str(out / 'mnist-samples-sensitivity.pt')!r})\n"
        "tmp = cm.__enter__()\n"
        "tmp.write_bytes(b'half')\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": SRC}, check=False)
    assert proc.returncode == -signal.SIGKILL
    left = list(out.glob(".*.tmp"))
    assert len(left) == 1
    assert main(["explain", "--index", "0", "--out", str(out)]) == 0
    assert not list(out.glob(".*.tmp"))
    assert sorted(p.name for p in out.iterdir()) == ["mnist-samples-sensitivity.png", "mnist-samples-sensitivity.pt"]


# ----- --reference: fitted from a folder in the space the model sees, passed to methods that take it -----


def test_reference_folder_is_fitted_and_normalised(tmp_path: Path, png_folder: Path) -> None:
    from provex import registry

    seen: dict[str, object] = {}

    @registry.register_method("test-reference-probe", family="test", description="records its reference")
    def probe(model, x, target, reference=None, progress=True):
        seen["reference"], seen["x"] = reference, x
        return Explanation(torch.zeros_like(x), "test-reference-probe", target)

    try:
        out = tmp_path / "o"
        argv = ["explain", "--input", str(png_folder), "--method", "test-reference-probe"]
        argv += ["--mean", "0.5", "--std", "0.25"]
        assert main([*argv, "--reference", str(png_folder), "--out", str(out)]) == 0
        pixels = _pil_pixels(png_folder)
        expect = provex.Reference.fit((pixels - 0.5) / 0.25)  # fitted directly on what the model sees
        ref = seen["reference"]
        torch.testing.assert_close(ref.mean, expect.mean, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ref.var, expect.var, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(seen["x"], (pixels - 0.5) / 0.25)
        saved = Explanation.load(out / "digits-test-reference-probe.pt")
        assert saved.info["reference"]["count"] == 4
    finally:
        registry._REGISTRY.pop("test-reference-probe", None)


def test_reference_refused_for_methods_without_one(tmp_path: Path, capsys, png_folder: Path) -> None:
    line = _error(capsys, ["explain", "--reference", str(png_folder), "--out", str(tmp_path / "o")])
    assert "does not use a reference" in line


# ----- a real process: exit code 2, one line, no traceback -----


def test_subprocess_errors_have_no_traceback(tmp_path: Path) -> None:
    (tmp_path / "evil.pt").write_bytes(pickle.dumps(ValueError("x")))
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.run(
        [sys.executable, "-m", "provex", "explain", "--input", str(tmp_path / "evil.pt"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr, proc.stderr
