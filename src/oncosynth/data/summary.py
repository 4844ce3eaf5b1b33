"""``oncosynth data summary``: what is in a data set, and what is wrong with it.

Every image is decoded once (which also proves it is readable) and hashed, so
the summary can report sizes and modes, byte-identical images across splits,
identical images with conflicting labels, and patients in two splits.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from oncosynth.data.decode import DICOM_SUFFIXES, decode_record, missing_path_problem, read_image_file
from oncosynth.data.records import Dataset, Record
from oncosynth.data.splits import check_leakage
from oncosynth.errors import DataError, OncosynthError


@dataclass(frozen=True)
class ImageInfo:
    height: int
    width: int
    channels: int
    mode: str
    digest: str


def scan_record(record: Record) -> ImageInfo:
    """Decode one image and fingerprint it (file bytes, or pixel bytes inside containers)."""
    if record.key is not None:
        pixels = decode_record(record)
        digest = hashlib.sha1(np.ascontiguousarray(pixels).tobytes()).hexdigest()
        mode = f"{record.format} uint8"
    else:
        path = Path(record.source)
        if not path.exists():
            raise DataError(path, missing_path_problem(path))
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DataError(path, f"cannot read file ({exc})") from None
        digest = hashlib.sha1(data).hexdigest()
        if path.suffix.lower() in DICOM_SUFFIXES:
            pixels, mode = decode_record(record), "DICOM"
        else:
            pixels = read_image_file(path, data=data)
            from PIL import Image
            import io

            with Image.open(io.BytesIO(data)) as image:
                mode = image.mode
    return ImageInfo(pixels.shape[0], pixels.shape[1], pixels.shape[2], mode, digest)


def summarise(dataset: Dataset, skip_bad: bool = False, progress: bool = True) -> dict:
    """The summary as a JSON-ready dict (keys: splits, patients, leakage, duplicates, ...)."""
    infos: dict[str, ImageInfo] = {}
    skipped = list(dataset.skipped)
    kept: list[Record] = []
    for record in tqdm(dataset.records, desc="reading images", disable=not progress, leave=False):
        try:
            infos[record.uid] = scan_record(record)
            kept.append(record)
        except OncosynthError as exc:
            if not skip_bad:
                raise
            skipped.append({"file": record.uid, "problem": getattr(exc, "problem", str(exc))})
    dataset = dataset.subset(kept)

    splits: dict[str, dict[str, int]] = {}
    patients: dict[str, int] = {}
    details: dict[str, dict[str, dict]] = {}
    for split in dataset.splits:
        part = dataset.split(split)
        splits[split] = part.counts()
        patients[split] = len({r.patient for r in part.records})
        details[split] = {}
        for cls in dataset.classes:
            records = [r for r in part.records if r.label == cls]
            sizes = Counter(f"{infos[r.uid].width}x{infos[r.uid].height}" for r in records)
            modes = Counter(infos[r.uid].mode for r in records)
            details[split][cls] = {"images": len(records), "patients": len({r.patient for r in records}),
                                   "sizes": dict(sizes), "modes": dict(modes)}

    by_digest: dict[str, list[Record]] = defaultdict(list)
    for record in dataset.records:
        by_digest[infos[record.uid].digest].append(record)
    duplicates, conflicts = [], []
    for digest, group in by_digest.items():
        if len(group) < 2:
            continue
        entry = {"files": [r.uid for r in group], "splits": sorted({r.split for r in group}),
                 "labels": sorted({r.label for r in group}), "patients": sorted({r.patient for r in group})}
        if len(entry["splits"]) > 1:
            duplicates.append(entry)
        if len(entry["labels"]) > 1:
            conflicts.append(entry)
    all_sizes = Counter(f"{i.width}x{i.height}" for i in infos.values())
    return {
        "root": dataset.root,
        "format": dataset.format,
        "classes": dataset.classes,
        "images": len(dataset),
        "splits": splits,
        "patients": patients,
        "details": details,
        "sizes": dict(all_sizes),
        "mixed_sizes": len(all_sizes) > 1,
        "leakage": check_leakage(dataset),
        "duplicates": duplicates,
        "conflicts": conflicts,
        "skipped": skipped,
    }


def render_summary(summary: dict) -> None:
    """Print the summary as tables for a person."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]{summary['root']}[/bold]  format={summary['format']}  "
                  f"images={summary['images']}  classes={', '.join(summary['classes'])}")
    table = Table("split", "class", "images", "patients", "sizes", "modes")
    for split, per_class in summary["details"].items():
        for cls, info in per_class.items():
            table.add_row(split, cls, str(info["images"]), str(info["patients"]),
                          ", ".join(f"{k} ({v})" for k, v in info["sizes"].items()),
                          ", ".join(f"{k} ({v})" for k, v in info["modes"].items()))
        table.add_row(split, "[italic]all[/italic]", str(sum(summary["splits"][split].values())),
                      str(summary["patients"][split]), "", "", end_section=True)
    console.print(table)
    leakage = summary["leakage"]
    console.print(f"leakage check: {'[green]no patient in two splits[/green]' if not leakage else f'[red]{len(leakage)} patient(s) in more than one split[/red]'}")
    for leak in leakage[:20]:
        console.print(f"  patient {leak['patient']}: {', '.join(leak['splits'])}")
    console.print(f"byte-identical images across splits: {len(summary['duplicates'])} group(s)")
    for dup in summary["duplicates"][:10]:
        console.print(f"  {', '.join(dup['files'])}")
    console.print(f"identical images with conflicting labels: {len(summary['conflicts'])} group(s)")
    for conflict in summary["conflicts"][:10]:
        console.print(f"  {', '.join(conflict['files'])} ({'/'.join(conflict['labels'])})")
    if summary["mixed_sizes"]:
        console.print(f"[yellow]mixed image sizes: {summary['sizes']} (training needs a --size)[/yellow]")
    if summary["skipped"]:
        console.print(f"[yellow]skipped {len(summary['skipped'])} unreadable file(s):[/yellow]")
        for item in summary["skipped"]:
            console.print(f"  {item['file']}: {item['problem']}")
