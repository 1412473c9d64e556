"""The IDX reader against files written here, the MNIST loader's search and errors, samples."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from provex.data import DataNotFoundError, load_mnist, read_idx, sample_indices, samples


def write_idx(path: Path, arr: np.ndarray, type_code: int, gz: bool = False) -> Path:
    """Write an IDX file by hand from its specification (magic, dims, big-endian payload)."""
    header = bytes([0, 0, type_code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    big = arr.astype(arr.dtype.newbyteorder(">"))
    payload = header + big.tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as fh:
            fh.write(payload)
    else:
        path.write_bytes(payload)
    return path


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize(
    ("dtype", "code"),
    [(np.uint8, 0x08), (np.int8, 0x09), (np.int16, 0x0B), (np.int32, 0x0C), (np.float32, 0x0D), (np.float64, 0x0E)],
)
def test_read_idx_roundtrip(tmp_path: Path, gz: bool, dtype: type, code: int) -> None:
    rng = np.random.default_rng(0)
    arr = (rng.standard_normal((3, 4, 5)) * 50).astype(dtype)
    got = read_idx(write_idx(tmp_path / "a-idx3", arr, code, gz))
    assert got.shape == (3, 4, 5)
    np.testing.assert_array_equal(got, arr)


def test_read_idx_rejects_bad_files(tmp_path: Path) -> None:
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x02ab")
    with pytest.raises(ValueError, match="magic"):
        read_idx(tmp_path / "bad")
    arr = np.arange(6, dtype=np.uint8)
    p = write_idx(tmp_path / "trunc", arr, 0x08)
    p.write_bytes(p.read_bytes()[:-1])
    with pytest.raises(ValueError, match="payload"):
        read_idx(p)


def _fake_mnist(root: Path, n: int = 7, gz: bool = True) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    root.mkdir(parents=True, exist_ok=True)
    write_idx(root / "t10k-images-idx3-ubyte", images, 0x08, gz)
    write_idx(root / "t10k-labels-idx1-ubyte", labels, 0x08, gz)
    return images, labels


@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist_from_root(tmp_path: Path, gz: bool) -> None:
    images, labels = _fake_mnist(tmp_path, gz=gz)
    x, y = load_mnist("test", root=tmp_path)
    assert x.shape == (7, 1, 28, 28) and x.dtype == torch.float32
    assert y.dtype == torch.int64
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    torch.testing.assert_close(x[:, 0] * 255, torch.from_numpy(images).float())
    assert y.tolist() == labels.tolist()


def test_load_mnist_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_mnist(tmp_path / "mnist")
    monkeypatch.setenv("PROVEX_DATA", str(tmp_path))
    x, _ = load_mnist("test")
    assert x.shape[0] == 7


def test_missing_data_names_paths_and_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROVEX_DATA", str(tmp_path / "nowhere"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataNotFoundError) as err:
        load_mnist("train")
    msg = str(err.value)
    assert "PROVEX_DATA" in msg
    assert str(tmp_path / "nowhere" / "mnist") in msg
    assert str(tmp_path / "data" / "mnist") in msg


def test_unknown_split() -> None:
    with pytest.raises(ValueError, match="split"):
        load_mnist("validation")


def test_samples_spread_over_classes() -> None:
    x, y = samples("mnist")
    assert x.shape == (50, 1, 28, 28) and x.dtype == torch.float32
    assert torch.bincount(y, minlength=10).tolist() == [5] * 10
    idx = sample_indices("mnist")
    assert idx == sorted(idx) and len(set(idx)) == 50


def test_samples_are_the_test_images(mnist_root: Path) -> None:
    x, y = samples("mnist")
    xt, yt = load_mnist("test", root=mnist_root)
    idx = sample_indices("mnist")
    torch.testing.assert_close(xt[idx], x)
    assert yt[idx].tolist() == y.tolist()
    # the first 5 of each class, as documented
    for c in range(10):
        first = torch.nonzero(yt == c).flatten()[:5].tolist()
        assert set(first) <= set(idx)


def test_unknown_sample_set() -> None:
    with pytest.raises(ValueError, match="mnist"):
        samples("imagenet")
