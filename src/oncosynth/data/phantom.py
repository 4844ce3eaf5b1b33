"""A procedural mammography-mass phantom: labelled, patient-grouped, reproducible.

It stands in for real mass patches (CBIS-DDSM style) wherever no real data is at
hand: the demo, tests of other modules, quick experiments. Each image is a sum
of grey-level layers, blurred a little (the imaging chain) and clipped to [0, 1]:

    image = blur(tissue + fibres + mass + spicules + calcifications) + noise

- The tissue background is Gaussian noise with a power-law spectrum
  P(f) ~ 1/f^beta, beta 3.0-3.5, the measured statistics of mammographic
  anatomical noise (Burgess et al. 2001; the real CBIS-DDSM patches here fit
  about 3.4), made anisotropic and overlaid with thin curved fibres so that it
  shows the oriented fibro-glandular strands of real patches. Breast density
  sets the mean level and how strongly the texture masks a mass.
- Benign masses are circumscribed: round or oval, smooth well-defined margins.
- Malignant masses are irregular: ill-defined lobulated margins with thin
  spicules radiating outward, sometimes a cluster of microcalcifications.

Class separation is not hard-coded: every lesion draws a latent
``irregularity`` in [0, 1] from a class-dependent distribution, and margin
sharpness, boundary roughness and spiculation all follow from it. The
``difficulty`` preset sets how much the two classes' irregularity and size
distributions overlap, the lesion contrast and the noise level.

Patients have 1-3 images (same lesion and similar tissue, different views) and
the train/val/test split is assigned per patient, stratified by class.
Everything is a pure function of the config: the same seed gives byte-identical
files.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from oncosynth.data.phantom_shapes import (breast_edge, calcifications, gaussian_blur, mass, power_law_noise,
                                             spicules, strands, tissue_background)
from oncosynth.errors import ConfigError
from oncosynth.io import check_output_folder

SPLIT_NAMES = ("train", "val", "test")
PARTIAL_MARKER = "phantom-partial.json"
# Unsharpness of the imaging chain in pixels: real CBIS-DDSM patches carry about half the
# pixel-to-pixel variation that the unblurred phantom has, at 64 and at 128 px alike.
SYSTEM_BLUR = 0.7


# ------------------------------------------------------------------ config ----
@dataclass(frozen=True)
class Difficulty:
    """How far apart the classes are. ``contrast`` is the mass peak in grey levels
    (the tissue texture has std 0.04-0.075 depending on density, so dense tissue
    masks a mass more); sizes are radii as a fraction of the image side.

    Calibrated with a small CNN trained on the train split of n=400, size 64
    (bench/RESULTS.md (phantom section)): test AUROC about 0.98 easy, 0.85 medium, 0.7 hard."""

    contrast: float            # mean mass peak amplitude
    irregularity_gap: float    # distance between the class means of the latent irregularity
    irregularity_spread: float # per-class std of the irregularity
    benign_radius: float       # mean radius, benign
    malignant_radius: float    # mean radius, malignant
    radius_spread: float       # per-class std of the radius
    noise: float               # std of the white (quantum) noise, display units
    calcification_prob: float  # chance a malignant lesion carries a microcalcification cluster


DIFFICULTIES: dict[str, Difficulty] = {
    "easy": Difficulty(contrast=0.27, irregularity_gap=0.80, irregularity_spread=0.10,
                       benign_radius=0.17, malignant_radius=0.27, radius_spread=0.04,
                       noise=0.003, calcification_prob=0.4),
    "medium": Difficulty(contrast=0.22, irregularity_gap=0.66, irregularity_spread=0.14,
                         benign_radius=0.20, malignant_radius=0.25, radius_spread=0.045,
                         noise=0.005, calcification_prob=0.25),
    "hard": Difficulty(contrast=0.17, irregularity_gap=0.45, irregularity_spread=0.17,
                       benign_radius=0.21, malignant_radius=0.24, radius_spread=0.05,
                       noise=0.008, calcification_prob=0.15),
}


@dataclass(frozen=True)
class PhantomConfig:
    n: int = 400                          # number of images (not patients)
    malignant_fraction: float = 0.5       # share of images with a malignant mass
    healthy_fraction: float = 0.0         # share of lesion-free images (class "healthy")
    size: int = 64                        # image side in pixels
    difficulty: str = "medium"            # easy | medium | hard
    seed: int = 0
    calcifications: bool = True           # allow microcalcification clusters on malignant masses
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)  # train, val, test share (patient level)
    images_per_patient: tuple[int, int] = (1, 3)           # inclusive range

    def __post_init__(self) -> None:
        # Tuples may arrive as lists (from JSON); store them as tuples so that equality works.
        object.__setattr__(self, "split", tuple(float(s) for s in self.split))
        object.__setattr__(self, "images_per_patient", tuple(int(k) for k in self.images_per_patient))
        if not isinstance(self.n, (int, np.integer)) or self.n < 1:
            raise ConfigError(f"phantom n must be a positive integer, got {self.n!r}")
        if not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ConfigError(f"phantom seed must be a non-negative integer, got {self.seed!r}")
        for name in ("malignant_fraction", "healthy_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"phantom {name} must lie in [0, 1], got {value}")
        if self.malignant_fraction + self.healthy_fraction > 1.0 + 1e-9:
            raise ConfigError(f"phantom malignant_fraction + healthy_fraction must be at most 1, got "
                              f"{self.malignant_fraction} + {self.healthy_fraction}")
        if not 32 <= self.size <= 1024:
            raise ConfigError(f"phantom size must be between 32 and 1024 pixels, got {self.size}")
        if self.difficulty not in DIFFICULTIES:
            raise ConfigError(f"unknown phantom difficulty '{self.difficulty}'; choose one of {sorted(DIFFICULTIES)}")
        if len(self.split) != 3 or min(self.split) < 0 or self.split[0] <= 0 or abs(sum(self.split) - 1) > 1e-6:
            raise ConfigError(f"phantom split must be three non-negative shares (train > 0) summing to 1, "
                              f"got {self.split}")
        lo_hi = self.images_per_patient
        if len(lo_hi) != 2 or not 1 <= lo_hi[0] <= lo_hi[1]:
            raise ConfigError(f"phantom images_per_patient must be a range (lo, hi) with 1 <= lo <= hi, got {lo_hi}")

    @property
    def classes(self) -> list[str]:
        return ["benign", "malignant"] + (["healthy"] if self.healthy_fraction > 0 else [])

    def to_dict(self) -> dict:
        """JSON-shaped (tuples as lists) so it compares equal to a manifest read back."""
        return json.loads(json.dumps(asdict(self)))

# ----------------------------------------------------------------- patients ----
def _patient_traits(rng: np.random.Generator, label: str, config: PhantomConfig) -> dict:
    """What stays the same across one patient's images: tissue and lesion."""
    level = DIFFICULTIES[config.difficulty]
    traits = {
        "density": rng.beta(2.0, 2.0),
        "beta": rng.uniform(3.0, 3.5),
        "orientation": rng.uniform(0, np.pi),
        "anisotropy": rng.uniform(0.8, 2.0),
        "strands": rng.uniform(4, 14),
        "edge": rng.random() < 0.08,
        "edge_angle": rng.uniform(0, 2 * np.pi),
        "edge_offset": rng.uniform(0.25, 0.5),
    }
    if label == "healthy":
        return traits
    sign = 1.0 if label == "malignant" else -1.0
    irregularity = np.clip(rng.normal(0.5 + sign * level.irregularity_gap / 2, level.irregularity_spread), 0, 1)
    mean_radius = level.malignant_radius if label == "malignant" else level.benign_radius
    radius = np.clip(rng.normal(mean_radius, level.radius_spread), 0.08, 0.4)
    n_spicules = int(round(irregularity**2 * rng.uniform(6, 16))) if irregularity > 0.35 else 0
    traits.update(
        irregularity=irregularity,
        radius=radius,
        elongation=rng.uniform(0.0, 0.5),
        harmonics=np.stack([rng.uniform(0, 0.09, 8) / np.arange(1, 9) ** 0.6,
                            rng.uniform(0, 2 * np.pi, 8)], axis=1),
        contrast=level.contrast * rng.uniform(0.7, 1.3),
        spicule_angles=rng.uniform(0, 2 * np.pi, n_spicules),
        spicule_lengths=rng.uniform(0.3, 2.0, n_spicules),
        spicule_brightness=rng.uniform(0.3, 1.0, n_spicules),
        calcified=(label == "malignant" and config.calcifications and rng.random() < level.calcification_prob),
        calc_count=int(rng.integers(3, 9)),
    )
    return traits


def render_view(rng: np.random.Generator, traits: dict, size: int, noise: float) -> np.ndarray:
    """One image (size×size float in [0, 1]) of a patient: a fresh view of the same tissue and lesion."""
    view_turn = rng.normal(0, 0.35)  # another projection sees the anatomy turned a little
    image = tissue_background(rng, size, traits["density"], traits["beta"],
                              traits["orientation"] + view_turn, traits["anisotropy"])
    n_strands = int(rng.poisson(traits["strands"]))
    image = image + 0.045 * strands(rng, size, traits["orientation"] + view_turn, n_strands, max(0.6, size / 90))
    if "irregularity" in traits:
        centre = tuple(rng.normal(0, size * 0.07, 2))
        radius = traits["radius"] * size * rng.uniform(0.9, 1.1)
        angle = rng.uniform(0, np.pi)
        u = traits["irregularity"]
        body = mass(size, centre, radius, traits["elongation"] * rng.uniform(0.6, 1.2), angle, u,
                    traits["harmonics"], power_law_noise(rng, size, 3.0))
        rays = spicules(size, centre, radius, traits["spicule_angles"] + view_turn,
                        traits["spicule_lengths"] * radius * rng.uniform(0.8, 1.2, len(traits["spicule_angles"])),
                        traits["spicule_brightness"], width=max(0.6, size / 80))
        image = image + traits["contrast"] * (body + (0.15 + 0.25 * u) * rays)
        if traits["calcified"]:
            image = image + 0.4 * calcifications(rng, size, centre, radius * 0.4, traits["calc_count"])
    if traits["edge"]:
        inside = breast_edge(size, traits["edge_angle"] + view_turn, traits["edge_offset"], 0.06)
        image = image * (0.15 + 0.85 * inside)
    image = gaussian_blur(image, SYSTEM_BLUR) + rng.normal(0, noise, (size, size))
    return np.clip(image, 0.0, 1.0)


def _plan(config: PhantomConfig) -> list[dict]:
    """Patients with class, image count and split; exact image counts per class.

    Image counts per class are round(n * fraction) (benign takes the rest); a
    class's last patient may get fewer images than the range asks, to hit the count.
    Splits are assigned per patient within each class, greedily to the split
    furthest below its share, so they are stratified and patient-level.
    """
    rng = np.random.default_rng([config.seed, 1])
    n_malignant = int(round(config.n * config.malignant_fraction))
    n_healthy = int(round(config.n * config.healthy_fraction))
    counts = {"benign": config.n - n_malignant - n_healthy, "malignant": n_malignant, "healthy": n_healthy}
    lo, hi = config.images_per_patient
    patients = []
    for label in ("benign", "malignant", "healthy"):
        left, group = counts[label], []
        while left > 0:
            k = min(left, int(rng.integers(lo, hi + 1)))
            group.append({"label": label, "images": k})
            left -= k
        target = np.asarray(config.split) * counts[label]
        have = np.zeros(3)
        for patient in rng.permutation(len(group)):
            choice = int(np.argmax(target - have))
            group[patient]["split"] = SPLIT_NAMES[choice]
            have[choice] += group[patient]["images"]
        patients.extend(group)
    # Number patients in a shuffled order so that the id says nothing about the class.
    order = rng.permutation(len(patients))
    width = max(4, len(str(len(patients))))
    planned = [dict(patients[i], patient=f"p{number:0{width}d}") for number, i in enumerate(order)]
    return planned


def _generate(config: PhantomConfig, progress: bool = False):
    """Yield (image HxW uint8, label, patient, split, view index), patient by patient."""
    level = DIFFICULTIES[config.difficulty]
    plan = _plan(config)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=config.n, desc="phantom", unit="img", disable=config.n < 500)
    for number, patient in enumerate(plan):
        # One stream per patient: a patient's images do not depend on any other patient's.
        rng = np.random.default_rng([config.seed, 2, number])
        traits = _patient_traits(rng, patient["label"], config)
        for k in range(patient["images"]):
            image = render_view(rng, traits, config.size, level.noise)
            yield (np.round(image * 255).astype(np.uint8), patient["label"], patient["patient"],
                   patient["split"], k)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()


# ------------------------------------------------------------------ public ----
def make_phantom(config: PhantomConfig) -> tuple[np.ndarray, list[str], list[str], list[str]]:
    """Generate in memory: (images N×1×S×S float32 in [0, 1], labels, patients, splits).

    Pixels are quantised to 8 bits, exactly as ``write_phantom`` stores them.
    """
    images, labels, patients, splits = [], [], [], []
    for pixels, label, patient, split, _ in _generate(config):
        images.append(pixels)
        labels.append(label)
        patients.append(patient)
        splits.append(split)
    array = np.stack(images)[:, None].astype(np.float32) / 255.0
    return array, labels, patients, splits


def write_phantom(out: str | Path, config: PhantomConfig) -> Path:
    """Write the phantom as ``out/{train,val,test}/<class>/p<patient>_i<k>.png``.

    Also writes ``out/patients.csv`` (file,patient) and ``out/manifest.json``.
    The set is built in a hidden sibling folder and renamed into place, so
    ``out`` is either complete or absent. An existing phantom with the same
    config is returned as it is; any other non-empty folder is refused.
    """
    from oncosynth.runtime.manifest import hash_strings, make_manifest

    out = Path(out)
    if out.is_dir() and any(out.iterdir()):
        if _same_phantom(out, config):
            return out
        raise ConfigError(f"{out} exists and is not an empty folder or a phantom with this exact config; "
                          f"choose another output folder or remove it")
    check_output_folder(out, "the output folder")  # a file, or a path below one: before any work
    partial = out.parent / f".{out.name}.partial"
    if partial.exists():
        if not (partial / PARTIAL_MARKER).is_file():
            raise ConfigError(f"{partial} exists and was not left by an interrupted phantom run; remove it")
        shutil.rmtree(partial)  # our own leftover from an interrupted run
    partial.mkdir(parents=True)
    _write_json(partial / PARTIAL_MARKER, config.to_dict())

    from PIL import Image

    rows, digests, counts = [], [], {}
    for pixels, label, patient, split, k in _generate(config, progress=True):
        relative = f"{split}/{label}/{patient}_i{k}.png"
        # Plain writes: the whole folder is the atomic unit (renamed into place at the end),
        # and skipping a per-file fsync makes writing ~20x faster.
        (partial / split / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(partial / relative, format="PNG")
        rows.append((relative, patient))
        digests.append(f"{relative},{patient},{hashlib.sha256(pixels.tobytes()).hexdigest()}")
        counts.setdefault(split, {}).setdefault(label, 0)
        counts[split][label] += 1

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["file", "patient"])
    writer.writerows(rows)
    (partial / "patients.csv").write_text(buffer.getvalue())
    manifest = make_manifest("phantom", config.to_dict(), seed=config.seed,
                             data_hash=hash_strings(digests),
                             classes=config.classes, counts=counts, images=len(rows),
                             patients=len({p for _, p in rows}))
    _write_json(partial / "manifest.json", manifest)
    (partial / PARTIAL_MARKER).unlink()
    if out.exists():
        out.rmdir()  # empty (checked above)
    os.replace(partial, out)
    return out


def _same_phantom(folder: Path, config: PhantomConfig) -> bool:
    """True when ``folder`` holds a complete phantom written with exactly ``config``."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    if manifest.get("kind") != "phantom" or manifest.get("config") != config.to_dict():
        return False
    try:
        with open(folder / "patients.csv", newline="") as handle:
            files = [row["file"] for row in csv.DictReader(handle)]
    except (OSError, KeyError, csv.Error):
        return False
    return len(files) == config.n and all((folder / f).is_file() for f in files)


def _write_json(path: Path, obj: dict) -> None:
    from oncosynth.io import write_json

    write_json(path, obj)
