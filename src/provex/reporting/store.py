"""Read a dataset-run folder (``provex.run/1``, notes/conventions.md) for the report.

A run folder holds ``manifest.json`` and, per finished shard, ``shards/shard-NNNNNN.safetensors``
(tensors: ``index``, ``inputs``, ``label``, ``M/relevance``, optional ``M/ordering``,
``M/maps/NAME``, ``M/per_image/NAME``, ``M/curve_distortion``, ``M/curve_accuracy``,
``fraction_kept``) and ``shards/shard-NNNNNN.parquet`` (one row per image and method). A shard
counts only when both files exist. The run engine's own reader (``provex.load_run``) reads it;
this module adapts its result to what the report's sections use.
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


def read_run(path: str | os.PathLike) -> RunData:
    """All finished shards of the run folder ``path`` (read by :func:`provex.load_run`), in dataset order."""
    from provex.runs import load_run

    folder = Path(path)
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{folder}: unreadable run manifest ({err.__class__.__name__})") from None
    if manifest.get("format") != RUN_FORMAT:
        raise ValueError(f"{folder}: manifest format is {manifest.get('format')!r}, expected {RUN_FORMAT!r}")
    try:
        run = load_run(folder)
        if not run.shards:
            raise ValueError(f"{folder}: run folder has no finished shard (shards/shard-*.safetensors + .parquet)")
        keys = run.keys()
        methods = [m for m in run.methods if f"{m}/relevance" in keys]
        order = torch.argsort(run.index)  # dataset order, whatever order the shards hold

        def get(key: str) -> torch.Tensor:
            return run.get(key)[order]

        def under(m: str, kind: str) -> dict[str, torch.Tensor]:
            names = sorted((k for k in keys if k.startswith(f"{m}/{kind}/")), key=_natural)
            return {k.split("/", 2)[2]: get(k) for k in names}

        extra = {m: under(m, "maps") for m in methods if any(k.startswith(f"{m}/maps/") for k in keys)}
        per_image = {m: under(m, "per_image") for m in methods if any(k.startswith(f"{m}/per_image/") for k in keys)}
        curves = {
            m: (get(f"{m}/curve_distortion"), get(f"{m}/curve_accuracy"))
            for m in methods
            if f"{m}/curve_distortion" in keys and f"{m}/curve_accuracy" in keys
        }
        index = run.index.long()[order]
        label = get("label").long() if "label" in keys else torch.full_like(index, -1)
        return RunData(
            path=folder,
            manifest=manifest,
            index=index,
            inputs=get("inputs").float(),
            label=label,
            maps={m: get(f"{m}/relevance") for m in methods},
            extra_maps=extra,
            curves=curves,
            per_image=per_image,
            fraction_kept=run.get("fraction_kept") if "fraction_kept" in keys else None,
            table=run.table,
            failed=run.failed,
        )
    except ValueError:
        raise
    except Exception as err:  # a corrupt shard: name it, do not guess
        raise ValueError(f"{folder}: unreadable run ({err.__class__.__name__}: {err})") from None
