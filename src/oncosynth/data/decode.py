"""Pixels: decode one record to a float array in [0, 1], or many to a tensor.

Intensity rules (one place, documented):
- 8-bit images (PIL modes L, P, RGB, RGBA, LA, 1): value / 255.
- 16-bit PNG/TIFF (modes I;16*, I): value / 4095 when the image's maximum is
  <= 4095 (12-bit data stored in 16 bits, as mammography usually is), else
  value / 65535.
- DICOM: the modality transform first (RescaleSlope/Intercept, or a Modality
  LUT Sequence); then the first VOI window (WindowCenter/WindowWidth) by the
  standard's VOI LUT function (DICOM PS3.3 C.11.2.1.2: LINEAR, LINEAR_EXACT or
  SIGMOID, output range mapped to [0, 1]) when the file has one, else the
  stored value range (from BitsStored and PixelRepresentation, through the
  modality transform) mapped to [0, 1]; MONOCHROME1 is inverted so that dense
  tissue is always bright. VOI LUT Sequences are not applied.
- Containers (npz, HDF5): uint8 / 255; floats are taken as already in [0, 1]
  (an error if they are not).
Alpha channels are dropped. Anything else is an unsupported mode: an error
naming the file.
"""

from __future__ import annotations

import errno
import functools
import io
import os
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


def missing_path_problem(path: Path) -> str:
    """Why ``path`` cannot be read: missing, a broken link, or a symlink loop."""
    if not path.is_symlink():
        return "no such file or folder"
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symbolic link loop (the link points back to itself)"
    return f"broken symbolic link (points to {os.readlink(path)}, which does not exist)"


def _check_present(path: Path) -> None:
    if not path.exists():
        raise DataError(path, missing_path_problem(path))


def read_image_file(path: str | Path, data: bytes | None = None) -> np.ndarray:
    """Decode a PNG/JPEG/TIFF/BMP into H×W×C float32 in [0, 1]."""
    path = Path(path)
    if data is None:
        _check_present(path)
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
    except Image.DecompressionBombError as exc:
        # a few KB that would decode to gigabytes: refused before any pixel is allocated
        raise DataError(path, f"image too large to decode safely ({exc})") from None
    except UnidentifiedImageError:
        # PIL's own text names the in-memory buffer, not the file
        raise DataError(path, "unreadable image (not a PNG, JPEG, TIFF or BMP PIL can identify)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(path, f"unreadable or truncated image ({exc})") from None
    raise DataError(path, f"unsupported image mode '{mode}' (supported: 8-bit L/RGB/RGBA/P, 16-bit I;16)")


def voi_window(values: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2 / C.11.2.1.3 VOI windowing with the output range taken as [0, 1].

    LINEAR: values <= c - 0.5 - (w - 1)/2 map to 0, values > c - 0.5 + (w - 1)/2 to 1,
    and ((x - (c - 0.5)) / (w - 1) + 0.5) between; it needs w >= 1.
    LINEAR_EXACT: (x - c) / w + 0.5, clipped; SIGMOID: 1 / (1 + exp(-4 (x - c) / w)); both need w > 0.
    Raises ValueError for a width or function the standard does not allow.
    """
    values = np.asarray(values, dtype=np.float64)
    function = (function or "LINEAR").upper()
    if function == "LINEAR":
        if width < 1:
            raise ValueError(f"window width {width} < 1 is not allowed for LINEAR windowing")
        low, high = center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2
        if width == 1:  # the ramp has no width: a step at c - 0.5
            return (values > high).astype(np.float64)
        inside = (values - (center - 0.5)) / (width - 1) + 0.5
        return np.where(values <= low, 0.0, np.where(values > high, 1.0, inside))
    if width <= 0:
        raise ValueError(f"window width {width} <= 0 is not allowed for {function} windowing")
    if function == "LINEAR_EXACT":
        return np.clip((values - center) / width + 0.5, 0.0, 1.0)
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    raise ValueError(f"unsupported VOI LUT function '{function}' (LINEAR, LINEAR_EXACT, SIGMOID)")


def _modality_range(ds) -> tuple[float, float]:
    """The range of modality-transformed values the stored bits can hold (PS3.3 C.11.2.1.2)."""
    if ds.get("ModalityLUTSequence"):
        bits = int(ds.ModalityLUTSequence[0].LUTDescriptor[2])
        return 0.0, float(2**bits - 1)
    bits = int(ds.get("BitsStored", 16))
    low, high = (0, 2**bits - 1) if int(ds.get("PixelRepresentation", 0)) == 0 else \
        (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
    ends = sorted((low * slope + intercept, high * slope + intercept))
    return ends[0], ends[1]


def _first(value) -> float:
    import pydicom

    return float(value[0] if isinstance(value, pydicom.multival.MultiValue) else value)


def read_dicom(path: str | Path) -> np.ndarray:
    """Decode one DICOM file by the rule in this module's docstring."""
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut

    path = Path(path)
    _check_present(path)
    try:
        ds = pydicom.dcmread(str(path))
        pixels = ds.pixel_array
    except (InvalidDicomError, AttributeError, ValueError, OSError, EOFError) as exc:
        raise DataError(path, f"unreadable DICOM ({exc})") from None
    if pixels.ndim == 3 and ds.get("SamplesPerPixel", 1) == 1:
        raise DataError(path, f"multi-frame DICOM ({pixels.shape[0]} frames) is not supported")
    values = apply_modality_lut(pixels, ds).astype(np.float64)
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center is not None and width is not None:
        try:
            scaled = voi_window(values, _first(center), _first(width), str(ds.get("VOILUTFunction", "LINEAR")))
        except ValueError as exc:
            raise DataError(path, str(exc)) from None
    else:
        low, high = _modality_range(ds)
        scaled = (values - low) / max(high - low, 1e-12)
    scaled = np.clip(scaled, 0.0, 1.0).astype(np.float32)
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        scaled = 1.0 - scaled
    return _to_hwc(scaled)


@functools.lru_cache(maxsize=8)
def _npz_arrays(path: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {k: archive[k] for k in archive.files}
    except (OSError, ValueError, EOFError) as exc:  # object arrays land here: pickle is never loaded
        raise DataError(path, f"unreadable .npz ({exc})") from None


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


def stored_size(record: Record) -> tuple[int, int]:
    """(height, width) as stored, read from the header only (no pixels decoded)."""
    try:
        if record.format == "medmnist":
            return tuple(_npz_arrays(record.source)[record.member].shape[1:3])
        if record.format == "pcam-h5":
            return tuple(_h5_dataset(record.source, record.member).shape[1:3])
        if Path(record.source).suffix.lower() in DICOM_SUFFIXES or record.format == "dicom":
            import pydicom

            header = pydicom.dcmread(record.source, stop_before_pixels=True)
            return int(header.Rows), int(header.Columns)
        with Image.open(record.source) as image:
            return image.size[1], image.size[0]
    except Exception:  # noqa: BLE001 - an unreadable file fails, by name, when its pixels are read
        return -1, -1


def describe_sizes(records: Iterable[Record]) -> tuple[int, str]:
    """How many stored sizes the records have, and a short text (the commonest first) for messages."""
    from collections import Counter

    sizes = Counter(stored_size(r) for r in records)
    sizes.pop((-1, -1), None)
    shown = ", ".join(f"{h}×{w} ({n})" for (h, w), n in sizes.most_common(3))
    return len(sizes), shown + (", …" if len(sizes) > 3 else "")


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
