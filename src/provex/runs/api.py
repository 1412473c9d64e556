"""``provex.run``: explain a whole dataset in shards, resumably, in-process, in worker processes or on Ray.

A run is (model, reference, methods with options, data, seed) -> a results store (see
:mod:`provex.runs.store`). The data is cut into shards of ``shard_size`` consecutive images;
each shard is one task (:func:`provex.runs.task.compute_shard`) whose result the driver
writes atomically as soon as it arrives. Rerunning the same call skips the shards already
written, so a run killed at any moment (SIGKILL included) resumes where it stopped and
loses no finished shard; a run whose settings differ from the folder's manifest is refused
unless ``new=True`` (which deletes the old results first).

Engines: ``"local"`` runs in this process (``workers=1``, the default) or in ``workers``
spawned processes; ``"ray"`` runs one Ray task per shard on a private Ray on this machine
or on the cluster at ``address`` (``"auto"`` or ``"HOST:PORT"``). All of them run the same
task function with ``threads`` torch threads per worker, so they give identical maps.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from provex._version import __version__
from provex.checks import unknown
from provex.runs.data import DataLike, RunData, resolve_data
from provex.runs.local import Failure, Outcome, run_in_process, run_processes
from provex.runs.results import Run, load_run
from provex.runs.store import FORMAT, RunStore
from provex.runs.task import RunPlan, ShardJob

__all__ = ["ORDERING_DEFAULTS", "run"]

ORDERING_DEFAULTS: dict[str, Any] = {"step": 5, "n_samples": 64, "noise": "uniform", "batch_size": 512}
"""The relevance-ordering score's settings unless overridden (``-O ordering:KEY=VALUE``).

Step 5 as in the papers; 64 noise draws per step (``n_samples``; the papers: 512, about 8x
the cost). ``noise="reference"`` replaces components by Gaussian draws from the run's
reference (given, else the model card's training statistics) instead of uniform noise in
each image's range. Also ``tie_channels`` and ``compile`` (see
:func:`provex.evaluate.relevance_ordering`)."""

_ORDERING_KEYS = {"step", "n_samples", "noise", "batch_size", "tie_channels", "compile"}
_SCORES = ("ordering",)


def _positive_int(value: Any, name: str, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _jsonable(value: Any) -> Any:
    """What the manifest records of an option value (and compares on resume)."""

    def default(v: Any) -> Any:
        if hasattr(v, "describe") and callable(v.describe):
            return v.describe()
        if hasattr(v, "tolist"):
            return v.tolist()
        if isinstance(v, Path):
            return str(v)
        if callable(v):
            return f"callable:{getattr(v, '__qualname__', type(v).__name__)}"
        return repr(v)

    return json.loads(json.dumps(value, default=default))


def _method_options(
    methods: str | Sequence[str] | Mapping[str, Mapping[str, Any] | None],
    options: Mapping[str, Mapping[str, Any]] | None,
    given: set[str],
) -> dict[str, dict[str, Any]]:
    from provex.registry import get_method

    if isinstance(methods, str):
        methods = [methods]
    if isinstance(methods, Mapping):
        opts = {str(k): dict(v or {}) for k, v in methods.items()}
    else:
        names = list(methods)
        if len(set(names)) != len(names):
            raise ValueError(f"methods lists a method twice: {names}")
        opts = {str(k): {} for k in names}
    if not opts:
        raise ValueError("methods: give at least one method")
    for name, extra in (options or {}).items():
        if name not in opts:
            raise ValueError(f"options: method {name!r} is not among the methods {list(opts)}")
        opts[name].update(extra)
    for name, o in opts.items():
        if name in given:
            continue
        valid = get_method(name).options
        unknown = sorted(set(o) - set(valid))
        if unknown:
            raise ValueError(f"options: unknown option(s) {unknown} for method {name!r}; valid: {sorted(valid)}")
    return opts


def _score_options(score: str | Sequence[str] | Mapping[str, Mapping[str, Any] | None] | None) -> dict[str, Any]:
    if score is None:
        return {}
    if isinstance(score, str):
        score = [score]
    items = score.items() if isinstance(score, Mapping) else [(s, {}) for s in score]
    out: dict[str, Any] = {}
    for name, o in items:
        if name not in _SCORES:
            raise unknown("score", name, _SCORES, argument="score")
        bad = sorted(set(o or {}) - _ORDERING_KEYS)
        if bad:
            hint = " (draws per step are n_samples)" if "n_noise" in bad else ""
            raise ValueError(f"score: unknown ordering option(s) {bad}; valid: {sorted(_ORDERING_KEYS)}{hint}")
        merged = {**ORDERING_DEFAULTS, **(o or {})}
        if merged["noise"] not in ("uniform", "reference"):
            raise ValueError(f"score: ordering noise must be 'uniform' or 'reference', got {merged['noise']!r}")
        for key in ("step", "n_samples", "batch_size"):
            _positive_int(merged[key], f"score: ordering {key}")
        out[name] = merged
    return out


def _given_maps(
    maps_from: str | os.PathLike | Mapping[str, Any] | None, methods: Sequence[str], n: int
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Maps computed elsewhere, per method: (relevance (>= n, C, H, W), target) in dataset order."""
    from provex.explanation import Explanation

    if maps_from is None:
        return {}
    out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    if isinstance(maps_from, Mapping):
        sources = dict(maps_from)
    elif (Path(maps_from) / "manifest.json").is_file():
        previous = load_run(maps_from)
        sources = {}
        for m in methods:
            if m in previous.methods:
                first = previous.index[:n]
                if len(first) < n or not torch.equal(first, torch.arange(n)):
                    raise ValueError(f"maps_from: {maps_from} does not hold the first {n} images of every method")
                sources[m] = previous.explanation(m)
    else:
        sources = {}
        for m in methods:
            path = Path(maps_from) / f"{m}.pt"
            if not path.is_file():
                raise FileNotFoundError(f"maps_from: no saved map {path} for method {m!r}")
            sources[m] = Explanation.load(path)
    for m in methods:
        if m not in sources:
            raise FileNotFoundError(f"maps_from: {maps_from} holds no maps of method {m!r}")
        exp = sources[m]
        if exp.relevance.shape[0] < n:
            raise ValueError(f"maps_from: {m} has maps of {exp.relevance.shape[0]} images, the run needs {n}")
        out[m] = (exp.relevance, exp.target)
    return out


_MODEL_IDENTITY = ("class", "parameters", "state_digest", "source_digest")
"""What identifies a model across sessions: its weights and code, not how it was loaded."""


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    old, new = dict(old), dict(new)
    for m in (old, new):
        m["model"] = {k: v for k, v in (m.get("model") or {}).items() if k in _MODEL_IDENTITY}
    keys = [k for k in sorted(set(old) | set(new)) if k != "created"]
    short = lambda v: json.dumps(v)[:120]  # noqa: E731
    return [f"{k}: {short(old.get(k))} there, {short(new.get(k))} now" for k in keys if old.get(k) != new.get(k)]


def _jobs(data: RunData, shards: list[int], shard_size: int, given: dict[str, Any]) -> Iterator[ShardJob]:
    for k in shards:
        indices = list(range(k * shard_size, min(data.n, (k + 1) * shard_size)))
        x, y = data.batch(indices)
        rows = slice(indices[0], indices[-1] + 1)
        sub = {m: (rel[rows], tgt[rows]) for m, (rel, tgt) in given.items()}
        yield ShardJob(k, indices, x, y, sub)


def run(
    model: nn.Module | str | os.PathLike,
    data: DataLike,
    methods: str | Sequence[str] | Mapping[str, Mapping[str, Any] | None],
    *,
    out: str | os.PathLike,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    score: str | Sequence[str] | Mapping[str, Mapping[str, Any] | None] | None = None,
    engine: str = "local",
    workers: int | None = None,
    threads: int = 1,
    address: str | None = None,
    seed: int = 0,
    shard_size: int = 32,
    limit: int | None = None,
    reference: Any = None,
    weights: str | os.PathLike | None = None,
    normalize: str | Mapping[str, Sequence[float]] | None = None,
    resize: int | tuple[int, int] | None = None,
    channels: int | None = None,
    device: str = "cpu",
    maps_from: str | os.PathLike | Mapping[str, Any] | None = None,
    max_attempts: int = 3,
    new: bool = False,
    progress: bool = True,
) -> Run:
    """Explain every image of ``data`` with ``methods`` into the store ``out``; returns :func:`load_run` of it.

    Args:
        model: a module, or a spec for :func:`provex.load_model` (zoo name, ``FILE.py:FACTORY``,
            TorchScript, ``torchvision:NAME``) with ``weights``.
        data: ``"mnist-test"``, ``"samples:mnist"``, a folder / glob of images, a ``.pt`` /
            ``.npy`` / ``.npz`` file, a tensor, ``(images, labels)`` or a ``Dataset``;
            ``limit`` keeps the first images; ``resize`` / ``channels`` for image files,
            ``normalize`` (``"imagenet"`` or mean / std) before the model.
        methods: names, or ``{name: {option: value}}``; ``options`` adds per-method options.
            A method that takes ``seed`` gets one seed per image, ``seed + dataset index``
            (unless an option fixes it); ``progress`` bars inside tasks are turned off.
        score: ``"ordering"`` (or ``{"ordering": {...}}``, see :data:`ORDERING_DEFAULTS`)
            scores every map with the relevance-ordering test, seeded per image the same way.
        engine, workers, threads, address: ``"local"`` (``workers`` 1 = this process, more =
            spawned processes) or ``"ray"`` (``address`` None = a private Ray here with
            ``workers`` CPUs; ``"auto"`` / ``"HOST:PORT"`` = a running cluster, ``workers``
            None = all its CPUs); ``threads`` torch threads per worker (also in-process).
        shard_size: images per task (and per file). reference: a ``provex.Reference`` or a
            saved one's path, passed to methods that take ``reference``; the ordering score's
            Gaussian noise uses it (or the model card's). maps_from: evaluate maps computed
            earlier (a run folder, a folder of ``METHOD.pt`` explanations, or ``{method:
            Explanation}``) instead of computing them.
        max_attempts: tries per shard before it is recorded as failed. new: delete an
            existing run in ``out`` with other settings and start over. progress: a bar.
    """
    from provex.models.spec import describe_model, load_model
    from provex.reference import Reference

    if engine not in ("local", "ray"):
        raise ValueError(f"engine must be 'local' or 'ray', got {engine!r}")
    _positive_int(workers, "workers", allow_none=True)
    _positive_int(threads, "threads")
    _positive_int(shard_size, "shard_size")
    _positive_int(max_attempts, "max_attempts")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if address is not None and engine != "ray":
        raise ValueError("address is for engine='ray' (a Ray cluster)")
    names = [methods] if isinstance(methods, str) else list(methods)
    method_opts = _method_options(methods, options, set(names) if maps_from is not None else set())
    score_opts = _score_options(score)
    if isinstance(model, nn.Module):
        if weights is not None:
            raise ValueError("weights is for a model given as a spec (zoo name, FILE.py:FACTORY, ...), not a module")
        model.eval()
    else:
        model = load_model(model, weights=weights, name="model")
    rd = resolve_data(data, limit=limit, channels=channels, resize=resize, normalize=normalize)
    probe, _ = rd.batch([0])
    try:
        with torch.no_grad():
            logits = model.to(device)(probe.to(device))
    except Exception as err:
        raise ValueError(
            f"model: fails on the data's first image {tuple(probe.shape)}: {type(err).__name__}: {err}"
        ) from None
    if logits.ndim != 2 or logits.shape[0] != 1:
        raise ValueError(f"model must map (N, C, H, W) to (N, classes) logits, got {tuple(logits.shape)}")
    if isinstance(reference, (str, os.PathLike)):
        reference = Reference.load(reference)
    if reference is not None and not isinstance(reference, Reference):
        raise ValueError(f"reference must be a provex.Reference or a saved one's path, got {type(reference).__name__}")
    if reference is not None and reference.shape != rd.shape:
        raise ValueError(f"reference describes images of shape {reference.shape}, the data has {rd.shape}")
    card_ref = Reference.from_model(model)
    used_ref = reference or (card_ref if card_ref is not None and card_ref.shape == rd.shape else None)
    if score_opts.get("ordering", {}).get("noise") == "reference" and used_ref is None:
        raise ValueError("score: ordering noise='reference' needs a reference (reference=..., or a model with a card)")
    given = _given_maps(maps_from, list(method_opts), rd.n)
    for m in given:
        method_opts[m] = {"maps_from": str(maps_from) if not isinstance(maps_from, Mapping) else "python"}

    manifest = {
        "format": FORMAT,
        "provex_version": __version__,
        "model": describe_model(model),
        "reference": used_ref.describe() if used_ref is not None else None,
        "data": rd.describe(),
        "labels": rd.classes,
        "methods": _jsonable(method_opts),
        "score": _jsonable(score_opts),
        "seed": seed,
        "shard_size": shard_size,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    manifest = _jsonable(manifest)
    store = RunStore(out)
    n_shards = math.ceil(rd.n / shard_size)
    plan = RunPlan(
        methods={m: ({} if m in given else o) for m, o in method_opts.items()},
        score=score_opts,
        seed=seed,
        threads=threads,
        device=device,
        reference=reference,
        score_reference=used_ref,
    )
    with store.lock():
        store.clean()
        old = store.read_manifest()
        if old is not None and new:
            store.clear()
            old = None
        if old is not None:
            diff = _differences(old, manifest)
            if diff:
                raise ValueError(
                    f"out: {store.root} holds a run with other settings ({'; '.join(diff)}); "
                    "pass new=True (--new) to delete it and start over, or choose another folder"
                )
            manifest["created"] = old["created"]
        else:
            store.write_manifest(manifest)
        done = store.done()
        todo = [k for k in range(n_shards) if k not in done]
        session = _execute(
            store, model, plan, rd, todo, shard_size, given, engine, workers, address, max_attempts, progress
        )
    result = load_run(out)
    result.session = {**session, "shards_total": n_shards, "shards_skipped": len(done & set(range(n_shards)))}
    return result


def _execute(
    store: RunStore,
    model: nn.Module,
    plan: RunPlan,
    rd: RunData,
    todo: list[int],
    shard_size: int,
    given: dict[str, Any],
    engine: str,
    workers: int | None,
    address: str | None,
    max_attempts: int,
    progress: bool,
) -> dict[str, Any]:
    """Run the engine over the shards ``todo`` and write each outcome as it arrives."""
    from tqdm.auto import tqdm

    start = time.perf_counter()
    images = sum(min(rd.n, (k + 1) * shard_size) - k * shard_size for k in todo)
    stats = {"shards_done": 0, "shards_failed": 0, "images_done": 0, "seconds": 0.0}
    if not todo:
        return stats
    jobs = _jobs(rd, todo, shard_size, given)
    outcomes: Iterator[Outcome]
    if engine == "ray":
        from provex.runs.ray_engine import run_ray

        outcomes = run_ray(model, plan, jobs, workers, max_attempts, address)
    elif (workers or 1) == 1:
        outcomes = run_in_process(model, plan, jobs, max_attempts)
    else:
        outcomes = run_processes(model, plan, jobs, workers, max_attempts)
    bar = tqdm(total=images, desc=f"run {store.root.name}", unit="img", disable=not progress, file=sys.stderr)
    try:
        for outcome in outcomes:
            if isinstance(outcome, Failure):
                store.write_failure(outcome.shard, outcome.indices, outcome.error, outcome.attempts)
                stats["shards_failed"] += 1
                n = len(outcome.indices)
            else:
                meta = {"format": FORMAT, "shard": str(outcome.shard), "worker": outcome.worker}
                store.write_shard(outcome.shard, outcome.tensors, _table(outcome.rows), meta)
                stats["shards_done"] += 1
                n = int(outcome.tensors["index"].numel())
                stats["images_done"] += n
            bar.update(n)
            bar.set_postfix(shards=f"{stats['shards_done']}/{len(todo)}", failed=stats["shards_failed"])
    finally:
        bar.close()
        if hasattr(outcomes, "close"):
            outcomes.close()
    stats["seconds"] = time.perf_counter() - start
    return stats


def _table(rows: list[dict[str, Any]]) -> Any:
    import pandas as pd

    return pd.DataFrame(rows)
