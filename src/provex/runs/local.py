"""The embedded engine: shards in this process (one worker) or in N worker processes.

Both run :func:`provex.runs.task.compute_shard` under the same :func:`compute_context`, so
a shard's maps do not depend on which one ran it. Worker processes are fresh interpreters (not
forks: forking a process that has used torch's thread pools can hang), receive the model
once as bytes (:mod:`provex.runs.packing`) and then one shard at a time over their own
pipe, so the driver always knows which shard a worker held. A worker that dies (killed, out
of memory, a crash in native code) costs its shard one attempt and is replaced; a shard that
raises is retried; after ``max_attempts`` the shard is reported as failed and the run goes on.
"""

from __future__ import annotations

import logging
import os
import pickle
import socket
import subprocess
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from torch import nn

from provex.runs.packing import dumps, loads, pack_model, unpack_model
from provex.runs.task import RunPlan, ShardJob, ShardResult, compute_context, compute_shard, error_text

__all__ = ["PROVEX_ROOT", "Failure", "Outcome", "log", "run_in_process", "run_processes"]

log = logging.getLogger("provex.runs")
"""Retries are reported here (warnings); failures also go to the store."""

PROVEX_ROOT = str(Path(__file__).resolve().parents[2])
"""The folder holding this provex package: workers on this machine import provex from here."""


@dataclass
class Failure:
    """A shard that did not succeed within ``attempts`` tries; ``error`` is the last error."""

    shard: int
    indices: list[int]
    error: str
    attempts: int


Outcome = ShardResult | Failure


def run_in_process(model: nn.Module, plan: RunPlan, jobs: Iterable[ShardJob], max_attempts: int) -> Iterator[Outcome]:
    """Compute the shards one after another in this process."""
    model = model.to(plan.device)
    with compute_context(plan.threads):
        for job in jobs:
            outcome: Outcome | None = None
            error = ""
            for attempt in range(1, max_attempts + 1):
                try:
                    outcome = compute_shard(model, plan, job)
                    outcome.worker = f"pid {os.getpid()} (in-process)"
                    break
                except Exception as err:
                    error = error_text(err)
                    log.warning("shard %d: attempt %d of %d failed: %s", job.shard, attempt, max_attempts, error)
            yield outcome if outcome is not None else Failure(job.shard, job.indices, error, max_attempts)


def _send(conn: Connection, obj: Any) -> None:
    """Plain pickle over the socket (multiprocessing's own pickler would pass torch tensors as
    shared-memory handles, which needs a multiprocessing parent)."""
    conn.send_bytes(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


def _recv(conn: Connection) -> Any:
    return pickle.loads(conn.recv_bytes())


def _worker_main(conn: Connection, model_blob: bytes, plan_blob: bytes) -> None:
    """A worker process: rebuild model and plan once, then compute shards until told to stop."""
    try:
        plan: RunPlan = loads(plan_blob)
        model = unpack_model(model_blob).to(plan.device)
    except BaseException as err:
        _send(conn, ("fatal", error_text(err)))
        return
    _send(conn, ("ready", os.getpid()))
    with compute_context(plan.threads):
        while True:
            try:
                job = _recv(conn)
            except (EOFError, OSError):  # the driver is gone
                return
            if job is None:
                return
            try:
                result = compute_shard(model, plan, job)
                result.worker = f"pid {os.getpid()} provex {Path(__file__).parents[1]}"
                msg: tuple[Any, ...] = ("ok", result)
            except Exception as err:
                msg = ("error", job.shard, error_text(err))
            try:
                _send(conn, msg)
            except (BrokenPipeError, OSError):
                return


# A worker's first lines: read the model and the plan (stdlib only, so the driver is not kept
# waiting while torch imports), ask Linux to kill the worker when the driver dies (SIGKILL
# included), then serve shards. Started as a fresh interpreter, not with multiprocessing's
# spawn, so the user's script (``__main__``) is never re-run in a worker.
_BOOT = """
import sys
from multiprocessing.connection import Connection
try:
    import ctypes, signal
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
except Exception:
    pass
conn = Connection(int(sys.argv[1]))
blobs = conn.recv_bytes(), conn.recv_bytes()
sys.path.insert(0, sys.argv[2])  # the driver's provex, whatever else is installed
from provex.runs.local import _worker_main
_worker_main(conn, *blobs)
"""


class _Worker:
    """A worker process and its end of the socket pair (EOF on it: the worker died)."""

    def __init__(self, model_blob: bytes, plan_blob: bytes) -> None:
        ours, theirs = socket.socketpair()
        fd = theirs.fileno()
        self.process = subprocess.Popen(
            [sys.executable, "-c", _BOOT, str(fd), PROVEX_ROOT], pass_fds=(fd,), start_new_session=True
        )
        theirs.close()
        self.conn = Connection(ours.detach())
        self.conn.send_bytes(model_blob)
        self.conn.send_bytes(plan_blob)
        self.ready = False
        self.job: ShardJob | None = None

    def exitcode(self) -> int | None:
        try:
            return self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        try:
            if self.ready and self.process.poll() is None:
                _send(self.conn, None)
                self.process.wait(timeout=5)
        except (BrokenPipeError, OSError, subprocess.TimeoutExpired):
            pass
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)
        self.conn.close()


def run_processes(
    model: nn.Module, plan: RunPlan, jobs: Iterable[ShardJob], workers: int, max_attempts: int
) -> Iterator[Outcome]:
    """Compute the shards in ``workers`` spawned processes, yielding outcomes as they finish."""
    model_blob, plan_blob = pack_model(model), dumps(plan)
    pending = iter(jobs)
    retry: deque[ShardJob] = deque()
    attempts: dict[int, int] = {}
    exhausted = False
    start_failures = 0
    pool = [_Worker(model_blob, plan_blob) for _ in range(workers)]

    def next_job() -> ShardJob | None:
        nonlocal exhausted
        if retry:
            return retry.popleft()
        if exhausted:
            return None
        job = next(pending, None)
        exhausted = job is None
        return job

    def charge(job: ShardJob, error: str) -> Failure | None:
        """Count a failed attempt: requeue the job, or give it up."""
        attempts[job.shard] = attempts.get(job.shard, 0) + 1
        log.warning("shard %d: attempt %d of %d failed: %s", job.shard, attempts[job.shard], max_attempts, error)
        if attempts[job.shard] < max_attempts:
            retry.append(job)
            return None
        return Failure(job.shard, job.indices, error, attempts[job.shard])

    try:
        while True:
            for w in pool:
                if w.ready and w.job is None:
                    w.job = next_job()
                    if w.job is not None:
                        _send(w.conn, w.job)
            active = [w for w in pool if w.job is not None or not w.ready]
            if not active:
                break
            ready = set(wait([w.conn for w in active]))
            for i, w in enumerate(list(pool)):
                if w not in active or w.conn not in ready:
                    continue
                try:
                    msg: tuple[Any, ...] | None = _recv(w.conn)
                except (EOFError, OSError):
                    msg = None
                if msg is not None and msg[0] == "ready":
                    w.ready = True
                elif msg is not None and msg[0] == "fatal":
                    raise ValueError(f"model: a worker process could not rebuild the model: {msg[1]}")
                elif msg is not None and msg[0] == "ok":
                    w.job = None
                    yield msg[1]
                elif msg is not None and msg[0] == "error":
                    job, w.job = w.job, None
                    failure = charge(job, msg[2])
                    if failure is not None:
                        yield failure
                else:  # the process died
                    code = w.exitcode()
                    if not w.ready:
                        start_failures += 1
                        if start_failures >= max(3, workers):
                            raise RuntimeError(f"worker processes die while starting (exit code {code})")
                    elif w.job is not None:
                        failure = charge(w.job, f"worker process died (exit code {code})")
                        if failure is not None:
                            yield failure
                    w.stop()
                    pool[i] = _Worker(model_blob, plan_blob)
    finally:
        for w in pool:
            w.stop()
