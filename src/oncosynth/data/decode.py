"""Pixels: decode one record to a float array in [0, 1], or many to a tensor.

Intensity rules (one place, documented):
- 8-bit images (PIL modes L, P, RGB, RGBA, LA, 1): value / 255.
- 16-bit PNG/TIFF (modes I;16*, I): value / 4095 when the image's maximum is
  <= 4095 (12-bit data stored in 16 bits, as mammography usually is), else
  value / 65535.
- DICOM: modality rescale (slope/intercept) first; then the first VOI window
  (WindowCenter/WindowWidth) when the file has one, else scaling by the
  stored bit depth (0 .. 2**BitsStored - 1); MONOCHROME1 is inverted so that
  dense tissue is always bright.
- Containers (npz, HDF5): uint8 / 255; floats are taken as already in [0, 1]
  (an error if they are not).
Alpha channels are dropped. Anything else is an unsupported mode: an error
naming the file.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from oncosynth.data.records import Dataset, Record
from oncosynth.data.transforms import convert_images  # noqa: F401  (re-exported: oncosynth.data.decode.convert_images)
from oncosynth.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
DICOM_SUFFIXES = {".dcm", ".dicom"}
_EIGHT_BIT_MODES = {"1", "L", "P", "RGB", "RGBA", "LA"}
_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}


def _to_hwc(array: np.ndarray) -> np.ndarray:
    return array[:, :, None] if array.ndim == 2 else array


def _scale_high_bit_depth(array: np.ndarray) -> np.ndarray:
    array = array.astype(np.float32)
    peak = 4095.0 if array.max(initial=0) <= 4095 else 65535.0
    return np.clip(array / peak, 0.0, 1.0)


def read_image_file(path: str | Path, data: bytes | None = None) -> np.ndarray:
    """Decode a PNG/JPEG/TIFF/BMP into H×W×C float32 in [0, 1]."""
    path = Path(path)
    try:
        with Image.open(io.BytesIO(data) if data is not None else path) as image:
            image.load()  # forces a full decode: truncated files fail here
            mode = image.mode
            if mode in _EIGHT_BIT_MODES:
                if mode in ("1", "P"):
                    image = image.convert("L" if mode == "1" else "RGB")
                elif mode in ("RGBA", "LA"):
                    image = image.convert(mode[:-1] if mode == "LA" else "RGB")
                return _to_hwc(np.asarray(image, dtype=np.float32) / 255.0)
            if mode in _SIXTEEN_BIT_MODES:
                return _to_hwc(_scale_high_bit_depth(np.asarray(image)))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(path, f"unreadable or truncated image ({exc})") from None
    raise DataError(path, f"unsupported image mode '{mode}' (supported: 8-bit L/RGB/RGBA/P, 16-bit I;16)")


def read_dicom(path: str | Path) -> np.ndarray:
    """Decode one DICOM file by the rule in this module's docstring."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    try:
        ds = pydicom.dcmread(str(path))
        pixels = ds.pixel_array.astype(np.float32)
    except (InvalidDicomError, AttributeError, ValueError, OSError, EOFError) as exc:
        raise DataError(path, f"unreadable DICOM ({exc})") from None
    if pixels.ndim == 3 and ds.get("SamplesPerPixel", 1) == 1:
        raise DataError(path, f"multi-frame DICOM ({pixels.shape[0]} frames) is not supported")
    slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
    pixels = pixels * slope + intercept
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center is not None and width is not None:
        center = float(center[0] if isinstance(center, pydicom.multival.MultiValue) else center)
        width = float(width[0] if isinstance(width, pydicom.multival.MultiValue) else width)
        low = center - width / 2.0
        scaled = (pixels - low) / max(width, 1.0)
    else:
        bits = int(ds.get("BitsStored", 16))
        scaled = pixels / float(2**bits - 1)
    scaled = np.clip(scaled, 0.0, 1.0).astype(np.float32)
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        scaled = 1.0 - scaled
    return _to_hwc(scaled)


@functools.lru_cache(maxsize=8)
def _npz_arrays(path: str) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as archive:
        return {k: archive[k] for k in archive.files}


@functools.lru_cache(maxsize=8)
def _h5_dataset(path: str, member: str):
    import h5py

    return h5py.File(path, "r")[member]


def _container_pixels(array: np.ndarray, record: Record) -> np.ndarray:
    if array.dtype == np.uint8:
        return _to_hwc(array.astype(np.float32) / 255.0)
    if np.issubdtype(array.dtype, np.floating):
        if array.min() < 0 or array.max() > 1:
            raise DataError(record.uid, "float pixels outside [0, 1]")
        return _to_hwc(array.astype(np.float32))
    if array.dtype == np.uint16:
        return _to_hwc(_scale_high_bit_depth(array))
    raise DataError(record.uid, f"unsupported pixel type {array.dtype}")


def decode_record(record: Record) -> np.ndarray:
    """H×W×C float32 in [0, 1] for any record the loaders make."""
    if record.format == "medmnist":
        return _container_pixels(_npz_arrays(record.source)[record.member][record.key], record)
    if record.format == "pcam-h5":
        return _container_pixels(_h5_dataset(record.source, record.member)[record.key], record)
    if Path(record.source).suffix.lower() in DICOM_SUFFIXES or record.format == "dicom":
        return read_dicom(record.source)
    return read_image_file(record.source)


def read_image(source: str | Path | Record) -> np.ndarray:
    """Decode a file path or a record to H×W×C float32 in [0, 1]."""
    if isinstance(source, Record):
        return decode_record(source)
    if Path(source).suffix.lower() in DICOM_SUFFIXES:
        return read_dicom(source)
    return read_image_file(source)


def to_tensor(array: np.ndarray, size: int | None = None, channels: int | None = None) -> torch.Tensor:
    """H×W×C [0, 1] array -> C×H×W tensor, with optional channel and size conversion."""
    tensor = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
    return convert_images(tensor[None], size=size, channels=channels)[0]


def load_images(records: Dataset | Sequence[Record] | Iterable[Record], size: int | None = None,
                channels: int | None = None) -> torch.Tensor:
    """Decode records into one N×C×H×W float tensor in [0, 1].

    Without ``size`` every image must have the same size (an error names the
    first one that differs); without ``channels`` the first image decides.
    """
    records = list(records.records if isinstance(records, Dataset) else records)
    if not records:
        raise DataError("<records>", "no images to load")
    tensors: list[torch.Tensor] = []
    for record in records:
        tensor = to_tensor(decode_record(record), size=size, channels=channels)
        if channels is None:
            channels = tensor.shape[0]
        if tensors and tensor.shape != tensors[0].shape:
            raise DataError(record.uid, f"mixed image sizes: {tuple(tensor.shape)} here, "
                            f"{tuple(tensors[0].shape)} in {records[0].uid}; pass a size to resample")
        tensors.append(tensor)
    return torch.stack(tensors)
