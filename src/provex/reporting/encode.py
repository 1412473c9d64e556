"""Pictures and numbers as strings the page embeds: PNG data URIs and quantised value grids.

Maps go to the page twice: as small RGBA PNGs (the colour-mapped map, transparent where the
value is zero or not drawn) stacked over the image in the gallery, and as 16-bit quantised
value grids that the detail view decodes for Plotly heat maps (hover shows the value, to
1/65534 of the map's range). Large images are reduced by area averaging to ``max_side``.
"""

from __future__ import annotations

import base64
import io
import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from provex.viz.heatmap import image_display
from provex.viz.style import overlay_cmap

__all__ = ["NAN_CODE", "image_uri", "map_uri", "png_uri", "pool_to", "quantize"]

NAN_CODE = 65535
"""The quantised code of a value that is not drawn (NaN)."""


def png_uri(array: np.ndarray) -> str:
    """A ``data:image/png;base64,...`` URI of an (H, W), (H, W, 3) or (H, W, 4) uint8 array."""
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=6)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def pool_to(values: np.ndarray, max_side: int) -> np.ndarray:
    """(H, W) or (H, W, K) array averaged over blocks so that its longer side is at most ``max_side``.

    NaNs are ignored in each block's mean (a block of NaNs stays NaN).
    """
    h, w = values.shape[:2]
    if max(h, w) <= max_side:
        return values
    f = math.ceil(max(h, w) / max_side)
    t = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float64))
    t = t.unsqueeze(-1) if t.ndim == 2 else t
    t = t.permute(2, 0, 1).unsqueeze(0)  # (1, K, H, W)
    ok = torch.isfinite(t)
    s = F.avg_pool2d(torch.where(ok, t, 0.0), f, ceil_mode=True)
    c = F.avg_pool2d(ok.double(), f, ceil_mode=True)
    out = torch.where(c > 0, s / c.clamp_min(1e-12), float("nan"))[0].permute(1, 2, 0).numpy()
    return out[..., 0] if values.ndim == 2 else out


def image_uri(img: torch.Tensor, max_side: int, underlay: bool) -> str:
    """The image (C, H, W) as a PNG: grey, RGB, or the lightened luminance used under maps."""
    disp, _ = image_display(img, underlay=underlay)
    disp = pool_to(disp, max_side)
    if disp.ndim == 2:
        lo, hi = float(np.nanmin(disp)), float(np.nanmax(disp))
        if not underlay or hi > 1.0 or lo < 0.0:
            disp = (disp - lo) / (hi - lo + 1e-12)
            if underlay:
                disp = 0.25 + 0.75 * disp
    return png_uri((np.clip(disp, 0, 1) * 255).round().astype(np.uint8))


def map_uri(values: np.ndarray, vmin: float, vmax: float, signed: bool, max_side: int) -> str:
    """The colour-mapped map (H, W; NaN = not drawn) as an RGBA PNG for stacking over its image."""
    v = pool_to(values, max_side)
    cmap = overlay_cmap(signed)
    scaled = (v - vmin) / ((vmax - vmin) or 1.0)
    rgba = cmap(np.ma.masked_invalid(np.clip(scaled, 0.0, 1.0)), bytes=True)
    return png_uri(np.asarray(rgba, dtype=np.uint8))


def quantize(values: np.ndarray, max_side: int) -> dict[str, object]:
    """16-bit codes of the (H, W) values over their own range: ``{"b", "lo", "hi", "h", "w"}``.

    ``value = lo + code * (hi - lo) / 65534``; the code 65535 marks a value not drawn.
    """
    v = pool_to(values, max_side)
    finite = np.isfinite(v)
    lo = float(v[finite].min()) if finite.any() else 0.0
    hi = float(v[finite].max()) if finite.any() else 0.0
    span = (hi - lo) or 1.0
    codes = np.full(v.shape, NAN_CODE, dtype="<u2")
    codes[finite] = np.round((v[finite] - lo) / span * (NAN_CODE - 1)).astype("<u2")
    return {
        "b": base64.b64encode(codes.tobytes()).decode("ascii"),
        "lo": lo,
        "hi": hi,
        "h": int(v.shape[0]),
        "w": int(v.shape[1]),
    }
