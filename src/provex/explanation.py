"""The result type every provex method returns.

An :class:`Explanation` holds a relevance map of the input's shape, the explained target
class per image, the method's name, an ``info`` dict of timings and solver diagnostics and,
for ordering methods, each component's rank. It saves to and loads from one ``.pt`` file
(``torch.load(..., weights_only=True)`` safe) and plots itself to a PNG.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = ["Explanation", "atomic_path"]

_FORMAT = "provex.explanation/1"


def atomic_path(path: str | os.PathLike) -> tuple[Path, Path]:
    """Return ``(final, temporary)`` paths: write to the temporary one, then rename it.

    Renaming within one folder is atomic, so a failed run never leaves a half-written file.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    return final, tmp


def _plain(value: Any) -> Any:
    """Convert ``info`` values to types that ``weights_only`` loading accepts."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # numpy scalars
        return value.item()
    if hasattr(value, "tolist"):  # numpy arrays
        return torch.as_tensor(value)
    return str(value)


@dataclass
class Explanation:
    """Relevance of each input component for the model's output on each image.

    Attributes:
        relevance: (N, C, H, W) tensor, larger means more relevant.
        method: registry name of the method that produced it.
        target: (N,) class explained for each image.
        info: timings, options and solver diagnostics (objective per iteration, ...).
        ordering: optional (N, C, H, W) rank of each component (0 = least relevant).
        prediction: optional (N,) predicted class of each image.
    """

    relevance: torch.Tensor
    method: str
    target: torch.Tensor
    info: dict[str, Any] = field(default_factory=dict)
    ordering: torch.Tensor | None = None
    prediction: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.relevance.ndim != 4:
            raise ValueError(f"relevance must be (N, C, H, W), got shape {tuple(self.relevance.shape)}")
        n = self.relevance.shape[0]
        if self.target.shape != (n,):
            raise ValueError(f"target must have shape ({n},), got {tuple(self.target.shape)}")
        if self.ordering is not None and self.ordering.shape != self.relevance.shape:
            raise ValueError("ordering must have the same shape as relevance")

    def __len__(self) -> int:
        return self.relevance.shape[0]

    def __repr__(self) -> str:
        return (
            f"Explanation(method={self.method!r}, relevance={tuple(self.relevance.shape)}, "
            f"target={self.target.tolist()}, info keys={sorted(self.info)})"
        )

    def to(self, device: str | torch.device) -> Explanation:
        """A copy with its tensors on ``device``."""
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Explanation(
            move(self.relevance),
            self.method,
            move(self.target),
            dict(self.info),
            move(self.ordering),
            move(self.prediction),
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write the explanation to ``path`` (a ``.pt`` file) atomically."""
        final, tmp = atomic_path(path)
        blob = {
            "format": _FORMAT,
            "relevance": self.relevance.detach().cpu(),
            "method": self.method,
            "target": self.target.detach().cpu(),
            "info": _plain(self.info),
            "ordering": None if self.ordering is None else self.ordering.detach().cpu(),
            "prediction": None if self.prediction is None else self.prediction.detach().cpu(),
        }
        try:
            torch.save(blob, tmp)
            tmp.replace(final)
        finally:
            tmp.unlink(missing_ok=True)
        return final

    @classmethod
    def load(cls, path: str | os.PathLike) -> Explanation:
        """Read an explanation written by :meth:`save`."""
        blob = torch.load(Path(path), map_location="cpu", weights_only=True)
        if not isinstance(blob, dict) or blob.get("format") != _FORMAT:
            raise ValueError(f"{path} is not a provex explanation file")
        return cls(
            relevance=blob["relevance"],
            method=blob["method"],
            target=blob["target"],
            info=blob["info"],
            ordering=blob["ordering"],
            prediction=blob["prediction"],
        )

    def plot(
        self,
        path: str | os.PathLike,
        images: torch.Tensor | None = None,
        ncols: int | None = None,
        cmap: str = "RdBu_r",
        titles: list[str] | None = None,
    ) -> Path:
        """Write a PNG with one panel per image: heat map over the image, colour bar, class."""
        from provex.viz.heatmap import plot_relevance

        n = len(self)
        ncols = ncols or min(n, 5)
        if titles is None:
            titles = []
            for i in range(n):
                t = f"target {int(self.target[i])}"
                if self.prediction is not None:
                    t = f"pred {int(self.prediction[i])}, " + t
                titles.append(t)
        return plot_relevance(
            path,
            self.relevance,
            images=images,
            titles=titles,
            ncols=ncols,
            cmap=cmap,
            suptitle=self.method,
            nrows=math.ceil(n / ncols),
        )
