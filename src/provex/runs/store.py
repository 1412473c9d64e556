"""The results store of a dataset run: a folder that survives being killed at any moment.

Layout (notes/conventions.md, "Dataset-run store")::

    DIR/manifest.json                      the run's settings (format provex.run/1)
    DIR/shards/shard-NNNNNN.safetensors    maps, inputs, indices, labels, curves of one shard
    DIR/shards/shard-NNNNNN.parquet        one row per (image, method)
    DIR/failed/shard-NNNNNN.json           a shard that failed repeatedly, with its error

Every file is written with :func:`provex.io.atomic_write` (temporary name, fsync, rename),
and a shard counts as done only when both of its files exist, the table being written
last; so a killed run leaves at worst a stale temporary (removed on the next start) or a
lone tensor file (recomputed), never a half-written shard. A lock file keeps two runs from
writing into one folder at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from provex.io import atomic_write, remove_stale_temporaries, write_json

__all__ = ["FORMAT", "RunStore"]

FORMAT = "provex.run/1"
_SHARD = re.compile(r"^shard-(\d{6})\.(safetensors|parquet|json)$")


class RunStore:
    """Paths and atomic reads / writes of one run folder."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.shards = self.root / "shards"
        self.failed = self.root / "failed"
        self.manifest_path = self.root / "manifest.json"

    @staticmethod
    def name(shard: int) -> str:
        return f"shard-{shard:06d}"

    def tensor_path(self, shard: int) -> Path:
        return self.shards / f"{self.name(shard)}.safetensors"

    def table_path(self, shard: int) -> Path:
        return self.shards / f"{self.name(shard)}.parquet"

    def failure_path(self, shard: int) -> Path:
        return self.failed / f"{self.name(shard)}.json"

    # ----- manifest -----

    def read_manifest(self) -> dict[str, Any] | None:
        if not self.manifest_path.is_file():
            return None
        try:
            manifest = json.loads(self.manifest_path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"out: {self.manifest_path} is not valid JSON ({err})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise ValueError(f"out: {self.root} holds a manifest.json that is not a provex run ({FORMAT})")
        return manifest

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        write_json(self.manifest_path, manifest)

    # ----- shards -----

    def _numbers(self, folder: Path, suffix: str) -> set[int]:
        if not folder.is_dir():
            return set()
        out = set()
        for p in folder.iterdir():
            m = _SHARD.match(p.name)
            if m and m[2] == suffix:
                out.add(int(m[1]))
        return out

    def done(self) -> set[int]:
        """Shards whose tensor file and table both exist."""
        return self._numbers(self.shards, "safetensors") & self._numbers(self.shards, "parquet")

    def failures(self) -> dict[int, dict[str, Any]]:
        """Failure records of shards that are not done."""
        done = self.done()
        out = {}
        for k in sorted(self._numbers(self.failed, "json") - done):
            with contextlib.suppress(OSError, json.JSONDecodeError):
                out[k] = json.loads(self.failure_path(k).read_text())
        return out

    def write_shard(self, shard: int, tensors: dict[str, torch.Tensor], table: Any, meta: dict[str, str]) -> None:
        """Write one shard: the tensors, then the table (the shard is done when the table exists)."""
        import pyarrow as pa
        import pyarrow.parquet as pq
        from safetensors.torch import save_file

        clean = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
        with atomic_write(self.tensor_path(shard)) as tmp:
            save_file(clean, str(tmp), metadata=meta)
        arrow = table if isinstance(table, pa.Table) else pa.Table.from_pandas(table, preserve_index=False)
        with atomic_write(self.table_path(shard)) as tmp:
            pq.write_table(arrow, str(tmp))
        self.failure_path(shard).unlink(missing_ok=True)

    def write_failure(self, shard: int, indices: list[int], error: str, attempts: int) -> None:
        write_json(self.failure_path(shard), {"shard": shard, "indices": indices, "error": error, "attempts": attempts})

    # ----- housekeeping -----

    def clean(self) -> None:
        """Remove temporaries of writers that died (a killed run leaves at most these)."""
        for folder in (self.root, self.shards, self.failed):
            remove_stale_temporaries(folder)

    def clear(self) -> None:
        """Delete the run's own files (manifest, shards, failure records): ``--new``."""
        for folder in (self.shards, self.failed):
            if folder.is_dir():
                shutil.rmtree(folder)
        self.manifest_path.unlink(missing_ok=True)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold ``DIR/.lock`` for the run; a second run on the same folder is refused."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / ".lock"
        fh = open(path, "a+")  # noqa: SIM115 - held for the whole run
        try:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.seek(0)
                holder = fh.read().strip() or "another process"
                raise ValueError(f"out: {self.root} is in use by another provex run ({holder})") from None
            fh.seek(0)
            fh.truncate()
            fh.write(f"pid {os.getpid()}")
            fh.flush()
            yield
        finally:
            fh.close()
