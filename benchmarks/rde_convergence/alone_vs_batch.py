"""Per-image ordering areas (issue 12): maps computed with the image alone vs in a batch of 16.

Both sets of maps are scored by the same relevance-ordering call on the same 16 shipped MNIST
images (the test seeds its noise by image index, so each image meets the same noise), so any
difference comes from the map's dependence on its batch-mates.

Usage: PYTHONPATH=src python benchmarks/rde_convergence/alone_vs_batch.py OUT.json [METHOD ...]
"""

import json
import sys
import time
import warnings
from pathlib import Path

import torch

import provex
from provex.evaluate.ordering import relevance_ordering


def main(argv: list[str]) -> int:
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    out_path, methods = Path(argv[0]), argv[1:] or ["sensitivity", "rc-rde", "mr-rde", "ord-rde", "l-rde"]
    model = provex.models.load("mnist-cnn")
    x, _ = provex.data.samples("mnist")
    x = x[:16]
    target = model(x).argmax(1)
    out = {}
    for m in methods:
        start = time.time()
        opts = {} if m == "sensitivity" else {"progress": False}
        batch = provex.explain(model, x, m, target=target, **opts).relevance
        alone = torch.cat(
            [provex.explain(model, x[i : i + 1], m, target=target[i : i + 1], **opts).relevance for i in range(16)]
        )
        seconds = time.time() - start
        a_b = relevance_ordering(model, x, batch, target=target, step=10, n_samples=16, seed=0).per_image_auc_distortion
        a_a = relevance_ordering(model, x, alone, target=target, step=10, n_samples=16, seed=0).per_image_auc_distortion
        out[m] = {
            "auc_batch": a_b.tolist(),
            "auc_alone": a_a.tolist(),
            "max_abs_auc_diff": float((a_b - a_a).abs().max()),
            "max_abs_map_diff": float((batch - alone).abs().max()),
            "maps_identical": bool(torch.equal(batch, alone)),
            "seconds_maps": seconds,
        }
        print(m, {k: v for k, v in out[m].items() if not k.startswith("auc")}, flush=True)
        out_path.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
