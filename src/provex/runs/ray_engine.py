"""The Ray engine: one Ray task per shard, on this machine or on a cluster (``provex[ray]``).

The model and the plan go into Ray's object store once (``ray.put``); each task gets their
references and a worker process rebuilds the model the first time it sees them, then keeps
it for the next shards. Tasks run :func:`provex.runs.task.compute_shard` under the same
thread count as the local engine, so the maps agree bit for bit. Results stream back with
``ray.wait`` and are written by the driver as they arrive. A task whose worker dies, or
that raises, is resubmitted by the driver (which counts attempts per shard, exactly as the
local engine does) until ``max_attempts``; then the shard is reported as failed.

``address=None`` starts a private Ray on this machine with ``workers * threads`` CPUs (and
shuts it down at the end), its workers at normal priority (:func:`private_ray_options`);
``"auto"`` or ``"HOST:PORT"`` joins a running cluster (``ray
start --head`` on one machine, ``ray start --address HOST:PORT`` on the others). Every node
needs the same provex and torch installed; the driver checks the version of each worker.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from torch import nn

from provex._version import __version__
from provex.runs.local import PROVEX_ROOT, Failure, Outcome, log
from provex.runs.packing import dumps, loads, pack_model, unpack_model
from provex.runs.task import RunPlan, ShardJob, compute_context, compute_shard, error_text

__all__ = ["import_ray", "private_ray_options", "run_ray"]

_CACHE: dict[str, tuple[nn.Module, RunPlan]] = {}


def import_ray() -> Any:
    """``import ray``, or a ValueError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ValueError("engine: --engine ray needs Ray; install it with pip install 'provex[ray]'") from None
    return ray


def _ray_task(refs: list[Any], job: ShardJob) -> tuple[Any, ...]:
    """A Ray task: the shard's outcome, computed with the model cached in this worker."""
    import ray

    model_ref, plan_ref = refs
    key = model_ref.hex()
    if key not in _CACHE:
        _CACHE.clear()
        plan = loads(ray.get(plan_ref))
        _CACHE[key] = (unpack_model(ray.get(model_ref)).to(plan.device), plan)
    model, plan = _CACHE[key]
    try:
        with compute_context(plan.threads):
            result = compute_shard(model, plan, job)
        result.worker = f"{socket.gethostname()} pid {os.getpid()} provex {Path(__file__).parents[1]}"
        return ("ok", result, __version__)
    except Exception as err:
        return ("error", job.shard, error_text(err), __version__)


def private_ray_options(cpus: int) -> dict[str, Any]:
    """``ray.init`` arguments for a private Ray on this machine with ``cpus`` CPUs.

    Ray starts its workers at nice 15 by default, so that its own services stay responsive on a
    busy node. For a private Ray the workers are the job's compute, as the local engine's
    processes are: a niced worker gets a small share of a core as soon as any normal process
    wants that core (measured: under 5 % beside two busy processes on 2 cores), so they run at
    the driver's priority here (``worker_niceness=0``). Clusters started with ``ray start`` keep
    their own setting (``RAY_worker_niceness=0 ray start ...`` changes it there).
    """
    path = os.pathsep.join(p for p in (PROVEX_ROOT, os.environ.get("PYTHONPATH")) if p)
    return {
        "num_cpus": cpus,
        "include_dashboard": False,
        "runtime_env": {"env_vars": {"PYTHONPATH": path}},  # its workers import this provex
        "_system_config": {"worker_niceness": 0},
    }


def _init(ray: Any, address: str | None, cpus: int) -> bool:
    """Connect to (or start) Ray; True when this call started it (and must shut it down)."""
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
    if address is None:
        kwargs.update(private_ray_options(cpus))
    else:
        kwargs["address"] = address
    try:
        ray.init(**kwargs)
    except ConnectionError as err:
        hint = ""
        if "RAY_AUTH_MODE" not in os.environ:
            hint = (
                "; if the cluster uses token authentication (Ray >= 2.59 turns it on for `ray start` when "
                "~/.ray/auth_token exists), set RAY_AUTH_MODE=token (and RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH)"
            )
        raise ValueError(f"address: cannot reach a Ray cluster at {address!r}: {err}{hint}") from None
    return True


def run_ray(
    model: nn.Module,
    plan: RunPlan,
    jobs: Iterable[ShardJob],
    workers: int | None,
    max_attempts: int,
    address: str | None = None,
) -> Iterator[Outcome]:
    """Compute the shards as Ray tasks, yielding outcomes as they finish."""
    ray = import_ray()
    started = _init(ray, address, (workers or 1) * plan.threads)
    try:
        model_ref = ray.put(pack_model(model))
        plan_ref = ray.put(dumps(plan))
        # SPREAD: shards go to every node rather than queueing on the driver's own
        remote = ray.remote(num_cpus=plan.threads, max_retries=0, scheduling_strategy="SPREAD")(_ray_task)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        window = workers if workers else max(1, cpus // plan.threads)  # shards computed at once
        pending = iter(jobs)
        in_flight: dict[Any, ShardJob] = {}
        attempts: dict[int, int] = {}
        retry: list[ShardJob] = []
        exhausted = False
        while True:
            while len(in_flight) < window:
                job = retry.pop() if retry else (None if exhausted else next(pending, None))
                if job is None:
                    exhausted = True
                    break
                in_flight[remote.remote([model_ref, plan_ref], job)] = job
            if not in_flight:
                break
            done, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in done:
                job = in_flight.pop(ref)
                try:
                    msg = ray.get(ref)
                except Exception as err:  # the worker died, the node went away, ...
                    msg = ("error", job.shard, f"Ray task failed: {error_text(err)}", __version__)
                if msg[-1] != __version__:
                    raise ValueError(
                        f"engine: a Ray worker runs provex {msg[-1]}, this driver {__version__}; "
                        "install the same version on every node"
                    )
                if msg[0] == "ok":
                    yield msg[1]
                    continue
                attempts[job.shard] = attempts.get(job.shard, 0) + 1
                log.warning(
                    "shard %d: attempt %d of %d failed: %s", job.shard, attempts[job.shard], max_attempts, msg[2]
                )
                if attempts[job.shard] < max_attempts:
                    retry.append(job)
                else:
                    yield Failure(job.shard, job.indices, msg[2], attempts[job.shard])
    finally:
        if started:
            ray.shutdown()
