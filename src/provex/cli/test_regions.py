"""``provex test-regions``: is each region a map highlights really important? Error-controlled tests.

Computes a map (``--method``) on zoo or user models and images, splits it into regions (or
takes ``--masks``), tests each region with SHAP-XRT p-values or a sequential betting test
(``provex.stats.test_regions``), optionally with FDR control, prints a table and writes
``STEM.safetensors`` (the result), ``STEM.json`` (its ``to_dict``), ``STEM.png`` (regions outlined
and coloured by decision) and, with a method, the map ``STEM-map.pt``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from provex.cli.options import (
    add_image_arguments,
    add_model_arguments,
    check_device,
    check_model_input,
    check_out_folder,
    expected_input,
    load_cli_model,
    load_inputs,
    load_reference,
    load_samples,
    normalization_arg,
    output_files,
    parse_options,
)

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "test-regions",
        help="test whether the regions a relevance map highlights matter (p-values / e-values, FDR control)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_arguments(p)
    sel = p.add_mutually_exclusive_group()
    sel.add_argument("--index", type=int, nargs="+", help="indices into the model's shipped samples (default 0-7)")
    sel.add_argument("--all", action="store_true", help="all shipped samples")
    sel.add_argument(
        "--input",
        nargs="+",
        metavar="PATH",
        help="image files, folders, globs, or one .pt / .npy tensor (N, C, H, W) (as for provex explain)",
    )
    add_image_arguments(p)
    p.add_argument("--method", default=None, help="map method (see `provex methods`); default rc-rde unless --masks")
    p.add_argument("-O", "--option", action="append", metavar="KEY=VALUE", help="map method option, repeatable")
    p.add_argument("--masks", default=None, help="your regions: a .pt/.npy bool tensor (R, H, W) or (N, R, H, W)")
    p.add_argument("--regions", default="auto", choices=["auto", "components", "top-k", "cells"])
    p.add_argument("--k", type=int, default=4, help="blocks tested with --regions top-k (default 4)")
    p.add_argument("--grid", type=int, default=None, help="block side in pixels (default: a quarter of the image side)")
    p.add_argument("--max-regions", type=int, default=8, help="at most this many regions per image (default 8)")
    p.add_argument("--threshold", type=float, default=0.5, help="components: support = map >= this x max (0.5)")
    p.add_argument("--min-size", type=int, default=4, help="components: smallest region in pixels (default 4)")
    p.add_argument("--test", default="xrt", choices=["xrt", "betting"])
    p.add_argument("--alpha", type=float, default=0.05, help="level of each test and of the FDR (default 0.05)")
    p.add_argument(
        "--fdr",
        nargs="?",
        const="image",
        default="none",
        choices=["image", "dataset", "none"],
        help="multiplicity control: over each image's regions (--fdr), over all regions (--fdr dataset); default none",
    )
    p.add_argument("--fdr-method", default="bh", choices=["bh", "by"], help="for p-values (betting uses e-BH)")
    p.add_argument("--context", default="rest", choices=["rest", "empty", "others"], help="what R is tested against")
    p.add_argument("--score", default="log-probability", choices=["log-probability", "probability", "logit"])
    p.add_argument("--alternative", default="greater", choices=["greater", "two-sided"])
    p.add_argument("--K", type=int, default=None, help="XRT null statistics (default: enough for the control, >= 99)")
    p.add_argument("--M", type=int, default=1, help="XRT draws per statistic (default 1)")
    p.add_argument("--tau-max", type=int, default=200, help="betting: most pairs per region (default 200)")
    p.add_argument(
        "--reference",
        default=None,
        help="a saved Reference (.safetensors), a tensor file or images to fit one on",
    )
    p.add_argument("--target", type=int, default=None, help="class to test (default: the predicted class)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=256, help="model inputs per forward pass")
    p.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--out", default="provex-out", help="output folder (default provex-out)")
    p.add_argument("--overwrite", action="store_true", help="replace the outputs of an earlier run with the same names")
    p.set_defaults(func=run)


def _load_masks(path: str) -> torch.Tensor:
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"--masks: no such file {p}")
    if p.suffix == ".npy":
        t = torch.from_numpy(np.load(p, allow_pickle=False))
    elif p.suffix in (".pt", ".pth"):
        t = torch.load(p, map_location="cpu", weights_only=True)
    else:
        raise ValueError(f"--masks must be a .pt or .npy file, got {p.suffix!r}")
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"--masks: {p} does not hold a tensor")
    return t


def _check(args: argparse.Namespace) -> None:
    for name in ("k", "max_regions", "min_size", "M", "tau_max", "batch_size"):
        v = getattr(args, name)
        if v < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {v}")
    if args.K is not None and args.K < 1:
        raise ValueError(f"--K must be a positive integer, got {args.K}")
    if not 0 < args.alpha < 1:
        raise ValueError(f"--alpha must be in (0, 1), got {args.alpha}")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be a positive integer, got {args.threads}")
    if args.option and args.masks and not args.method:
        raise ValueError("-O: method options need --method")


def run(args: argparse.Namespace) -> int:
    from provex import models
    from provex.registry import explain
    from provex.stats.region_tests import test_regions

    _check(args)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = check_device(args.device)
    out = check_out_folder(args.out)
    method = args.method or (None if args.masks else "rc-rde")
    options = parse_options(args.option)
    normalization = normalization_arg(args.normalize, args.mean, args.std)
    masks = _load_masks(args.masks) if args.masks else None
    name = Path(args.model).stem if ("/" in args.model or "." in args.model) else args.model.replace(":", "-")
    stem = f"{name}-{method or 'masks'}-{args.test}"
    outputs = [f"{stem}.safetensors", f"{stem}.json", f"{stem}.png"] + ([f"{stem}-map.pt"] if method else [])
    paths = output_files(out, outputs, args.overwrite)
    model = load_cli_model(args.model, args.weights, device)
    if args.model in models.registered() and models.entry(args.model).task != "classifier":
        raise ValueError(f"--model {args.model!r} is a {models.entry(args.model).task}, not a classifier")
    channels, _ = expected_input(model)
    if args.input:
        inputs = load_inputs(args.input, channels, args.resize, normalization)
        ids: list[Any] = inputs.names
    else:
        inputs, ids = load_samples(args.model, args.index, args.all, args.resize, normalization)
    x = inputs.x
    check_model_input(model, x, device)
    if device is not None:
        x = x.to(device)
    reference = None
    if args.reference is not None:
        reference = load_reference(args.reference, channels, args.resize, normalization)
        reference.check(x, "--reference")
    start = time.perf_counter()
    exp = None
    if method is not None:
        if "reference" in options or reference is None:
            exp = explain(model, x, method, target=args.target, **options)
        else:
            from provex.registry import get_method

            extra = {"reference": reference} if "reference" in get_method(method).options else {}
            exp = explain(model, x, method, target=args.target, **extra, **options)
    result = test_regions(
        model,
        x,
        exp,
        reference=reference,
        regions=masks if masks is not None else args.regions,
        test=args.test,
        alpha=args.alpha,
        fdr=args.fdr,
        fdr_method=args.fdr_method,
        target=args.target if exp is None else exp.target,
        context=args.context,
        score=args.score,
        alternative=args.alternative,
        K=args.K,
        M=args.M,
        tau_max=args.tau_max,
        k=args.k,
        grid=args.grid,
        threshold=args.threshold,
        min_size=args.min_size,
        max_regions=args.max_regions,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    seconds = time.perf_counter() - start
    result.settings["inputs"] = ids
    result.settings["model"] = args.model
    files = [result.save(paths[0])]
    from provex.io import write_json

    files.append(write_json(paths[1], result.to_dict()))
    files.append(result.plot(paths[2]))
    if exp is not None:
        files.append(exp.save(paths[3]))
    sym = "p" if result.p_values is not None else "e"
    print(f"{args.test} on {len(ids)} image(s), {int(result.valid.sum())} regions, {result.control}")
    print(f"{'image':>6} {'target':>6} {'region':>6} {'area':>5} {sym + '-value':>10} {'signif.':>7} {'calls':>6}")
    for i in range(len(ids)):
        for r in range(result.masks.shape[1]):
            if not bool(result.valid[i, r]):
                continue
            print(
                f"{ids[i] if isinstance(ids[i], int) else i:>6} {int(result.target[i]):>6} {r + 1:>6} "
                f"{int(result.masks[i, r].sum()):>5} {float(result.values[i, r]):>10.4g} "
                f"{'yes' if bool(result.rejected[i, r]) else 'no':>7} {int(result.model_calls[i, r]):>6}"
            )
    print(
        f"{int(result.n_rejected.sum())} of {int(result.valid.sum())} regions significant; "
        f"{result.total_model_calls} model calls for the tests; {seconds:.1f} s -> {', '.join(map(str, files))}"
    )
    return 0
