"""Reading a run back: :func:`load_run` gives maps and metadata as tensors and a table.

>>> run = provex.load_run("runs/mnist")                # doctest: +SKIP
>>> run.maps["rc-rde"].shape                           # (N, C, H, W), dataset order
>>> run.table.groupby("method").auc_distortion.mean()  # one row per (image, method)

Only finished shards are read (a shard is finished when both of its files exist), so a run
can be inspected while it is still going or after it was killed: ``run.index`` lists the
dataset indices present, in order, and ``run.complete`` says whether all ``run.n`` are.
Tensors are read from the shard files when first asked for, one key at a time.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from provex.runs.store import RunStore

__all__ = ["Run", "load_run"]


class _Lazy(Mapping):
    """A read-only mapping whose values are computed (once) on first access."""

    def __init__(self, keys: list[str], load: Any) -> None:
        self._keys, self._load, self._cache = keys, load, {}

    def __getitem__(self, key: str) -> Any:
        if key not in self._keys:
            raise KeyError(f"{key!r}; the run has {self._keys}")
        if key not in self._cache:
            self._cache[key] = self._load(key)
        return self._cache[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"<{len(self._keys)} entries: {', '.join(self._keys)}>"


class Run:
    """A run folder as tensors and a table (see the module docstring)."""

    session: dict[str, Any] | None = None
    """What the :func:`provex.run` call that returned this object did (shards done, skipped, failed, seconds)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.store = RunStore(self.root)
        manifest = self.store.read_manifest()
        if manifest is None:
            raise ValueError(f"run: {self.root} is not a provex run folder (no manifest.json)")
        self.manifest: dict[str, Any] = manifest
        self.shards: list[int] = sorted(self.store.done())

    # ----- what the run is -----

    @property
    def methods(self) -> list[str]:
        return list(self.manifest["methods"])

    @property
    def n(self) -> int:
        """Images in the run's data (done or not)."""
        return int(self.manifest["data"]["n"])

    @property
    def classes(self) -> list[str] | None:
        return self.manifest.get("labels")

    @functools.cached_property
    def failed(self) -> list[dict[str, Any]]:
        """Failure records (shard, indices, error, attempts) of shards that are not done."""
        return list(self.store.failures().values())

    @property
    def complete(self) -> bool:
        return len(self.index) == self.n

    def keys(self) -> list[str]:
        """Names of the tensors stored per shard (``METHOD/relevance``, ``inputs``, ...)."""
        if not self.shards:
            return []
        from safetensors import safe_open

        with safe_open(str(self.store.tensor_path(self.shards[0])), framework="pt") as fh:
            return sorted(fh.keys())

    def get(self, key: str) -> torch.Tensor:
        """Tensor ``key`` of every finished shard, concatenated in dataset order."""
        from safetensors import safe_open

        parts = []
        for k in self.shards:
            with safe_open(str(self.store.tensor_path(k)), framework="pt") as fh:
                stored = fh.keys()
                if key not in stored:
                    raise KeyError(f"{key!r} is not stored in {self.store.tensor_path(k).name}")
                parts.append(fh.get_tensor(key))
        if key == "fraction_kept":
            return parts[0] if parts else torch.empty(0)
        if not parts:
            return torch.empty(0)
        return torch.cat(parts)

    # ----- contents -----

    @functools.cached_property
    def index(self) -> torch.Tensor:
        """(n_done,) dataset indices of the images present, increasing."""
        return self.get("index") if self.shards else torch.empty(0, dtype=torch.int64)

    @functools.cached_property
    def maps(self) -> Mapping[str, torch.Tensor]:
        """``maps[METHOD]``: relevance maps (n_done, C, H, W) in dataset order."""
        return _Lazy(self.methods, lambda m: self.get(f"{m}/relevance"))

    @functools.cached_property
    def inputs(self) -> torch.Tensor:
        """The images as the model saw them (after ``normalize``), (n_done, C, H, W)."""
        return self.get("inputs")

    @functools.cached_property
    def labels(self) -> torch.Tensor:
        """(n_done,) labels, -1 where unknown."""
        return self.get("label")

    @functools.cached_property
    def curves(self) -> Mapping[str, dict[str, torch.Tensor]]:
        """``curves[METHOD]``: ``fraction_kept`` (T,), ``distortion`` and ``accuracy`` (n_done, T)."""
        scored = self.methods if "ordering" in self.manifest.get("score", {}) else []
        return _Lazy(
            scored,
            lambda m: {
                "fraction_kept": self.get("fraction_kept"),
                "distortion": self.get(f"{m}/curve_distortion"),
                "accuracy": self.get(f"{m}/curve_accuracy"),
            },
        )

    @functools.cached_property
    def table(self) -> Any:
        """A pandas DataFrame, one row per (image, method), sorted by index then method order."""
        import pandas as pd
        import pyarrow.parquet as pq

        frames = [pq.read_table(str(self.store.table_path(k))).to_pandas() for k in self.shards]
        if not frames:
            return pd.DataFrame(columns=["index", "method"])
        table = pd.concat(frames, ignore_index=True)
        order = {m: i for i, m in enumerate(self.methods)}
        table = table.sort_values(["index", "method"], key=lambda c: c.map(order) if c.name == "method" else c)
        return table.reset_index(drop=True)

    def explanation(self, method: str) -> Any:
        """The method's results as one :class:`provex.Explanation` over the images present."""
        from provex.explanation import Explanation

        if method not in self.methods:
            raise ValueError(f"method: {method!r} is not in this run ({', '.join(self.methods)})")
        rows = self.table[self.table.method == method]
        keys = self.keys()
        extra = {k.split("/", 2)[2]: self.get(k) for k in keys if k.startswith(f"{method}/maps/")}
        return Explanation(
            relevance=self.maps[method],
            method=method,
            target=torch.tensor(rows.target.to_numpy(), dtype=torch.int64),
            info={"run": str(self.root), "index": self.index, "options": self.manifest["methods"][method]},
            ordering=self.get(f"{method}/ordering") if f"{method}/ordering" in keys else None,
            prediction=torch.tensor(rows.prediction.to_numpy(), dtype=torch.int64),
            maps=extra or None,
        )

    def summary(self) -> dict[str, Any]:
        """What ``provex runs show`` prints (see :func:`provex.runs.summary.summarize`)."""
        from provex.runs.summary import summarize

        return summarize(self)

    def __repr__(self) -> str:
        return (
            f"Run({str(self.root)!r}: {len(self.index)}/{self.n} images, methods {self.methods}, "
            f"{len(self.failed)} failed shard(s))"
        )


def load_run(path: str | os.PathLike) -> Run:
    """Open the run folder ``path`` (written by :func:`provex.run`)."""
    return Run(path)
