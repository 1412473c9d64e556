"""``provex test-concepts``: which concepts does a classifier use, with error control?

Learns concept activation vectors in the model's embedding, then tests each concept's
importance for each requested class logit by betting (SKIT / cSKIT / xSKIT), repeated on
random orders of the test set. Prints a table per class (concept, rejection rate, mean
rejection time, important or not), and writes ``results.json`` and one PNG per class (wealth
processes, rejection rates and times) into ``--out``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from provex.benchmarks.common import environment, print_table, write_json
from provex.cli.options import check_device, check_out_folder, output_files


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("test-concepts", help="test which concepts a model's predictions depend on (testing by betting)")
    p.add_argument("--model", default="mnist-cnn", help="zoo model trained on MNIST (default: mnist-cnn)")
    p.add_argument(
        "--concepts",
        default=None,
        metavar="FILE.npz",
        help="your concept example sets (one image array per concept, optional 'negative'); "
        "default: the built-in MNIST stroke concepts",
    )
    p.add_argument("--classes", type=int, nargs="+", default=[0, 1, 7, 8], help="class logits to explain")
    p.add_argument(
        "--test",
        choices=["skit", "cskit", "xskit"],
        default="cskit",
        help="skit: global; cskit: global conditional (default); xskit: local, for --index",
    )
    p.add_argument("--kernel", choices=["rbf", "linear"], default="rbf")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level")
    p.add_argument("--tau-max", type=int, default=200, help="most steps per test")
    p.add_argument("--repeats", type=int, default=20, help="repetitions on random orders of the data")
    p.add_argument("--fdr", action="store_true", help="also report e-BH (FDR-controlled) rejections over concepts")
    p.add_argument("--no-control", action="store_true", help="do not add the shuffled control concept")
    p.add_argument("--index", type=int, default=0, help="test-set image for --test xskit")
    p.add_argument("--cond-size", type=int, default=2, help="size of the random conditioning sets of xskit")
    p.add_argument("--n-train", type=int, default=10000, help="training images for CAVs and the KDE sampler")
    p.add_argument("--n-test", type=int, default=10000, help="test images to test on")
    p.add_argument("--n-examples", type=int, default=500, help="examples per concept for each CAV")
    p.add_argument("--data", default=None, help="folder with the MNIST IDX files (default: $PROVEX_DATA/mnist)")
    p.add_argument("--device", default=None, help="torch device for the model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="progress bars for the embedding and the tests (default on; --no-progress turns them off)",
    )
    p.add_argument("--out", default="provex-out/test-concepts", help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace the results of an earlier run in --out")
    p.set_defaults(func=run)


def _num_classes(model_name: str) -> int:
    """Number of outputs of a zoo model (one forward pass on a blank input)."""
    import torch

    from provex import models

    model = models.load(model_name)
    mean = model.card.data_mean  # type: ignore[union-attr]
    shape = tuple(mean.shape) if mean is not None else (1, 28, 28)
    with torch.no_grad():
        return int(model(torch.zeros(1, *shape)).shape[1])


def run(args: argparse.Namespace) -> int:
    from provex.concepts.experiment import prepare_mnist_concepts, run_concept_tests, summary_rows
    from provex.stats import check_alpha, check_budget
    from provex.stats.plots import plot_concept_tests

    check_device(args.device)
    out = check_out_folder(args.out)
    output_files(
        out, ["results.json", *(f"class{c}-{args.test}.png" for c in args.classes)], args.overwrite, ["class*-*.png"]
    )
    check_alpha(args.alpha)
    check_budget(args.tau_max, 1)
    if args.repeats < 1:
        raise ValueError(f"--repeats must be positive, got {args.repeats}")
    need = args.tau_max * (2 if args.test == "skit" else 1)
    if args.test != "xskit" and need > args.n_test:
        raise ValueError(
            f"--tau-max {args.tau_max} with {args.test} needs {need} test images; --n-test is {args.n_test}"
        )
    if args.concepts is not None and not Path(args.concepts).is_file():
        raise FileNotFoundError(f"--concepts: no such file {args.concepts}")
    n_classes = _num_classes(args.model)
    bad = [c for c in args.classes if not 0 <= c < n_classes]
    if bad:
        raise ValueError(f"--classes: class must be in 0..{n_classes - 1}, got {bad}")
    start = time.perf_counter()
    data = prepare_mnist_concepts(
        args.model,
        args.data,
        args.n_train,
        args.n_test,
        args.n_examples,
        args.concepts,
        control=not args.no_control,
        device=args.device,
        seed=args.seed,
        progress=args.progress,
    )
    print(
        f"{len(data.names)} concepts; CAV held-out accuracy: "
        + ", ".join(f"{k} {v:.2f}" for k, v in data.cav_accuracy.items())
    )
    results = {}
    for cls in args.classes:
        t0 = time.perf_counter()
        res, fdr = run_concept_tests(
            data,
            cls,
            args.test,
            args.kernel,
            args.alpha,
            args.tau_max,
            args.repeats,
            args.seed,
            args.fdr,
            args.index,
            args.cond_size,
            progress=args.progress,
        )
        rows = summary_rows(res, data.names, fdr)
        what = f"image {args.index}" if args.test == "xskit" else f"{data.z_test.shape[0]} test images"
        print(
            f"\nclass {cls}: {args.test} ({args.kernel}), {args.repeats} repeats, tau_max = {args.tau_max}, "
            f"alpha = {args.alpha}, {what} ({time.perf_counter() - t0:.1f} s)"
        )
        headers = ["concept", "rejection rate", "mean tau/tau_max", "important"]
        table = [[r["concept"], r["rejection_rate"], r["mean_tau"], "yes" if r["important"] else "no"] for r in rows]
        if fdr is not None:
            headers.append("e-BH rejection rate")
            for t, r in zip(table, rows):
                t.append(r["fdr_rejection_rate"])
        print_table(table, headers)
        png = plot_concept_tests(
            res, data.names, out / f"class{cls}-{args.test}.png", title=f"{args.model}, class {cls} logit"
        )
        results[str(cls)] = {
            "rows": rows,
            "figure": png.name,
            "rejection_rate": res.rejection_rate(0).tolist(),
            "mean_tau": res.mean_tau(0).tolist(),
            # each repeat's wealth path K_0 = 1, K_1, ... up to its stop (drawn by `provex report`)
            "wealth": {
                name: [_until_stop(path) for path in res.wealth[:, j].tolist()] for j, name in enumerate(data.names)
            },
        }
    settings = {k: v for k, v in vars(args).items() if k != "func"}
    write_json(
        out / "results.json",
        {
            "settings": settings,
            "concepts": data.names,
            "cav_accuracy": data.cav_accuracy,
            "results": results,
            "seconds": time.perf_counter() - start,
            "environment": environment(),
        },
    )
    print(f"\nwrote {out / 'results.json'} and {len(results)} figure(s) in {out}")
    return 0


__all__ = ["register", "run"]


def _until_stop(path: list[float]) -> list[float]:
    """A wealth path without the NaN padding after the step where its test stopped."""
    out = []
    for v in path:
        if v != v:  # NaN: the test stopped before this step
            break
        out.append(v)
    return out
