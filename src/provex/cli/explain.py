"""``provex explain`` and ``provex methods``: run a method, save the explanation and its PNG."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from provex import models
from provex.cli.options import load_input, parse_options
from provex.data.samples import samples
from provex.registry import explain, methods

DEFAULT_INDICES = list(range(8))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="explain a model's predictions on shipped samples or your images")
    p.add_argument("--model", default="mnist-cnn", help="zoo model name (default: mnist-cnn)")
    sel = p.add_mutually_exclusive_group()
    sel.add_argument("--index", type=int, nargs="+", help="indices into the shipped samples (default: 0-7)")
    sel.add_argument("--all", action="store_true", help="explain all shipped samples")
    sel.add_argument("--input", help="a .pt or .npy file with images (N, C, H, W) instead of the samples")
    p.add_argument("--method", default="sensitivity", help="method name (see `provex methods`)")
    p.add_argument("--target", type=int, default=None, help="class to explain (default: predicted class)")
    p.add_argument("-O", "--option", action="append", metavar="KEY=VALUE", help="method option, repeatable")
    p.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda")
    p.add_argument("--out", default="provex-out", help="output folder (default: provex-out)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    p.set_defaults(func=run_explain)

    m = sub.add_parser("methods", help="list the explanation methods and their options")
    m.add_argument("-v", "--verbose", action="store_true", help="show options and defaults")
    m.set_defaults(func=run_methods)


def run_explain(args: argparse.Namespace) -> int:
    options = parse_options(args.option)
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be a positive integer, got {args.threads}")
        torch.set_num_threads(args.threads)
    task = models.entry(args.model).task
    if task != "classifier":
        classifiers = [n for n in models.available() if models.entry(n).task == "classifier"]
        raise ValueError(
            f"--model {args.model!r} is a {task}, not a classifier; explanations need class scores. "
            f"Classifiers: {', '.join(classifiers)}. For what a learned proximal network learned, "
            "use `provex lpn prior`."
        )
    model = models.load(args.model, device=args.device)
    if args.input:
        x = load_input(args.input)
        idx = list(range(x.shape[0]))
    else:
        sample_set = models.entry(args.model).samples
        if sample_set is None:
            raise ValueError(f"model {args.model!r} has no shipped samples; pass --input FILE")
        xs, _ = samples(sample_set)
        idx = list(range(xs.shape[0])) if args.all else (args.index or DEFAULT_INDICES)
        bad = [i for i in idx if not 0 <= i < xs.shape[0]]
        if bad:
            raise ValueError(f"--index out of range 0..{xs.shape[0] - 1}: {bad}")
        x = xs[idx]
    start = time.perf_counter()
    exp = explain(model, x, args.method, target=args.target, device=args.device, **options)
    seconds = time.perf_counter() - start
    exp.info["sample_indices"] = idx
    out = Path(args.out)
    stem = f"{args.model}-{args.method}"
    pt = exp.save(out / f"{stem}.pt")
    png = exp.plot(out / f"{stem}.png", images=x.cpu())
    agree = exp.prediction is not None and bool(torch.equal(exp.prediction.cpu(), exp.target.cpu()))
    print(
        f"{args.method} on {len(idx)} image(s) of {args.model} in {seconds:.2f} s "
        f"(targets {'= predictions' if agree else exp.target.tolist()}) -> {pt}, {png}"
    )
    return 0


def run_methods(args: argparse.Namespace) -> int:
    for spec in methods(details=True):
        print(f"{spec.name:18s} {spec.family:28s} {spec.description}")
        if args.verbose and spec.options:
            opts = ", ".join(f"{k}={v!r}" for k, v in spec.options.items())
            print(f"{'':18s} options: {opts}")
    return 0
