"""``evaluate``: fidelity, diversity and privacy of a synthetic set against real data.

One call loads the sets (any format the data layer reads, or tensors),
brings them to a common size and channel count, embeds them with one
feature network, and computes overall and per class:

- FID, KID, precision / recall / density / coverage (feature space),
- FRD (radiomics; reference = the real set),
- mean pairwise MS-SSIM within the synthetic set and, for reference, within the real set,
- the amplitude of 2-pixel checkerboards and stripes (a patched generator's grid) in both sets,
- with a training set: nearest-training-image memorisation in pixel and feature space.

It writes ``metrics.json`` (numbers + manifest + notes), ``memorisation.csv``
(one row per synthetic image) and a self-contained ``evaluation.html``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from oncosynth.data.transforms import convert_images
from oncosynth.errors import ConfigError, DataError
from oncosynth.io import check_output_folder
import oncosynth.metrics.artefacts as artefacts
import oncosynth.metrics.diversity as diversity
import oncosynth.metrics.fidelity as fidelity
import oncosynth.metrics.frd as frd_lib
import oncosynth.metrics.memorisation as mem_lib

DEFAULT_FEATURE_NET = "inception:download"


@dataclass
class ImageSet:
    """Images of one role (real / synthetic / train) with per-image metadata."""

    role: str
    labels: list[str]
    patients: list[str | None]
    sources: list[str]
    dataset: Any = None  # oncosynth.data.Dataset when read from disk
    images: torch.Tensor | None = None
    native: tuple[int, int, int] | None = None  # C, H, W of the first image as stored

    def __len__(self) -> int:
        return len(self.sources)

    def classes(self) -> list[str]:
        from oncosynth.data import class_order

        return class_order([label for label in self.labels if label])


def as_image_set(item: Any, role: str, label_from_name: bool = False) -> ImageSet:
    """A path, a ``Dataset``, a tensor, or ``(tensor, class names)`` -> ``ImageSet``."""
    from oncosynth.data import Dataset, as_dataset

    item = as_dataset(item, label_from_name=label_from_name)
    if isinstance(item, Dataset):
        if len(item) == 0:
            raise DataError(item.root or role, f"the {role} set is empty")
        records = item.records
        return ImageSet(role, [r.label for r in records], [r.patient for r in records],
                        [r.uid for r in records], dataset=item)
    labels = None
    if isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], torch.Tensor):
        item, labels = item
    if isinstance(item, torch.Tensor):
        if item.ndim != 4 or item.shape[0] == 0:
            raise DataError(f"<{role} tensor>", f"expected a non-empty N×C×H×W tensor, got {tuple(item.shape)}")
        n = item.shape[0]
        labels = list(labels) if labels is not None else [""] * n
        if len(labels) != n:
            raise DataError(f"<{role} tensor>", f"{len(labels)} labels for {n} images")
        return ImageSet(role, [str(x) for x in labels], [None] * n, [f"{role}[{i}]" for i in range(n)],
                        images=item.float().clamp(0, 1), native=tuple(item.shape[1:]))
    raise ConfigError(f"{role}: expected a folder, a Dataset or an image tensor, got {type(item).__name__}")


def _native_shape(s: ImageSet) -> tuple[int, int, int]:
    from oncosynth.data import load_images

    if s.native is None:
        s.native = tuple(load_images(s.dataset.records[:1]).shape[1:])
    return s.native


def _load(sets: list[ImageSet], size: int | None, notes: list[str]) -> tuple[int, int]:
    """Bring every set to one size × size and one channel count; say what was resampled."""
    from oncosynth.data import load_images

    from oncosynth.data.decode import describe_sizes

    real = sets[0]
    c0, h0, w0 = _native_shape(real)
    size = size or max(h0, w0)
    channels = c0
    for s in sets:
        c, h, w = _native_shape(s)
        count, shown = describe_sizes(s.dataset.records) if s.dataset is not None else (1, "")
        if count > 1:
            notes.append(f"{s.role} images come in {count} sizes ({shown}); all resampled to {size}×{size} "
                         "(bilinear, antialiased)")
        elif (h, w) != (size, size):
            notes.append(f"{s.role} images resampled from {h}×{w} to {size}×{size} (bilinear, antialiased)")
        if c != channels:
            notes.append(f"{s.role} images converted from {c} to {channels} channel(s)")
        if s.images is None:
            s.images = load_images(s.dataset, size=size, channels=channels)
        else:
            s.images = convert_images(s.images, size, channels)
    return size, channels


class _Timer:
    """Seconds per named step, summed over repeated blocks (``with timer("fid"): ...``)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


def _scope_indices(real: ImageSet, synthetic: ImageSet) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    scopes = {"overall": (np.arange(len(real)), np.arange(len(synthetic)))}
    if any(synthetic.labels) and any(real.labels):
        for name in synthetic.classes():
            r = np.flatnonzero(np.array(real.labels) == name)
            s = np.flatnonzero(np.array(synthetic.labels) == name)
            if len(r) and len(s):
                scopes[name] = (r, s)
    return scopes


def evaluate(real: Any, synthetic: Any, train: Any = None, feature_net: Any = DEFAULT_FEATURE_NET,
             out: str | Path | None = None, size: int | None = None, label_from_name: bool = False,
             compute_frd: bool = True, frd_method: str = "fast", frd_workers: int | None = None,
             frd_max_images: int | None = None, frd_backend: str = frd_lib.DEFAULT_BACKEND,
             threshold: float = mem_lib.DEFAULT_THRESHOLD, kid_subsets: int = 100, kid_subset_size: int = 1000,
             prdc_k: int = 5, diversity_pairs: int = 1000, device: str = "auto", seed: int = 0,
             feature_input_size: int | None = None, classifier: Any = None, progress: bool = True) -> dict:
    """Evaluate ``synthetic`` against ``real`` (and ``train`` for memorisation).

    ``real`` / ``synthetic`` / ``train``: a data folder or file, a ``Dataset``,
    an N×C×H×W tensor in [0, 1], or ``(tensor, class names)``.
    ``label_from_name`` applies to the synthetic set given as a folder (class
    from the file name's last '_' token, as in the MCGAN release).
    ``feature_net``: a spec for ``oncosynth.features.create_feature_net`` or a built net.
    ``frd_max_images``: FRD (PyRadiomics, ~0.2 s per image per core) on a seeded random
    subset of at most this many images per set; None uses every image.
    ``frd_backend``: "batched" (torch, equal to PyRadiomics) or "pyradiomics" (the
    reference) for the fast FRD path; ``frd_workers`` are its processes.
    ``classifier``: a classifier trained on real images (folder or model); adds the class signal
    (``oncosynth.metrics.class_signal``) of the synthetic set, and of the real set as its scale.
    Returns the metrics dict (also written to ``out/metrics.json`` when ``out`` is given).
    """
    import oncosynth.classifiers  # noqa: F401  (importing these registers their encoder: loaders)
    import oncosynth.quality.anomaly  # noqa: F401
    from oncosynth.features import create_feature_net, extract_features
    from oncosynth.runtime.devices import resolve_device
    from oncosynth.runtime.manifest import hash_strings, make_manifest
    from oncosynth.runtime.seeding import seed_everything

    if out is not None:
        check_output_folder(Path(out))  # before any metric is computed
    classifier_name = str(classifier) if isinstance(classifier, (str, Path)) else "<model>"
    if classifier is not None:  # a wrong checkpoint fails before any image is read
        from oncosynth.metrics.class_signal import load_scoring_classifier

        classifier = load_scoring_classifier(classifier, resolve_device(device))
    seed_everything(seed)
    frd_backend = "pyradiomics" if frd_method == "package" else frd_lib.check_backend(frd_backend)
    timer, notes = _Timer(), []
    sets = [as_image_set(real, "real"), as_image_set(synthetic, "synthetic", label_from_name)]
    if train is not None:
        sets.append(as_image_set(train, "train"))
    if classifier is not None:  # labels it cannot score fail before any image is read
        from oncosynth.metrics.class_signal import check_labels

        check_labels(classifier, sets[1].labels)
    with timer("load"):
        size, channels = _load(sets, size, notes)
    real_set, synth_set = sets[0], sets[1]
    train_set = sets[2] if train is not None else None
    for note in notes:
        print(f"note: {note}")

    with timer("features"):
        net = create_feature_net(feature_net, resolve_device(device), input_size=feature_input_size)
        feats = {s.role: extract_features(net, s.images, progress=progress) for s in sets}

    scopes = _scope_indices(real_set, synth_set)
    results: dict[str, dict[str, Any]] = {}
    frd_features = None
    if compute_frd:
        with timer("frd"):
            frd_features = _frd_features(real_set, synth_set, frd_method, frd_workers, progress, results,
                                         frd_max_images, seed, notes, frd_backend, str(resolve_device(device)))
    for scope, (ri, si) in scopes.items():
        row: dict[str, Any] = {"n_real": int(len(ri)), "n_synthetic": int(len(si)), "feature_net": net.name}
        fr, fs = feats["real"][ri], feats["synthetic"][si]
        overall = scope == "overall"
        with timer("fid"):
            row.update(_guard(lambda: {"fid": fidelity.fid(fr, fs)}, overall))
        with timer("kid"):
            row.update(_guard(lambda: dict(zip(("kid", "kid_std"), fidelity.kid(
                fr, fs, kid_subsets, kid_subset_size, seed))), overall))
        with timer("prdc"):
            row.update(_guard(lambda: fidelity.prdc(fr, fs, prdc_k), overall))
        if frd_features is not None:
            with timer("frd"):
                row.update(_guard(lambda: frd_lib.frd_from_features(
                    frd_features[0][ri], frd_features[1][si], method=frd_method,
                    backend=frd_backend).to_json(), overall))
        with timer("ms_ssim"):
            d_s = diversity.mean_pairwise_ms_ssim(synth_set.images[si], diversity_pairs, seed)
            d_r = diversity.mean_pairwise_ms_ssim(real_set.images[ri], diversity_pairs, seed)
        row.update({"ms_ssim_synthetic": d_s["ms_ssim"], "ms_ssim_real": d_r["ms_ssim"],
                    "ms_ssim_levels": d_s["levels"]})
        if size >= artefacts.WINDOW + 2:  # one tile and the filter's 1-px margin on each side
            with timer("period2"):
                row.update({"period2_synthetic": artefacts.period2_amplitude(synth_set.images[si]),
                            "period2_real": artefacts.period2_amplitude(real_set.images[ri])})
        results.setdefault(scope, {}).update(row)

    signal = None
    if classifier is not None:
        with timer("class_signal"):
            signal = _class_signals(classifier, classifier_name, real_set, synth_set, resolve_device(device), notes)

    memo, memo_raw = None, None
    if train_set is not None:
        with timer("memorisation"):
            memo_raw = mem_lib.memorisation(synth_set.images, train_set.images, train_set.patients,
                                            feats["synthetic"], feats["train"], threshold=threshold)
            memo = mem_lib.summarise(memo_raw, train_set.sources, train_set.patients, synth_set.sources)
            labels = np.array(synth_set.labels)
            memo["per_class"] = {c: {"n": int((labels == c).sum()),
                                     "n_flagged": int(memo_raw["flagged"][labels == c].sum())}
                                 for c in synth_set.classes()}
        for scope, (_, si) in scopes.items():
            results[scope]["memorised_fraction"] = float(memo_raw["flagged"][si].mean())

    config = {"feature_net": net.name, "size": size, "channels": channels, "frd_method": frd_method if compute_frd else None,
              "frd_backend": frd_backend if compute_frd else None,
              "kid_subsets": kid_subsets, "kid_subset_size": kid_subset_size, "prdc_k": prdc_k,
              "frd_max_images": frd_max_images, "memorisation_threshold": threshold,
              "diversity_pairs": diversity_pairs}
    data_hash = hash_strings([s.role + ":" + src for s in sets for src in s.sources])
    metrics = {
        "feature_net": net.name,
        "size": size,
        "channels": channels,
        "notes": notes,
        "counts": {s.role: {"n": len(s), "classes": {c: s.labels.count(c) for c in s.classes()}} for s in sets},
        "results": results,
        "memorisation": memo,
        "class_signal": signal,
        "seconds": {k: round(v, 3) for k, v in timer.seconds.items()},
        "manifest": make_manifest("evaluation", config, seed=seed, data_hash=data_hash,
                                  sources={s.role: (s.dataset.root if s.dataset is not None else "<tensor>")
                                           for s in sets}),
    }
    if out is not None:
        write_outputs(Path(out), metrics, sets, memo_raw)
    return metrics


def _class_signals(model, name: str, real: ImageSet, synthetic: ImageSet, device, notes: list[str]) -> dict:
    """The synthetic set's class signal, and the real set's as its scale when the real set has two classes."""
    from oncosynth.metrics.class_signal import class_signal

    result = {"classifier": name,
              "synthetic": class_signal(model, synthetic.images, synthetic.labels, device, "synthetic")}
    if len(real.classes()) >= 2 and all(real.labels):
        result["real"] = class_signal(model, real.images, real.labels, device, "real")
    else:
        notes.append("class signal: the real set is not labelled with two classes, so it has no real reference")
    return result


def _guard(compute, overall: bool) -> dict:
    """Overall metrics must succeed (errors name the fix); per class a too-small class is skipped."""
    try:
        return compute()
    except DataError as exc:
        if overall:
            raise
        return {"skipped": exc.problem}


def _frd_features(real: ImageSet, synth: ImageSet, method: str, workers: int | None, progress: bool,
                  results: dict, max_images: int | None, seed: int, notes: list[str], backend: str,
                  device: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Radiomics features for both sets (written as 8-bit PNGs at the common size).

    Rows of images left out by ``max_images`` are NaN, which the FRD statistics drop.
    """
    import tempfile

    rng = np.random.default_rng(seed)
    picks = []
    for s in (real, synth):
        n = len(s)
        keep = np.arange(n) if not max_images or n <= max_images else np.sort(rng.choice(n, max_images, replace=False))
        if len(keep) < n:
            notes.append(f"FRD computed on a random subset of {len(keep)} of {n} {s.role} images")
        picks.append(keep)
    with tempfile.TemporaryDirectory(prefix="oncosynth-frd-") as tmp:
        folders = []
        for s, keep in zip((real, synth), picks):
            folder = Path(tmp) / s.role
            frd_lib.write_png_folder(s.images[torch.as_tensor(keep)], folder)
            folders.append(folder)
        if method == "package":
            # the package computes one overall value; per class needs the fast path's features
            results["overall"] = frd_lib.frd_package(folders[0], folders[1], workers=workers or 1).to_json()
            return None
        features = []
        for s, keep, folder in zip((real, synth), picks, folders):
            extracted = frd_lib.radiomics_features(frd_lib.image_files(folder), workers or 1, progress,
                                                   backend=backend, device=device)
            full = np.full((len(s), extracted.shape[1]), np.nan)
            full[keep] = extracted
            features.append(full)
        return features[0], features[1]


# ------------------------------------------------------------------------ outputs
def write_outputs(out: Path, metrics: dict, sets: list[ImageSet], memo_raw: dict | None) -> None:
    from oncosynth.io import write_json, write_text

    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "metrics.json", metrics)
    if memo_raw is not None:
        synth, train = sets[1], sets[2]
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        header = ["synthetic", "class", "flagged"]
        for r in memo_raw["spaces"]:
            header += [f"{r.name}_ratio", f"{r.name}_distance", f"{r.name}_nearest_train", f"{r.name}_nearest_patient"]
        writer.writerow(header)
        for j in range(len(synth)):
            row = [synth.sources[j], synth.labels[j], int(memo_raw["flagged"][j])]
            for r in memo_raw["spaces"]:
                t = int(r.index[j])
                row += [f"{r.ratio[j]:.4f}", f"{r.distance[j]:.4f}", train.sources[t], train.patients[t]]
            writer.writerow(row)
        write_text(out / "memorisation.csv", buffer.getvalue())
    from oncosynth.metrics.page import render_evaluation

    write_text(out / "evaluation.html", render_evaluation(metrics, sets, memo_raw))
