"""``provex run`` (explain a dataset into a resumable results store) and ``provex runs show DIR``."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from provex.cli.options import parse_options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="explain a whole dataset in resumable shards (in-process, worker processes or Ray)",
        description="Explain every image of a dataset with one or more methods into a results folder. "
        "Rerunning the same command resumes: finished shards are skipped.",
    )
    p.add_argument("--model", required=True, help="zoo name, FILE.py:FACTORY, TorchScript file or torchvision:NAME")
    p.add_argument("--weights", default=None, help="state dict for FILE.py:FACTORY or torchvision:NAME")
    p.add_argument(
        "--data", required=True, help="mnist-test, samples:mnist, a folder or glob of images, or a .pt/.npy/.npz file"
    )
    p.add_argument("--limit", type=int, default=None, help="explain only the first N images")
    p.add_argument("--resize", type=int, default=None, help="resize image files to SIDE x SIDE")
    p.add_argument("--channels", type=int, choices=[1, 3], default=None, help="read image files as grey or RGB")
    p.add_argument("--normalize", choices=["imagenet"], default=None, help="normalise images before the model")
    p.add_argument("--methods", nargs="+", required=True, metavar="METHOD", help="methods (see `provex methods`)")
    p.add_argument(
        "-O",
        "--option",
        action="append",
        metavar="METHOD:KEY=VALUE",
        help="a method option (or ordering:KEY=VALUE for the score), repeatable",
    )
    p.add_argument("--score", nargs="*", choices=["ordering"], default=[], help="score each map (relevance ordering)")
    p.add_argument(
        "--reference", default=None, help="a saved provex.Reference (.safetensors) or a folder of images to fit one on"
    )
    p.add_argument("--seed", type=int, default=0, help="run seed: image i is seeded with SEED + i (default 0)")
    p.add_argument("--shard-size", type=int, default=32, help="images per task and per file (default 32)")
    p.add_argument("--engine", choices=["local", "ray"], default="local", help="local (default) or ray")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="local: processes (1 = in this process, the default); ray: tasks at once (default: all CPUs)",
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker, also in-process (default 1)")
    p.add_argument("--address", default=None, help="ray: auto or HOST:PORT of a running cluster (default: start one)")
    p.add_argument("--retries", type=int, default=2, help="retries of a failing shard before it is recorded as failed")
    p.add_argument("--device", default="cpu", help="torch device of the workers (default cpu)")
    p.add_argument("--new", action="store_true", help="delete a run with other settings in --out and start over")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--report", action="store_true", help="also write OUT/report.html (see `provex report`)")
    p.add_argument("--out", required=True, help="results folder")
    p.set_defaults(func=run_command)

    r = sub.add_parser("runs", help="inspect dataset runs (provex runs show DIR)")
    rs = r.add_subparsers(dest="runs_command", metavar="COMMAND")
    show = rs.add_parser("show", help="a run's summary: images done / failed, time and ordering AUC per method, class")
    show.add_argument("dir", help="the run folder (--out of provex run)")
    show.add_argument("--json", action="store_true", help="print the summary as JSON instead of tables")
    show.set_defaults(func=show_command)
    r.set_defaults(func=lambda a: (r.print_help(), 0)[1])


def _split_options(pairs: list[str] | None, methods: list[str]) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    method_opts: dict[str, dict[str, Any]] = {m: {} for m in methods}
    score: dict[str, Any] = {}
    for pair in pairs or []:
        if ":" not in pair.split("=", 1)[0]:
            raise ValueError(f"-O must look like METHOD:KEY=VALUE, got {pair!r}")
        name, kv = pair.split(":", 1)
        if name == "ordering":
            score.update(parse_options([kv]))
        elif name in method_opts:
            method_opts[name].update(parse_options([kv]))
        else:
            raise ValueError(f"-O {pair!r}: {name!r} is not among --methods {methods} (or 'ordering')")
    return method_opts, score


def run_command(a: argparse.Namespace) -> int:
    from provex.runs import format_summary, run

    if len(set(a.methods)) != len(a.methods):
        raise ValueError(f"--methods lists a method twice: {a.methods}")
    method_opts, score_opts = _split_options(a.option, a.methods)
    if score_opts and "ordering" not in a.score:
        raise ValueError("-O ordering:KEY=VALUE needs --score ordering")
    for name in ("limit", "shard_size", "threads", "workers"):
        value = getattr(a, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    if a.retries < 0:
        raise ValueError(f"--retries must be >= 0, got {a.retries}")
    reference: Any = a.reference
    if reference is not None and Path(reference).suffix != ".safetensors":
        from provex.reference import Reference

        reference = Reference.fit(reference, channels=a.channels, resize=a.resize, name="--reference")
    result = run(
        a.model,
        a.data,
        method_opts,
        out=a.out,
        score={"ordering": score_opts} if "ordering" in a.score else None,
        engine=a.engine,
        workers=a.workers,
        threads=a.threads,
        address=a.address,
        seed=a.seed,
        shard_size=a.shard_size,
        limit=a.limit,
        reference=reference,
        weights=a.weights,
        normalize=a.normalize,
        resize=a.resize,
        channels=a.channels,
        device=a.device,
        max_attempts=a.retries + 1,
        new=a.new,
        progress=not a.no_progress,
    )
    s = result.session or {}
    print(
        f"{s.get('images_done', 0)} images explained in {s.get('seconds', 0.0):.1f} s "
        f"({s.get('shards_done', 0)} shards; {s.get('shards_skipped', 0)} already done; "
        f"{s.get('shards_failed', 0)} failed) -> {a.out}"
    )
    print(format_summary(result.summary()))
    if a.report and len(result.index):
        from provex.reporting import report_after

        print(report_after([a.out], Path(a.out) / "report.html"))
    return 1 if result.failed else 0


def _clean(obj: Any) -> Any:
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    return obj


def show_command(a: argparse.Namespace) -> int:
    from provex.runs import format_summary, load_run

    summary = load_run(a.dir).summary()
    if a.json:
        json.dump(_clean(summary), sys.stdout, indent=2)
        print()
    else:
        print(format_summary(summary))
    return 0
