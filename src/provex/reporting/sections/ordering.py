"""Relevance-ordering curves: distortion and accuracy against the fraction kept, per method.

From the ordering benchmark's ``results.json`` (mean curves, standard errors, per-image areas)
and from scored dataset runs (per-image curves, averaged here). Each method is one line with a
band of one standard error; the legend carries its distortion area and standard error; a table
gives both areas per method and a per-class table the mean distortion area per target class.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from provex.reporting.sections import ReportOptions, Section, register_section
from provex.reporting.sources import Inputs, short_path

__all__ = ["ordering_sections"]

_PALETTE = [
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
    "#393b79",
    "#ad494a",
]


def _rgba(hex_colour: str, a: float) -> str:
    h = hex_colour.lstrip("#")
    return f"rgba({int(h[0:2], 16)},{int(h[2:4], 16)},{int(h[4:6], 16)},{a})"


def _r(values: Any, digits: int = 5) -> list[float | None]:
    return [None if not math.isfinite(float(v)) else round(float(v), digits) for v in values]


def _curve_figures(curves: dict[str, dict[str, Any]], sid: str) -> dict[str, dict[str, Any]]:
    figs = {}
    for key, title, ytitle in (
        ("distortion", "Distortion (lower is better)", "distortion: squared change of the target probability"),
        ("accuracy", "Accuracy (higher is better)", "accuracy: prediction kept"),
    ):
        data = []
        for k, (m, c) in enumerate(curves.items()):
            colour = _PALETTE[k % len(_PALETTE)]
            x = np.asarray(c["x"], dtype=float)
            y = np.asarray(c[key], dtype=float)
            se = np.asarray(c[key + "_se"], dtype=float)
            data.append(
                {
                    "type": "scatter",
                    "x": _r(np.concatenate([x, x[::-1]])),
                    "y": _r(np.concatenate([y + se, (y - se)[::-1]])),
                    "fill": "toself",
                    "fillcolor": _rgba(colour, 0.15),
                    "line": {"width": 0},
                    "hoverinfo": "skip",
                    "showlegend": False,
                    "legendgroup": m,
                    "meta": "band",
                }
            )
            auc, auc_se = c["auc_" + key], c["auc_" + key + "_se"]
            data.append(
                {
                    "type": "scatter",
                    "mode": "lines",
                    "x": _r(x),
                    "y": _r(y),
                    "name": f"{m} ({auc:.3f} ± {auc_se:.3f})" if auc_se is not None else f"{m} ({auc:.3f})",
                    "legendgroup": m,
                    "line": {"color": colour, "width": 2},
                    "meta": "curve",
                    "hovertemplate": f"{m}<br>kept %{{x:.3f}}<br>{key} %{{y:.4f}}<extra></extra>",
                }
            )
        figs[f"{sid}-{key}"] = {
            "data": data,
            "layout": {
                "title": {"text": title, "font": {"size": 14}},
                "xaxis": {"title": {"text": "fraction of components kept"}, "range": [0, 1]},
                "yaxis": {"title": {"text": ytitle}},
                "legend": {"title": {"text": "method (area ± s.e.)"}, "font": {"size": 11}},
                "margin": {"l": 60, "r": 10, "t": 40, "b": 50},
                "height": 420,
            },
        }
    return figs


def _per_class(targets: dict[str, list[int]], per_image: dict[str, list[float]], labels) -> dict[str, Any]:
    classes = sorted({t for ts in targets.values() for t in ts})
    rows = []
    for c in classes:
        row: dict[str, Any] = {"class": f"{c} {labels[c]}" if labels and 0 <= c < len(labels) else str(c)}
        cells = {}
        for m in per_image:
            vals = [v for t, v in zip(targets[m], per_image[m]) if t == c and v is not None and math.isfinite(v)]
            cells[m] = (float(np.mean(vals)), len(vals)) if vals else None
        row["cells"] = cells
        rows.append(row)
    return {"methods": list(per_image), "rows": rows}


def _from_results(d: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], dict[str, Any] | None]:
    curves, targets, per_image = {}, {}, {}
    for m, r in d["methods"].items():
        c = r["curve"]
        curves[m] = {
            "x": c["fraction_kept"],
            "distortion": c["distortion"],
            "distortion_se": c["distortion_se"],
            "accuracy": c["accuracy"],
            "accuracy_se": c["accuracy_se"],
            "auc_distortion": c["auc_distortion"],
            "auc_distortion_se": c.get("auc_distortion_se"),
            "auc_accuracy": c["auc_accuracy"],
            "auc_accuracy_se": c.get("auc_accuracy_se"),
            "n": (c.get("settings") or {}).get("n_images"),
            "seconds_per_image": r.get("seconds_per_image"),
        }
        tgt = (c.get("settings") or {}).get("target")
        if tgt is not None and c.get("per_image_auc_distortion") is not None:
            targets[m] = [int(t) for t in tgt]
            per_image[m] = [float(v) for v in c["per_image_auc_distortion"]]
    return curves, (targets, per_image) if per_image else None


def _se(a: np.ndarray, axis: int = 0) -> np.ndarray:
    n = np.sum(np.isfinite(a), axis=axis)
    return np.nanstd(a, axis=axis, ddof=1) / np.sqrt(np.maximum(n, 1)) if a.shape[axis] > 1 else np.zeros(a.shape[1:])


def _from_image_set(s) -> tuple[dict[str, dict[str, Any]], Any]:
    curves, targets, per_image = {}, {}, {}
    for m, (x, d, a) in s.curves.items():
        d, a, x = d.numpy(), a.numpy(), x.numpy()
        auc = s.auc.get(m, {})
        ad = auc["distortion"].numpy() if "distortion" in auc else np.trapezoid(d, x, axis=1)
        aa = auc["accuracy"].numpy() if auc.get("accuracy") is not None else np.trapezoid(a, x, axis=1)
        curves[m] = {
            "x": x,
            "distortion": np.nanmean(d, 0),
            "distortion_se": _se(d),
            "accuracy": np.nanmean(a, 0),
            "accuracy_se": _se(a),
            "auc_distortion": float(np.nanmean(ad)),
            "auc_distortion_se": float(_se(ad[:, None])[0]),
            "auc_accuracy": float(np.nanmean(aa)),
            "auc_accuracy_se": float(_se(aa[:, None])[0]),
            "n": int(d.shape[0]),
            "seconds_per_image": None,
        }
        targets[m] = s.target[m].tolist()
        per_image[m] = [float(v) for v in ad]
    return curves, (targets, per_image) if per_image else None


def _section(sid: str, title: str, curves, per_class, settings, labels) -> Section:
    table = [
        {
            "method": m,
            "auc_d": c["auc_distortion"],
            "auc_d_se": c["auc_distortion_se"],
            "auc_a": c["auc_accuracy"],
            "auc_a_se": c["auc_accuracy_se"],
            "n": c["n"],
            "spi": c["seconds_per_image"],
        }
        for m, c in sorted(curves.items(), key=lambda kv: kv[1]["auc_distortion"])
    ]
    return Section(
        id=sid,
        title=title,
        template="ordering.html.j2",
        context={
            "table": table,
            "per_class": _per_class(*per_class, labels) if per_class else None,
            "settings_line": settings.get("line", ""),
        },
        figures=_curve_figures(curves, sid),
        data={"methods": list(curves)},
        settings=settings,
    )


@register_section("ordering", order=20)
def ordering_sections(inputs: Inputs, options: ReportOptions) -> list[Section]:
    """One section per ordering results file and per scored image set."""
    out = []
    for k, r in enumerate(inputs.results_of("ordering")):
        curves, per_class = _from_results(r.data)
        st = dict(r.data.get("settings") or {})
        first = next(iter(r.data["methods"].values()))["curve"].get("settings") or {}
        st["line"] = (
            f"{first.get('n_images')} images, step {first.get('step')}, {first.get('n_noise')} "
            f"{first.get('noise')} noise draws, seed {first.get('seed')}"
        )
        st["path"] = str(r.path)
        out.append(
            _section(
                f"ordering-{k}", f"Relevance ordering: {short_path(r.path)}", curves, per_class, st, options.labels
            )
        )
    for k, s in enumerate(inputs.image_sets):
        if not s.curves:
            continue
        curves, per_class = _from_image_set(s)
        score = (s.settings.get("score") or {}).get("ordering") or {}
        line = f"{s.n} images, step {score.get('step')}, {score.get('n_noise')} {score.get('noise')} noise draws, "
        line += f"seed {score.get('seed')}"
        st = {"path": s.paths[0], "score": score, "line": line}
        out.append(
            _section(
                f"ordering-run-{k}",
                f"Relevance ordering: {s.name}",
                curves,
                per_class,
                st,
                options.labels or s.labels,
            )
        )
    return out
