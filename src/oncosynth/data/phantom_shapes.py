"""The phantom's drawing primitives: tissue texture, fibres, masses, spicules, calcifications.

Each returns a float array (size×size) built from numpy alone; :mod:`oncosynth.data.phantom`
adds them up into one view. See that module for the model and its sources.
"""

from __future__ import annotations

import numpy as np


# -------------------------------------------------------------- background ----
def power_law_noise(rng: np.random.Generator, size: int, beta: float = 3.0,
                    orientation: float = 0.0, anisotropy: float = 0.0) -> np.ndarray:
    """Zero-mean, unit-std Gaussian field with power spectrum ~ 1/f^beta.

    ``anisotropy`` (0 = isotropic) concentrates power at spatial frequencies
    perpendicular to ``orientation`` (radians), which draws streaks along it.
    The angular weight does not depend on |f|, so the radial slope stays -beta.
    """
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    f = np.sqrt(fx**2 + fy**2)
    f[0, 0] = 1.0  # the DC term is removed below; avoid dividing by zero
    amplitude = f ** (-beta / 2)
    if anisotropy > 0:
        theta = np.arctan2(fy, fx)
        # streaks along `orientation` = energy at frequencies at orientation + 90 deg
        amplitude = amplitude * np.exp(0.5 * anisotropy * np.cos(2 * (theta - orientation - np.pi / 2)))
    amplitude[0, 0] = 0.0
    spectrum = amplitude * (rng.standard_normal(amplitude.shape) + 1j * rng.standard_normal(amplitude.shape))
    field = np.fft.irfft2(spectrum, s=(size, size))
    return field / field.std()


def tissue_background(rng: np.random.Generator, size: int, density: float, beta: float = 3.0,
                      orientation: float = 0.0, anisotropy: float = 0.0) -> np.ndarray:
    """Fibro-glandular tissue in attenuation units: brighter and more textured when dense.

    A linear map of ``power_law_noise``, so its spectrum keeps the 1/f^beta slope.
    """
    level = 0.24 + 0.52 * density
    texture = 0.04 + 0.035 * density
    return level + texture * power_law_noise(rng, size, beta, orientation, anisotropy)


def strands(rng: np.random.Generator, size: int, orientation: float, count: int, width: float) -> np.ndarray:
    """Thin, gently curved bright fibres (ligaments, ducts, vessels) mostly along ``orientation``.

    Each strand is a parabola in a frame rotated to its own direction, drawn as a
    Gaussian ridge whose brightness swells and fades along its length.
    """
    if count == 0:
        return np.zeros((size, size))
    y, x = _grid(size)
    angle = (orientation + rng.normal(0, 0.35, count))[:, None, None]
    offset = rng.uniform(-0.5, 0.5, count)[:, None, None] * size
    bend = rng.normal(0, 0.6, count)[:, None, None] / size
    along = x[None] * np.cos(angle) + y[None] * np.sin(angle)
    across = -x[None] * np.sin(angle) + y[None] * np.cos(angle)
    distance = (across - offset - bend * along**2) / np.sqrt(1 + (2 * bend * along) ** 2)
    centre = rng.uniform(-0.4, 0.4, count)[:, None, None] * size
    extent = rng.uniform(0.25, 0.8, count)[:, None, None] * size
    envelope = np.exp(-0.5 * ((along - centre) / extent) ** 2)
    widths = width * rng.uniform(0.7, 1.8, count)[:, None, None]
    brightness = rng.uniform(0.4, 1.0, count)[:, None, None]
    return (brightness * envelope * np.exp(-0.5 * (distance / widths) ** 2)).sum(0)


def breast_edge(size: int, angle: float, offset: float, width: float) -> np.ndarray:
    """Weight in [0, 1] that is ~1 inside the breast and falls to 0 past a skin line.

    The skin line is a straight boundary whose normal points along ``angle``
    at distance ``offset`` (fraction of the side) from the centre; a few real
    patches taken near the edge show this dark corner.
    """
    y, x = _grid(size)
    along = (x * np.cos(angle) + y * np.sin(angle)) / size
    return 1.0 / (1.0 + np.exp((along - offset) / width))


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur by ``sigma`` pixels, via the FFT: the imaging chain's unsharpness."""
    pad = int(np.ceil(3 * sigma))  # mirror the borders so the blur does not wrap around
    padded = np.pad(image, pad, mode="reflect")
    fy = np.fft.fftfreq(padded.shape[0])[:, None]
    fx = np.fft.rfftfreq(padded.shape[1])[None, :]
    transfer = np.exp(-2 * (np.pi * sigma) ** 2 * (fx**2 + fy**2))
    blurred = np.fft.irfft2(np.fft.rfft2(padded) * transfer, s=padded.shape)
    return blurred[pad:-pad, pad:-pad] if pad else blurred


# ------------------------------------------------------------------ lesions ----
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates relative to the image centre."""
    coords = np.arange(size, dtype=np.float64) - (size - 1) / 2
    return coords[:, None], coords[None, :]


def mass(size: int, centre: tuple[float, float], radius: float, elongation: float, angle: float,
         irregularity: float, harmonics: np.ndarray, texture: np.ndarray) -> np.ndarray:
    """Mass density map in [0, ~1]: a dome-shaped blob whose margin follows ``irregularity``.

    Low irregularity: an oval with a sharp, smooth margin (circumscribed).
    High irregularity: a lobulated, ragged outline with a wide, ill-defined margin.
    ``harmonics`` is K×2 (amplitude, phase) for boundary frequencies 2..K+1;
    ``texture`` is a unit-std field that makes the interior uneven.
    """
    y, x = _grid(size)
    dy, dx = y - centre[0], x - centre[1]
    r = np.sqrt(dx**2 + dy**2)
    theta = np.arctan2(dy, dx)
    # Oval: radius of an ellipse with axis ratio (1 + e) : 1, rotated by `angle`.
    c, s = np.cos(theta - angle), np.sin(theta - angle)
    oval = radius / np.sqrt((c / (1 + elongation)) ** 2 + s**2) * np.sqrt(1 + elongation)
    # Boundary roughness: low orders lobulate every mass a little, higher orders only irregular ones.
    orders = np.arange(2, 2 + len(harmonics))[:, None, None]
    weight = np.where(orders <= 3, 0.5 + irregularity, irregularity * 2.2)
    wobble = (weight * harmonics[:, 0, None, None] * np.cos(orders * theta + harmonics[:, 1, None, None])).sum(0)
    boundary = oval * (1 + wobble)
    margin = radius * (0.09 + 0.33 * irregularity**1.5)
    inside = 1.0 / (1.0 + np.exp(-(boundary - r) / margin))
    dome = 0.55 + 0.45 * np.clip(1 - (r / boundary) ** 2, 0, 1) ** 0.7
    return inside * dome * (1 + 0.12 * texture)


def spicules(size: int, centre: tuple[float, float], radius: float, angles: np.ndarray,
             lengths: np.ndarray, brightness: np.ndarray, width: float) -> np.ndarray:
    """Thin bright lines radiating from a mass: sum of tapered rays, one per angle."""
    if len(angles) == 0:
        return np.zeros((size, size))
    y, x = _grid(size)
    dy, dx = (y - centre[0])[None], (x - centre[1])[None]
    cos, sin = np.cos(angles)[:, None, None], np.sin(angles)[:, None, None]
    along = dx * cos + dy * sin             # distance along the ray
    across = -dx * sin + dy * cos           # distance from the ray's line
    end = radius + lengths[:, None, None]
    # Rays emerge from inside the mass, peak near its margin and fade towards their tip.
    fade_in = np.clip((along - 0.4 * radius) / (0.6 * radius), 0, 1)
    fade_out = np.clip((end - along) / (end - radius), 0, 1)
    taper = fade_in * fade_out
    return (brightness[:, None, None] * np.exp(-0.5 * (across / width) ** 2) * taper).sum(0)


def calcifications(rng: np.random.Generator, size: int, centre: tuple[float, float], spread: float,
                   count: int) -> np.ndarray:
    """A cluster of tiny bright specks (microcalcifications) around ``centre``."""
    y, x = _grid(size)
    points = np.asarray(centre) + rng.normal(0, spread, size=(count, 2))
    sigma = max(0.5, size / 160)  # sub-pixel at 64 px, about 1 px at 160 px
    dist2 = (y[None] - points[:, 0, None, None]) ** 2 + (x[None] - points[:, 1, None, None]) ** 2
    brightness = rng.uniform(0.6, 1.0, size=count)[:, None, None]
    return (brightness * np.exp(-0.5 * dist2 / sigma**2)).sum(0)
