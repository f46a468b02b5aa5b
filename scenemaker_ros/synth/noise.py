"""A RealSense-like noise model for synthetic depth images.

Active stereo measures disparity d = fx * baseline / z with sub-pixel noise, so depth noise grows
with z^2. On top: dropout at depth discontinuities (where the stereo match fails), small random
holes, a valid range, and quantisation. Depth is (H, W) float32 z-depth in metres, 0 = invalid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass
class DepthNoise:
    """Parameters of apply_depth_noise; defaults roughly match a D435 at 640 x 480.

    baseline_m: stereo baseline, metres. subpixel: disparity noise std, pixels.
    correlation_px: std of the Gaussian blur that correlates the axial noise over neighbouring
    pixels, pixels (0 = independent per pixel).
    edge_threshold: a pixel is on a depth edge when the depth range of its 3 x 3 neighbourhood
    (invalid neighbours count as 0) exceeds this fraction of its depth.
    edge_dropout: probability that an edge pixel is dropped.
    hole_rate: per-pixel probability of a hole centre; hole_radius_px: radius of each round hole.
    quantisation_m: depth step, metres (0 = none). min_depth, max_depth: valid range, metres.
    """

    baseline_m: float = 0.05
    subpixel: float = 0.08
    correlation_px: float = 1.0
    edge_threshold: float = 0.05
    edge_dropout: float = 0.5
    hole_rate: float = 2e-4
    hole_radius_px: int = 2
    quantisation_m: float = 0.001
    min_depth: float = 0.1
    max_depth: float = 6.0


def apply_depth_noise(depth: np.ndarray, K: np.ndarray, cfg: DepthNoise,
                      rng: np.random.Generator) -> np.ndarray:
    """Noisy copy of a clean depth image.

    depth: (H, W) float z-depth in metres, 0 (or non-finite) = invalid. K: (3, 3) intrinsics,
    pixels. Returns (H, W) float32 metres: invalid pixels stay 0, never NaN or negative; the same
    rng state gives the same result.
    """
    z = np.where(np.isfinite(depth) & (depth > 0), depth, 0.0).astype(np.float64)
    dropped = _depth_edges(z, cfg.edge_threshold) & (rng.random(z.shape) < cfg.edge_dropout)
    dropped |= _holes(z.shape, cfg.hole_rate, cfg.hole_radius_px, rng)
    sigma = z**2 * cfg.subpixel / (K[0, 0] * cfg.baseline_m)
    noisy = z + sigma * _unit_noise(z.shape, cfg.correlation_px, rng)
    if cfg.quantisation_m > 0:
        noisy = np.round(noisy / cfg.quantisation_m) * cfg.quantisation_m
    keep = (z > 0) & ~dropped & (noisy >= cfg.min_depth) & (noisy <= cfg.max_depth)
    return np.where(keep, noisy, 0.0).astype(np.float32)


def _depth_edges(z: np.ndarray, threshold: float) -> np.ndarray:
    """(H, W) bool: valid pixels whose 3 x 3 depth range exceeds threshold * their depth."""
    depth_range = ndimage.maximum_filter(z, size=3) - ndimage.minimum_filter(z, size=3)
    return (z > 0) & (depth_range > threshold * z)


def _holes(shape: tuple[int, int], rate: float, radius: int,
           rng: np.random.Generator) -> np.ndarray:
    """(H, W) bool: discs of `radius` pixels around centres drawn with per-pixel probability `rate`.
    """
    centres = rng.random(shape) < rate
    y, x = np.ogrid[-radius:radius + 1, -radius:radius + 1]
    return ndimage.binary_dilation(centres, structure=x * x + y * y <= radius * radius)


def _unit_noise(shape: tuple[int, int], correlation_px: float,
                rng: np.random.Generator) -> np.ndarray:
    """(H, W) zero-mean, unit-std Gaussian noise, blurred over `correlation_px` pixels."""
    white = rng.standard_normal(shape)
    if correlation_px <= 0:
        return white
    # Blurring scales the std by the kernel's L2 norm: measure it on an impulse and undo it.
    half = int(np.ceil(4 * correlation_px))
    impulse = np.zeros((2 * half + 1, 2 * half + 1))
    impulse[half, half] = 1.0
    kernel_norm = np.linalg.norm(ndimage.gaussian_filter(impulse, correlation_px))
    return ndimage.gaussian_filter(white, correlation_px) / kernel_norm
