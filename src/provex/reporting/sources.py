"""What the report reads: saved explanations, run folders and results folders.

:func:`load_inputs` turns the paths given to ``provex report`` into

* :class:`ImageSet` galleries: images explained by one or more methods (a run folder; or the
  ``.pt`` explanations of the same images, grouped), with maps, targets, predictions, ordering
  curves and areas where known;
* :class:`Results`: a ``results.json`` of a kind the report knows (ordering, h-Shap, betting,
  LPN benchmarks, ``provex test-concepts``), identified by :data:`RESULT_KINDS`, a registry
  that other result types join with :func:`register_results_kind`.

A path that is none of these, or a file that cannot be read, raises a one-line
``ValueError`` naming it. Folders are searched one level deep, so a benchmark's ``results/``
folder brings its sub-results (e.g. ``mnist-concepts/``) along.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from provex.reporting.store import is_run_folder, read_run
from provex.viz.style import MapStyle, map_style

__all__ = [
    "RESULT_KINDS",
    "ImageSet",
    "Inputs",
    "Results",
    "load_inputs",
    "model_identity",
    "register_results_kind",
    "short_path",
]


@dataclass
class ImageSet:
    """Images and the maps of every method on them (one gallery)."""

    name: str
    source: str  # "run" or "explanations"
    paths: list[str]
    n: int
    shape: tuple[int, int, int]  # C, H, W of the maps
    images: torch.Tensor | None  # (n, C', H, W) or None when unknown
    index: list[int]  # dataset indices (runs) or positions
    label: torch.Tensor  # (n,) ground truth, -1 unknown
    maps: dict[str, torch.Tensor] = field(default_factory=dict)
    target: dict[str, torch.Tensor] = field(default_factory=dict)
    prediction: dict[str, torch.Tensor] = field(default_factory=dict)
    extra_maps: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    styles: dict[str, MapStyle] = field(default_factory=dict)
    auc: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # method -> {distortion, accuracy} (n,)
    curves: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    pvalues: dict[str, dict[str, Any]] = field(default_factory=dict)  # method -> {p (n,R), regions, alpha}
    settings: dict[str, Any] = field(default_factory=dict)
    labels: list[str] | None = None  # class names
    model: dict[str, Any] | None = None

    @property
    def methods(self) -> list[str]:
        return list(self.maps)


@dataclass
class Results:
    """A results.json of a known kind."""

    kind: str
    path: Path  # the folder
    data: dict[str, Any]
    model: dict[str, Any] | None = None
    explains_model: bool = True  # False: results about another model (an LPN prior) or none (synthetic)
    file: Path | None = None  # the JSON file itself (its name is not always results.json)


@dataclass
class Inputs:
    """Everything the report was given."""

    image_sets: list[ImageSet] = field(default_factory=list)
    results: list[Results] = field(default_factory=list)

    def results_of(self, kind: str) -> list[Results]:
        return [r for r in self.results if r.kind == kind]


def _is_ordering(d: dict[str, Any]) -> bool:
    methods = d.get("methods")
    return (
        isinstance(methods, dict)
        and bool(methods)
        and all(isinstance(v, dict) and "curve" in v for v in methods.values())
    )


def _is_hshap(d: dict[str, Any]) -> bool:
    res = d.get("results")
    return isinstance(res, list) and bool(res) and isinstance(res[0], dict) and "f1_mean" in res[0]


def _is_concepts(d: dict[str, Any]) -> bool:
    return isinstance(d.get("settings"), dict) and d["settings"].get("command") == "test-concepts"


def _is_betting(d: dict[str, Any]) -> bool:
    return any(k in d for k in ("synthetic", "sweep", "fdr", "shap_xrt")) and "results" not in d


def _is_region_tests(d: dict[str, Any]) -> bool:
    return str(d.get("format", "")).startswith("provex.region-tests/")


def _is_lpn(d: dict[str, Any]) -> bool:
    return any(k in d for k in ("prior", "reconstruct", "laplace")) and "methods" not in d


RESULT_KINDS: dict[str, Callable[[dict[str, Any]], bool]] = {
    "region-tests": _is_region_tests,
    "ordering": _is_ordering,
    "hshap": _is_hshap,
    "concepts": _is_concepts,
    "betting": _is_betting,
    "lpn": _is_lpn,
}
"""Kinds of ``results.json`` the report reads: name -> test on the parsed JSON (first match wins)."""


def register_results_kind(kind: str, detect: Callable[[dict[str, Any]], bool], first: bool = True) -> None:
    """Teach the report a new results type (e.g. region tests); ``first`` tests it before the others."""
    global RESULT_KINDS
    items = [(k, v) for k, v in RESULT_KINDS.items() if k != kind]
    RESULT_KINDS = dict([(kind, detect), *items] if first else [*items, (kind, detect)])


def model_identity(desc: Any) -> dict[str, Any] | None:
    """``{"spec": ..., "digest": ...}`` from a run manifest's model, a name, or None."""
    if desc is None:
        return None
    if isinstance(desc, str):
        return {"spec": desc, "digest": None}
    if isinstance(desc, dict):
        spec = desc.get("spec") or desc.get("name")
        if spec is None:
            return None
        return {"spec": str(spec), "digest": desc.get("state_digest") or desc.get("digest")}
    return None


def _results_model(kind: str, d: dict[str, Any]) -> tuple[dict[str, Any] | None, bool]:
    settings = d.get("settings") or {}
    if kind in ("ordering", "concepts"):
        return model_identity(settings.get("model")), True
    if kind == "hshap":
        return model_identity((d.get("model") or {}).get("name")), True
    if kind == "region-tests":
        model = settings.get("model")
        return model_identity(model), model is not None
    if kind == "lpn":
        return model_identity("lpn-mnist" if "prior" in d or "reconstruct" in d else "lpn-laplace"), False
    return model_identity(d.get("model")), kind not in ("betting",)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        d = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"{path}: unreadable JSON ({err.__class__.__name__})") from None
    if not isinstance(d, dict):
        raise ValueError(f"{path}: not a provex results file (top level is not an object)")
    return d


def _results(path: Path) -> Results:
    d = _read_json(path)
    for kind, detect in RESULT_KINDS.items():
        if detect(d):
            model, explains = _results_model(kind, d)
            return Results(kind, path.parent, d, model, explains, path)
    raise ValueError(f"{path}: not a results file the report knows ({', '.join(RESULT_KINDS)})")


def _load_explanation(path: Path):
    from provex.explanation import Explanation

    try:
        return Explanation.load(path)
    except ValueError:
        raise ValueError(f"{path}: not a provex explanation file") from None
    except Exception as err:
        raise ValueError(f"{path}: unreadable ({err.__class__.__name__})") from None


def _image_set_from_run(path: Path, labels: Sequence[str] | None) -> ImageSet:
    run = read_run(path)
    man = run.manifest
    n = int(run.index.numel())
    shape = tuple(next(iter(run.maps.values())).shape[1:]) if run.maps else tuple(run.inputs.shape[1:])
    table = run.table
    s = ImageSet(
        name=f"run {short_path(path)}",
        source="run",
        paths=[str(path)],
        n=n,
        shape=shape,  # type: ignore[arg-type]
        images=run.inputs,
        index=run.index.tolist(),
        label=run.label,
        labels=list(labels) if labels is not None else man.get("labels"),
        model=model_identity(man.get("model")),
    )
    pos = {int(i): k for k, i in enumerate(run.index.tolist())}
    method_opts = man.get("methods") or {}
    for m, rel in run.maps.items():
        rows = table[table["method"] == m]
        order = torch.tensor([pos[int(i)] for i in rows["index"]], dtype=torch.long)

        def col(name: str, dtype: torch.dtype = torch.float64, rows=rows, order=order) -> torch.Tensor | None:
            if name not in rows.columns:
                return None
            out = torch.full((n,), float("nan"), dtype=torch.float64)
            out[order] = torch.tensor(rows[name].to_numpy(dtype="float64"))
            return out.to(dtype) if dtype != torch.float64 else out

        s.maps[m] = rel
        tgt = col("target")
        s.target[m] = tgt.long() if tgt is not None else torch.full((n,), -1, dtype=torch.long)
        pred = col("prediction")
        if pred is not None:
            s.prediction[m] = pred.long()
        auc_d, auc_a = col("auc_distortion"), col("auc_accuracy")
        if auc_d is not None and bool(torch.isfinite(auc_d).any()):
            s.auc[m] = {"distortion": auc_d, "accuracy": auc_a}
        info = {"options": method_opts.get(m, {})}
        s.styles[m] = map_style(m, info)
        if m in run.extra_maps:
            s.extra_maps[m] = run.extra_maps[m]
        pv = run.per_image.get(m, {}).get("p_values")
        if pv is not None and pv.ndim == 2:
            _add_run_pvalues(s, m, pv, method_opts.get(m, {}))
        if m in run.curves and run.fraction_kept is not None:
            d, a = run.curves[m]
            s.curves[m] = (run.fraction_kept.double(), d.double(), a.double())
    s.settings = {
        "kind": "dataset run",
        "path": str(path),
        "provex_version": man.get("provex_version"),
        "model": man.get("model"),
        "reference": man.get("reference"),
        "data": man.get("data"),
        "methods": method_opts,
        "score": man.get("score"),
        "seed": man.get("seed"),
        "shard_size": man.get("shard_size"),
        "created": man.get("created"),
        "failed_shards": len(run.failed),
    }
    return s


def _add_run_pvalues(s: ImageSet, m: str, p: torch.Tensor, opts: dict[str, Any]) -> None:
    """SHAP-XRT in a run: (n, R) p-values on the method's regions (``grid``-pixel blocks, default quadrants)."""
    from provex.stats.xrt import xrt_regions

    grid = opts.get("grid")
    regions = xrt_regions(s.shape[1], s.shape[2], None if grid is None else int(grid))
    if regions.shape[0] != p.shape[1]:
        return  # regions of another layout: the map is shown as stored
    s.pvalues[m] = {
        "p": p.double(),
        "regions": regions,
        "alpha": float(opts.get("alpha", 0.05)),
        "K": opts.get("K", 100),
        "context": opts.get("context", "empty"),
    }


def short_path(path: str | os.PathLike) -> str:
    """``path`` relative to the working folder when it lies below it (for titles)."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(Path.cwd()))
    except ValueError:
        return str(p)


def _image_sets_from_explanations(
    items: list[tuple[Path, Any]], images: torch.Tensor | None, labels: Sequence[str] | None
) -> list[ImageSet]:
    """Group explanations of the same images (same N, H, W and sample indices) into galleries."""
    from provex import __version__

    groups: dict[tuple, list[tuple[Path, Any]]] = {}
    for path, exp in items:
        n, _, h, w = exp.relevance.shape
        key = (n, h, w, tuple(exp.info.get("sample_indices") or ()))
        groups.setdefault(key, []).append((path, exp))
    out = []
    for (n, h, w, idx), members in groups.items():
        imgs = images if images is not None and images.shape[0] == n and tuple(images.shape[2:]) == (h, w) else None
        if images is not None and imgs is None and len(groups) == 1:
            raise ValueError(
                f"images: shape {tuple(images.shape)} does not match the explanations' (N={n}, C, H={h}, W={w})"
            )
        first = members[0][1]
        s = ImageSet(
            name="explanations " + ", ".join(p.name for p, _ in members),
            source="explanations",
            paths=[str(p) for p, _ in members],
            n=n,
            shape=tuple(first.relevance.shape[1:]),  # type: ignore[arg-type]
            images=imgs,
            index=list(idx) if idx else list(range(n)),
            label=torch.full((n,), -1, dtype=torch.long),
            labels=list(labels) if labels is not None else None,
            model=model_identity(first.info.get("model")),
        )
        per_method: dict[str, Any] = {}
        for path, exp in members:
            name = exp.method
            k = 2
            while name in s.maps:  # two files of one method: keep both
                name = f"{exp.method} ({k})"
                k += 1
            s.maps[name] = exp.relevance.detach().float()
            s.target[name] = exp.target.long()
            if exp.prediction is not None:
                s.prediction[name] = exp.prediction.long()
            s.styles[name] = map_style(exp.method, exp.info)
            if exp.maps:
                s.extra_maps[name] = {k2: v.float() for k2, v in exp.maps.items()}
            info = exp.info
            if "p_values" in info and "regions" in info:
                opts = info.get("options") or {}
                s.pvalues[name] = {
                    "p": torch.as_tensor(info["p_values"]).double(),
                    "regions": torch.as_tensor(info["regions"]).bool(),
                    "alpha": float(opts.get("alpha", 0.05)),
                    "K": opts.get("K"),
                    "context": info.get("context"),
                }
            per_method[name] = {
                "file": str(path),
                "options": info.get("options"),
                "reference": info.get("reference"),
                "seconds": info.get("seconds"),
                "model_calls": info.get("model_calls", info.get("model_passes")),
                "model": info.get("model"),
            }
        s.settings = {
            "kind": "saved explanations",
            "paths": s.paths,
            "provex_version": __version__ + " (the report's; .pt files do not record theirs)",
            "methods": per_method,
            "sample_indices": list(idx) or None,
            "images": "given" if imgs is not None else "not given (pass --images FILE to draw maps over the images)",
        }
        out.append(s)
    return out


def _region_tests_file(path: Path) -> bool:
    """A ``provex test-regions`` result (``STEM.json``): the only other JSON a folder may hold."""
    try:
        with path.open("rb") as fh:
            head = fh.read(200)
    except OSError:
        return False
    return b'"format": "provex.region-tests/' in head or b'"format":"provex.region-tests/' in head


def _candidates(path: Path) -> list[Path]:
    """A folder's readable members: itself if a run; else results.json / *.pt / runs, one level down."""
    if is_run_folder(path):
        return [path]
    found: list[Path] = []
    if (path / "results.json").is_file():
        found.append(path / "results.json")
    found += sorted(path.glob("*.pt"))
    found += [q for q in sorted(path.glob("*.json")) if q.name != "results.json" and _region_tests_file(q)]
    for sub in sorted(p for p in path.iterdir() if p.is_dir()):
        if is_run_folder(sub):
            found.append(sub)
        elif (sub / "results.json").is_file():
            found.append(sub / "results.json")
    return found


def load_inputs(
    paths: Sequence[str | os.PathLike],
    images: torch.Tensor | None = None,
    labels: Sequence[str] | None = None,
    allow_mixed: bool = False,
) -> Inputs:
    """Read every input; refuse unknown files and (unless ``allow_mixed``) different models."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if not paths:
        raise ValueError("inputs: give at least one explanation (.pt), run folder or results folder")
    explanations: list[tuple[Path, Any]] = []
    inputs = Inputs()
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise ValueError(f"{p}: no such file or folder")
        members = _candidates(p) if p.is_dir() else [p]
        if not members:
            raise ValueError(f"{p}: no explanation (.pt), run folder or results.json in this folder")
        for q in members:
            if q.is_dir():
                inputs.image_sets.append(_image_set_from_run(q, labels))
            elif q.suffix == ".pt":
                explanations.append((q, _load_explanation(q)))
            elif q.suffix == ".json":
                inputs.results.append(_results(q))
            else:
                raise ValueError(f"{q}: not an explanation (.pt), run folder or results.json")
    if explanations:
        inputs.image_sets.extend(_image_sets_from_explanations(explanations, images, labels))
    if not allow_mixed:
        _check_one_model(inputs)
    return inputs


def _check_one_model(inputs: Inputs) -> None:
    seen: list[tuple[str, dict[str, Any]]] = []
    for s in inputs.image_sets:
        if s.model is not None:
            seen.append((s.paths[0], s.model))
    for r in inputs.results:
        if r.model is not None and r.explains_model:
            seen.append((str(r.path), r.model))
    for where, m in seen[1:]:
        first_where, first = seen[0]
        # "python:CLASS" names a class, not a model: only weight digests can tell those apart
        loose = m["spec"].startswith("python:") or first["spec"].startswith("python:")
        same_spec = loose or m["spec"] == first["spec"]
        same_digest = m.get("digest") is None or first.get("digest") is None or m["digest"] == first["digest"]
        if not (same_spec and same_digest):
            raise ValueError(
                f"inputs: {where} explains model {m['spec']!r} but {first_where} explains {first['spec']!r}; "
                "pass --allow-mixed (allow_mixed=True) to report them together"
            )
