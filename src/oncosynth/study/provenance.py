"""What an arm's generator was trained on, and whether that is fair to the cell that uses it.

A synthetic arm is only a fair comparison when its generator saw no more real
data than the cell's classifier: at data fraction 0.1, images from a generator
trained on all patients carry information from the 90% the `real` arm never
sees. So every synthetic source gets a :class:`Provenance` per cell:

* ``in-study``: trained inside the study on exactly this cell's records;
* ``manifest``: a folder or pre-trained generator whose manifest names its
  training data (``training_data`` in ``manifest.json``, see
  :func:`read_training_data`), compared with the cell's records: the report
  flags "saw N patients outside this cell's 10%", and a generator that saw
  any validation or test image is refused outright (:class:`LeakError`);
* ``unknown``: no manifest, flagged "provenance unknown".

Images are matched by file name (what the real-data file names of CBIS-DDSM
and BCDR make unique) and patients by id; a manifest may also declare whole
splits of the study's own data set (``{"splits": ["train"]}``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from oncosynth.data.lineage import describe_records, image_name
from oncosynth.errors import ConfigError

__all__ = ["LeakError", "Provenance", "TrainingData", "cell_provenance", "check_backbone_held_out", "check_held_out",
           "describe_records",
           "image_name", "in_study_provenance", "parse_training_data", "read_training_data",
           "source_training_data"]

TRAINING_DATA_FILE = "training_data.json"


class LeakError(ConfigError):
    """A generator was trained on images the study holds out for validation or testing."""


@dataclass
class TrainingData:
    """The real data a generator was trained on, as far as its manifest says."""

    patients: set[str] | None = None
    images: set[str] | None = None  # file names
    splits: list[str] | None = None  # "every image of these splits of the study's data set"
    description: str = ""

    @property
    def empty(self) -> bool:
        return self.patients is None and self.images is None and self.splits is None


@dataclass
class Provenance:
    kind: str  # in-study | manifest | unknown
    n_images: int | None = None
    n_patients: int | None = None
    outside_cell: int = 0  # patients (or images) of the study's training split the cell lacks
    outside_unit: str = "patients"
    flag: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        if self.kind == "in-study":
            return f"trained in-study on {self.n_images} records ({self.n_patients} patients)"
        if self.kind == "manifest":
            size = f"{self.n_images} images" if self.n_images is not None else "declared splits"
            return f"manifest: trained on {size}" + (f" of {self.n_patients} patients" if self.n_patients else "")
        return "provenance unknown"


def parse_training_data(block: Any, where: str) -> TrainingData:
    if not isinstance(block, dict):
        raise ConfigError(f"{where}: 'training_data' must be a mapping, not {type(block).__name__}")
    unknown = sorted(set(block) - {"patients", "images", "splits", "description", "n_images", "n_patients",
                                   "dataset"})
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown} in 'training_data'")

    def names(key: str) -> set[str] | None:
        value = block.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: training_data.{key} must be a list of strings")
        return set(value)

    splits = names("splits")
    data = TrainingData(names("patients"), names("images"), sorted(splits) if splits else None,
                        str(block.get("description") or block.get("dataset") or ""))
    if data.empty:
        raise ConfigError(f"{where}: training_data names no patients, images or splits")
    return data


def read_training_data(manifest: dict[str, Any] | None, where: str) -> TrainingData | None:
    """``training_data`` from a manifest (top level, or the generator manifest a sample folder copies)."""
    if not manifest:
        return None
    for block in (manifest, manifest.get("generator_manifest") or {}):
        if "training_data" in block:
            return parse_training_data(block["training_data"], where)
    return None


def read_manifest_file(path: Path) -> dict[str, Any] | None:
    """A JSON manifest, or None when the file does not exist; bad JSON is an error naming the file."""
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not a valid JSON manifest ({exc})") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: a manifest must be a JSON object")
    return value


def source_training_data(folder: Path | None, manifest: Path | None,
                         generator_manifest: dict[str, Any] | None) -> TrainingData | None:
    """What a synthetic source was trained on: an explicit manifest file first, then the folder's
    ``manifest.json`` (or ``training_data.json``), then the loaded generator's manifest."""
    if manifest is not None:
        raw = read_manifest_file(manifest)
        if raw is None:
            raise ConfigError(f"{manifest}: manifest file not found")
        data = read_training_data(raw, str(manifest))
        if data is None:
            raise ConfigError(f"{manifest}: the manifest has no 'training_data' entry")
        return data
    if folder is not None:
        for name in ("manifest.json", TRAINING_DATA_FILE):
            raw = read_manifest_file(folder / name)
            data = read_training_data(raw, str(folder / name))
            if data is not None:
                return data
        return None
    return read_training_data(generator_manifest, "generator manifest")


# ----------------------------------------------------------- the check ----
def _resolve(data: TrainingData, study_records: list[Any]) -> tuple[set[str], set[str]]:
    """(patients, image names) the generator saw, resolving declared splits of the study's data."""
    patients = set(data.patients or ())
    images = set(data.images or ())
    if data.splits:
        chosen = [r for r in study_records if r.split in data.splits]
        patients |= {r.patient for r in chosen}
        images |= {image_name(r.uid) for r in chosen}
    return patients, images


def check_held_out(data: TrainingData | None, study_records: list[Any], held_out: dict[str, list[Any]],
                   what: str, same_patients: Iterable[str] = ("val", "test")) -> None:
    """Refuse a generator that saw any held-out image: by file name in every set, and by patient id in
    the sets named in ``same_patients`` (the study's own splits; an external set's ids may collide)."""
    if data is None:
        return
    patients, images = _resolve(data, study_records)
    for name, records in held_out.items():
        hits, unit = sorted(images & {image_name(r.uid) for r in records}), "image(s)"
        if not hits and name in same_patients:
            hits, unit = sorted(patients & {r.patient for r in records}), "patient(s)"
        if hits:
            raise LeakError(f"{what} was trained on {len(hits)} {unit} of the held-out "
                            f"'{name}' set (e.g. {hits[0]}); a generator or backbone that saw validation or "
                            "test data cannot be used in a study")


def check_backbone_held_out(run: Path, data_root: str, study_records: list[Any],
                            held_out: dict[str, list[Any]], same_patients: Iterable[str]) -> None:
    """Refuse a pretrained backbone (``oncosynth pretrain``) that learned from held-out images.

    Sources from the study's own data set are matched by patient id; every other source (an
    unlabelled folder, another data set such as an external test set) by image name, since patient
    ids of other sets may collide. Runs written before sources listed their image names fall back
    to matching patient ids with file stems, which holds for flat folders only.
    Weights that are not a pretrain run (timm, a plain file) carry no record and pass.
    """
    manifest = read_manifest_file(run / "manifest.json") if run.is_dir() else None
    if not manifest or manifest.get("kind") != "pretrained-backbone":
        return
    own, patients, names, stems = Path(data_root).resolve(), set(), set(), set()
    for source in manifest.get("sources", []):
        path = source.get("path", "")
        if bool(path) and Path(path).resolve() == own:
            patients.update(source.get("patients", []))
        elif "image_names" in source:
            names.update(source["image_names"])
        else:
            stems.update(source.get("patients", []))
    what = f"model.pretrained ({run})"
    seen = TrainingData(patients=patients or None, images=names or None)
    if not seen.empty:
        check_held_out(seen, study_records, held_out, what, same_patients)
    for name, records in held_out.items():  # runs written before sources listed image names
        hits = sorted(stems & {Path(image_name(r.uid)).stem for r in records})
        if hits:
            raise LeakError(f"{what} was trained on {len(hits)} image(s) named like the held-out '{name}' set "
                            f"(e.g. {hits[0]}); a backbone that saw validation or test data cannot be used "
                            "in a study")


def cell_provenance(data: TrainingData | None, cell_records: list[Any], train_records: list[Any],
                    study_records: list[Any], fraction: float) -> Provenance:
    """Compare what the generator saw with the real records of one cell (same fraction and seed)."""
    if data is None:
        return Provenance("unknown", flag="provenance unknown")
    patients, images = _resolve(data, study_records)
    share = f"{fraction:.0%}" if fraction < 1 else "training data"
    if data.patients or data.splits:
        outside = (patients & {r.patient for r in train_records}) - {r.patient for r in cell_records}
        unit = "patients"
    else:
        outside = (images & {image_name(r.uid) for r in train_records}) - {image_name(r.uid) for r in cell_records}
        unit = "images"
    flag = f"saw {len(outside)} {unit} outside this cell's {share}" if outside else ""
    return Provenance("manifest", n_images=len(images) if images else None,
                      n_patients=len(patients) if patients else None, outside_cell=len(outside),
                      outside_unit=unit, flag=flag, details={"description": data.description})


def in_study_provenance(cell_records: list[Any]) -> Provenance:
    return Provenance("in-study", n_images=len(cell_records), n_patients=len({r.patient for r in cell_records}))
