"""RGB-D input: the frame every stage reads, image and depth loaders, camera calibration files.

Depth is z-depth in metres, (H, W) float32, 0 = invalid; the camera is a pinhole in the REP 103
optical frame (x right, y down, z forward). Images must be rectified: SceneMaker models no lens
distortion. Calibration comes in the two formats a ROS user has at hand:

- the ROS ``camera_calibration`` YAML (what the camera calibrator and ``camera_info_manager``
  write): ``image_width``, ``image_height``, ``camera_name``, ``camera_matrix``,
  ``distortion_model``, ``distortion_coefficients``, ``rectification_matrix``,
  ``projection_matrix``, each matrix as ``{rows, cols, data}``;
- a ``sensor_msgs/CameraInfo``-like mapping, JSON or YAML (``ros2 topic echo --once`` output):
  ``width``, ``height``, ``k`` (9 numbers), optional ``d``, ``distortion_model``, ``r``, ``p``
  (ROS 1's upper-case ``K``, ``D``, ``R``, ``P`` too).

Every user error (missing or unreadable file, wrong format, size mismatch, no valid depth, zero
focal length) raises SceneMakerError with one line naming the file or the problem.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image, UnidentifiedImageError

from scenemaker_ros.errors import SceneMakerError
from scenemaker_ros.files import write_text_atomic
from scenemaker_ros.scene import CameraIntrinsics

log = logging.getLogger(__name__)

CAMERA_FRAME = "camera_color_optical_frame"


# -----------------------------------------------------------------------------
# the frame


@dataclass
class RGBDFrame:
    """One registered RGB-D frame.

    rgb: (H, W, 3) uint8. depth: (H, W) float32 z-depth in metres, 0 = invalid (NaN, inf and
    negative values are set to 0 on construction). camera: pinhole intrinsics of both images,
    ``K`` (3, 3) in pixels. stamp: seconds (None when unknown). frame_id: the optical frame.
    """

    rgb: np.ndarray
    depth: np.ndarray
    camera: CameraIntrinsics
    stamp: float | None = None
    frame_id: str = CAMERA_FRAME

    def __post_init__(self) -> None:
        depth = np.asarray(self.depth, dtype=np.float32)
        self.depth = np.where(np.isfinite(depth) & (depth > 0), depth, np.float32(0))

    @property
    def valid(self) -> np.ndarray:
        """(H, W) bool: pixels with a depth measurement."""
        return self.depth > 0

    def validate(self) -> RGBDFrame:
        """Check shapes, dtypes, intrinsics and depth; raise SceneMakerError naming the problem."""
        rgb, depth = self.rgb, self.depth
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise SceneMakerError(f"RGB image must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
        if rgb.shape[0] == 0 or rgb.shape[1] == 0:
            raise SceneMakerError(f"RGB image is empty ({rgb.shape[1]}x{rgb.shape[0]})")
        if depth.shape != rgb.shape[:2]:
            raise SceneMakerError(f"RGB is {_size(rgb)} but depth is {_size(depth)}: the depth "
                                  "must be registered to the colour image")
        camera = self.camera
        if (camera.height, camera.width) != rgb.shape[:2]:
            raise SceneMakerError(f"camera info is {camera.width}x{camera.height} but the images "
                                  f"are {_size(rgb)}")
        _check_intrinsics(np.asarray(camera.K, dtype=np.float64), "camera")
        if not self.valid.any():
            raise SceneMakerError("depth image has no valid pixel (all zero, NaN or negative)")
        return self


def _size(image: np.ndarray) -> str:
    return f"{image.shape[1]}x{image.shape[0]}"


def _check_intrinsics(K: np.ndarray, source: str) -> None:
    if K.shape != (3, 3) or not np.all(np.isfinite(K)):
        raise SceneMakerError(f"{source}: K must be a finite 3x3 matrix")
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise SceneMakerError(f"{source}: focal length must be positive "
                              f"(fx={K[0, 0]:g}, fy={K[1, 1]:g})")


def load_frame(rgb_path: str | Path, depth_path: str | Path, camera_info_path: str | Path,
               depth_scale: float = 0.001, stamp: float | None = None) -> RGBDFrame:
    """Load and validate an RGB-D frame from files (see load_rgb, load_depth, load_camera_info)."""
    info = load_camera_info(camera_info_path)
    frame = RGBDFrame(rgb=load_rgb(rgb_path), depth=load_depth(depth_path, depth_scale),
                      camera=info.intrinsics(), stamp=stamp)
    return frame.validate()


# -----------------------------------------------------------------------------
# images


def _open_image(path: str | Path, what: str) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
    except FileNotFoundError:
        raise SceneMakerError(f"{path}: {what} not found") from None
    except (UnidentifiedImageError, OSError) as err:
        raise SceneMakerError(f"{path}: cannot read the {what} ({err})") from None
    return image


def load_rgb(path: str | Path) -> np.ndarray:
    """PNG/JPEG (any PIL-readable image) -> (H, W, 3) uint8; grey is replicated, alpha dropped."""
    image = _open_image(path, "RGB image")
    if image.mode.startswith("I"):  # 16/32-bit grey: keep the top 8 bits of 16-bit values
        grey = np.asarray(image, dtype=np.float64) / 257.0
        return np.repeat(np.clip(grey, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def load_depth(path: str | Path, depth_scale: float = 0.001) -> np.ndarray:
    """Depth image -> (H, W) float32 metres, 0 = invalid.

    Integer images (16-bit PNG, uint16 TIFF or .npy) hold raw units: metres = value *
    depth_scale (default 0.001, millimetres). Float .npy and .tiff hold metres already.
    An 8-bit or colour image is refused: it cannot hold depth.
    """
    if not depth_scale > 0:
        raise SceneMakerError(f"depth scale must be positive, got {depth_scale}")
    path = Path(path)
    if path.suffix.lower() == ".npy":
        depth = _load_npy(path)
    else:
        image = _open_image(path, "depth image")
        if image.mode not in ("I;16", "I;16B", "I;16L", "I", "F"):
            raise SceneMakerError(f"{path}: depth must be a 16-bit single-channel image "
                                  f"(millimetres) or float metres, got PIL mode {image.mode}")
        depth = np.asarray(image)
    if depth.ndim == 3 and depth.shape[2] == 1:
        depth = depth[..., 0]
    if depth.ndim != 2:
        raise SceneMakerError(f"{path}: depth must be a (H, W) array, got shape {depth.shape}")
    if np.issubdtype(depth.dtype, np.integer):
        return depth.astype(np.float32) * np.float32(depth_scale)
    if not np.issubdtype(depth.dtype, np.floating):
        raise SceneMakerError(f"{path}: depth must be numeric, got dtype {depth.dtype}")
    return depth.astype(np.float32)


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise SceneMakerError(f"{path}: depth image not found") from None
    except (ValueError, OSError) as err:
        raise SceneMakerError(f"{path}: cannot read the depth array ({err})") from None


# -----------------------------------------------------------------------------
# camera calibration


@dataclass
class CameraInfo:
    """A camera calibration as in ``sensor_msgs/CameraInfo``, pixels.

    K (3, 3) intrinsics of the raw image; D (N,) distortion coefficients of ``distortion_model``;
    R (3, 3) rectification rotation; P (3, 4) projection of the rectified image.
    """

    width: int
    height: int
    K: np.ndarray
    D: np.ndarray = field(default_factory=lambda: np.zeros(5))
    distortion_model: str = "plumb_bob"
    R: np.ndarray = field(default_factory=lambda: np.eye(3))
    P: np.ndarray | None = None  # None: [K | 0]
    camera_name: str = "camera"

    def __post_init__(self) -> None:
        if self.P is None:
            self.P = np.hstack([np.asarray(self.K, dtype=np.float64), np.zeros((3, 1))])

    @classmethod
    def from_intrinsics(cls, camera: CameraIntrinsics, camera_name: str = "camera"
                        ) -> CameraInfo:
        """The calibration of an undistorted pinhole camera."""
        return cls(width=camera.width, height=camera.height,
                   K=np.asarray(camera.K, dtype=np.float64), camera_name=camera_name)

    @property
    def distorted(self) -> bool:
        return bool(np.any(self.D != 0))

    def intrinsics(self) -> CameraIntrinsics:
        """The pinhole of the images SceneMaker reads: K when there is no distortion, else the
        rectified camera P[:, :3] (the images must then be rectified, e.g. ``image_rect``)."""
        K = self.P[:, :3] if self.distorted else self.K
        return CameraIntrinsics(width=self.width, height=self.height, K=K.copy())


def load_camera_info(path: str | Path) -> CameraInfo:
    """Read a camera_calibration YAML or a CameraInfo-like JSON/YAML file (module docstring)."""
    return camera_info_from_mapping(_read_mapping(Path(path)), str(path))


def camera_info_from_mapping(data: dict[str, Any], source: str) -> CameraInfo:
    """A calibration from a parsed file or a ``sensor_msgs/CameraInfo``'s fields; ``source``
    names it in errors. Non-zero distortion coefficients are logged as a warning: the images must
    be rectified, and CameraInfo.intrinsics() then uses the projection matrix."""
    if "camera_matrix" in data:
        info = _calibration_from_yaml(data, source)
    elif "k" in {key.lower() for key in data}:
        info = _calibration_from_camera_info({k.lower(): v for k, v in data.items()}, source)
    else:
        raise SceneMakerError(f"{source}: not a camera info file (expected 'camera_matrix' as "
                              "written by camera_calibration, or CameraInfo's 'k')")
    if info.width <= 0 or info.height <= 0:
        raise SceneMakerError(f"{source}: image size must be positive, got {info.width}x"
                              f"{info.height}")
    _check_intrinsics(info.K, source)
    if info.distorted:
        log.warning("%s: non-zero %s distortion coefficients %s; SceneMaker models no "
                    "distortion: pass rectified images (image_rect), it uses the projection "
                    "matrix P", source, info.distortion_model, np.round(info.D, 6).tolist())
        _check_intrinsics(info.P[:, :3], f"{source} (projection matrix)")
    return info


def _read_mapping(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SceneMakerError(f"{path}: camera info not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise SceneMakerError(f"{path}: cannot read the camera info ({err})") from None
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:  # `ros2 topic echo` ends its message with '---', a second (empty) document
            data = next((d for d in yaml.safe_load_all(text) if d is not None), None)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise SceneMakerError(f"{path}: invalid camera info ({err})") from None
    if not isinstance(data, dict):
        raise SceneMakerError(f"{path}: camera info must be a mapping, got {type(data).__name__}")
    return data


def _numbers(value: Any, key: str, path: str | Path, shape: tuple[int, ...] | None = None
             ) -> np.ndarray:
    """Finite numbers -> float64 array of ``shape`` (None: any length, flat); a
    ``{rows, cols, data}`` mapping is unwrapped and a missing value is empty."""
    if isinstance(value, dict):
        value = value.get("data")
    try:
        array = np.asarray([] if value is None else value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise SceneMakerError(f"{path}: '{key}' must be a list of numbers") from None
    if shape is not None and array.size != int(np.prod(shape)):
        raise SceneMakerError(f"{path}: '{key}' needs {int(np.prod(shape))} numbers, "
                              f"got {array.size}")
    if not np.all(np.isfinite(array)):
        raise SceneMakerError(f"{path}: '{key}' has non-finite values")
    return array if shape is None else array.reshape(shape)


def _int(data: dict, key: str, path: str | Path) -> int:
    value = data.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise SceneMakerError(f"{path}: '{key}' must be an integer, got {value!r}")
    return value


def _calibration_from_yaml(data: dict, path: str | Path) -> CameraInfo:
    return CameraInfo(
        width=_int(data, "image_width", path), height=_int(data, "image_height", path),
        K=_numbers(data["camera_matrix"], "camera_matrix", path, (3, 3)),
        D=_numbers(data.get("distortion_coefficients"), "distortion_coefficients", path),
        distortion_model=str(data.get("distortion_model", "plumb_bob")),
        R=_optional(data, "rectification_matrix", (3, 3), path, np.eye(3)),
        P=_optional(data, "projection_matrix", (3, 4), path, None),
        camera_name=str(data.get("camera_name", "camera")))


def _calibration_from_camera_info(data: dict, path: str | Path) -> CameraInfo:
    return CameraInfo(
        width=_int(data, "width", path), height=_int(data, "height", path),
        K=_numbers(data["k"], "k", path, (3, 3)), D=_numbers(data.get("d"), "d", path),
        distortion_model=str(data.get("distortion_model") or "plumb_bob"),
        R=_optional(data, "r", (3, 3), path, np.eye(3)),
        P=_optional(data, "p", (3, 4), path, None))


def _optional(data: dict, key: str, shape: tuple[int, int], path: str | Path,
              default: np.ndarray | None) -> np.ndarray | None:
    """An optional matrix; missing or all zeros (an unset CameraInfo field) gives default."""
    if data.get(key) is None:
        return default
    matrix = _numbers(data[key], key, path, shape)
    return default if not np.any(matrix) else matrix


def save_camera_info_yaml(info: CameraInfo, path: str | Path) -> None:
    """Write ``info`` in the camera_calibration YAML format (load_camera_info reads it back)."""
    def matrix(array: np.ndarray) -> dict[str, Any]:
        array = np.atleast_2d(np.asarray(array, dtype=np.float64))
        return {"rows": array.shape[0], "cols": array.shape[1],
                "data": [float(v) for v in array.reshape(-1)]}

    data = {"image_width": int(info.width), "image_height": int(info.height),
            "camera_name": info.camera_name, "camera_matrix": matrix(info.K),
            "distortion_model": info.distortion_model,
            "distortion_coefficients": matrix(info.D.reshape(1, -1)),
            "rectification_matrix": matrix(info.R), "projection_matrix": matrix(info.P)}
    write_text_atomic(path, yaml.safe_dump(data, sort_keys=False, default_flow_style=None))
