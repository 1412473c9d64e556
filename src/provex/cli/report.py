"""``provex report``: one self-contained HTML page from saved explanations, runs and results."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="one HTML page showing explanations, orderings, concept tests and LPN results side by side",
        description="Build one self-contained HTML page (opens offline) from saved explanations (.pt), "
        "dataset-run folders and results folders (ordering, h-Shap, betting, LPN benchmarks, test-concepts).",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="explanation .pt files, run folders, results folders")
    p.add_argument("--out", default="report.html", help="the HTML file to write (default: report.html)")
    p.add_argument(
        "--images", default=None, metavar="FILE", help="(N, C, H, W) .pt/.npy: the images the .pt files explain"
    )
    p.add_argument("--labels", default=None, metavar="FILE", help="class names, one per line")
    p.add_argument("--allow-mixed", action="store_true", help="report inputs of different models together")
    p.add_argument("--title", default=None, help="page title")
    p.add_argument("--page-size", type=int, default=48, help="gallery images per page (default 48)")
    p.add_argument("--thumb-side", type=int, default=96, help="longest side of gallery thumbnails in pixels")
    p.add_argument("--detail-side", type=int, default=128, help="longest side of detail-view maps in pixels")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from provex.reporting import write_report

    path = write_report(
        args.inputs,
        args.out,
        images=args.images,
        labels=args.labels,
        allow_mixed=args.allow_mixed,
        title=args.title,
        page_size=args.page_size,
        thumb_side=args.thumb_side,
        detail_side=args.detail_side,
    )
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return 0


__all__ = ["register", "run"]
