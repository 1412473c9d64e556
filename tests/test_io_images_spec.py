"""Atomic writes, image files, model specs and per-image seeds."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

import provex
from provex.data.images import image_paths, load_images, normalize, read_image, to_float_images
from provex.io import atomic_write, remove_stale_temporaries, write_json
from provex.models.spec import describe_model, load_model
from provex.seeding import image_seeds


def test_atomic_write_keeps_old_file_on_error(tmp_path) -> None:
    path = tmp_path / "a.json"
    write_json(path, {"v": 1})
    with pytest.raises(RuntimeError), atomic_write(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert path.read_text().strip().endswith("}") and '"v": 1' in path.read_text()
    assert not list(tmp_path.glob(".*.tmp"))


def test_atomic_write_gives_files_the_mode_open_would(tmp_path) -> None:
    """safetensors creates 0600 files; a saved result must be readable like any file the user writes."""
    from safetensors.torch import save_file

    (tmp_path / "plain").write_text("x")
    expected = (tmp_path / "plain").stat().st_mode & 0o777
    with atomic_write(tmp_path / "a.safetensors") as tmp:
        save_file({"a": torch.zeros(2)}, str(tmp))
    assert (tmp_path / "a.safetensors").stat().st_mode & 0o777 == expected


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path) -> None:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(proc.stdout)
    stale = tmp_path / f".shard.npz.{dead}.tmp"
    live = tmp_path / f".shard.npz.{os.getpid()}.tmp"
    stale.write_text("x")
    live.write_text("x")
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert live.exists() and not stale.exists()


def _write_pngs(folder, n=3, size=(6, 7), mode="RGB"):
    rng = np.random.default_rng(1)
    arrays = []
    for i in range(n):
        shape = (*size, 3) if mode == "RGB" else size
        a = rng.integers(0, 256, size=shape, dtype=np.uint8)
        Image.fromarray(a, mode=mode).save(folder / f"im{i}.png")
        arrays.append(a)
    return arrays


def test_images_folder_glob_and_file(tmp_path) -> None:
    arrays = _write_pngs(tmp_path)
    (tmp_path / "notes.txt").write_text("not an image")
    x, paths = load_images(tmp_path)
    assert x.shape == (3, 3, 6, 7) and [p.name for p in paths] == ["im0.png", "im1.png", "im2.png"]
    torch.testing.assert_close(x[1], torch.from_numpy(arrays[1]).permute(2, 0, 1).float() / 255)
    assert len(image_paths(str(tmp_path / "im*.png"))) == 3
    grey = read_image(paths[0], channels=1, resize=4)
    assert grey.shape == (1, 4, 4) and float(grey.min()) >= 0 and float(grey.max()) <= 1
    with pytest.raises(ValueError, match=r"input: .* not an image file"):
        image_paths(tmp_path / "notes.txt")
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG garbage")
    with pytest.raises(ValueError, match="cannot read"):
        read_image(bad)
    with pytest.raises(ValueError, match="matches no image"):
        image_paths(str(tmp_path / "*.jpg"))


def test_images_of_different_sizes_need_resize(tmp_path) -> None:
    _write_pngs(tmp_path, n=1, size=(5, 5))
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "z.png")
    with pytest.raises(ValueError, match="resize"):
        load_images(tmp_path)
    assert load_images(tmp_path, resize=(4, 6))[0].shape == (2, 3, 4, 6)


def test_uint8_and_normalize() -> None:
    t = torch.tensor([[[[0, 255]]]], dtype=torch.uint8)
    torch.testing.assert_close(to_float_images(t), torch.tensor([[[[0.0, 1.0]]]]))
    with pytest.raises(ValueError, match="integer dtype"):
        to_float_images(torch.zeros(1, 1, 2, 2, dtype=torch.int64))
    x = torch.rand(2, 3, 4, 4)
    y = normalize(x, "imagenet")
    torch.testing.assert_close(y[:, 1] * 0.224 + 0.456, x[:, 1])


def test_model_specs(tmp_path) -> None:
    m = load_model("torchvision:resnet18")
    assert not m.training and m.provex_spec["spec"] == "torchvision:resnet18"
    torch.save(m.state_dict(), tmp_path / "w.pt")
    m2 = load_model("torchvision:resnet18", weights=tmp_path / "w.pt")
    assert describe_model(m2)["state_digest"] == describe_model(m)["state_digest"]
    src = tmp_path / "net.py"
    src.write_text(
        textwrap.dedent("""
        import torch.nn as nn
        def make():
            return nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.LazyLinear(3))
    """)
    )
    net = load_model(f"{src}:make")
    net(torch.rand(1, 1, 6, 6))
    scripted = torch.jit.script(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2)))
    scripted.save(str(tmp_path / "s.pt"))
    assert load_model(tmp_path / "s.pt")(torch.rand(1, 1, 2, 2)).shape == (1, 2)
    assert load_model("mnist-cnn").card.name == "mnist-cnn"
    # a pickled module is refused, never unpickled
    torch.save(torch.nn.Linear(2, 2), tmp_path / "pickled.pt")
    with pytest.raises(ValueError, match="not a TorchScript"):
        load_model(tmp_path / "pickled.pt")
    with pytest.raises(ValueError, match=r"weights: .* not a state dict readable"):
        load_model("torchvision:resnet18", weights=tmp_path / "pickled.pt")
    with pytest.raises(ValueError, match="no callable 'nope'"):
        load_model(f"{src}:nope")
    with pytest.raises(ValueError, match="not a zoo model"):
        load_model("no-such-model")
    with pytest.raises(ValueError, match="does not fit"):
        load_model("torchvision:resnet34", weights=tmp_path / "w.pt")


def test_image_seeds() -> None:
    assert image_seeds(3, 4) == [3, 3, 3, 3]
    assert image_seeds([5, 6], 2) == [5, 6]
    assert len(set(image_seeds(None, 3))) >= 1
    for bad in (-1, [1], 1.5, True):
        with pytest.raises(ValueError, match="seed"):
            image_seeds(bad, 2)


def test_lazy_subpackages() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, provex; assert 'provex.stats' not in sys.modules; "
            "provex.stats.fdr_betting; provex.evaluate; provex.inverse; print('ok')",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": "src"},
    )
    assert out.stdout.strip() == "ok", out.stderr
    assert "stats" in dir(provex)
