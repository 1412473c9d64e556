"""By hand: a two-node Ray cluster on this machine (``ray.cluster_utils.Cluster``); the second node
is removed once it has written a shard; the run must still finish with the in-process maps.

    PROVEX_DATA=../shared/data PYTHONPATH=src python benchmarks/run_scaling/node_removal.py [OUT]

About a minute plus Ray start-up (~20 s) on 2 cores; writes OUT (default /tmp/provex-node-removal).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import torch
from ray.cluster_utils import Cluster
from safetensors import safe_open

import provex
from provex.runs.local import PROVEX_ROOT


def workers_seen(shards: Path) -> dict[str, int]:
    """Shards written per worker process (from each shard file's metadata)."""
    seen: dict[str, int] = {}
    for p in sorted(shards.glob("shard-*.safetensors")) if shards.is_dir() else []:
        with safe_open(str(p), "pt") as fh:
            worker = fh.metadata()["worker"].split(" provex")[0]
        seen[worker] = seen.get(worker, 0) + 1
    return seen


def main(out: Path) -> int:
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (PROVEX_ROOT, os.environ.get("PYTHONPATH")) if p)
    start = time.time()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    node = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    print(f"cluster up in {time.time() - start:.0f} s at {cluster.address}", flush=True)
    methods = {"sensitivity": {}, "smoothgrad": {"n_samples": 64, "seed": 0}}
    kw = {"limit": 200, "shard_size": 4, "progress": False, "new": True}
    result: dict[str, provex.runs.Run] = {}

    def go() -> None:
        result["run"] = provex.run(
            "mnist-cnn", "mnist-test", methods, out=out, engine="ray", address=cluster.address, workers=2, **kw
        )

    thread = threading.Thread(target=go)
    thread.start()
    while len(workers_seen(out / "shards")) < 2 and thread.is_alive():
        time.sleep(0.5)
    cluster.remove_node(node, allow_graceful=False)
    print(f"removed the second node after {sum(workers_seen(out / 'shards').values())} shards", flush=True)
    thread.join()
    run = result["run"]
    print("complete:", run.complete, "failed:", run.failed, "session:", run.session)
    print("shards per worker process:", workers_seen(out / "shards"))
    ref = provex.run("mnist-cnn", "mnist-test", methods, out=out.with_name(out.name + "-ref"), **kw)
    same = all(torch.equal(run.maps[m], ref.maps[m]) for m in methods)
    print("identical to in-process:", same)
    cluster.shutdown()
    return 0 if run.complete and same else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/provex-node-removal")))
