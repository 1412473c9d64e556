"""The data of an explanation: fields, checks, save and load (no plotting, no tests).

:class:`ExplanationData` is everything :class:`provex.Explanation` holds, without the two
conveniences ``Explanation.test`` and ``Explanation.plot``, which reach up to
:mod:`provex.stats` and :mod:`provex.viz`. The tests and the plots accept an
``ExplanationData``, so they never import :mod:`provex.explanation` and no import circle
forms; every method returns the full :class:`provex.Explanation` (a subclass).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import torch

from provex.io import atomic_write

__all__ = ["ExplanationData"]

_FORMAT = "provex.explanation/1"


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
class ExplanationData:
    """The fields of an explanation (documented on :class:`provex.Explanation`), their checks, save and load."""

    relevance: torch.Tensor
    method: str
    target: torch.Tensor
    info: dict[str, Any] = field(default_factory=dict)
    ordering: torch.Tensor | None = None
    prediction: torch.Tensor | None = None
    maps: dict[str, torch.Tensor] | None = None

    def __post_init__(self) -> None:
        if self.relevance.ndim != 4:
            raise ValueError(f"relevance must be (N, C, H, W), got shape {tuple(self.relevance.shape)}")
        n = self.relevance.shape[0]
        if self.target.shape != (n,):
            raise ValueError(f"target must have shape ({n},), got {tuple(self.target.shape)}")
        if self.ordering is not None and self.ordering.shape != self.relevance.shape:
            raise ValueError("ordering must have the same shape as relevance")
        if self.prediction is not None and self.prediction.shape != (n,):
            raise ValueError(f"prediction must have shape ({n},), got {tuple(self.prediction.shape)}")
        if self.maps is not None:
            if not isinstance(self.maps, dict):
                raise ValueError("maps must be a dict of name -> (N, C, H, W) tensor")
            for key, value in self.maps.items():
                if not isinstance(value, torch.Tensor) or value.shape != self.relevance.shape:
                    raise ValueError(f"maps[{key!r}] must be a tensor of the relevance's shape")

    def __len__(self) -> int:
        return self.relevance.shape[0]

    def __repr__(self) -> str:
        return (
            f"Explanation(method={self.method!r}, relevance={tuple(self.relevance.shape)}, "
            f"target={self.target.tolist()}, info keys={sorted(self.info)}"
            + (f", maps={list(self.maps)}" if self.maps else "")
            + ")"
        )

    def to(self, device: str | torch.device) -> Self:
        """A copy with its tensors on ``device``."""
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return type(self)(
            move(self.relevance),
            self.method,
            move(self.target),
            dict(self.info),
            move(self.ordering),
            move(self.prediction),
            None if self.maps is None else {k: v.to(device) for k, v in self.maps.items()},
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write the explanation to ``path`` (a ``.pt`` file) atomically."""
        blob = {
            "format": _FORMAT,
            "relevance": self.relevance.detach().cpu(),
            "method": self.method,
            "target": self.target.detach().cpu(),
            "info": _plain(self.info),
            "ordering": None if self.ordering is None else self.ordering.detach().cpu(),
            "prediction": None if self.prediction is None else self.prediction.detach().cpu(),
            "maps": None if self.maps is None else {str(k): v.detach().cpu() for k, v in self.maps.items()},
        }
        with atomic_write(path) as tmp:
            torch.save(blob, tmp)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Self:
        """Read an explanation written by :meth:`save`; a damaged file is refused with a
        one-line ``ValueError`` naming it (missing keys, wrong types or shapes, NaN or inf)."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"{path}: no such explanation file")
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # unpickling / zip errors of a damaged or foreign file
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ValueError(f"{path} is not a provex explanation file ({first})") from None
        if not isinstance(blob, dict) or blob.get("format") != _FORMAT:
            raise ValueError(f"{path} is not a provex explanation file")
        missing = sorted({"relevance", "method", "target", "info"} - set(blob))
        if missing:
            raise ValueError(f"{path}: the explanation file lacks {missing}")
        tensors = {"relevance": blob["relevance"], "target": blob["target"]}
        for key in ("ordering", "prediction"):
            if blob.get(key) is not None:
                tensors[key] = blob[key]
        for key, value in tensors.items():
            if not isinstance(value, torch.Tensor):
                raise ValueError(f"{path}: {key} must be a tensor, got {type(value).__name__}")
        if not blob["relevance"].is_floating_point():
            raise ValueError(f"{path}: relevance must be floating, got {blob['relevance'].dtype}")
        for key in ("target", "ordering", "prediction"):
            if key in tensors and tensors[key].is_floating_point():
                raise ValueError(f"{path}: {key} must hold integers, got {tensors[key].dtype}")
        maps = blob.get("maps")
        if maps is not None and not isinstance(maps, dict):
            raise ValueError(f"{path}: maps must be a dict of tensors")
        for name, t in {"relevance": blob["relevance"], **{f"maps[{k!r}]": v for k, v in (maps or {}).items()}}.items():
            if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
                bad = "NaN" if bool(torch.isnan(t).any()) else "inf"
                raise ValueError(f"{path}: {name} contains {bad} values")
        if not isinstance(blob["method"], str) or not isinstance(blob["info"], dict):
            raise ValueError(f"{path}: method must be a string and info a dict")
        try:
            return cls(
                relevance=blob["relevance"],
                method=blob["method"],
                target=blob["target"],
                info=blob["info"],
                ordering=blob.get("ordering"),
                prediction=blob.get("prediction"),
                maps=maps,
            )
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None
