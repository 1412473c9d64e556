"""``provex runs show DIR``: what a run holds, as a dict (JSON) and as text tables.

Per method: images done, wall time per image of the method (its share of the shard's
batched computation), model calls per image, and when the run was scored the mean
relevance-ordering areas (distortion: lower is better; accuracy: higher is better) with
their standard errors over images, overall and per class (the label where the data has
labels, else the predicted class).
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["format_summary", "summarize"]


def _num(v: Any) -> float | None:
    v = float(v)
    return None if math.isnan(v) else v


def _stats(values: Any) -> tuple[float | None, float | None]:
    v = values.dropna()
    if len(v) == 0:
        return None, None
    se = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else None
    return float(v.mean()), se


def summarize(run: Any) -> dict[str, Any]:
    """The summary of a :class:`provex.runs.results.Run` (see the module docstring)."""
    table = run.table
    m = run.manifest
    scored = "ordering" in m.get("score", {})
    failed_images = sum(len(f.get("indices", [])) for f in run.failed)
    done = len(run.index)
    has_labels = bool(len(table)) and bool((table["label"] >= 0).all())
    class_by = "label" if has_labels else "prediction"
    names = run.classes
    methods: dict[str, Any] = {}
    per_class: dict[str, Any] = {}
    for method in run.methods:
        rows = table[table.method == method] if len(table) else table
        auc_d, auc_d_se = _stats(rows["auc_distortion"]) if scored else (None, None)
        auc_a, auc_a_se = _stats(rows["auc_accuracy"]) if scored else (None, None)
        entry: dict[str, Any] = {
            "images": len(rows),
            "seconds_per_image": _stats(rows["seconds"])[0] if len(rows) else None,
            "model_calls_per_image": _stats(rows["model_calls"])[0] if len(rows) else None,
            "auc_distortion": auc_d,
            "auc_distortion_se": auc_d_se,
            "auc_accuracy": auc_a,
            "auc_accuracy_se": auc_a_se,
        }
        if scored:
            entry["score_seconds_per_image"] = _stats(rows["score_seconds"])[0] if len(rows) else None
        if has_labels and len(rows):
            entry["accuracy"] = float((rows["prediction"] == rows["label"]).mean())
        methods[method] = entry
        if scored and len(rows):
            classes = {}
            for c, group in rows.groupby(class_by):
                name = names[int(c)] if names and 0 <= int(c) < len(names) else str(int(c))
                d, d_se = _stats(group["auc_distortion"])
                a, _ = _stats(group["auc_accuracy"])
                classes[name] = {
                    "images": len(group),
                    "auc_distortion": d,
                    "auc_distortion_se": d_se,
                    "auc_accuracy": a,
                }
            per_class[method] = classes
    return {
        "run": str(run.root),
        "model": m["model"].get("spec"),
        "data": m["data"]["spec"],
        "created": m.get("created"),
        "provex_version": m.get("provex_version"),
        "seed": m["seed"],
        "shard_size": m["shard_size"],
        "methods_options": m["methods"],
        "score": m.get("score", {}),
        "images": {"total": run.n, "done": done, "failed": failed_images, "pending": run.n - done - failed_images},
        "shards": {"total": math.ceil(run.n / m["shard_size"]), "done": len(run.shards), "failed": len(run.failed)},
        "methods": methods,
        "class_by": class_by if scored else None,
        "per_class": per_class,
        "failed": run.failed,
    }


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1e4 else f"{v:.0f}"
    return str(v)


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def format_summary(s: dict[str, Any]) -> str:
    """The summary as text: a header, a table per method and, when scored, per class."""
    im, sh = s["images"], s["shards"]
    lines = [
        f"run {s['run']}: model {s['model']}, data {s['data']} (seed {s['seed']}, provex {s['provex_version']})",
        f"images: {im['done']}/{im['total']} done, {im['failed']} failed, {im['pending']} pending "
        f"(shards of {s['shard_size']}: {sh['done']}/{sh['total']} done, {sh['failed']} failed)",
        "",
    ]
    scored = bool(s["score"])
    headers = ["method", "images", "s/image", "calls/image"]
    if scored:
        headers += ["AUC distortion", "+- SE", "AUC accuracy", "score s/image"]
    rows = []
    for name, e in s["methods"].items():
        row = [name, str(e["images"]), _fmt(e["seconds_per_image"], 3), _fmt(e["model_calls_per_image"])]
        if scored:
            row += [
                _fmt(e["auc_distortion"]),
                _fmt(e["auc_distortion_se"], 2),
                _fmt(e["auc_accuracy"]),
                _fmt(e.get("score_seconds_per_image"), 3),
            ]
        rows.append(row)
    lines.append(_table(headers, rows))
    if scored and s["per_class"]:
        methods = list(s["per_class"])
        classes = sorted({c for per in s["per_class"].values() for c in per}, key=lambda c: (len(c), c))
        crow = []
        for c in classes:
            n = next((per[c]["images"] for per in s["per_class"].values() if c in per), 0)
            crow.append([c, str(n), *(_fmt(s["per_class"][m].get(c, {}).get("auc_distortion")) for m in methods)])
        lines += ["", f"AUC distortion per class ({s['class_by']}):", _table([s["class_by"], "images", *methods], crow)]
    for f in s["failed"][:10]:
        span = f"images {f['indices'][0]}-{f['indices'][-1]}"
        lines.append(f"failed shard {f['shard']} ({span}, {f['attempts']} attempts): {f['error']}")
    if len(s["failed"]) > 10:
        lines.append(f"... and {len(s['failed']) - 10} more failed shards (see {s['run']}/failed/)")
    return "\n".join(lines)
