"""``provex lpn train|prior|reconstruct``: learned proximal networks from the shell.

* ``provex lpn train {laplace,mnist} [trainer options]`` — same as ``provex train lpn-NAME``;
* ``provex lpn prior [--perturb noise|blur] [--levels ...]`` — R(x) of MNIST digits under growing
  perturbations, plotted per image (Spearman correlation of level and R printed), JSON + PNG;
* ``provex lpn reconstruct --operator blur|inpaint|cs [--method admm|pgd]`` — PnP with the LPN
  against a TV baseline (both tuned on separate validation images), PSNR/SSIM, JSON + PNG.

Images: the 50 shipped MNIST samples by default; ``--images N`` takes the first N test images
from the MNIST folder (``--data`` or $PROVEX_DATA) instead.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

import torch

from provex import models


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lpn", help="learned proximal networks: train, evaluate the prior, reconstruct")
    lsub = p.add_subparsers(dest="lpn_command", metavar="ACTION")

    t = lsub.add_parser("train", help="train a shipped LPN (laplace or mnist); options after the name")
    t.add_argument("name", choices=["laplace", "mnist"])
    t.add_argument("rest", nargs=argparse.REMAINDER, help="the trainer's options (--help lists them)")
    t.set_defaults(func=run_train)

    pr = lsub.add_parser("prior", help="R(x) of images under growing perturbations")
    _common(pr)
    pr.add_argument("--perturb", choices=["noise", "blur"], default="noise")
    pr.add_argument("--levels", type=float, nargs="+", default=None, help="perturbation levels (default: paper's)")
    pr.add_argument("--tol", type=float, default=1e-4, help="RMS tolerance of the inversion f(y) = x")
    pr.set_defaults(func=run_prior)

    rc = lsub.add_parser("reconstruct", help="PnP reconstruction with the LPN against a TV baseline")
    _common(rc)
    rc.add_argument("--operator", choices=["blur", "inpaint", "cs"], required=True)
    rc.add_argument("--method", choices=["admm", "pgd"], default="admm")
    rc.add_argument("--noise", type=float, default=0.02, help="measurement noise std")
    rc.add_argument("--blur-sigma", type=float, default=1.5)
    rc.add_argument("--missing", type=float, default=0.7, help="fraction of pixels removed (inpaint)")
    rc.add_argument("--measurements", type=int, default=300, help="number of measurements m (cs)")
    rc.add_argument("--iters", type=int, default=100)
    rc.add_argument("--eta", type=float, default=None, help="PGD step (default 0.99 / sigma_max(A)^2)")
    rc.add_argument("--force", action="store_true", help="run PGD even if eta violates the theorem's condition")
    rc.add_argument("--val-images", type=int, default=20, help="validation images for tuning rho / TV lam")
    rc.add_argument(
        "--tv-iters", type=int, default=3000, help="Chambolle-Pock iterations of the TV baseline (run to convergence)"
    )
    rc.set_defaults(func=run_reconstruct)
    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="lpn-mnist", help="zoo LPN (default lpn-mnist)")
    p.add_argument("--weights", default=None, help="weights file instead of the shipped one")
    p.add_argument("--images", type=int, default=None, help="first N MNIST test images (default: 50 shipped samples)")
    p.add_argument("--data", default=None, help="MNIST folder (default: $PROVEX_DATA/mnist)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="provex-out/lpn", help="folder for results.json and the PNG")


def run_train(args: argparse.Namespace) -> int:
    return int(importlib.import_module(f"provex.inverse.recipes.{args.name}").main(args.rest) or 0)


def _load(args: argparse.Namespace) -> torch.nn.Module:
    from provex.inverse.lpn import LPN

    lpn = models.load(args.model, device=args.device, path=args.weights)
    if not isinstance(lpn, LPN):
        raise ValueError(f"--model {args.model!r} is not a learned proximal network")
    return lpn


def _images(args: argparse.Namespace, extra: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, validation images): validation comes from test images after the evaluated ones."""
    from provex.data import load_mnist, samples

    if args.images is None:
        x, _ = samples("mnist")
        if extra:
            xt, _ = load_mnist("test", root=args.data)
            return x, xt[-extra:]
        return x, x[:0]
    if args.images <= 0:
        raise ValueError(f"--images must be positive, got {args.images}")
    xt, _ = load_mnist("test", root=args.data)
    if args.images + extra > xt.shape[0]:
        raise ValueError(f"--images {args.images} plus {extra} validation images exceed the test split")
    return xt[: args.images], xt[args.images : args.images + extra]


def run_prior(args: argparse.Namespace) -> int:
    from provex.benchmarks.common import write_json
    from provex.benchmarks.lpn import plot_prior_curves
    from provex.inverse.experiments import prior_curves

    lpn = _load(args)
    x, _ = _images(args)
    res = prior_curves(lpn, x.to(args.device), args.perturb, args.levels, seed=args.seed, tol=args.tol)
    out = Path(args.out)
    rho = res["spearman"]
    summary = {
        "model": args.model,
        "perturb": args.perturb,
        "levels": res["levels"],
        "n_images": x.shape[0],
        "mean_R": res["values"].mean(1).tolist(),
        "spearman_mean": float(rho.mean()),
        "spearman_per_image": rho.tolist(),
        "inversion_converged_fraction": float(res["converged"].float().mean()),
    }
    write_json(out / f"prior-{args.perturb}.json", summary)
    plot_prior_curves([res], out / f"prior-{args.perturb}.png")
    for lv, m in zip(res["levels"], summary["mean_R"]):
        print(f"{args.perturb} {lv:g}: mean R {m:.4f}")
    print(f"Spearman(level, R) averaged over {x.shape[0]} images: {summary['spearman_mean']:.3f}")
    print(f"wrote {out / f'prior-{args.perturb}.json'} and {out / f'prior-{args.perturb}.png'}")
    return 0


def run_reconstruct(args: argparse.Namespace) -> int:
    from provex.benchmarks.common import write_json
    from provex.benchmarks.lpn import plot_reconstructions
    from provex.inverse.experiments import compare_reconstruction
    from provex.inverse.operators import make_operator

    lpn = _load(args)
    if args.val_images <= 0:
        raise ValueError(f"--val-images must be positive, got {args.val_images}")
    x, x_val = _images(args, extra=args.val_images)
    shape = tuple(x.shape[1:])
    settings = {"blur": {"sigma": args.blur_sigma}, "inpaint": {"missing": args.missing, "seed": args.seed}}
    settings["cs"] = {"m": args.measurements, "seed": args.seed}
    op = make_operator(args.operator, shape, **settings[args.operator])
    if args.method == "pgd":
        from provex.inverse.pnp import check_step_size

        eta = 0.99 / op.norm_sq() if args.eta is None else args.eta
        check_step_size(eta, op, force=args.force)
    else:
        eta = None
    res = compare_reconstruction(
        lpn,
        x,
        x_val,
        op,
        args.noise,
        method=args.method,
        iters=args.iters,
        tv_iters=args.tv_iters,
        eta=eta,
        seed=args.seed,
    )
    out = Path(args.out)
    name = f"reconstruct-{args.operator}-{args.method}"
    summary = {
        "model": args.model,
        "operator": res["operator"],
        "settings": settings[args.operator],
        "noise_std": args.noise,
        "method": args.method,
        "param": res["param"],
        "tv_lam": res["tv_lam"],
        "n_images": x.shape[0],
        "psnr_lpn": float(res["pnp"]["psnr"].mean()),
        "psnr_tv": float(res["tv"]["psnr"].mean()),
        "ssim_lpn": float(res["pnp"]["ssim"].mean()),
        "ssim_tv": float(res["tv"]["ssim"].mean()),
        "psnr_initial_guess": float(res["initial_guess"]["psnr"].mean()),
        "iterations": res["iterations"],
        "final_residual_max": float(res["residuals"][-1].max()),
        "converged_fraction": float(res["converged"].float().mean()),
        "tuning": res["tuning"],
    }
    write_json(out / f"{name}.json", summary)
    plot_reconstructions(x, res, out / f"{name}.png", title=f"{args.operator}, noise {args.noise:g}")
    print(
        f"{args.operator} ({args.method}): LPN {summary['psnr_lpn']:.2f} dB / SSIM {summary['ssim_lpn']:.3f}, "
        f"TV {summary['psnr_tv']:.2f} dB / SSIM {summary['ssim_tv']:.3f} over {x.shape[0]} images "
        f"(start {summary['psnr_initial_guess']:.2f} dB); "
        f"final relative change {summary['final_residual_max']:.2e} after {res['iterations']} iterations"
    )
    print(f"wrote {out / (name + '.json')} and {out / (name + '.png')}")
    return 0
