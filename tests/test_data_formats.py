"""Loaders and decoding on small files the tests make, including broken ones."""

from __future__ import annotations

import csv
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from oncosynth.data import detect_format, load_dataset, load_images
from oncosynth.data.decode import read_image
from oncosynth.errors import DataError


def write_png(path: Path, value: int = 100, size: int = 16, mode: str = "L") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    shape = (size, size) if mode == "L" else (size, size, 3)
    Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode).save(path)
    return path


def make_class_folders(root: Path, split_names=("train", "val", "test"), per_class=3) -> Path:
    for split in split_names:
        for cls in ("benign", "malignant"):
            for i in range(per_class):
                write_png(root / split / cls / f"{split}_{cls}_{i}.png", value=hash((split, cls, i)) % 1000)
    return root


def write_dicom(path: Path, pixels: np.ndarray, photometric: str = "MONOCHROME2", bits: int = 12,
                window: tuple[float, float] | None = None, patient: str = "PAT1", **tags) -> Path:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.PatientID = patient
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MG"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits, bits - 1
    ds.PixelRepresentation = 0
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    for name, value in tags.items():  # e.g. RescaleSlope, RescaleIntercept, VOILUTFunction
        setattr(ds, name, value)
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(str(path), enforce_file_format=True)
    return path


# --------------------------------------------------------------- folders ----
def test_class_folders_with_splits_and_patients_csv(tmp_path):
    root = make_class_folders(tmp_path / "data")
    with open(root / "patients.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "patient"])
        for f in sorted(root.rglob("*.png")):
            writer.writerow([f.relative_to(root).as_posix(), f.stem.rsplit("_", 1)[0]])
    ds = load_dataset(root)
    assert ds.format == "folders" and ds.classes == ["benign", "malignant"]
    assert ds.splits == ["train", "val", "test"]
    assert len(ds) == 18
    assert {r.patient for r in ds.split("train").records} == {"train_benign", "train_malignant"}
    images = load_images(ds.split("val"))
    assert images.shape == (6, 1, 16, 16) and images.dtype == torch.float32
    assert 0.0 <= images.min() and images.max() <= 1.0


def test_folders_without_csv_give_each_file_its_own_patient(tmp_path):
    root = make_class_folders(tmp_path / "d", split_names=("train",))
    ds = load_dataset(root)
    assert len({r.patient for r in ds}) == len(ds)


def test_named_files_take_label_from_name(tmp_path):
    for i, cls in enumerate(["benign", "malignant", "malignant"]):
        write_png(tmp_path / "syn" / f"batch_0_{i}_{cls}.png", value=i)
    ds = load_dataset(tmp_path / "syn")
    assert ds.format == "named-files" and ds.counts() == {"benign": 1, "malignant": 2}
    assert ds.splits == ["all"]


def test_flat_folder_without_labels_is_an_unknown_layout(tmp_path):
    write_png(tmp_path / "flat" / "a.png")
    with pytest.raises(DataError, match="unknown data layout"):
        load_dataset(tmp_path / "flat")
    with pytest.raises(DataError, match="cannot parse a class"):
        load_dataset(tmp_path / "flat", label_from_name=True)


def test_empty_class_folder_is_named(tmp_path):
    root = make_class_folders(tmp_path / "d", split_names=("train",))
    (root / "train" / "healthy").mkdir()
    with pytest.raises(DataError, match=r"healthy: empty class folder"):
        load_dataset(root)


def test_rgb_to_grey_and_resize(tmp_path):
    path = write_png(tmp_path / "c" / "x" / "a.png", mode="RGB", size=20)
    write_png(tmp_path / "c" / "y" / "b.png", size=12)
    ds = load_dataset(tmp_path / "c")
    with pytest.raises(DataError, match="mixed image sizes"):
        load_images(ds)
    out = load_images(ds, size=8, channels=1)
    assert out.shape == (2, 1, 8, 8)
    rgb = load_images(ds, size=8, channels=3)
    assert rgb.shape == (2, 3, 8, 8)
    assert read_image(path).shape == (20, 20, 3)


# ------------------------------------------------------------ bad files ----
def test_truncated_and_corrupt_files_name_the_file(tmp_path):
    good = write_png(tmp_path / "d" / "benign" / "good.png")
    trunc = tmp_path / "d" / "malignant" / "trunc.png"
    trunc.parent.mkdir(parents=True)
    trunc.write_bytes(good.read_bytes()[:60])
    junk = tmp_path / "d" / "malignant" / "junk.png"
    junk.write_bytes(b"this is not an image")
    ds = load_dataset(tmp_path / "d")
    with pytest.raises(DataError, match="junk.png: unreadable"):
        load_images(ds)
    kept = load_dataset(tmp_path / "d", skip_bad=True)
    assert [Path(r.source).name for r in kept] == ["good.png"]
    assert {Path(s["file"]).name for s in kept.skipped} == {"trunc.png", "junk.png"}


def test_unsupported_mode_is_an_error(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (8, 8)).save(path)
    with pytest.raises(DataError, match="unsupported image mode 'CMYK'"):
        read_image(path)


def test_sixteen_bit_png_is_scaled_by_bit_depth(tmp_path):
    path = tmp_path / "p16.png"
    Image.fromarray(np.full((4, 4), 4095, dtype=np.uint16)).save(path)
    assert read_image(path).max() == pytest.approx(1.0)
    Image.fromarray(np.full((4, 4), 32768, dtype=np.uint16)).save(path)
    assert read_image(path).max() == pytest.approx(32768 / 65535)


# --------------------------------------------------------------- medmnist ----
@pytest.mark.parametrize("label_shape", ["flat", "column"])
def test_medmnist_npz(tmp_path, label_shape):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 6), ("val", 2), ("test", 3)):
        arrays[f"{split}_images"] = rng.integers(0, 255, (n, 28, 28), dtype=np.uint8)
        labels = np.arange(n) % 2
        arrays[f"{split}_labels"] = labels[:, None] if label_shape == "column" else labels
    path = tmp_path / "breastmnist.npz"
    np.savez(path, **arrays)
    ds = load_dataset(path)
    assert ds.format == "medmnist" and ds.classes == ["benign", "malignant"]
    assert {s: len(ds.split(s)) for s in ds.splits} == {"train": 6, "val": 2, "test": 3}
    assert ds.split("train").records[0].label == "malignant"  # label 0 = malignant in BreastMNIST
    images = load_images(ds.split("test"))
    expected = torch.from_numpy(arrays["test_images"]).float()[:, None] / 255
    assert torch.allclose(images, expected)


def test_npz_without_images_is_an_error(tmp_path):
    path = tmp_path / "x.npz"
    np.savez(path, foo=np.zeros(3))
    with pytest.raises(DataError, match="not a MedMNIST file"):
        load_dataset(path)


# ------------------------------------------------------------- cbis-ddsm ----
def write_cbis(root: Path) -> Path:
    """The CBIS-DDSM patch layout of ../shared/data/cbis-ddsm-masses, in miniature (file names as released)."""
    files = {
        ("train", "is_benign_true"): ["patientcbis-ddsm__P_00004_image2953_mass3_is_benign_1.png",
                                      "patientcbis-ddsm__P_00004_image4105_mass4_is_benign_1.png"],
        ("train", "is_benign_false"): ["patientcbis-ddsm__P_01_x_image77_mass1_is_benign_0.png"],
        ("val", "is_benign_true"): ["patientcbis-ddsm__P_00100_image5_mass1_is_benign_1.png"],
        ("val", "is_benign_false"): ["patientcbis-ddsm__P_00101_image6_mass2_is_benign_0.png"],
        ("test", "is_benign_true"): ["patientcbis-ddsm__P_00200_image7_mass1_is_benign_1.png"],
        ("test", "is_benign_false"): ["patientcbis-ddsm__P_00201_image8_mass1_is_benign_0.png"],
    }
    for (split, folder), names in files.items():
        for k, name in enumerate(names):
            write_png(root / split / folder / name, value=len(name) + k)
    return root


def test_cbis_ddsm_layout_labels_splits_and_exact_patient_ids(tmp_path):
    root = write_cbis(tmp_path / "cbis")
    assert detect_format(root) == "cbis-ddsm"
    ds = load_dataset(root)
    assert ds.format == "cbis-ddsm" and ds.classes == ["benign", "malignant"]
    got = {(r.split, Path(r.source).name.split("_image")[0], r.label, r.patient) for r in ds}
    assert got == {  # the patient id is the text between '__' and '_image', whatever it holds
        ("train", "patientcbis-ddsm__P_00004", "benign", "P_00004"),
        ("train", "patientcbis-ddsm__P_01_x", "malignant", "P_01_x"),
        ("val", "patientcbis-ddsm__P_00100", "benign", "P_00100"),
        ("val", "patientcbis-ddsm__P_00101", "malignant", "P_00101"),
        ("test", "patientcbis-ddsm__P_00200", "benign", "P_00200"),
        ("test", "patientcbis-ddsm__P_00201", "malignant", "P_00201"),
    }
    assert len(ds) == 7 and sum(r.patient == "P_00004" for r in ds) == 2
    assert load_images(ds.split("train")).shape == (3, 1, 16, 16)


def test_cbis_ddsm_name_and_folder_disagree_or_id_missing(tmp_path):
    root = write_cbis(tmp_path / "cbis")
    wrong = root / "test" / "is_benign_true" / "patientcbis-ddsm__P_9_image1_mass1_is_benign_0.png"
    write_png(wrong)
    with pytest.raises(DataError, match="is_benign_0.*malignant|folder says benign"):
        load_dataset(root)
    wrong.unlink()
    nameless = write_png(root / "val" / "is_benign_false" / "mass_without_patient.png")
    with pytest.raises(DataError, match="mass_without_patient.png"):
        load_dataset(root)
    nameless.unlink()


# ------------------------------------------------------------------ pcam ----
def write_pcam_h5(folder: Path, split: str, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    with h5py.File(folder / f"camelyonpatch_level_2_split_{split}_x.h5", "w") as fx:
        fx.create_dataset("x", data=rng.integers(0, 255, (n, 96, 96, 3), dtype=np.uint8))
    with h5py.File(folder / f"camelyonpatch_level_2_split_{split}_y.h5", "w") as fy:
        fy.create_dataset("y", data=(np.arange(n) % 2).astype(np.uint8).reshape(n, 1, 1, 1))


def test_pcam_hdf5(tmp_path):
    write_pcam_h5(tmp_path / "pcam", "train", 4)
    write_pcam_h5(tmp_path / "pcam", "valid", 2, seed=1)
    assert detect_format(tmp_path / "pcam") == "pcam-h5"
    ds = load_dataset(tmp_path / "pcam")
    assert ds.classes == ["normal", "metastatic"]
    assert ds.split("val").counts() == {"normal": 1, "metastatic": 1}
    images = load_images(ds.split("train"))
    assert images.shape == (4, 3, 96, 96)
    with h5py.File(tmp_path / "pcam" / "camelyonpatch_level_2_split_train_x.h5") as fx:
        assert torch.allclose(images[2], torch.from_numpy(fx["x"][2]).permute(2, 0, 1).float() / 255)


def test_pcam_missing_label_file(tmp_path):
    write_pcam_h5(tmp_path / "pcam", "test", 2)
    (tmp_path / "pcam" / "camelyonpatch_level_2_split_test_y.h5").unlink()
    with pytest.raises(DataError, match="missing label file"):
        load_dataset(tmp_path / "pcam")


def test_pcam_folders_layout(tmp_path):
    root = tmp_path / "pcam-subset"  # detection needs 'pcam' or 'camelyon' in the path, as in ../shared/data
    for split, n in (("train", 3), ("valid", 2)):
        for cls in ("0", "1"):
            for i in range(n):
                write_png(root / split / cls / f"patch{split}{cls}{i}.jpg", value=i, size=12, mode="RGB")
    assert detect_format(root) == "pcam-folders"
    ds = load_dataset(root)
    assert ds.format == "pcam-folders" and sorted(ds.classes) == ["metastatic", "normal"]
    assert {(r.split, r.label) for r in ds} == {("train", "normal"), ("train", "metastatic"),
                                               ("val", "normal"), ("val", "metastatic")}
    assert {r.patient for r in ds if r.split == "val" and r.label == "metastatic"} == {"patchvalid10", "patchvalid11"}
    assert load_images(ds.split("train")).shape == (6, 3, 12, 12)


# ----------------------------------------------------------------- dicom ----
def test_dicom_windowing_inversion_and_patient_ids(tmp_path):
    ramp = np.linspace(0, 4095, 64).reshape(8, 8)
    write_dicom(tmp_path / "d" / "train" / "benign" / "a.dcm", ramp, patient="P1")
    write_dicom(tmp_path / "d" / "train" / "malignant" / "b.dcm", ramp, photometric="MONOCHROME1", patient="P2")
    write_dicom(tmp_path / "d" / "test" / "benign" / "c.dcm", ramp, window=(1000, 1000), patient="P3")
    ds = load_dataset(tmp_path / "d")
    assert ds.format == "dicom"
    assert {r.patient for r in ds} == {"P1", "P2", "P3"}
    plain = read_image(tmp_path / "d" / "train" / "benign" / "a.dcm")[..., 0]
    inverted = read_image(tmp_path / "d" / "train" / "malignant" / "b.dcm")[..., 0]
    windowed = read_image(tmp_path / "d" / "test" / "benign" / "c.dcm")[..., 0]
    assert plain.min() == 0 and plain.max() == pytest.approx(1.0)  # scaled by 2**12 - 1
    assert np.allclose(inverted, 1 - plain)
    # PS3.3 C.11.2.1.2.1 by hand: ((x - (c - 0.5)) / (w - 1) + 0.5), clipped
    expected = np.clip((ramp - 999.5) / 999 + 0.5, 0, 1)
    assert np.allclose(windowed, expected, atol=1e-6)


def _pydicom_reference(path: Path) -> np.ndarray:
    """pydicom's own modality + VOI transform, its output range mapped to [0, 1], MONOCHROME1 inverted."""
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    ds = pydicom.dcmread(str(path))
    out = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds, prefer_lut=False)
    # pydicom's output range: the unsigned stored range through the rescale (PS3.3 C.11.2.1.2)
    slope, intercept = float(ds.get("RescaleSlope", 1)), float(ds.get("RescaleIntercept", 0))
    y_min, y_max = intercept, (2**ds.BitsStored - 1) * slope + intercept
    out = (out - y_min) / (y_max - y_min)
    return 1 - out if ds.PhotometricInterpretation == "MONOCHROME1" else out


@pytest.mark.parametrize("window, tags, photometric", [
    ((40, 21), {}, "MONOCHROME2"),                                                    # narrow: the old formula was 0.046 off
    ((2048, 801), {}, "MONOCHROME2"),                                                 # wide
    ((0, 400), {"RescaleSlope": 2, "RescaleIntercept": -1024}, "MONOCHROME2"),        # CT-like rescale
    ((40, 21), {"RescaleSlope": 0.5, "RescaleIntercept": 10}, "MONOCHROME1"),
    ((40, 20), {"VOILUTFunction": "LINEAR_EXACT"}, "MONOCHROME2"),
    ((40, 20), {"VOILUTFunction": "SIGMOID"}, "MONOCHROME1"),
])
def test_dicom_windowing_matches_pydicom(tmp_path, window, tags, photometric):
    stored = np.concatenate([np.arange(0, 121), np.arange(300, 4096, 13), [4095]])
    stored = np.resize(stored, 24 * 24).reshape(24, 24)
    path = write_dicom(tmp_path / "w.dcm", stored, photometric=photometric, window=window, **tags)
    ours = read_image(path)[..., 0]
    assert np.allclose(ours, _pydicom_reference(path), atol=1e-6)


def test_dicom_window_edges_by_hand(tmp_path):
    # c = 40, w = 21 (LINEAR): 0 up to x <= 29.5, 1 above x > 49.5, linear between (hand values)
    stored = np.array([[0, 29, 30, 40, 49, 50, 4095, 45]])
    ours = read_image(write_dicom(tmp_path / "e.dcm", stored, window=(40, 21)))[0, :, 0]
    hand = [0.0, 0.0, 0.5 / 20, 10.5 / 20, 19.5 / 20, 1.0, 1.0, 15.5 / 20]
    assert np.allclose(ours, hand, atol=1e-6)
    with pytest.raises(DataError, match="window width"):
        read_image(write_dicom(tmp_path / "z.dcm", stored, window=(40, 0.5)))


def test_corrupt_dicom_names_the_file(tmp_path):
    bad = tmp_path / "d" / "benign" / "bad.dcm"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"DICM but not really")
    with pytest.raises(DataError, match="bad.dcm"):
        load_dataset(tmp_path / "d")
