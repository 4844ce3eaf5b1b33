"""Decoded-tensor cache: one memory-mapped uint8 array per data set and size.

Decoding PNGs every epoch costs far more than the training step on small
images, so each (records, size, channels) combination is decoded once into
``<cache>/<key>.u8``. The key hashes every record's identity with its file's
size and modification time, so editing, adding or removing a file makes a new
key: a stale cache is never read. ``<key>.json`` records the array's shape and
SHA-256; an entry that does not match its record (truncated, garbled) is a
miss: the damaged file is set aside (renamed, never deleted) and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from oncosynth.data.decode import decode_record, to_tensor
from oncosynth.data.records import Dataset
from oncosynth.data.transforms import to_uint8
from oncosynth.errors import DataError
from oncosynth.io import atomic_write, set_aside, write_json
from oncosynth.runtime.manifest import hash_strings

CACHE_VERSION = "2"  # 2: the metadata holds the array's SHA-256


def default_cache_dir() -> Path:
    return Path(os.environ.get("ONCOSYNTH_CACHE", Path.home() / ".cache" / "oncosynth"))


def _file_stamp(path: str) -> str:
    try:
        stat = os.stat(path)
    except OSError:
        return "missing"
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def cache_key(dataset: Dataset, size: int | None, channels: int | None) -> str:
    stamps = {source: _file_stamp(source) for source in {r.source for r in dataset.records}}
    items = [CACHE_VERSION, str(size), str(channels)]
    items += [f"{r.uid}|{stamps[r.source]}" for r in dataset.records]
    return hash_strings(items)


def cached_tensors(dataset: Dataset, size: int | None = None, channels: int | None = None,
                   cache_dir: str | Path | None = None, progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 N×C×H×W images, int64 labels) for the data set, from the cache when valid.

    Without ``size`` all images must share one size; without ``channels`` the
    first image decides. Divide by 255 for floats in [0, 1].
    """
    if len(dataset) == 0:
        raise ValueError("cannot cache an empty data set")
    folder = Path(cache_dir) if cache_dir else default_cache_dir()
    key = cache_key(dataset, size, channels)
    data_path, meta_path = folder / f"{key}.u8", folder / f"{key}.json"
    labels = torch.from_numpy(dataset.labels)
    shape = _intact_shape(data_path, meta_path)
    if shape is None:
        shape = _build(dataset, size, channels, data_path, meta_path, progress)
    array = np.memmap(data_path, dtype=np.uint8, mode="c", shape=shape)  # copy-on-write: safe to hand out
    return torch.from_numpy(array), labels


_VERIFIED: set[tuple] = set()  # (file, size, mtime, inode) whose hash this process has checked


def _intact_shape(data_path: Path, meta_path: Path) -> tuple[int, ...] | None:
    """The shape of a cache entry that matches its record, or None (a miss): absent, or damaged
    (then the damaged file is set aside and the entry is rebuilt)."""
    if not (meta_path.is_file() and data_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
        shape, digest = tuple(int(n) for n in meta["shape"]), str(meta["sha256"])
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:  # JSONDecodeError: a ValueError
        set_aside(meta_path, f"damaged tensor-cache record ({type(exc).__name__}: {exc}); the cache is rebuilt")
        return None
    stat = data_path.stat()
    stamp = (str(data_path), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    if stamp in _VERIFIED:
        return shape
    problem = None
    if stat.st_size != int(np.prod(shape)):
        problem = f"{stat.st_size} bytes, its record says {int(np.prod(shape))}"
    else:
        with open(data_path, "rb") as handle:
            if hashlib.file_digest(handle, "sha256").hexdigest() != digest:
                problem = "its SHA-256 differs from the one recorded when it was written"
    if problem:
        set_aside(data_path, f"damaged tensor cache ({problem}); it is rebuilt")
        return None
    _VERIFIED.add(stamp)
    return shape


def _build(dataset: Dataset, size: int | None, channels: int | None, data_path: Path, meta_path: Path,
           progress: bool) -> tuple[int, ...]:
    first = to_tensor(decode_record(dataset.records[0]), size=size, channels=channels)
    channels = channels or first.shape[0]
    shape = (len(dataset), channels, first.shape[1], first.shape[2])
    data_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(data_path) as handle:
        handle.truncate(int(np.prod(shape)))
        array = np.memmap(handle, dtype=np.uint8, mode="r+", shape=shape)
        records = tqdm(dataset.records, desc=f"caching {Path(dataset.root).name or 'images'}",
                       disable=not progress, leave=False)
        for i, record in enumerate(records):
            tensor = to_tensor(decode_record(record), size=size, channels=channels)
            if tensor.shape != shape[1:]:
                raise DataError(record.uid, f"mixed image sizes: {tuple(tensor.shape[1:])} here, "
                                f"{shape[2:]} in {dataset.records[0].uid}; pass a size to resample")
            array[i] = to_uint8(tensor).numpy()
        array.flush()
        digest = hashlib.sha256(array).hexdigest()
        del array
    write_json(meta_path, {"shape": list(shape), "sha256": digest, "root": dataset.root, "n": len(dataset)})
    return shape
