"""Loaders: turn a path into a ``Dataset`` of records, one function per layout.

Layouts (``detect_format`` picks one from the path; ``format=`` overrides):

=============  ==================================================================
cbis-ddsm      ``{train,val,test}/is_benign_{true,false}/patient<ds>__<PID>_image…_is_benign_<0|1>.png``
folders        ``[split/]class/*.png|jpg|tif|bmp``; patient ids from a CSV
               (``file,patient``; ``patients.csv`` in the root is used when present),
               else each file is its own patient
named-files    a flat folder whose file names end in ``_<class>`` (``--label-from-name``)
medmnist       a MedMNIST ``.npz`` (``{train,val,test}_{images,labels}``)
pcam-h5        the official PatchCamelyon HDF5 files ``camelyonpatch_level_2_split_*_{x,y}.h5``
pcam-folders   PCam as ``split/{0,1}/*.jpg`` (0 = normal, 1 = metastatic)
dicom          ``[split/]class/*.dcm``; patient id from the PatientID tag
=============  ==================================================================

Records without a split get split ``"all"``; ``make_splits`` assigns
patient-level splits. No pixels are decoded here except by ``skip_bad``.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np

from oncosynth.data.decode import DICOM_SUFFIXES, IMAGE_SUFFIXES, decode_record, missing_path_problem
from oncosynth.data.records import Dataset, Record, class_order
from oncosynth.errors import DataError, OncosynthError

UNSPLIT = "all"
_SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                  "validation": "val", "test": "test", "testing": "test"}
_CBIS_CLASSES = {"is_benign_true": "benign", "is_benign_false": "malignant"}
_CBIS_PATIENT = re.compile(r"__(?P<patient>.+?)_image")
_CBIS_NAME_LABEL = re.compile(r"_is_benign_(?P<flag>[01])$")
_PCAM_CLASSES = {"0": "normal", "1": "metastatic"}
_KNOWN_CLASS_TOKENS = {"benign", "malignant", "healthy", "normal"}
# MedMNIST label names for the sets we know; others get "0", "1", ...
_MEDMNIST_CLASSES = {"breastmnist": {0: "malignant", 1: "benign"}}
_PCAM_H5 = re.compile(r"camelyonpatch_level_2_split_(?P<split>train|valid|test)_x\.h5$")

FORMATS = ("cbis-ddsm", "folders", "named-files", "medmnist", "pcam-h5", "pcam-folders", "dicom")


# ------------------------------------------------------------ detection ----
def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _files(folder: Path, suffixes: set[str]) -> list[Path]:
    # a dangling symlink is kept: decoding names it as a bad file instead of it vanishing silently
    return sorted(p for p in folder.iterdir() if (p.is_file() or (p.is_symlink() and not p.exists()))
                  and p.suffix.lower() in suffixes and not p.name.startswith("."))


def _split_layout(root: Path) -> list[tuple[str, Path]]:
    """(split, folder) pairs: the split folders if present, else the root as unsplit."""
    children = _subdirs(root)
    if children and all(c.name.lower() in _SPLIT_ALIASES for c in children):
        return [(_SPLIT_ALIASES[c.name.lower()], c) for c in children]
    return [(UNSPLIT, root)]


def detect_format(path: str | Path, label_from_name: bool = False) -> str:
    path = Path(path)
    if not path.exists():
        raise DataError(path, missing_path_problem(path))
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".npz":
            return "medmnist"
        if suffix in (".h5", ".hdf5"):
            return "pcam-h5"
        raise DataError(path, f"unknown data layout: a single '{suffix}' file (expected a folder, .npz or .h5)")
    if any(_PCAM_H5.search(p.name) for p in path.iterdir()):
        return "pcam-h5"
    layout = _split_layout(path)
    class_dirs = [c for _, folder in layout for c in _subdirs(folder)]
    if not class_dirs:
        if _files(path, IMAGE_SUFFIXES):
            if label_from_name or _labels_in_names(path):
                return "named-files"
            raise DataError(path, "unknown data layout: a flat folder of images without class folders; "
                                  "pass --label-from-name if file names end in _<class>")
        raise DataError(path, "unknown data layout: no class folders and no images found")
    names = {c.name for c in class_dirs}
    if names <= set(_CBIS_CLASSES):
        return "cbis-ddsm"
    if any(_files(c, DICOM_SUFFIXES) for c in class_dirs):
        return "dicom"
    if names <= set(_PCAM_CLASSES) and re.search(r"pcam|camelyon", str(path.resolve()), re.I):
        return "pcam-folders"
    return "folders"


def _labels_in_names(folder: Path) -> bool:
    files = _files(folder, IMAGE_SUFFIXES)
    return bool(files) and all(f.stem.rsplit("_", 1)[-1].lower() in _KNOWN_CLASS_TOKENS for f in files)


# -------------------------------------------------------------- loaders ----
def _class_folder_records(root: Path, fmt: str, suffixes: set[str],
                          class_name: Callable[[str], str],
                          patient_of: Callable[[Path], str],
                          skipped: list[dict] | None = None) -> list[Record]:
    """With ``skipped`` (a list), a file whose listing fails (e.g. its DICOM header) is recorded there, not raised."""
    records: list[Record] = []
    for split, split_dir in _split_layout(root):
        class_dirs = _subdirs(split_dir)
        if not class_dirs:
            raise DataError(split_dir, "no class folders in this split")
        for class_dir in class_dirs:
            files = _files(class_dir, suffixes)
            if not files:
                raise DataError(class_dir, f"empty class folder (no {'/'.join(sorted(suffixes))} files)")
            label = class_name(class_dir.name)
            for file in files:
                try:
                    records.append(Record(str(file), label, patient_of(file), split, fmt))
                except DataError as exc:
                    if skipped is None:
                        raise
                    skipped.append({"file": str(file), "problem": exc.problem})
    return records


def _load_cbis(root: Path, skipped: list[dict] | None) -> list[Record]:
    def patient_of(file: Path) -> str:
        match = _CBIS_PATIENT.search(file.stem)
        if not match:
            raise DataError(file, "CBIS-DDSM file name without a patient id ('__<PID>_image')")
        return match.group("patient")

    records = _class_folder_records(root, "cbis-ddsm", {".png"}, lambda n: _CBIS_CLASSES[n], patient_of, skipped)
    for record in records:  # the name repeats the label: a disagreement is a data error
        match = _CBIS_NAME_LABEL.search(Path(record.source).stem)
        if match and (match.group("flag") == "1") != (record.label == "benign"):
            raise DataError(record.source, f"file name says is_benign_{match.group('flag')} "
                                           f"but the folder says {record.label}")
    return records


def _read_patients_csv(csv_path: Path, root: Path) -> dict[str, str]:
    """Map file (relative to root, or a bare name) -> patient id."""
    try:
        with open(csv_path, newline="") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or not {"file", "patient"} <= set(reader.fieldnames):
                raise DataError(csv_path, "patients CSV needs the columns 'file' and 'patient'")
            return {row["file"]: row["patient"] for row in reader}
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(csv_path, f"cannot read patients CSV ({exc})") from None


def _csv_patient_lookup(root: Path, patients_csv: Path | None) -> Callable[[Path], str]:
    csv_path = patients_csv or (root / "patients.csv" if (root / "patients.csv").is_file() else None)
    if csv_path is None:
        return lambda file: file.stem  # no ids known: each image is its own patient
    mapping = _read_patients_csv(Path(csv_path), root)

    def patient_of(file: Path) -> str:
        relative = file.relative_to(root).as_posix()
        for key in (relative, file.name):
            if key in mapping:
                return mapping[key]
        raise DataError(file, f"not listed in patients CSV {csv_path}")

    return patient_of


def _load_folders(root: Path, patients_csv: Path | None, skipped: list[dict] | None) -> list[Record]:
    return _class_folder_records(root, "folders", IMAGE_SUFFIXES, lambda n: n,
                                 _csv_patient_lookup(root, patients_csv), skipped)


def _load_pcam_folders(root: Path, skipped: list[dict] | None) -> list[Record]:
    # PCam publishes no patient ids; its official splits are already slide-disjoint.
    def class_name(name: str) -> str:
        if name not in _PCAM_CLASSES:
            raise DataError(root / name, "PCam class folders must be named 0 or 1")
        return _PCAM_CLASSES[name]

    return _class_folder_records(root, "pcam-folders", IMAGE_SUFFIXES, class_name, lambda f: f.stem, skipped)


def _load_named_files(root: Path, patients_csv: Path | None) -> list[Record]:
    patient_of = _csv_patient_lookup(root, patients_csv)
    records = []
    for file in _files(root, IMAGE_SUFFIXES):
        stem_parts = file.stem.rsplit("_", 1)
        if len(stem_parts) != 2 or not stem_parts[1]:
            raise DataError(file, "cannot parse a class from the file name (expected ..._<class>.png)")
        records.append(Record(str(file), stem_parts[1].lower(), patient_of(file), UNSPLIT, "named-files"))
    if not records:
        raise DataError(root, "no images found")
    return records


def _load_dicom(root: Path, patients_csv: Path | None, skipped: list[dict] | None) -> list[Record]:
    import pydicom
    from pydicom.errors import InvalidDicomError

    csv_lookup = _csv_patient_lookup(root, patients_csv) if patients_csv else None

    def patient_of(file: Path) -> str:
        if csv_lookup:
            return csv_lookup(file)
        try:
            header = pydicom.dcmread(str(file), stop_before_pixels=True)
        except (InvalidDicomError, OSError, EOFError, ValueError) as exc:
            raise DataError(file, f"unreadable DICOM header ({exc})") from None
        return str(header.get("PatientID", "") or file.stem)

    return _class_folder_records(root, "dicom", DICOM_SUFFIXES, lambda n: n, patient_of, skipped)


def _npy_header(archive, key: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of one member without reading its data (MedMNIST+ files are large)."""
    fmt = np.lib.format
    with archive.zip.open(f"{key}.npy") as member:
        version = fmt.read_magic(member)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"'{key}': unsupported .npy version {version}")
        reader = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, _, dtype = reader(member)
    return tuple(shape), dtype


def _npz_members(path: Path) -> tuple[dict[str, np.ndarray], dict[str, tuple[int, ...]]]:
    """Labels in full and image shapes from the headers only; object arrays are refused by name."""
    import zipfile

    labels, image_shapes = {}, {}
    try:
        with np.load(path, allow_pickle=False) as archive:
            for key in archive.files:
                if not key.endswith(("_labels", "_images")):
                    continue
                shape, dtype = _npy_header(archive, key)
                if dtype.hasobject:
                    raise DataError(path, f"'{key}' is an object array; only numeric arrays are read "
                                          "(pickled objects are never loaded)")
                if key.endswith("_labels"):
                    labels[key] = archive[key]
                else:
                    image_shapes[key] = tuple(shape)
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise DataError(path, f"unreadable .npz ({exc})") from None
    return labels, image_shapes


def _integer_labels(path: Path, key: str, labels: np.ndarray) -> np.ndarray:
    """Integer class indices; fractional or non-numeric labels are an error, not a silent cast."""
    if labels.dtype.kind in "iub":
        return labels.astype(np.int64)
    if labels.dtype.kind == "f" and np.all(np.isfinite(labels)) and np.all(labels == np.round(labels)):
        return labels.astype(np.int64)
    example = next((v for v in labels.tolist() if not (isinstance(v, float) and v.is_integer())), labels.flat[0])
    raise DataError(path, f"'{key}' has dtype {labels.dtype} with non-integer values (e.g. {example!r}); "
                          "labels must be integer class indices")


def _load_medmnist(path: Path) -> tuple[list[Record], list[str]]:
    arrays, image_shapes = _npz_members(path)
    if not image_shapes:
        raise DataError(path, "not a MedMNIST file: no '<split>_images' arrays")
    names = next((m for key, m in _MEDMNIST_CLASSES.items() if key in path.name.lower()), None)
    records = []
    for image_key in sorted(image_shapes):
        split = image_key[: -len("_images")]
        label_key = f"{split}_labels"
        if label_key not in arrays:
            raise DataError(path, f"'{image_key}' has no '{label_key}'")
        raw = arrays[label_key]
        n_images = image_shapes[image_key][0] if image_shapes[image_key] else 0
        if raw.ndim == 0 or len(raw) != n_images:
            raise DataError(path, f"'{label_key}' holds {raw.size if raw.ndim == 0 else len(raw)} labels "
                                  f"but '{image_key}' holds {n_images} images")
        labels = raw.reshape(len(raw), -1)
        if labels.shape[1] != 1:
            raise DataError(path, f"'{label_key}' has shape {raw.shape}; multi-label is not supported")
        for index, value in enumerate(_integer_labels(path, label_key, labels[:, 0]).tolist()):
            label = names.get(value, str(value)) if names else str(value)
            records.append(Record(str(path), label, f"{split}-{index}", _SPLIT_ALIASES.get(split, split),
                                  "medmnist", key=index, member=image_key))
    return records, class_order(r.label for r in records)


def _load_pcam_h5(path: Path) -> list[Record]:
    import h5py

    x_files = [path] if path.is_file() else sorted(p for p in path.iterdir() if _PCAM_H5.search(p.name))
    records = []
    for x_file in x_files:
        match = _PCAM_H5.search(x_file.name)
        if not match:
            raise DataError(x_file, "expected camelyonpatch_level_2_split_<split>_x.h5")
        y_file = x_file.with_name(x_file.name.replace("_x.h5", "_y.h5"))
        if not y_file.is_file():
            raise DataError(y_file, "missing label file beside the image file")
        try:
            with h5py.File(x_file, "r") as fx, h5py.File(y_file, "r") as fy:
                if "x" not in fx or "y" not in fy:
                    raise DataError(x_file, "PCam HDF5 files need datasets 'x' and 'y'")
                labels = np.asarray(fy["y"]).reshape(-1)
                if len(labels) != fx["x"].shape[0]:
                    raise DataError(y_file, f"{len(labels)} labels for {fx['x'].shape[0]} images")
        except OSError as exc:
            raise DataError(x_file, f"unreadable HDF5 ({exc})") from None
        split = _SPLIT_ALIASES[match.group("split")]
        records += [Record(str(x_file), _PCAM_CLASSES[str(int(v))], f"{split}-{i}", split, "pcam-h5",
                           key=i, member="x") for i, v in enumerate(labels.tolist())]
    return records


# ----------------------------------------------------------------- entry ----
def load_dataset(path: str | Path, format: str | None = None, label_from_name: bool = False,
                 patients_csv: str | Path | None = None, skip_bad: bool = False,
                 decode_all: bool = True) -> Dataset:
    """Read any supported layout into a ``Dataset``.

    With ``skip_bad`` files that fail while listing (a DICOM header) and, when
    ``decode_all``, images that fail to decode are left out and listed in
    ``dataset.skipped``; otherwise decoding errors surface when pixels are
    first read. ``decode_all=False`` is for callers that decode every image
    themselves (``data summary``).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(path, missing_path_problem(path))
    fmt = format or detect_format(path, label_from_name=label_from_name)
    if fmt not in FORMATS:
        raise DataError(path, f"unknown format '{fmt}'; choose one of {', '.join(FORMATS)}")
    csv_path = Path(patients_csv) if patients_csv else None
    if csv_path is not None and not csv_path.is_file():
        raise DataError(csv_path, "patients CSV not found")
    classes = None
    skipped: list[dict] | None = [] if skip_bad else None
    if fmt == "cbis-ddsm":
        records = _load_cbis(path, skipped)
    elif fmt == "folders":
        records = _load_folders(path, csv_path, skipped)
    elif fmt == "named-files":
        records = _load_named_files(path, csv_path)
    elif fmt == "pcam-folders":
        records = _load_pcam_folders(path, skipped)
    elif fmt == "dicom":
        records = _load_dicom(path, csv_path, skipped)
    elif fmt == "medmnist":
        records, classes = _load_medmnist(path)
    else:
        records = _load_pcam_h5(path)
    if not records:
        raise DataError(path, "every image is unreadable" if skipped else "no images found")
    dataset = Dataset(records, classes or class_order(r.label for r in records), str(path), fmt,
                      skipped=skipped or [])
    if skip_bad and decode_all:
        dataset = drop_unreadable(dataset)
    return dataset


def drop_unreadable(dataset: Dataset) -> Dataset:
    """Decode every image; leave out the ones that fail, listing why in ``skipped``."""
    good, skipped = [], list(dataset.skipped)
    for record in dataset.records:
        try:
            decode_record(record)
            good.append(record)
        except OncosynthError as exc:
            skipped.append({"file": record.uid, "problem": getattr(exc, "problem", str(exc))})
    if not good:
        raise DataError(dataset.root, "every image is unreadable")
    result = dataset.subset(good)
    result.skipped = skipped
    return result


def as_dataset(data: Any, format: str | None = None, label_from_name: bool = False) -> Dataset:
    """``data`` read with :func:`load_dataset` when it is a path; anything else (a Dataset) as it is.

    The one place where library entry points accept "a folder or a Dataset".
    """
    if isinstance(data, (str, Path)):
        return load_dataset(data, format=format, label_from_name=label_from_name)
    return data
