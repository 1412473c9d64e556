"""Read a dataset-run folder (``provex.run/1``, notes/conventions.md) for the report.

A run folder holds ``manifest.json`` and, per finished shard, ``shards/shard-NNNNNN.safetensors``
(tensors: ``index``, ``inputs``, ``label``, ``M/relevance``, optional ``M/ordering``,
``M/maps/NAME``, ``M/per_image/NAME``, ``M/curve_distortion``, ``M/curve_accuracy``,
``fraction_kept``) and ``shards/shard-NNNNNN.parquet`` (one row per image and method). A shard
counts only when both files exist. Where the run engine's own reader (``provex.load_run``) is
available it is used; this module then only adapts its result.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = ["RUN_FORMAT", "RunData", "is_run_folder", "read_run"]

RUN_FORMAT = "provex.run/1"


@dataclass
class RunData:
    """A run's results in dataset order (rows sorted by dataset index)."""

    path: Path
    manifest: dict[str, Any]
    index: torch.Tensor  # (n,) dataset indices
    inputs: torch.Tensor  # (n, C, H, W)
    label: torch.Tensor  # (n,) -1 unknown
    maps: dict[str, torch.Tensor]  # method -> (n, C, H, W)
    extra_maps: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    curves: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)  # (n, T) each
    per_image: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # method -> name -> (n, ...)
    fraction_kept: torch.Tensor | None = None
    table: Any = None  # pandas DataFrame, one row per (image, method)
    failed: list[dict[str, Any]] = field(default_factory=list)

    @property
    def methods(self) -> list[str]:
        return list(self.maps)


def _natural(name: str) -> list[Any]:
    """Sort key that orders ``k=50`` before ``k=100`` (safetensors stores names alphabetically)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def is_run_folder(path: Path) -> bool:
    """True when ``path`` is a folder with a run manifest."""
    m = path / "manifest.json"
    if not (path.is_dir() and m.is_file()):
        return False
    try:
        return json.loads(m.read_text()).get("format") == RUN_FORMAT
    except (ValueError, OSError):
        return False


def _done_shards(folder: Path) -> list[tuple[Path, Path]]:
    out = []
    for st in sorted((folder / "shards").glob("shard-*.safetensors")):
        pq = st.with_suffix(".parquet")
        if pq.is_file():
            out.append((st, pq))
    return out


def read_run(path: str | os.PathLike) -> RunData:
    """All finished shards of the run folder ``path``, concatenated in dataset order."""
    import pandas as pd
    from safetensors.torch import load_file

    folder = Path(path)
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{folder}: unreadable run manifest ({err.__class__.__name__})") from None
    if manifest.get("format") != RUN_FORMAT:
        raise ValueError(f"{folder}: manifest format is {manifest.get('format')!r}, expected {RUN_FORMAT!r}")
    shards = _done_shards(folder)
    if not shards:
        raise ValueError(f"{folder}: run folder has no finished shard (shards/shard-*.safetensors + .parquet)")
    parts: list[dict[str, torch.Tensor]] = []
    tables = []
    for st, pq in shards:
        try:
            parts.append(load_file(str(st)))
            tables.append(pd.read_parquet(pq))
        except Exception as err:  # a corrupt shard: name it, do not guess
            raise ValueError(f"{st}: unreadable shard ({err.__class__.__name__}: {err})") from None
    cat = {k: torch.cat([p[k] for p in parts if k in p]) for k in parts[0] if k != "fraction_kept"}
    order = torch.argsort(cat["index"])
    cat = {k: v[order] for k, v in cat.items()}
    methods = [m for m in manifest.get("methods", {}) if f"{m}/relevance" in cat]
    methods += sorted({k.split("/")[0] for k in cat if k.endswith("/relevance")} - set(methods))
    extra = {
        m: dict(
            sorted(
                ((k.split("/", 2)[2], v) for k, v in cat.items() if k.startswith(f"{m}/maps/")),
                key=lambda kv: _natural(kv[0]),
            )
        )
        for m in methods
        if any(k.startswith(f"{m}/maps/") for k in cat)
    }
    per_image = {
        m: {k.split("/", 2)[2]: v for k, v in cat.items() if k.startswith(f"{m}/per_image/")}
        for m in methods
        if any(k.startswith(f"{m}/per_image/") for k in cat)
    }
    curves = {
        m: (cat[f"{m}/curve_distortion"], cat[f"{m}/curve_accuracy"])
        for m in methods
        if f"{m}/curve_distortion" in cat and f"{m}/curve_accuracy" in cat
    }
    failed = []
    for f in sorted((folder / "failed").glob("shard-*.json")) if (folder / "failed").is_dir() else []:
        try:
            failed.append(json.loads(f.read_text()))
        except (OSError, ValueError):
            failed.append({"shard": f.stem, "error": "unreadable failure record"})
    table = pd.concat(tables, ignore_index=True).sort_values(["index", "method"], kind="stable").reset_index(drop=True)
    return RunData(
        path=folder,
        manifest=manifest,
        index=cat["index"].long(),
        inputs=cat["inputs"].float(),
        label=cat.get("label", torch.full_like(cat["index"], -1)).long(),
        maps={m: cat[f"{m}/relevance"] for m in methods},
        extra_maps=extra,
        curves=curves,
        per_image=per_image,
        fraction_kept=parts[0].get("fraction_kept"),
        table=table,
        failed=failed,
    )
