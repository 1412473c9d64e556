"""``provex models`` (list, eval) and ``provex train NAME``: the model zoo from the shell."""

from __future__ import annotations

import argparse
import importlib

from provex import models


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list zoo models or measure one")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION")
    lst = msub.add_parser("list", help="list the shipped models")
    lst.set_defaults(func=run_list)
    ev = msub.add_parser("eval", help="measure a shipped model on its test data")
    ev.add_argument("name")
    ev.add_argument("--weights", default=None, help="evaluate this weights file instead of the shipped one")
    ev.add_argument("--data", default=None, help="data folder (default: $PROVEX_DATA)")
    ev.add_argument("--device", default="cpu")
    ev.set_defaults(func=run_eval)
    p.set_defaults(func=run_list)

    t = sub.add_parser("train", help="reproduce a shipped model's weights (NAME, then its own options)")
    t.add_argument("name", help="zoo model name")
    t.add_argument("rest", nargs=argparse.REMAINDER, help="options of that model's trainer (--help lists them)")
    t.set_defaults(func=run_train)


def _trainer(name: str):
    entry = models.entry(name)
    if entry.trainer is None:
        raise ValueError(f"model {name!r} has no training recipe")
    return importlib.import_module(entry.trainer)


def run_list(args: argparse.Namespace) -> int:
    shipped = set(models.available())
    for name in models.registered():
        e = models.entry(name)
        status = "shipped" if name in shipped else "weights missing"
        print(f"{name:14s} {e.task:10s} {status:16s} {e.description}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from provex.cli.options import check_device, load_cli_model

    module = _trainer(args.name)
    model = load_cli_model(args.name, args.weights, check_device(args.device))
    if not hasattr(module, "evaluate"):
        raise ValueError(f"model {args.name!r} has no evaluation recipe")
    metrics = module.evaluate(model, root=args.data, device=args.device)
    print(
        f"{args.name}: "
        + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) and v < 10 else f"{k} {v:g}" for k, v in metrics.items())
    )
    return 0


def run_train(args: argparse.Namespace) -> int:
    return int(_trainer(args.name).main(args.rest) or 0)
