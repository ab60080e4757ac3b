"""This machine's cache of generated data sets (MNIST-1D): runs with the same data (a sweep's trials, one
job's seeds, the test suite's tiny runs) generate it once. Generating is the slow part of a new run's
start on the driver (the default job's 12,000 examples took 12.2 s on a 2-core machine, the package's
imports ~2.4 s more); reading an entry takes milliseconds.

An entry is only ever a shortcut to the bytes generation would give: its name is a hash of everything the
examples depend on (the data set, the spec fields it reads, the generating package's version, this
format), and it records the sha256 of its tensors, checked on every read. An entry that does not check
out is ignored and replaced; a cache that cannot be written is skipped. Every run still stores its own
copy (`dataset.safetensors`), so deleting the cache never changes an existing run.

Where: `$LP_RAY_CACHE_DIR`, else `$XDG_CACHE_HOME/lp-ray`, else `~/.cache/lp-ray`; an empty
`LP_RAY_CACHE_DIR` turns it off.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save as st_save

FORMAT = 1  # bump when what an entry holds, or how it is keyed, changes
_DIGEST = "lp_ray.sha256"


def cache_dir() -> Path | None:
    """The cache's folder of generated data sets; None when the user turned the cache off."""
    given = os.environ.get("LP_RAY_CACHE_DIR")
    if given is not None:
        return Path(given).expanduser() / "generated" if given else None
    try:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    except RuntimeError:  # no HOME and no password entry (some containers): no cache rather than no run
        return None
    return Path(base) / "lp-ray" / "generated"


def entry_name(dataset: str, fields: dict) -> str:
    """The file name of the entry for these generator inputs (JSON of them, keys sorted, hashed)."""
    key = json.dumps({"format": FORMAT, "dataset": dataset, **fields}, sort_keys=True, default=str)
    return f"{dataset}-{hashlib.sha256(key.encode()).hexdigest()[:32]}.safetensors"


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def get(dataset: str, fields: dict) -> dict[str, torch.Tensor] | None:
    """The cached tensors for these inputs, or None (no cache, no entry, or one that does not check out)."""
    folder = cache_dir()
    path = folder / entry_name(dataset, fields) if folder else None
    if path is None or not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            recorded = (f.metadata() or {}).get(_DIGEST)
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception:  # unreadable or truncated: safetensors raises several types; generate instead
        return None
    return tensors if recorded == tensors_digest(tensors) else None


def put(dataset: str, fields: dict, tensors: dict[str, torch.Tensor]) -> None:
    """Store an entry (written to a temporary file and renamed: concurrent runs never see half of one)."""
    folder = cache_dir()
    if folder is None:
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        data = st_save(tensors, metadata={_DIGEST: tensors_digest(tensors)})
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".partial-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, folder / entry_name(dataset, fields))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError:
        return  # a read-only or full home: the run has its own copy; only the shortcut is lost
