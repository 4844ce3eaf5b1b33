"""Many SinGANs for one class (the group): choose the images, train one SinGAN per image as
an executor unit, and assemble the finished members.

Layout of a group's run folder::

    RUN/group.json              the plan (images, settings); present while training
    RUN/members/member-00/      one finished SinGAN: weights, config.json, summary.json
    RUN/members/member-00/partial-03/   per-scale progress of an unfinished one
    RUN/config.json, weights.safetensors, manifest.json   the whole group, written
                                 last and only when every member is finished
    RUN/members.csv             per-SinGAN time and SIFID

A re-run on the same folder skips finished members and continues unfinished
ones from their last finished scale. A damaged finished member (marker,
manifest, weights, summary) is set aside, renamed and never deleted, and
trained again; so is a damaged ``group.json``, which is written again.
"""

from __future__ import annotations

import csv
import io
import json
import os
import resource
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from oncosynth.errors import CheckpointError, ConfigError, DataError, OncosynthError
from oncosynth.generators.base import Generator
from oncosynth.generators.singan.model import (DEFAULTS, MEMBER_KIND, MODEL_KEYS, load_member, pyramid_sizes,
                                               sample_member, save_member)
from oncosynth.generators.singan.train import _check_image, _member_fingerprint, _partials, train_singan
from oncosynth.io import check_output_folder, set_aside, write_json, write_text
from oncosynth.runtime.manifest import make_manifest

GROUP_PLAN = "group.json"
SUMMARY = "summary.json"


def train_member_unit(image: Any, folder: str, config: dict[str, Any], seed: int, size: int, channels: int,
                      key: str, source: str, class_name: str, device: str = "cpu", threads: int | None = None,
                      sifid_net: str | None = None, sifid_samples: int = 8, progress: bool = False) -> dict[str, Any]:
    """Executor unit: train (or resume, or skip a finished) SinGAN into ``folder``; return its summary.

    ``image`` is a data-layer Record (read here) or a C×H×W tensor in [0, 1]. ``peak_rss_mb`` in the
    summary is the peak of the process that ran the unit (in-process runs include earlier work).
    """
    if threads:
        torch.set_num_threads(int(threads))
    folder_p = Path(folder)
    image_t = _unit_image(image, size, channels)
    cfg = {**DEFAULTS, **config}
    fingerprint = _member_fingerprint(cfg, image_t, seed)
    finished = _finished_member(folder_p, fingerprint)
    if finished is not None:
        return {**finished, "resumed": True}
    began, cpu0 = time.perf_counter(), _cpu_seconds()
    from oncosynth.runtime.devices import resolve_device

    member, info = train_singan(image_t, cfg, seed=seed, state_dir=folder_p, device=resolve_device(device),
                                name=key, progress=progress)
    summary = {"key": key, "source": source, "class": class_name, "seed": int(seed),
               "seconds": round(time.perf_counter() - began, 1), "cpu_seconds": round(_cpu_seconds() - cpu0, 1),
               "peak_rss_mb": round(_peak_rss_mb(), 1), "threads": torch.get_num_threads(),
               "sizes": info["sizes"], "scales": info["scales"]}
    if sifid_net:
        from oncosynth.metrics.sifid import sifid_scores

        fakes = sample_member(member, list(range(10_000, 10_000 + sifid_samples)))
        scores = sifid_scores(image_t[None], fakes, feature_net=sifid_net)
        summary["sifid"] = {"feature_net": scores["feature_net"], "mean": scores["mean"], "std": scores["std"],
                            "n": sifid_samples}
    write_json(folder_p / SUMMARY, summary)
    settings = {k: cfg[k] for k in MODEL_KEYS}
    save_member(folder_p, member, {"settings": settings, "fingerprint": fingerprint, "source": source,
                                   "class": class_name, "key": key},
                make_manifest(MEMBER_KIND, settings, seed=seed, data_hash=fingerprint["image_hash"], source=source))
    for old in _partials(folder_p):
        shutil.rmtree(old, ignore_errors=True)
    return summary


def _finished_member(folder: Path, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
    """The summary of the SinGAN finished in ``folder``, or None: not finished, or damaged (its
    marker, manifest, weights or summary; then the folder is set aside and the SinGAN trained again)."""
    if not (folder / "config.json").is_file():
        return None
    try:
        _, saved = load_member(folder)  # checks the weights against their recorded SHA-256
        summary = json.loads((folder / SUMMARY).read_text())
        if not isinstance(summary, dict) or "sizes" not in summary or "cpu_seconds" not in summary:
            raise ValueError(f"{SUMMARY} is not a SinGAN summary")
    except (CheckpointError, OSError, UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError: a ValueError
        set_aside(folder, f"damaged finished SinGAN ({exc}); it is trained again")
        return None
    if json.loads(json.dumps(saved.get("fingerprint"))) != json.loads(json.dumps(fingerprint)):
        raise ConfigError(f"{folder}: a finished SinGAN for another image or settings is here; "
                          f"choose another run folder")
    return summary


def _read_plan(path: Path) -> dict[str, Any] | None:
    """The group's plan, or None: absent, or damaged (then set aside; the members' own records still
    guard against mixing images or settings)."""
    if not path.is_file():
        return None
    try:
        plan = json.loads(path.read_text())
        if not isinstance(plan, dict):
            raise ValueError("not a JSON object")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        set_aside(path, f"damaged group plan ({exc}); it is written again")
        return None
    return plan


def _unit_image(image: Any, size: int, channels: int) -> torch.Tensor:
    from oncosynth.data import Record, load_images
    from oncosynth.data.transforms import convert_images

    if isinstance(image, Record):
        return load_images([image], size=size, channels=channels)[0]
    tensor = torch.as_tensor(image).float()
    return convert_images(tensor[None], size, channels)[0]


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _choose_records(dataset: Any, class_name: str | None, images: int | None, image_list: Any,
                    seed: int) -> tuple[list[Any], str]:
    from oncosynth.data import Dataset, as_dataset

    dataset = as_dataset(dataset)
    if not isinstance(dataset, Dataset):
        raise ConfigError(f"singan: training data must be a data set folder, a Dataset or a tensor of images, "
                          f"not {type(dataset).__name__}")
    if "train" in dataset.splits:
        dataset = dataset.split("train")
    if class_name is None:
        if len(dataset.classes) != 1:
            raise ConfigError(f"singan: name the class to learn (--class); the data have {dataset.classes}")
        class_name = dataset.classes[0]
    dataset.class_index(class_name)
    pool = sorted((r for r in dataset.records if r.label == class_name), key=lambda r: r.uid)
    if image_list is not None:
        wanted = _read_image_list(image_list)
        if images is not None and images != len(wanted):
            raise ConfigError(f"--images {images} disagrees with the {len(wanted)} image(s) in the list")
        by_name: dict[str, Any] = {}
        for r in pool:
            for name in (r.uid, r.source, Path(r.source).name, Path(r.source).stem):
                by_name.setdefault(name, r)
        missing = [w for w in wanted if w not in by_name]
        if missing:
            raise ConfigError(f"singan: {len(missing)} listed image(s) are not training images of class "
                              f"'{class_name}' (e.g. {missing[0]})")
        chosen = [by_name[w] for w in wanted]
        if len({r.uid for r in chosen}) != len(chosen):
            raise ConfigError("singan: the image list names an image twice")
        return chosen, class_name
    images = 1 if images is None else int(images)
    if images < 1:
        raise ConfigError(f"--images must be >= 1, not {images}")
    if len(pool) < images:
        raise ConfigError(f"singan: class '{class_name}' has {len(pool)} training image(s), fewer than "
                          f"--images {images}; nothing was trained")
    index = np.sort(np.random.default_rng(seed).choice(len(pool), size=images, replace=False))
    return [pool[i] for i in index], class_name


def _read_image_list(image_list: Any) -> list[str]:
    if isinstance(image_list, (str, Path)):
        path = Path(image_list)
        if not path.is_file():
            raise DataError(path, "image list not found")
        entries = [line.strip() for line in path.read_text().splitlines()]
        entries = [e for e in entries if e and not e.startswith("#")]
        if not entries:
            raise DataError(path, "the image list is empty")
        return entries
    return [str(x) for x in image_list]


def train_group(gen: Generator, data: Any, run_folder: str | Path, *, class_name: str | None = None,
                images: int | None = None, image_list: Any = None, seed: int = 0, workers: int = 0,
                executor: Any = None, resume: bool = True, device: str | torch.device = "cpu",
                threads: int | None = None, progress: bool = True, allow_leakage: bool = False) -> Generator:
    """Train ``images`` SinGANs (one per image of ``class_name``) into ``run_folder``.

    ``data``: a data set path or ``Dataset`` (its train split), or a tensor N×C×H×W in [0, 1] (every
    image is used; ``class_name`` names them). ``image_list``: a file (one file name, path or uid per
    line) or a list of them, instead of a random choice (seeded by ``seed``). Members run as units of
    ``executor`` (default ``LocalExecutor(workers)``); a finished member is never trained again.
    A data set whose splits share a patient stops before any work unless ``allow_leakage`` (then
    the group's manifest lists them under ``leakage``).
    """
    from oncosynth.data import load_images
    from oncosynth.parallel.executor import LocalExecutor, Resources, Unit
    from oncosynth.runtime.devices import resolve_device

    device_t = resolve_device(device)  # a unit carries it as a string: it may cross a process
    run = check_output_folder(Path(run_folder), "--out")  # before any image is read
    cfg = gen.config
    # ---- choose and check every image before anything is written
    leakage: list[dict] = []  # patients in two splits, when allowed
    if isinstance(data, torch.Tensor):
        if image_list is not None:
            raise ConfigError("singan: an image list needs a data set, not a tensor")
        tensor = data.float()
        if tensor.ndim == 3:
            tensor = tensor[None]
        if images is not None and images != len(tensor):
            raise ConfigError(f"--images {images} but {len(tensor)} image(s) were given")
        class_name = class_name or "image"
        chosen: list[Any] = [tensor[i] for i in range(len(tensor))]
        sources = [f"<tensor {i}>" for i in range(len(tensor))]
        natives = [t for t in chosen]
    else:
        from oncosynth.data import as_dataset
        from oncosynth.generators.training import split_leakage

        data = as_dataset(data)
        leakage = split_leakage(data, allow_leakage)
        chosen, class_name = _choose_records(data, class_name, images, image_list, seed)
        sources = [r.uid for r in chosen]
        natives = [load_images([r])[0] for r in chosen]
    channels = int(cfg["channels"] or (1 if natives[0].shape[0] == 1 else 3))
    if channels not in (1, 3):
        raise ConfigError(f"singan: images must have 1 or 3 channels, not {channels}")
    size = int(min(cfg["max_size"], max(natives[0].shape[-2:])))
    from oncosynth.data.transforms import convert_images

    for source, native in zip(sources, natives):
        if min(native.shape[-2:]) < cfg["min_size"]:  # before any resampling could hide it
            _check_image(native[:1], cfg, source)
        _check_image(convert_images(native[None].float(), size, channels)[0], cfg, source)
    pyramid_sizes(size, size, cfg["scale_factor"], cfg["min_size"], cfg["max_size"])

    keys = [f"member-{i:02d}" for i in range(len(chosen))]
    plan = {"method": gen.name, "config": cfg, "class": class_name, "size": size, "channels": channels,
            "seed": seed, "members": [{"key": k, "source": s} for k, s in zip(keys, sources)]}
    plan = json.loads(json.dumps(plan))
    plan_path = run / GROUP_PLAN
    if plan_path.is_file():
        if not resume:
            raise ConfigError(f"{run} already holds a SinGAN group; resume it or choose another --out "
                              f"(nothing was overwritten)")
        old = _read_plan(plan_path)
        if old is not None and old != plan:
            changed = sorted(k for k in plan if old.get(k) != plan[k])
            raise ConfigError(f"{run}: the SinGAN group there was started with other settings or images "
                              f"({changed}); resume with the same ones or choose another --out")
    elif run.exists() and any(run.iterdir()):
        raise ConfigError(f"{run} is not empty and holds no SinGAN group; choose another --out")
    run.mkdir(parents=True, exist_ok=True)
    write_json(plan_path, plan)

    # ---- one unit per image
    workers = int(workers)
    if threads is None and workers:  # each worker process gets its share of the cores (or OMP_NUM_THREADS)
        threads = int(os.environ.get("OMP_NUM_THREADS") or 0) or max(1, (os.cpu_count() or 1) // workers)
    model_cfg = {k: cfg[k] for k in MODEL_KEYS}
    resources = Resources(cpus=float(threads or 1), gpus=1.0 if device_t.type == "cuda" else 0.0)
    units = [Unit(key=k, fn=train_member_unit, resources=resources,
                  kwargs=dict(image=img, folder=str(run / "members" / k), config=model_cfg, seed=seed + 1000 * i,
                              size=size, channels=channels, key=k, source=s, class_name=class_name,
                              device=str(device_t), threads=threads, sifid_net=cfg["sifid_net"],
                              sifid_samples=int(cfg["sifid_samples"]),
                              progress=bool(progress and not workers and executor is None)))
             for i, (k, img, s) in enumerate(zip(keys, chosen, sources))]
    own = executor is None
    executor = executor or LocalExecutor(workers=workers)
    began = time.perf_counter()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(units), desc=f"singan: {class_name} SinGANs", unit="SinGAN", dynamic_ncols=True)
    by_key = {}
    try:
        for outcome in executor.run(units):  # as each finishes (run_all's order restored below)
            by_key[outcome.key] = outcome
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(f"{outcome.key} {'ok' if outcome.ok else 'FAILED'}")
    finally:
        if bar is not None:
            bar.close()
        if own:
            executor.close()
    outcomes = [by_key[u.key] for u in units]
    failed = [o for o in outcomes if not o.ok]
    summaries = [o.value for o in outcomes if o.ok]
    _write_members_csv(run, summaries)
    if failed:
        lines = "; ".join(f"{o.key} ({next(m['source'] for m in plan['members'] if m['key'] == o.key)}): {o.error}"
                          for o in failed)
        raise OncosynthError(f"singan: {len(failed)} of {len(units)} SinGAN(s) failed: {lines}. The group in {run} "
                             f"is incomplete (no config.json); finished members are kept and a re-run resumes")

    # ---- assemble the group (config.json last: it marks the group complete)
    gen.member_info, gen.members = [], []
    for key, summary in zip(keys, summaries):
        member, config = load_member(run / "members" / key)
        gen.members.append(member)
        gen.member_info.append({"key": key, "source": config["source"], "sizes": config["sizes"],
                                "sifid": summary.get("sifid")})
    gen.classes, gen.channels, gen.size = [class_name], channels, size
    gen.step = len(gen.members)
    gen.manifest = make_manifest("generator/singan", plan, seed=seed,
                                 data_hash=_group_hash([s.get("key", "") for s in summaries], run),
                                 n_train=len(gen.members), seconds=round(time.perf_counter() - began, 1),
                                 cpu_seconds_members=round(sum(s["cpu_seconds"] for s in summaries), 1),
                                 **({"leakage": leakage} if leakage else {}))
    gen.save(run, gen.manifest)
    return gen


def _group_hash(keys: list[str], run: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    for key in keys:
        config = json.loads((run / "members" / key / "config.json").read_text())
        digest.update(str(config.get("fingerprint", {}).get("image_hash", "")).encode())
    return digest.hexdigest()[:16]


def _write_members_csv(run: Path, summaries: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["key", "source", "seconds", "cpu_seconds", "peak_rss_mb", "scales", "size",
                     "sifid_mean", "sifid_std", "sifid_feature_net", "resumed"])
    for s in sorted(summaries, key=lambda s: s["key"]):
        sifid = s.get("sifid") or {}
        writer.writerow([s["key"], s["source"], s["seconds"], s["cpu_seconds"], s["peak_rss_mb"], len(s["sizes"]),
                         "x".join(map(str, s["sizes"][-1])), sifid.get("mean", ""), sifid.get("std", ""),
                         sifid.get("feature_net", ""), bool(s.get("resumed", False))])
    write_text(run / "members.csv", buffer.getvalue())
