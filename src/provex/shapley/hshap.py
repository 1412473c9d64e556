"""h-Shap: hierarchical Shapley explanations of image classifiers (Teneggi, Luster & Sulam 2022).

The image is explored as a quadtree. At each explored region the four quadrants are the
players of a game whose value for a coalition is the model's score for the target class
(softmax probability, or the logit) on an input that shows the image on the quadrants of the
coalition and the *background* everywhere else (outside the region too). The exact 4-player
Shapley weights ``c! (3 - c)! / 4!`` give each quadrant's local value; a child's score is its
parent's score times its local value (the root scores 1). Children whose score passes the
threshold are explored in turn, down to cells of ``min_size`` pixels; the map paints each
surviving finest cell with its score and is zero elsewhere (for C channels, each channel holds
score / C, so that the channel sum shown by heat maps is the score). The cost is about 14 model
evaluations per explored region (16 coalitions; the empty one is the background and the full
one was computed one level up), so it grows with the number of important cells, not with the
number of coalitions.

Cells and splits (images of any size). The image is first cut into a grid of
``H // min_size`` by ``W // min_size`` cells of exactly ``min_size`` pixels; when ``min_size``
does not divide a side, the last row (column) of cells absorbs the remainder, so every cell
has between ``min_size`` and ``2 * min_size - 1`` pixels a side and, when ``min_size`` divides
the side, exactly ``min_size``. A region spanning ``k`` cells along a side is split into
``ceil(k / 2)`` (top / left) and ``floor(k / 2)`` cells (100 x 120 with ``min_size=4``: 25 x 30
cells, 25 -> 13 + 12 rows, 30 -> 15 + 15 columns, ...). A region one cell high (or wide)
has two non-empty quadrants; the empty ones are null players with value exactly zero, and only
the distinct coalitions are evaluated. All images are explored together, level by level, and
the coalitions of all their regions go through the model in chunks of ``batch_size``.

Thresholds. ``absolute``: keep children with score ``> threshold`` (``threshold=0`` keeps
every positive contribution). ``relative``: keep, per image and level, children with score
``>=`` the ``threshold``-quantile of that level's child scores (``threshold=0.7`` is the paper's
"70%"), or ``>`` it when the quantile is ``<= 0``, so zeros are not kept wholesale. When no cell
survives, the map is all zero and ``info["empty"]`` lists the image.

Cycle h-Shap averages maps over cyclic shifts of the quadtree: for every radius ``r`` in
``radii`` and angle ``a`` (degrees) in ``angles``, the partition is moved by
``(-round(r sin a), round(r cos a))`` pixels (rows, columns), wrapping around the border;
radius 0 contributes one unshifted map. The model always sees the image in place.

All arithmetic on game values is float64; Shapley values within rounding error of zero are
exactly zero (see :mod:`provex.shapley.exact`), so ``threshold=0`` never keeps a cell on a
float residue. The caller's tensors are never modified.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from provex.cells import cell_edges
from provex.checks import (
    check_bool,
    check_choice,
    check_finite,
    check_float,
    check_images,
    check_int,
    resolve_target,
)
from provex.explanation import Explanation
from provex.shapley.exact import shapley_from_table

__all__ = ["HShap", "cell_edges", "cycle_shifts"]

_QUADRANTS = 4
_FULL = (1 << _QUADRANTS) - 1


def cycle_shifts(radii: Sequence[int], angles: Sequence[float]) -> list[tuple[int, int]]:
    """(row, column) shifts of the partition for cycle h-Shap; radius 0 appears once."""
    shifts: list[tuple[int, int]] = []
    for r in radii:
        if r == 0:
            shifts.append((0, 0))
            continue
        for a in angles:
            rad = math.radians(a)
            shifts.append((-round(r * math.sin(rad)), round(r * math.cos(rad))))
    return shifts


def _quadrants(
    r0: torch.Tensor, r1: torch.Tensor, c0: torch.Tensor, c1: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Quadrants TL, TR, BL, BR of each region as cell ranges (R, 4) (the top / left half gets
    the extra cell), which of them are non-empty, and those as a 4-bit mask per region."""
    rm = r0 + (r1 - r0 + 1) // 2
    cm = c0 + (c1 - c0 + 1) // 2
    qr0 = torch.stack([r0, r0, rm, rm], 1)
    qr1 = torch.stack([rm, rm, r1, r1], 1)
    qc0 = torch.stack([c0, cm, c0, cm], 1)
    qc1 = torch.stack([cm, c1, cm, c1], 1)
    nonempty = (qr1 > qr0) & (qc1 > qc0)
    present = (nonempty.long() << torch.arange(_QUADRANTS, device=r0.device)).sum(1)  # (R,) bit mask
    return qr0, qr1, qc0, qc1, nonempty, present


def _local_shapley(
    empty: torch.Tensor,
    full: torch.Tensor,
    present: torch.Tensor,
    nonempty: torch.Tensor,
    pair_region: torch.Tensor,
    pair_mask: torch.Tensor,
    values: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Value tables (R, 16) over the 4 quadrant bits (coalitions with empty quadrants share the
    values of their non-empty part) and the exact Shapley values (R, 4) of the quadrants, zero
    for empty ones."""
    device = full.device
    n_reg = full.shape[0]
    table = torch.zeros(n_reg, _FULL + 1, dtype=torch.float64, device=device)
    table[:, 0] = empty
    table[torch.arange(n_reg, device=device), present] = full
    table[pair_region, pair_mask] = values
    table = table.gather(1, torch.arange(_FULL + 1, device=device)[None, :] & present[:, None])
    phi = shapley_from_table(table, _QUADRANTS)  # (R, 4) float64
    return table, torch.where(nonempty, phi, torch.zeros_like(phi))


class HShap:
    """Hierarchical Shapley explainer of an image classifier.

    Args:
        model: maps (N, C, H, W) images to (N, classes) logits.
        background: (C, H, W) or (1, C, H, W) image that replaces the parts of the image
            outside a coalition (the paper uses the mean of training images), or (N, C, H, W):
            one background per explained image (row i for image i).
        min_size: side of the finest cells in pixels (see the module docstring for sizes
            that do not divide the image).
        threshold: ``absolute``: keep children with score > threshold; ``relative``: the
            quantile in [0, 1] of each level's child scores a child must reach.
        threshold_mode: ``"absolute"`` or ``"relative"``.
        score: ``"softmax"`` (probability of the target class) or ``"logit"``.
        batch_size: model inputs per forward pass.
        radii, angles: cycle h-Shap shifts (pixels, degrees); ``radii=(0,)`` is plain h-Shap.
        progress: show a tqdm bar of model evaluations.
    """

    def __init__(
        self,
        model: nn.Module,
        background: torch.Tensor,
        min_size: int,
        threshold: float = 0.0,
        threshold_mode: str = "absolute",
        score: str = "softmax",
        batch_size: int = 256,
        radii: Sequence[int] = (0,),
        angles: Sequence[float] = (0.0,),
        progress: bool = False,
    ) -> None:
        if not isinstance(model, nn.Module) and not callable(model):
            raise ValueError(f"model must be a torch.nn.Module or callable, got {type(model).__name__}")
        if not isinstance(background, torch.Tensor):
            raise ValueError(f"background must be a torch.Tensor of shape (C, H, W), got {type(background).__name__}")
        if background.ndim == 4 and background.shape[0] == 1:
            background = background[0]
        if background.ndim not in (3, 4) or not background.is_floating_point():
            raise ValueError(
                f"background must be a floating (C, H, W), (1, C, H, W) or per-image (N, C, H, W) tensor, got "
                f"{tuple(background.shape)} {background.dtype}"
            )
        check_finite(background, "background")
        self.min_size = check_int(min_size, "min_size")
        check_choice(threshold_mode, "threshold_mode", ("absolute", "relative"))
        if isinstance(threshold, (int, float)) and not isinstance(threshold, bool) and threshold == -math.inf:
            threshold = -math.inf  # keep every child
        else:
            threshold = check_float(threshold, "threshold")
        if threshold_mode == "relative" and not 0.0 <= threshold <= 1.0:
            raise ValueError(
                f"threshold: a relative threshold is a quantile in [0, 1] (0.7 for the paper's 70%), got {threshold}"
            )
        check_choice(score, "score", ("softmax", "logit"))
        self.batch_size = check_int(batch_size, "batch_size")
        check_bool(progress, "progress")
        radii = [radii] if isinstance(radii, int) else list(radii)
        angles = [angles] if isinstance(angles, (int, float)) else list(angles)
        if not radii or any(isinstance(r, bool) or not isinstance(r, int) or r < 0 for r in radii):
            raise ValueError(f"radii must be non-negative integers (pixels), got {radii!r}")
        if not angles or any(not isinstance(a, (int, float)) or not math.isfinite(a) for a in angles):
            raise ValueError(f"angles must be finite numbers (degrees), got {angles!r}")
        self.model = model
        self.background = background
        self.threshold = threshold
        self.threshold_mode = threshold_mode
        self.score = score
        self.radii = radii
        self.angles = angles
        self.shifts = cycle_shifts(radii, angles)
        self.progress = progress

    # ------------------------------------------------------------------ model access
    def _values(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Game values (float64) of model outputs for their target classes."""
        if logits.ndim != 2 or logits.shape[0] != target.shape[0]:
            raise ValueError(f"model must map (N, C, H, W) to (N, classes) logits, got output {tuple(logits.shape)}")
        out = logits.detach().to(torch.float64)
        if self.score == "softmax":
            out = torch.softmax(out, dim=1)
        return out.gather(1, target.view(-1, 1)).squeeze(1)

    def _scores(self, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The game value of each input for its target class, in float64."""
        return self._values(self.model(inputs), target)

    # ------------------------------------------------------------------ main entry
    @torch.no_grad()
    def explain(self, x: torch.Tensor, target: int | torch.Tensor | None = None) -> Explanation:
        """h-Shap maps of the images ``x`` (N, C, H, W) for ``target`` (default: predicted class).

        Returns an :class:`~provex.explanation.Explanation` whose float64 relevance gives every
        pixel of a surviving cell its score, split evenly over the C channels (so the channel
        sum, which heat maps display, is the paper's per-pixel map), and whose ``info`` counts
        model evaluations, explored regions per level and images where nothing survived.
        """
        x = check_images(x)
        per_image_bg = self.background.ndim == 4
        if self.background.shape[-3:] != x.shape[1:] or (per_image_bg and self.background.shape[0] != x.shape[0]):
            raise ValueError(f"background has shape {tuple(self.background.shape)} but the images are {tuple(x.shape)}")
        n_img, _, height, width = x.shape
        s = self.min_size
        if s > min(height, width):
            raise ValueError(f"min_size={s} is larger than the image ({height} x {width})")
        device = x.device
        bg = self.background.to(device=device, dtype=x.dtype)

        root_logits, tgt, v_full_img, v_empty_img = self._root_values(x, bg, target)

        row_edges = cell_edges(height, s).to(device)
        col_edges = cell_edges(width, s).to(device)
        n_rows, n_cols = row_edges.numel() - 1, col_edges.numel() - 1
        shifts = torch.tensor(self.shifts, dtype=torch.long, device=device)  # (S, 2)
        n_shift = shifts.shape[0]
        n_inst = n_img * n_shift
        inst_img = torch.arange(n_inst, device=device) // n_shift
        inst_shift = shifts[torch.arange(n_inst, device=device) % n_shift]

        # Active regions: instance, cell ranges [r0, r1) x [c0, c1), score, value shown alone.
        inst = torch.arange(n_inst, device=device)
        r0 = torch.zeros(n_inst, dtype=torch.long, device=device)
        r1 = torch.full_like(r0, n_rows)
        c0 = torch.zeros_like(r0)
        c1 = torch.full_like(r0, n_cols)
        score = torch.ones(n_inst, dtype=torch.float64, device=device)
        full = v_full_img[inst_img]
        leaves: list[tuple[torch.Tensor, ...]] = []
        evals_per_inst = torch.zeros(n_inst, dtype=torch.long, device=device)
        regions_per_level: list[int] = []
        bar = tqdm(desc="h-Shap", unit="eval", disable=not self.progress, leave=False)

        while inst.numel() > 0:
            is_leaf = ((r1 - r0) == 1) & ((c1 - c0) == 1)
            if bool(is_leaf.any()):
                leaves.append((inst[is_leaf], r0[is_leaf], c0[is_leaf], score[is_leaf]))
            keep = ~is_leaf
            inst, r0, r1, c0, c1, score, full = (t[keep] for t in (inst, r0, r1, c0, c1, score, full))
            if inst.numel() == 0:
                break
            regions_per_level.append(int(inst.numel()))
            qr0, qr1, qc0, qc1, nonempty, present = _quadrants(r0, r1, c0, c1)
            pixel = (row_edges[qr0], row_edges[qr1], col_edges[qc0], col_edges[qc1])
            pair_region, pair_mask, values = self._coalition_values(
                x, bg, tgt, inst_img[inst], inst_shift[inst], pixel, present, bar
            )
            evals_per_inst += torch.bincount(inst[pair_region], minlength=n_inst)
            table, phi = _local_shapley(
                v_empty_img[inst_img[inst]], full, present, nonempty, pair_region, pair_mask, values
            )

            child_score = score[:, None] * phi
            child_full = table[:, 1 << torch.arange(_QUADRANTS, device=device)]
            kept = self._keep(child_score, nonempty, inst)
            reg_idx, quad = kept.nonzero(as_tuple=True)
            inst = inst[reg_idx]
            r0, r1, c0, c1 = (q[reg_idx, quad] for q in (qr0, qr1, qc0, qc1))
            score = child_score[reg_idx, quad]
            full = child_full[reg_idx, quad]
        bar.close()

        maps = self._paint(leaves, n_inst, n_rows, n_cols, row_edges, col_edges, inst_shift, height, width, device)
        maps = maps.view(n_img, n_shift, height, width).mean(1)
        n_cells = torch.zeros(n_img, dtype=torch.long, device=device)
        for li, _, _, _ in leaves:
            n_cells += torch.bincount(inst_img[li], minlength=n_img)
        empty = [i for i in range(n_img) if int(n_cells[i]) == 0]
        # +1: the whole image; +1 more for its own background when backgrounds are per image
        evals_img = evals_per_inst.view(n_img, n_shift).sum(1) + 1 + int(per_image_bg)
        relevance = (maps / x.shape[1])[:, None].expand(-1, x.shape[1], -1, -1).contiguous()
        info: dict[str, Any] = {
            "per_image": {"model_calls": evals_img.cpu()},
            "regions_per_level": regions_per_level,
            "levels": len(regions_per_level),
            "cell_grid": [n_rows, n_cols],
            "min_size": s,
            "leaf_cells_per_image": n_cells.tolist(),
            "empty": empty,
            "shifts": [list(t) for t in self.shifts],
            "score": self.score,
            "threshold_mode": self.threshold_mode,
            "threshold": self.threshold,
        }
        if empty:
            info["note"] = f"no cell passed the threshold for image(s) {empty}: their maps are all zero"
        return Explanation(
            relevance=relevance,
            method="h-shap",
            target=tgt.detach().clone(),
            info=info,
            prediction=root_logits.detach().argmax(1),
        )

    # ------------------------------------------------------------------ pieces
    def _root_values(
        self, x: torch.Tensor, bg: torch.Tensor, target: int | torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits of the whole images, the targets, and the values of the full and the empty
        coalition (the image, its background) per image."""
        n_img = x.shape[0]
        root_logits = self.model(x)
        if root_logits.ndim != 2 or root_logits.shape[0] != n_img:
            raise ValueError(
                f"model must map (N, C, H, W) to (N, classes) logits, got output {tuple(root_logits.shape)}"
            )
        tgt = resolve_target(target, root_logits)
        v_full_img = self._values(root_logits, tgt)
        if bg.ndim == 4:
            v_empty_img = self._values(self.model(bg), tgt)  # each image's own background
        else:
            bg_logits = self.model(bg.unsqueeze(0))
            v_empty_img = self._values(bg_logits.expand(n_img, -1), tgt)  # one evaluation for all images
        return root_logits, tgt, v_full_img, v_empty_img

    def _coalition_values(
        self,
        x: torch.Tensor,
        bg: torch.Tensor,
        tgt: torch.Tensor,
        img: torch.Tensor,
        shift: torch.Tensor,
        pixel: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
        present: torch.Tensor,
        bar: tqdm,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Values of the distinct coalitions of each region (image ``img``, partition ``shift``):
        the subsets of its non-empty quadrants except {} and all. Returns (region, coalition
        bit mask, value) per evaluated coalition, in chunks of ``batch_size`` model inputs."""
        device = x.device
        masks = torch.arange(1, _FULL, device=device)
        need = ((masks[None, :] & present[:, None]) == masks[None, :]) & (masks[None, :] != present[:, None])
        pair_region, pair_col = need.nonzero(as_tuple=True)
        pair_mask = masks[pair_col]
        values = torch.empty(pair_region.numel(), dtype=torch.float64, device=device)
        for start in range(0, pair_region.numel(), self.batch_size):
            sl = slice(start, start + self.batch_size)
            reg = pair_region[sl]
            bits = ((pair_mask[sl, None] >> torch.arange(_QUADRANTS, device=device)) & 1).bool()  # (B, 4)
            inputs = self._masked_inputs(x, bg, img[reg], shift[reg], tuple(p[reg] for p in pixel), bits)
            values[sl] = self._scores(inputs, tgt[img[reg]])
            bar.update(int(reg.numel()))
        return pair_region, pair_mask, values

    def _masked_inputs(
        self,
        x: torch.Tensor,
        bg: torch.Tensor,
        img: torch.Tensor,
        shift: torch.Tensor,
        pixel: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
        bits: torch.Tensor,
    ) -> torch.Tensor:
        """Images ``img`` shown on the quadrants in ``bits`` (shifted cyclically), background elsewhere."""
        height, width = x.shape[2], x.shape[3]
        pr0, pr1, pc0, pc1 = pixel  # (B, 4) pixel ranges of the quadrants in partition coordinates
        u = (torch.arange(height, device=x.device)[None, :] - shift[:, :1]) % height  # (B, H)
        v = (torch.arange(width, device=x.device)[None, :] - shift[:, 1:]) % width  # (B, W)
        rows = (u[:, None, :] >= pr0[:, :, None]) & (u[:, None, :] < pr1[:, :, None]) & bits[:, :, None]
        cols = (v[:, None, :] >= pc0[:, :, None]) & (v[:, None, :] < pc1[:, :, None])
        shown = torch.bmm(rows.transpose(1, 2).to(x.dtype), cols.to(x.dtype)) > 0  # (B, H, W)
        return torch.where(shown[:, None], x[img], bg[img] if bg.ndim == 4 else bg)

    def _keep(self, child_score: torch.Tensor, nonempty: torch.Tensor, inst: torch.Tensor) -> torch.Tensor:
        """Which children (R, 4) pass the threshold."""
        if self.threshold_mode == "absolute":
            return nonempty & (child_score > self.threshold)
        keep = torch.zeros_like(nonempty)
        for i in torch.unique(inst).tolist():
            rows = inst == i
            sc = child_score[rows][nonempty[rows]]
            q = torch.quantile(sc, self.threshold)
            ok = child_score[rows] > q if q <= 0 else child_score[rows] >= q
            keep[rows] = ok & nonempty[rows]
        return keep

    @staticmethod
    def _paint(
        leaves: list[tuple[torch.Tensor, ...]],
        n_inst: int,
        n_rows: int,
        n_cols: int,
        row_edges: torch.Tensor,
        col_edges: torch.Tensor,
        inst_shift: torch.Tensor,
        height: int,
        width: int,
        device: torch.device,
    ) -> torch.Tensor:
        """(n_inst, H, W) maps: every surviving cell painted with its score, shifts undone."""
        grid = torch.zeros(n_inst, n_rows, n_cols, dtype=torch.float64, device=device)
        for li, lr, lc, ls in leaves:
            grid[li, lr, lc] = ls
        # Cell index of each pixel row / column in partition coordinates.
        row_cell = torch.bucketize(torch.arange(height, device=device), row_edges[1:], right=True)
        col_cell = torch.bucketize(torch.arange(width, device=device), col_edges[1:], right=True)
        u = (torch.arange(height, device=device)[None, :] - inst_shift[:, :1]) % height  # (I, H)
        v = (torch.arange(width, device=device)[None, :] - inst_shift[:, 1:]) % width  # (I, W)
        ri = row_cell[u]  # (I, H)
        ci = col_cell[v]  # (I, W)
        idx = torch.arange(n_inst, device=device)[:, None, None]
        return grid[idx, ri[:, :, None], ci[:, None, :]]
