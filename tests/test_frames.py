"""RGB-D input: the frame, image/depth loaders, camera calibration files, every bad input."""

import json
import logging

import numpy as np
import pytest
from PIL import Image

from scenemaker_ros.errors import SceneMakerError
from scenemaker_ros.frames import (
    CameraInfo,
    RGBDFrame,
    load_camera_info,
    load_depth,
    load_frame,
    load_rgb,
    save_camera_info_yaml,
)
from scenemaker_ros.geometry import depth_to_points, project_points
from scenemaker_ros.scene import CameraIntrinsics

K = np.array([[600.0, 0.0, 31.5], [0.0, 610.0, 23.5], [0.0, 0.0, 1.0]])

# what the ROS camera calibrator writes (camera_calibration / camera_info_manager)
CALIBRATION_YAML = """\
image_width: 64
image_height: 48
camera_name: narrow_stereo
camera_matrix:
  rows: 3
  cols: 3
  data: [600.0, 0.0, 31.5, 0.0, 610.0, 23.5, 0.0, 0.0, 1.0]
distortion_model: plumb_bob
distortion_coefficients:
  rows: 1
  cols: 5
  data: [0.0, 0.0, 0.0, 0.0, 0.0]
rectification_matrix:
  rows: 3
  cols: 3
  data: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
projection_matrix:
  rows: 3
  cols: 4
  data: [600.0, 0.0, 31.5, 0.0, 0.0, 610.0, 23.5, 0.0, 0.0, 0.0, 1.0, 0.0]
"""

# `ros2 topic echo --once /camera/color/camera_info > info.yaml`
ECHO_YAML = """\
header:
  stamp:
    sec: 12
    nanosec: 0
  frame_id: camera_color_optical_frame
height: 48
width: 64
distortion_model: plumb_bob
d:
- 0.0
- 0.0
- 0.0
- 0.0
- 0.0
k:
- 600.0
- 0.0
- 31.5
- 0.0
- 610.0
- 23.5
- 0.0
- 0.0
- 1.0
r: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
p: [600.0, 0.0, 31.5, 0.0, 0.0, 610.0, 23.5, 0.0, 0.0, 0.0, 1.0, 0.0]
binning_x: 0
binning_y: 0
---
"""


def camera(width: int = 64, height: int = 48, K: np.ndarray = K) -> CameraIntrinsics:
    return CameraIntrinsics(width=width, height=height, K=K.copy())


def frame(depth: np.ndarray | None = None, rgb: np.ndarray | None = None, **kw) -> RGBDFrame:
    depth = np.full((48, 64), 1.0, np.float32) if depth is None else depth
    rgb = np.zeros((*depth.shape, 3), np.uint8) if rgb is None else rgb
    return RGBDFrame(rgb=rgb, depth=depth, camera=kw.pop("camera", camera()), **kw)


# -----------------------------------------------------------------------------
# the frame


def test_frame_sanitises_depth():
    depth = np.array([[1.5, np.nan], [np.inf, -2.0]], np.float64)
    f = frame(depth, camera=camera(2, 2))
    assert f.depth.dtype == np.float32
    np.testing.assert_array_equal(f.depth, [[1.5, 0.0], [0.0, 0.0]])
    np.testing.assert_array_equal(f.valid, [[True, False], [False, False]])
    assert f.validate() is f


@pytest.mark.parametrize("make, message", [
    (lambda: frame(rgb=np.zeros((48, 64, 3), np.uint8), depth=np.ones((40, 64))),
     "RGB is 64x48 but depth is 64x40"),
    (lambda: frame(camera=camera(640, 480)), "camera info is 640x480 but the images are 64x48"),
    (lambda: frame(camera=camera(K=np.diag([0.0, 610.0, 1.0]))), "focal length must be positive"),
    (lambda: frame(camera=camera(K=np.diag([600.0, -1.0, 1.0]))), "focal length must be positive"),
    (lambda: frame(np.zeros((48, 64))), "no valid pixel"),
    (lambda: frame(np.full((48, 64), np.nan)), "no valid pixel"),
    (lambda: frame(np.zeros((0, 64)), camera=camera(64, 0)), "empty"),
    (lambda: frame(rgb=np.zeros((48, 64, 3), np.float32)), "uint8"),
    (lambda: frame(rgb=np.zeros((48, 64), np.uint8)), r"\(H, W, 3\)"),
])
def test_validate_names_the_problem(make, message):
    with pytest.raises(SceneMakerError, match=message):
        make().validate()


# -----------------------------------------------------------------------------
# images


def test_load_rgb_png_jpeg_grey_and_rgba(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    np.testing.assert_array_equal(load_rgb(tmp_path / "c.png"), rgb)
    x, y = np.meshgrid(np.arange(64) * 4, np.arange(48) * 5)
    smooth = np.dstack([x, y, np.full((48, 64), 90)]).astype(np.uint8)
    Image.fromarray(smooth).save(tmp_path / "c.jpg", quality=95)
    jpeg = load_rgb(tmp_path / "c.jpg")
    assert jpeg.shape == (48, 64, 3) and jpeg.dtype == np.uint8
    assert np.abs(jpeg.astype(int) - smooth).mean() < 3  # lossy, but the same picture
    Image.fromarray(rgb[..., 0]).save(tmp_path / "g.png")
    np.testing.assert_array_equal(load_rgb(tmp_path / "g.png"), np.repeat(rgb[..., :1], 3, 2))
    rgba = np.dstack([rgb, np.full((48, 64), 7, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "a.png")
    np.testing.assert_array_equal(load_rgb(tmp_path / "a.png"), rgb)
    Image.fromarray(np.full((4, 5), 65535, np.uint16)).save(tmp_path / "g16.png")
    np.testing.assert_array_equal(load_rgb(tmp_path / "g16.png"), np.full((4, 5, 3), 255))


def test_load_rgb_missing_or_unreadable(tmp_path):
    with pytest.raises(SceneMakerError, match="RGB image not found"):
        load_rgb(tmp_path / "nope.png")
    (tmp_path / "bad.png").write_bytes(b"not an image at all")
    with pytest.raises(SceneMakerError, match="cannot read the RGB image"):
        load_rgb(tmp_path / "bad.png")


def test_load_depth_formats(tmp_path):
    mm = np.array([[0, 1000], [1234, 65535]], np.uint16)
    Image.fromarray(mm).save(tmp_path / "d.png")
    depth = load_depth(tmp_path / "d.png")
    assert depth.dtype == np.float32
    np.testing.assert_allclose(depth, mm * 0.001, rtol=1e-6)
    np.testing.assert_allclose(load_depth(tmp_path / "d.png", depth_scale=1e-4), mm * 1e-4,
                               rtol=1e-6)
    metres = np.array([[0.0, 0.5], [np.nan, 2.25]], np.float32)
    np.save(tmp_path / "d.npy", metres)
    np.testing.assert_array_equal(load_depth(tmp_path / "d.npy"), metres)
    Image.fromarray(metres).save(tmp_path / "d.tiff")
    np.testing.assert_array_equal(load_depth(tmp_path / "d.tiff"), metres)
    np.save(tmp_path / "mm.npy", mm)  # integer arrays are raw units, like the PNG
    np.testing.assert_allclose(load_depth(tmp_path / "mm.npy"), mm * 0.001, rtol=1e-6)


@pytest.mark.parametrize("write, message", [
    (lambda p: Image.fromarray(np.zeros((4, 4), np.uint8)).save(p / "x.png"),
     "16-bit single-channel"),
    (lambda p: Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(p / "x.png"),
     "16-bit single-channel"),
    (lambda p: (p / "x.png").write_bytes(b"garbage"), "cannot read the depth image"),
    (lambda p: None, "depth image not found"),
])
def test_load_depth_png_refusals(tmp_path, write, message):
    write(tmp_path)
    with pytest.raises(SceneMakerError, match=message):
        load_depth(tmp_path / "x.png")


def test_load_depth_npy_refusals(tmp_path):
    with pytest.raises(SceneMakerError, match="depth image not found"):
        load_depth(tmp_path / "x.npy")
    np.save(tmp_path / "rgb.npy", np.zeros((4, 4, 3), np.float32))
    with pytest.raises(SceneMakerError, match=r"\(H, W\) array"):
        load_depth(tmp_path / "rgb.npy")
    np.save(tmp_path / "s.npy", np.array([["a", "b"]]))
    with pytest.raises(SceneMakerError, match="numeric"):
        load_depth(tmp_path / "s.npy")
    (tmp_path / "bad.npy").write_bytes(b"garbage")
    with pytest.raises(SceneMakerError, match="cannot read the depth array"):
        load_depth(tmp_path / "bad.npy")
    np.save(tmp_path / "ok.npy", np.ones((2, 2), np.float32))
    with pytest.raises(SceneMakerError, match="depth scale must be positive"):
        load_depth(tmp_path / "ok.npy", depth_scale=0)


# -----------------------------------------------------------------------------
# camera calibration


def test_calibration_yaml(tmp_path):
    (tmp_path / "c.yaml").write_text(CALIBRATION_YAML)
    info = load_camera_info(tmp_path / "c.yaml")
    assert (info.width, info.height, info.camera_name) == (64, 48, "narrow_stereo")
    np.testing.assert_array_equal(info.K, K)
    assert not info.distorted
    intr = info.intrinsics()
    assert (intr.width, intr.height) == (64, 48)
    np.testing.assert_array_equal(intr.K, K)


def test_camera_info_json_and_topic_echo(tmp_path):
    data = {"width": 64, "height": 48, "k": K.ravel().tolist(), "d": [0.0] * 5,
            "distortion_model": "plumb_bob"}
    (tmp_path / "c.json").write_text(json.dumps(data))
    np.testing.assert_array_equal(load_camera_info(tmp_path / "c.json").intrinsics().K, K)
    data = {"width": 64, "height": 48, "K": K.ravel().tolist(), "D": []}  # ROS 1 names
    (tmp_path / "ros1.json").write_text(json.dumps(data))
    np.testing.assert_array_equal(load_camera_info(tmp_path / "ros1.json").K, K)
    (tmp_path / "echo.yaml").write_text(ECHO_YAML)
    info = load_camera_info(tmp_path / "echo.yaml")
    assert (info.width, info.height) == (64, 48)
    np.testing.assert_array_equal(info.K, K)


def test_distortion_is_reported_and_projection_used(tmp_path, caplog):
    text = CALIBRATION_YAML.replace("data: [0.0, 0.0, 0.0, 0.0, 0.0]",
                                    "data: [0.1, -0.2, 0.001, 0.0, 0.0]")
    text = text.replace("data: [600.0, 0.0, 31.5, 0.0, 0.0, 610.0",
                        "data: [590.0, 0.0, 30.0, 0.0, 0.0, 595.0")
    (tmp_path / "c.yaml").write_text(text)
    with caplog.at_level(logging.WARNING, logger="scenemaker_ros.frames"):
        info = load_camera_info(tmp_path / "c.yaml")
    assert info.distorted
    assert "distortion" in caplog.text and "rectified" in caplog.text
    np.testing.assert_array_equal(info.intrinsics().K,
                                  [[590.0, 0.0, 30.0], [0.0, 595.0, 23.5], [0.0, 0.0, 1.0]])


@pytest.mark.parametrize("name, text, message", [
    ("zero.yaml", CALIBRATION_YAML.replace("[600.0, 0.0, 31.5, 0.0, 610.0",
                                           "[0.0, 0.0, 31.5, 0.0, 610.0"),
     "focal length must be positive"),
    ("short.yaml", CALIBRATION_YAML.replace("[600.0, 0.0, 31.5, 0.0, 610.0, 23.5, 0.0, 0.0, 1.0]",
                                            "[600.0, 0.0, 31.5]"),
     "'camera_matrix' needs 9 numbers, got 3"),
    ("words.yaml", CALIBRATION_YAML.replace("data: [600.0,", "data: [six,"),
     "'camera_matrix' must be a list of numbers"),
    ("width.yaml", CALIBRATION_YAML.replace("image_width: 64", "image_width: '64'"),
     "'image_width' must be an integer"),
    ("size.yaml", CALIBRATION_YAML.replace("image_width: 64", "image_width: 0"),
     "image size must be positive"),
    ("other.yaml", "foo: 1\n", "not a camera info file"),
    ("list.yaml", "- 1\n- 2\n", "must be a mapping"),
    ("broken.yaml", "image_width: [1, 2\n", "invalid camera info"),
    ("broken.json", "{\"width\": 64,", "invalid camera info"),
    ("nan.json", json.dumps({"width": 64, "height": 48, "k": [float("nan")] * 9}),
     "non-finite"),
])
def test_bad_camera_info(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(SceneMakerError, match=message):
        load_camera_info(tmp_path / name)


def test_missing_camera_info(tmp_path):
    with pytest.raises(SceneMakerError, match="camera info not found"):
        load_camera_info(tmp_path / "none.yaml")


def test_save_camera_info_round_trip(tmp_path):
    info = CameraInfo(width=64, height=48, K=K, D=np.array([0.1, 0.0, 0.0, 0.0, 0.02]),
                      P=np.hstack([K * 0.98, np.zeros((3, 1))]), camera_name="head")
    save_camera_info_yaml(info, tmp_path / "c.yaml")
    back = load_camera_info(tmp_path / "c.yaml")
    for name in ("width", "height", "distortion_model", "camera_name"):
        assert getattr(back, name) == getattr(info, name)
    for name in ("K", "D", "R", "P"):
        np.testing.assert_array_equal(getattr(back, name), getattr(info, name))
    plain = CameraInfo.from_intrinsics(camera())
    save_camera_info_yaml(plain, tmp_path / "p.yaml")
    assert "camera_matrix:" in (tmp_path / "p.yaml").read_text()
    np.testing.assert_array_equal(load_camera_info(tmp_path / "p.yaml").intrinsics().K, K)


def test_load_frame(tmp_path):
    (tmp_path / "c.yaml").write_text(CALIBRATION_YAML)
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(tmp_path / "c.png")
    Image.fromarray(np.full((48, 64), 800, np.uint16)).save(tmp_path / "d.png")
    f = load_frame(tmp_path / "c.png", tmp_path / "d.png", tmp_path / "c.yaml", stamp=3.5)
    assert f.rgb.shape == (48, 64, 3) and f.stamp == 3.5
    np.testing.assert_allclose(f.depth, 0.8, rtol=1e-6)
    Image.fromarray(np.full((40, 64), 800, np.uint16)).save(tmp_path / "small.png")
    with pytest.raises(SceneMakerError, match="RGB is 64x48 but depth is 64x40"):
        load_frame(tmp_path / "c.png", tmp_path / "small.png", tmp_path / "c.yaml")
    Image.fromarray(np.zeros((48, 64), np.uint16)).save(tmp_path / "zero.png")
    with pytest.raises(SceneMakerError, match="no valid pixel"):
        load_frame(tmp_path / "c.png", tmp_path / "zero.png", tmp_path / "c.yaml")


# -----------------------------------------------------------------------------
# back-projection


def test_depth_to_points_inverts_projection():
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.5, 2.0, (48, 64))
    depth[5, 7], depth[9, 3], depth[1, 1] = 0.0, np.nan, -1.0
    points = depth_to_points(depth, K)
    assert points.shape == (48 * 64 - 3, 3) and points.dtype == np.float64
    v, u = np.nonzero(np.isfinite(depth) & (depth > 0))
    np.testing.assert_allclose(project_points(K, points), np.stack([u, v], 1), atol=1e-9)
    np.testing.assert_array_equal(points[:, 2], depth[v, u])
    mask = np.zeros((48, 64), bool)
    mask[10:12, 20:23] = True
    mask[5, 7] = True  # invalid depth stays out
    assert depth_to_points(depth, K, mask).shape == (6, 3)
