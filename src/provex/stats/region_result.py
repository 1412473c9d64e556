"""The result of :func:`provex.stats.test_regions`: per-region decisions, values and costs.

A :class:`RegionTestResult` holds, for N images with up to R regions each (padding regions
have ``valid`` False, NaN values and no pixels), the masks, the decisions after multiplicity
control, the p-values (XRT) or e-values and stopping times (betting), the statistic, the model
calls each region cost, and the settings (context, score, fill, reference, control). It
saves to one ``.safetensors`` file (tensors + a JSON header, no pickle; format
``provex.region-tests/1``, see notes/conventions.md), turns into a JSON-able dict for reports
(:meth:`to_dict`) and draws the regions outlined and coloured by decision (:meth:`plot`).
"""

from __future__ import annotations

import json
import math
import os
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from provex.io import atomic_write

__all__ = ["RegionTestResult"]

_FORMAT = "provex.region-tests/1"
SIGNIFICANT = "#d62728"
NOT_SIGNIFICANT = "#1f77b4"
_OPTIONAL = ("p_values", "adjusted_p_values", "e_values", "stopping_time", "images")


def _num(v: float) -> float | None:
    return None if math.isnan(v) else float(v)


@dataclass
class RegionTestResult:
    """Decisions of the region tests of N images (see the module docstring).

    Attributes:
        masks: (N, R, H, W) bool; valid: (N, R) bool (False: padding).
        rejected: (N, R) bool, after the multiplicity control described by ``control``.
        target: (N,) class whose score was tested. test: ``"xrt"`` or ``"betting"``.
        p_values, adjusted_p_values: (N, R) float64 (XRT; adjusted by BH/BY when controlled).
        e_values, stopping_time: (N, R) (betting; the wealth where each test stopped and the
            number of pairs it used, -1 on padding).
        statistic: (N, R) the tested side's score (the image's own score in context "rest").
        model_calls: (N, R) inputs passed through the model for each region;
            ``total_model_calls`` counts every pass, including one per image for its own score.
        settings: context, score, alternative, fill, reference, K, M, tau_max, regions, seeds.
        images: the tested images (N, C, H, W) when kept.
    """

    masks: torch.Tensor
    valid: torch.Tensor
    rejected: torch.Tensor
    target: torch.Tensor
    test: str
    alpha: float
    control: str
    statistic: torch.Tensor
    model_calls: torch.Tensor
    total_model_calls: int
    p_values: torch.Tensor | None = None
    adjusted_p_values: torch.Tensor | None = None
    e_values: torch.Tensor | None = None
    stopping_time: torch.Tensor | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    images: torch.Tensor | None = None
    seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.masks.ndim != 4 or self.masks.dtype != torch.bool:
            raise ValueError(
                f"masks must be a bool (N, R, H, W) tensor, got {self.masks.dtype} {tuple(self.masks.shape)}"
            )
        nr = tuple(self.masks.shape[:2])
        for name in ("valid", "rejected", "statistic", "model_calls", *_OPTIONAL[:4]):
            t = getattr(self, name)
            if t is not None and tuple(t.shape) != nr:
                raise ValueError(f"{name} must have shape {nr}, got {tuple(t.shape)}")
        if (self.p_values is None) == (self.e_values is None):
            raise ValueError("a result holds either p_values (xrt) or e_values (betting)")

    # ----- views -----

    def __len__(self) -> int:
        return self.masks.shape[0]

    def __repr__(self) -> str:
        return (
            f"RegionTestResult(test={self.test!r}, images={len(self)}, regions={int(self.valid.sum())}, "
            f"rejected={int(self.rejected.sum())}, model_calls={self.total_model_calls}, control={self.control!r})"
        )

    @property
    def values(self) -> torch.Tensor:
        """The p-values (XRT) or e-values (betting), (N, R), NaN on padding."""
        return self.p_values if self.p_values is not None else self.e_values  # type: ignore[return-value]

    @property
    def n_regions(self) -> torch.Tensor:
        """(N,) number of tested regions per image."""
        return self.valid.sum(1)

    @property
    def n_rejected(self) -> torch.Tensor:
        """(N,) number of significant regions per image."""
        return (self.rejected & self.valid).sum(1)

    @property
    def labels(self) -> torch.Tensor:
        """(N, H, W) region labels: 0 outside every region, r + 1 in region r."""
        from provex.stats.regions import label_map

        return label_map(self.masks & self.valid[..., None, None])

    def decision_map(self) -> torch.Tensor:
        """(N, H, W) float: +1 on significant regions, -1 on the others, 0 outside."""
        lab = self.labels
        signs = torch.where(self.rejected & self.valid, 1.0, -1.0)
        dec = torch.cat([torch.zeros(lab.shape[0], 1), signs], 1)  # label 0 -> 0, label r + 1 -> sign of r
        return dec.gather(1, lab.reshape(lab.shape[0], -1)).view(lab.shape)

    def per_image(self) -> dict[str, torch.Tensor]:
        """Per-image values for ``Explanation.info["per_image"]`` (the dataset engine's table)."""
        out = {
            "regions": self.n_regions.clone(),
            "regions_rejected": self.n_rejected.clone(),
            "region_model_calls": self.model_calls.clone(),
        }
        if self.p_values is not None:
            out["region_p_values"] = self.p_values.clone()
        if self.e_values is not None:
            out["region_e_values"] = self.e_values.clone()
            out["region_stopping_time"] = self.stopping_time.clone()  # type: ignore[union-attr]
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able summary: settings, control and one entry per region of each image."""
        images = []
        for i in range(len(self)):
            regions = []
            for r in range(self.masks.shape[1]):
                if not bool(self.valid[i, r]):
                    continue
                m = self.masks[i, r]
                rr, cc = m.nonzero(as_tuple=True)
                entry: dict[str, Any] = {
                    "region": r,
                    "area": int(m.sum()),
                    "bbox": [int(rr.min()), int(cc.min()), int(rr.max()) + 1, int(cc.max()) + 1],
                    "rejected": bool(self.rejected[i, r]),
                    "statistic": _num(float(self.statistic[i, r])),
                    "model_calls": int(self.model_calls[i, r]),
                }
                if self.p_values is not None:
                    entry["p_value"] = _num(float(self.p_values[i, r]))
                if self.adjusted_p_values is not None:
                    entry["adjusted_p_value"] = _num(float(self.adjusted_p_values[i, r]))
                if self.e_values is not None:
                    entry["e_value"] = _num(float(self.e_values[i, r]))
                    entry["stopping_time"] = int(self.stopping_time[i, r])  # type: ignore[index]
                regions.append(entry)
            images.append({"image": i, "target": int(self.target[i]), "regions": regions})
        return {
            "format": _FORMAT,
            "test": self.test,
            "alpha": self.alpha,
            "control": self.control,
            "settings": self.settings,
            "summary": {
                "images": len(self),
                "regions": int(self.valid.sum()),
                "rejected": int((self.rejected & self.valid).sum()),
                "model_calls": int(self.total_model_calls),
                "region_model_calls": int(self.model_calls.sum()),
                "seconds": self.seconds,
            },
            "images": images,
        }

    # ----- files -----

    def save(self, path: str | os.PathLike) -> Path:
        """Write the result to a ``.safetensors`` file atomically (tensors + JSON header)."""
        from safetensors.torch import save_file

        tensors = {
            "masks": self.masks,
            "valid": self.valid,
            "rejected": self.rejected,
            "target": self.target,
            "statistic": self.statistic,
            "model_calls": self.model_calls,
        }
        for name in _OPTIONAL:
            if getattr(self, name) is not None:
                tensors[name] = getattr(self, name)
        tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
        meta = {
            "test": self.test,
            "alpha": self.alpha,
            "control": self.control,
            "total_model_calls": int(self.total_model_calls),
            "settings": self.settings,
            "seconds": self.seconds,
        }
        with atomic_write(path) as tmp:
            save_file(tensors, str(tmp), metadata={"format": _FORMAT, "meta": json.dumps(meta)})
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> RegionTestResult:
        """Read a result written by :meth:`save`."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file, safe_open

        path = Path(path)
        if not path.is_file():
            raise ValueError(f"no such file {path}")
        try:
            with safe_open(str(path), framework="pt") as fh:
                header = fh.metadata() or {}
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise ValueError(f"{path} is not a provex region-test file ({err})") from None
        if header.get("format") != _FORMAT:
            raise ValueError(f"{path} is not a provex region-test file")
        meta = json.loads(header["meta"])
        return cls(
            masks=tensors["masks"],
            valid=tensors["valid"],
            rejected=tensors["rejected"],
            target=tensors["target"],
            test=meta["test"],
            alpha=float(meta["alpha"]),
            control=meta["control"],
            statistic=tensors["statistic"],
            model_calls=tensors["model_calls"],
            total_model_calls=int(meta["total_model_calls"]),
            settings=meta["settings"],
            seconds=float(meta.get("seconds", 0.0)),
            **{name: tensors.get(name) for name in _OPTIONAL},
        )

    # ----- figure -----

    def plot(
        self,
        path: str | os.PathLike,
        images: torch.Tensor | None = None,
        ncols: int | None = None,
        max_images: int = 40,
        title: str | None = None,
    ) -> Path:
        """PNG with one panel per image: regions outlined, significant ones red and filled, the others blue dashed.

        Each region is numbered at its centre; under the panel its p-value (or e-value) is
        listed, starred when significant.
        """
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import numpy as np
        from matplotlib.lines import Line2D

        imgs = self.images if images is None else images
        n = min(len(self), max_images)
        ncols = max(1, min(ncols or 5, n))
        nrows = -(-n // ncols)
        fig, axes = plt.subplots(
            nrows, ncols, figsize=(2.9 * ncols, 3.2 * nrows + 0.9), squeeze=False, layout="constrained"
        )
        sym = "p" if self.p_values is not None else "e"
        for i, ax in enumerate(axes.flat):
            ax.set_xticks([])
            ax.set_yticks([])
            if i >= n:
                ax.axis("off")
                continue
            h, w = self.masks.shape[-2:]
            if imgs is not None:
                im = imgs[i].detach().float().cpu()
                if im.shape[0] == 3:
                    lo, hi = im.min(), im.max()
                    ax.imshow(((im - lo) / (hi - lo + 1e-12)).permute(1, 2, 0).numpy())
                else:
                    ax.imshow(im.sum(0).numpy(), cmap="gray")
            else:
                ax.imshow(np.ones((h, w)), cmap="gray", vmin=0, vmax=1)
            notes = []
            for r in range(self.masks.shape[1]):
                if not bool(self.valid[i, r]):
                    continue
                m = self.masks[i, r].numpy().astype(float)
                sig = bool(self.rejected[i, r])
                colour = SIGNIFICANT if sig else NOT_SIGNIFICANT
                if sig:
                    overlay = np.zeros((h, w, 4))
                    overlay[..., :3] = matplotlib.colors.to_rgb(SIGNIFICANT)
                    overlay[..., 3] = 0.3 * m
                    ax.imshow(overlay, interpolation="nearest")
                padded = np.pad(m, 1)
                ax.contour(
                    np.arange(-1, w + 1),
                    np.arange(-1, h + 1),
                    padded,
                    levels=[0.5],
                    colors=[colour],
                    linewidths=1.4,
                    linestyles="solid" if sig else "dashed",
                )
                rr, cc = np.nonzero(m)
                ax.text(
                    cc.mean(),
                    rr.mean(),
                    str(r + 1),
                    color=colour,
                    fontsize=7,
                    ha="center",
                    va="center",
                    bbox={"boxstyle": "round,pad=0.1", "fc": "white", "alpha": 0.7, "lw": 0},
                )
                v = float(self.values[i, r])
                notes.append(f"{r + 1}:{v:.3g}{'*' if sig else ''}")
            ax.set_title(
                f"target {int(self.target[i])}: {int(self.n_rejected[i])}/{int(self.n_regions[i])} significant",
                fontsize=8,
            )
            lines = [" ".join(notes[j : j + 3]) for j in range(0, len(notes), 3)]
            ax.set_xlabel(f"{sym}: " + "\n".join(lines) if lines else "no regions", fontsize=6.5)
        handles = [
            Line2D([0], [0], color=SIGNIFICANT, lw=2, label="significant"),
            Line2D([0], [0], color=NOT_SIGNIFICANT, lw=2, ls="--", label="not significant"),
        ]
        fig.legend(handles=handles, loc="outside lower center", ncol=2, fontsize=8, frameon=False)
        head = title or f"region tests: {self.test}, alpha = {self.alpha:g}"
        body = textwrap.fill(self.control, width=max(60, 28 * ncols))
        fig.suptitle(f"{head}\n{body}", fontsize=8)
        with atomic_write(path) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
        plt.close(fig)
        return Path(path)
