"""Monocular depth: an RGB image -> metric depth and intrinsics, for RGB-only input.

A backend is anything with ``estimate(rgb, K) -> MonocularDepth`` (the DepthEstimator
protocol); ``BACKENDS`` maps config names (``pipeline.depth.backend``) to builders and
``build_depth_estimator(cfg)`` picks one, None for "none" (RGB-only input is then refused).
``rgb_frame`` completes an RGB image into the RGBDFrame every other stage reads. With RGB-D
input the sensor depth always wins: no depth backend runs.

Intrinsics: the user's camera info when given; else the backend's own estimate (Depth Pro);
else a pinhole with ``pipeline.depth.fov_deg`` horizontal field of view, square pixels and the
principal point at the image centre ((W - 1) / 2, (H - 1) / 2); else a SceneMakerError.

Metric scale:

- "depth_anything" (``DepthAnythingForDepthEstimation``): only the metric Depth Anything V2
  checkpoints (``depth_estimation_type: metric``, e.g.
  depth-anything/Depth-Anything-V2-Metric-Indoor-Small-hf), whose head outputs metres directly
  (sigmoid times ``max_depth``: 20 m indoor, 80 m outdoor). The scale was learned from the
  fine-tuning data (Hypersim indoors, Virtual KITTI outdoors) and is not camera-aware: it is
  right for cameras with a field of view like theirs (about 60 degrees) and drifts for others.
  Relative checkpoints (disparity up to an unknown affine map) are refused.
- "depth_pro" (``DepthProForDepthEstimation``): the network predicts a canonical inverse depth
  c (H, W) and, with its FOV head, the horizontal field of view; metric depth is
  f_px / (W * c) with f_px the user's fx when camera info is given, else
  W / (2 tan(fov / 2)) from the estimate, so the scale follows the true focal length. Depth
  Pro's preprocessing (scale to [-1, 1], bilinear resize to its square input) runs in torch on
  the device, so torchvision is not needed.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from scenemaker_ros.config import DepthAnythingConfig, DepthConfig, DepthProConfig
from scenemaker_ros.errors import SceneMakerError
from scenemaker_ros.frames import CAMERA_FRAME, RGBDFrame
from scenemaker_ros.scene import CameraIntrinsics
from scenemaker_ros.stages.backends import build_backend
from scenemaker_ros.stages.hub import Runtime, require

KEY = "pipeline.depth"
MIN_FOV_DEG, MAX_FOV_DEG = 1.0, 179.0  # a field-of-view estimate outside is not used

log = logging.getLogger(__name__)

# -----------------------------------------------------------------------------
# interface


@dataclass
class MonocularDepth:
    """depth (H, W) float32 z-depth in metres, 0 = invalid; K (3, 3) float64 the intrinsics it
    was computed with (pixels); K_source: "user", "estimated" or "fov_deg"."""

    depth: np.ndarray
    K: np.ndarray
    K_source: str


class DepthEstimator(Protocol):
    def estimate(self, rgb: np.ndarray, K: np.ndarray | None) -> MonocularDepth:
        """Metric depth of rgb (H, W, 3) uint8; K (3, 3) the user's intrinsics or None."""
        ...


def intrinsics_from_fov(width: int, height: int, fov_deg: float) -> np.ndarray:
    """(3, 3) pinhole K with horizontal field of view fov_deg, square pixels, centred."""
    f = width / (2 * math.tan(math.radians(fov_deg) / 2))
    return np.array([[f, 0.0, (width - 1) / 2], [0.0, f, (height - 1) / 2], [0.0, 0.0, 1.0]])


def _fallback_intrinsics(rgb: np.ndarray, K: np.ndarray | None, fov_deg: float, what: str
                         ) -> tuple[np.ndarray, str]:
    """The user's K, else the fov_deg pinhole; SceneMakerError when neither is given."""
    if K is not None:
        return np.asarray(K, np.float64), "user"
    if fov_deg > 0:
        return intrinsics_from_fov(rgb.shape[1], rgb.shape[0], fov_deg), "fov_deg"
    raise SceneMakerError(f"{what} estimates no focal length: give camera info (--camera-info) "
                          f"or set {KEY}.fov_deg to the camera's horizontal field of view")


def _check_rgb(rgb: np.ndarray) -> None:
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or 0 in rgb.shape:
        raise SceneMakerError(f"RGB image must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")


def rgb_frame(estimator: DepthEstimator, rgb: np.ndarray, camera: CameraIntrinsics | None = None,
              stamp: float | None = None, frame_id: str = CAMERA_FRAME) -> RGBDFrame:
    """A validated RGBDFrame from an RGB image (H, W, 3) uint8: depth from estimator, the
    intrinsics from camera when given, else from the estimator (module docstring)."""
    _check_rgb(rgb)
    if camera is not None and (camera.height, camera.width) != rgb.shape[:2]:
        raise SceneMakerError(f"camera info is {camera.width}x{camera.height} but the image is "
                              f"{rgb.shape[1]}x{rgb.shape[0]}")
    result = estimator.estimate(rgb, None if camera is None else np.asarray(camera.K))
    if camera is None:
        camera = CameraIntrinsics(rgb.shape[1], rgb.shape[0], result.K)
    return RGBDFrame(rgb, result.depth, camera, stamp, frame_id).validate()


def _to_depth(prediction: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """(h, w) prediction -> (H, W) float32 numpy, bilinear."""
    resized = F.interpolate(prediction.float()[None, None], size=size, mode="bilinear",
                            align_corners=False)
    return resized[0, 0].cpu().numpy()


# -----------------------------------------------------------------------------
# "depth_anything"


class DepthAnythingEstimator:
    """A metric Depth Anything V2 checkpoint (module docstring); intrinsics from the user or
    fov_deg."""

    def __init__(self, model, processor, runtime: Runtime, fov_deg: float):
        self.model, self.processor, self.runtime = runtime.place(model), processor, runtime
        self.fov_deg = fov_deg

    def estimate(self, rgb: np.ndarray, K: np.ndarray | None) -> MonocularDepth:
        _check_rgb(rgb)
        K, source = _fallback_intrinsics(rgb, K, self.fov_deg, "depth_anything")
        pixels = self.processor(images=rgb, return_tensors="pt")["pixel_values"]  # (1, 3, h, w)
        with self.runtime.call(self.model):
            pixels = pixels.to(self.runtime.device, self.runtime.dtype)
            depth = self.model(pixel_values=pixels).predicted_depth[0]  # (h, w) metres
            depth = _to_depth(depth, rgb.shape[:2])
        return MonocularDepth(depth, K, source)


def _build_depth_anything(cfg: DepthConfig) -> DepthEstimator:
    key, what = f"{KEY}.depth_anything", "depth_anything"
    transformers = require("transformers", what)
    runtime = Runtime.from_config(cfg.depth_anything, key, what)
    name = cfg.depth_anything.model
    hub_id = DepthAnythingConfig.model
    model = runtime.load(transformers.DepthAnythingForDepthEstimation.from_pretrained, name,
                         hub_id=hub_id)
    if model.config.depth_estimation_type != "metric":
        raise SceneMakerError(f"{what}: {name!r} is a relative-depth checkpoint; set {key}.model "
                              f"to a metric one, e.g. {hub_id}")
    processor = runtime.load(transformers.AutoImageProcessor.from_pretrained, name, hub_id=hub_id)
    return DepthAnythingEstimator(model, processor, runtime, cfg.fov_deg)


# -----------------------------------------------------------------------------
# "depth_pro"


class DepthProEstimator:
    """Depth Pro: canonical inverse depth + field of view (module docstring)."""

    def __init__(self, model, runtime: Runtime, fov_deg: float):
        self.model, self.runtime, self.fov_deg = runtime.place(model), runtime, fov_deg
        config = model.config
        self.input_size = round(config.patch_size / min(config.scaled_images_ratios))

    def estimate(self, rgb: np.ndarray, K: np.ndarray | None) -> MonocularDepth:
        _check_rgb(rgb)
        height, width = rgb.shape[:2]
        with self.runtime.call(self.model):
            pixels = torch.tensor(rgb, device=self.runtime.device).permute(2, 0, 1)[None]
            pixels = pixels.float() / 127.5 - 1  # (1, 3, H, W) in [-1, 1]
            pixels = F.interpolate(pixels, size=(self.input_size,) * 2, mode="bilinear",
                                   align_corners=False).to(self.runtime.dtype)
            out = self.model(pixel_values=pixels)
            inverse = _to_depth(out.predicted_depth[0], (height, width))  # canonical, (H, W)
            fov = None if out.field_of_view is None else float(out.field_of_view[0])
        if K is None and fov is not None and MIN_FOV_DEG < fov < MAX_FOV_DEG:
            K, source = intrinsics_from_fov(width, height, fov), "estimated"
        else:
            if K is None and fov is not None:
                log.warning("depth_pro: estimated field of view %.1f deg is implausible, not "
                            "used", fov)
            K, source = _fallback_intrinsics(
                rgb, K, self.fov_deg, "depth_pro (no usable field-of-view estimate)")
        depth = K[0, 0] / (width * np.clip(inverse, 1e-4, 1e4))
        return MonocularDepth(depth.astype(np.float32), K, source)


def _build_depth_pro(cfg: DepthConfig) -> DepthEstimator:
    key, what = f"{KEY}.depth_pro", "depth_pro"
    transformers = require("transformers", what)
    runtime = Runtime.from_config(cfg.depth_pro, key, what)
    model = runtime.load(transformers.DepthProForDepthEstimation.from_pretrained,
                         cfg.depth_pro.model, hub_id=DepthProConfig.model)
    return DepthProEstimator(model, runtime, cfg.fov_deg)


# -----------------------------------------------------------------------------
# backends


BACKENDS: dict[str, Callable[[DepthConfig], DepthEstimator | None]] = {
    "none": lambda cfg: None,
    "depth_anything": _build_depth_anything,
    "depth_pro": _build_depth_pro,
}


def build_depth_estimator(cfg: DepthConfig) -> DepthEstimator | None:
    """The depth backend cfg.backend names, None for "none"; SceneMakerError lists the valid
    names."""
    return build_backend(BACKENDS, cfg, f"{KEY}.backend")
