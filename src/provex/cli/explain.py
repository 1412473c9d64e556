"""``provex explain`` and ``provex methods``: explain a classifier on your files, save the maps and figures.

``provex explain`` checks everything a user typed before the model runs (``--device``, ``--out``,
the method and its options, ``--model``/``--weights``, ``--input``, ``--labels``, ``--reference``,
one image through the model), then runs the method once on all images and writes
``OUT/<input>-<method>.pt`` (the :class:`~provex.Explanation`) and ``OUT/<input>-<method>.png``
(maps over the original pixels; ``-01.png``, ``-02.png``, ... when there are more images than
``--per-figure``). ``<input>`` is the input file's stem, the folder's name, or ``<sample set>-samples``.
Existing outputs are never replaced without ``--overwrite``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import torch

from provex import models
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
    read_labels,
)
from provex.explanation import Explanation
from provex.registry import explain, get_method, methods


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "explain",
        help="explain a classifier's predictions on your image files or tensors (or the shipped samples)",
        description=__doc__.split("\n\n")[1],
    )
    add_model_arguments(p)
    sel = p.add_mutually_exclusive_group()
    sel.add_argument(
        "--input",
        nargs="+",
        metavar="PATH",
        help="image files (PNG, JPEG, ...), folders, globs, or one .pt / .npy tensor (N, C, H, W); "
        "float pixels in [0, 1], integer pixels 0..255 are rescaled",
    )
    sel.add_argument("--index", type=int, nargs="+", help="indices into the zoo model's shipped samples (default 0-7)")
    sel.add_argument("--all", action="store_true", help="explain all shipped samples")
    add_image_arguments(p)
    p.add_argument("--method", default="sensitivity", help="method name (see `provex methods -v`)")
    p.add_argument("--target", default=None, help="class to explain, an index or a --labels name (default: predicted)")
    p.add_argument("-O", "--option", action="append", metavar="KEY=VALUE", help="method option, repeatable")
    p.add_argument(
        "--reference",
        metavar="FILE|FOLDER",
        help="what 'absent' means for perturbation methods: a saved provex.Reference (.safetensors) or a "
        "folder / glob of images like --input (fitted now; --resize and normalisation apply)",
    )
    p.add_argument("--labels", metavar="FILE", help="class names for the figure titles: one per line, or a JSON list")
    p.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda (checked before any work)")
    p.add_argument("--out", default="provex-out", help="output folder (default: provex-out)")
    p.add_argument("--overwrite", action="store_true", help="replace outputs of an earlier run with the same names")
    p.add_argument("--per-figure", type=int, default=16, help="images per PNG (default 16)")
    p.add_argument("--report", action="store_true", help="also write OUT/<input>-<method>.html (see `provex report`)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="progress bars of long methods (default on; --no-progress turns them off)",
    )
    p.set_defaults(func=run_explain)

    m = sub.add_parser("methods", help="list the explanation methods and their options")
    m.add_argument("-v", "--verbose", action="store_true", help="show options and defaults")
    m.set_defaults(func=run_methods)


def _target(text: str | None, labels: list[str] | None, n_classes: int) -> int | None:
    if text is None:
        return None
    try:
        t = int(text)
    except ValueError:
        if labels is None or text not in labels:
            known = f"; class names: {', '.join(labels[:12])}" if labels else "; pass --labels to use class names"
            raise ValueError(f"--target: {text!r} is not a class index{known}") from None
        return labels.index(text)
    if not 0 <= t < n_classes:
        raise ValueError(f"--target out of range: classes are 0..{n_classes - 1}, got {t}")
    return t


def _page(exp: Explanation, a: int, b: int) -> Explanation:
    """Images ``a:b`` of an explanation (for one figure page)."""
    cut = lambda t: None if t is None else t[a:b]  # noqa: E731
    maps = None if exp.maps is None else {k: v[a:b] for k, v in exp.maps.items()}
    return Explanation(
        exp.relevance[a:b], exp.method, exp.target[a:b], exp.info, cut(exp.ordering), cut(exp.prediction), maps
    )


def _titles(exp: Explanation, names: list[str], labels: list[str] | None) -> list[str]:
    name = lambda c: labels[c] if labels is not None else str(c)  # noqa: E731
    titles = []
    for i, file in enumerate(names):
        t = int(exp.target[i])
        p = None if exp.prediction is None else int(exp.prediction[i])
        what = f"pred {name(p)}" if p is not None else ""
        if p is None or p != t:
            what = (what + ", " if what else "") + f"target {name(t)}"
        titles.append(f"{file}\n{what}")
    return titles


def run_explain(args: argparse.Namespace) -> int:
    # 1. everything that needs no model: options, device, output folder, labels
    options = parse_options(args.option)
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be a positive integer, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.per_figure < 1:
        raise ValueError(f"--per-figure must be a positive integer, got {args.per_figure}")
    device = check_device(args.device)
    out = check_out_folder(args.out)
    spec = get_method(args.method)
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        raise ValueError(
            f"-O: unknown option(s) {unknown} for method {args.method!r}; valid: {sorted(spec.options) or 'none'}"
        )
    if args.reference is not None and "reference" not in spec.options:
        raise ValueError(f"--reference: method {args.method!r} does not use a reference distribution")
    labels = read_labels(args.labels) if args.labels else None
    normalization = normalization_arg(args.normalize, args.mean, args.std)

    # 2. the model, then the images (read with the model's channel count)
    model = load_cli_model(args.model, args.weights, device)
    if args.model in models.registered() and models.entry(args.model).task != "classifier":
        task = models.entry(args.model).task
        classifiers = [n for n in models.available() if models.entry(n).task == "classifier"]
        raise ValueError(
            f"--model {args.model!r} is a {task}, not a classifier; explanations need class scores. "
            f"Classifiers: {', '.join(classifiers)}. For what a learned proximal network learned, "
            "use `provex lpn prior`."
        )
    channels, _ = expected_input(model)
    if args.input:
        inputs, idx = load_inputs(args.input, channels, args.resize, normalization), None
    else:
        inputs, idx = load_samples(args.model, args.index, args.all, args.resize, normalization)
    n_classes = check_model_input(model, inputs.x, device)
    if labels is not None and len(labels) != n_classes:
        raise ValueError(f"--labels: {args.labels} names {len(labels)} classes; the model has {n_classes}")
    target = _target(args.target, labels, n_classes)
    reference = None
    if args.reference is not None:
        reference = load_reference(args.reference, channels, args.resize, normalization, progress=args.progress)
        reference.check(inputs.x, "--reference")
        options["reference"] = reference
    if "progress" in spec.options and "progress" not in options:
        options["progress"] = args.progress

    # 3. the output names, refused if an earlier run wrote them
    n = inputs.x.shape[0]
    stem = f"{inputs.stem}-{args.method}"
    pages = math.ceil(n / args.per_figure)
    figures = [f"{stem}.png"] if pages == 1 else [f"{stem}-{k + 1:02d}.png" for k in range(pages)]
    earlier = [f"{stem}.png", f"{stem}-[0-9][0-9].png", f"{stem}-[0-9][0-9][0-9].png"]
    page = [f"{stem}.html"] if args.report else []
    paths = output_files(out, [f"{stem}.pt", *figures, *page], args.overwrite, patterns=earlier)
    html = paths.pop() if args.report else None
    for note in inputs.notes:
        print(f"provex explain: note: {note}", file=sys.stderr)

    # 4. the work
    start = time.perf_counter()
    exp = explain(model, inputs.x, args.method, target=target, device=device, **options)
    seconds = time.perf_counter() - start
    from provex.models.spec import describe_model

    exp.info.update(
        {
            "inputs": inputs.names,
            "input": list(args.input) if args.input else f"shipped samples of {args.model}",
            "model": describe_model(model),
            "normalization": inputs.normalization,
            "labels": labels,
        }
    )
    if reference is not None:
        exp.info.setdefault("reference", reference.describe())
        exp.info.get("options", {}).pop("reference", None)
    if idx is not None:
        exp.info["sample_indices"] = idx
    pt = exp.save(paths[0])
    written = {pt}
    per = args.per_figure
    for k, png in enumerate(paths[1:]):
        a, b = k * per, min(n, (k + 1) * per)
        part = _page(exp, a, b)
        written.add(part.plot(png, images=inputs.pixels[a:b], titles=_titles(part, inputs.names[a:b], labels)))
    if args.overwrite:  # pages of an earlier, longer run with this name would otherwise look current
        for pat in earlier:
            for old in out.glob(pat):
                if old not in written:
                    old.unlink(missing_ok=True)
    agree = exp.prediction is not None and bool(torch.equal(exp.prediction.cpu(), exp.target.cpu()))
    figs = paths[1] if pages == 1 else f"{paths[1]} ... {paths[-1].name}"
    print(
        f"{args.method} on {n} image(s) ({inputs.stem}) with {args.model} in {seconds:.2f} s "
        f"(targets {'= predictions' if agree else exp.target.tolist()}) -> {pt}, {figs}"
    )
    if html is not None:
        from provex.reporting import report_after

        print(report_after([pt], html, images=inputs.pixels.cpu(), labels=labels))
    return 0


def run_methods(args: argparse.Namespace) -> int:
    for spec in methods(details=True):
        print(f"{spec.name:18s} {spec.family:28s} {spec.description}")
        if args.verbose and spec.options:
            opts = ", ".join(f"{k}={v!r}" for k, v in spec.options.items())
            print(f"{'':18s} options: {opts}")
    return 0


__all__ = ["register", "run_explain", "run_methods"]
