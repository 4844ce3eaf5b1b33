"""Images/s delivered to a training loop as augmented batches: tensor cache vs decoding files.

    python bench/bench_cache.py [--data PATH] [--size 128] [--epochs 2] [--batch 64]

Default data: ../shared/data/cbis-ddsm-masses (train split); without it, a
phantom written to a temporary folder. Prints a table (rows side by side,
ratio against the decoding path) to paste into bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset as TorchDataset

from oncosynth.classifiers.augment import AugmentConfig, augment_batch
from oncosynth.data import cached_tensors, load_dataset
from oncosynth.data.decode import decode_record, to_tensor

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cbis-ddsm-masses"


class DecodingDataset(TorchDataset):
    """The research-code pattern: decode a file in every __getitem__, every epoch."""

    def __init__(self, records, size):
        self.records, self.size = records, size

    def __len__(self):
        return len(self.records)

    def __getitem__(self, i):
        return to_tensor(decode_record(self.records[i]), size=self.size, channels=1)


def run_epochs(batches, epochs: int, augment: bool) -> float:
    config, generator = AugmentConfig(), torch.Generator().manual_seed(0)
    images = 0
    start = time.perf_counter()
    for _ in range(epochs):
        for batch in batches():
            x = batch.float() / 255 if batch.dtype == torch.uint8 else batch
            if augment:
                x = augment_batch(x, config, generator)
            images += x.shape[0]
    return images / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2,
                        help="torch threads; use 1 when other jobs share the cores (OpenMP thrashes)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = args.data
    if data is None and SHARED.is_dir():
        data = SHARED
    if data is None:
        from oncosynth.data.phantom import PhantomConfig, write_phantom

        data = write_phantom(Path(tempfile.mkdtemp()) / "phantom", PhantomConfig(n=1000, size=args.size))
    dataset = load_dataset(data)
    train = dataset.split("train") if "train" in dataset.splits else dataset
    cache_dir = Path(tempfile.mkdtemp())
    t0 = time.perf_counter()
    cached, _ = cached_tensors(train, size=args.size, channels=1, cache_dir=cache_dir, progress=False)
    build_s = time.perf_counter() - t0
    n, b = len(train), args.batch

    def cache_batches():
        order = torch.randperm(n)
        for i in range(0, n, b):
            yield cached[order[i:i + b]]

    def decode_batches():
        loader = DataLoader(DecodingDataset(train.records, args.size), batch_size=b, shuffle=True, num_workers=0)
        yield from loader

    def decode_batches_2workers():
        loader = DataLoader(DecodingDataset(train.records, args.size), batch_size=b, shuffle=True, num_workers=2)
        yield from loader

    rows = []
    for augment in (True, False):
        decode = run_epochs(decode_batches, args.epochs, augment)
        decode2 = run_epochs(decode_batches_2workers, args.epochs, augment)
        cache = run_epochs(cache_batches, args.epochs, augment)
        rows.append((augment, decode, decode2, cache))

    print(f"data: {data} ({n} training images at {args.size}px, batch {b}, {args.epochs} epochs, "
          f"{args.threads} torch thread(s); "
          f"cache built once in {build_s:.1f} s)")
    print("| augmented | decode files (img/s) | decode, 2 workers (img/s) | tensor cache (img/s) | cache / decode | cache / decode-2w |")
    print("|---|---:|---:|---:|---:|---:|")
    for augment, decode, decode2, cache in rows:
        print(f"| {'yes' if augment else 'no'} | {decode:,.0f} | {decode2:,.0f} | {cache:,.0f} | "
              f"{cache / decode:.1f}x | {cache / decode2:.1f}x |")


if __name__ == "__main__":
    main()
