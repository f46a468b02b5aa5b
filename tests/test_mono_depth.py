"""Monocular depth for RGB-only input on tiny random Depth Anything / Depth Pro models from local
folders (no weights, no network: the depths are meaningless, the code path and wiring are real)."""

import math

import numpy as np
import pytest
import torch
import transformers
import yaml
from PIL import Image

from scenemaker_ros.cli import main
from scenemaker_ros.config import DepthConfig, load_config
from scenemaker_ros.errors import SceneMakerError
from scenemaker_ros.pipeline import ScenePipeline
from scenemaker_ros.scene import CameraIntrinsics
from scenemaker_ros.stages.depth import (
    DepthAnythingEstimator,
    DepthProEstimator,
    build_depth_estimator,
    intrinsics_from_fov,
    rgb_frame,
)

H, W = 60, 80
FOV_DEG = 55.0
K = np.array([[70.0, 0.0, 39.5], [0.0, 70.0, 29.5], [0.0, 0.0, 1.0]])


def save_tiny_depth_anything(folder, kind: str = "metric"):
    torch.manual_seed(0)
    backbone = transformers.Dinov2Config(hidden_size=16, num_hidden_layers=4,
                                         num_attention_heads=2, intermediate_size=32,
                                         patch_size=14, image_size=56, out_indices=[1, 2, 3, 4],
                                         reshape_hidden_states=False)
    config = transformers.DepthAnythingConfig(
        backbone_config=backbone, reassemble_hidden_size=16, neck_hidden_sizes=[8, 8, 16, 16],
        fusion_hidden_size=8, head_hidden_size=8, depth_estimation_type=kind, max_depth=20)
    transformers.DepthAnythingForDepthEstimation(config).save_pretrained(folder)
    transformers.DPTImageProcessor(size={"height": 56, "width": 56}, keep_aspect_ratio=True,
                                   ensure_multiple_of=14).save_pretrained(folder)
    return str(folder)


def save_tiny_depth_pro(folder, fov: bool = True):
    """Depth Pro with a FOV head whose last layer is set to answer about FOV_DEG."""
    torch.manual_seed(0)
    config = transformers.DepthProConfig(
        patch_size=8, fusion_hidden_size=16, intermediate_hook_ids=[1, 0],
        intermediate_feature_dims=[10, 8], scaled_images_ratios=[0.5, 1.0],
        scaled_images_overlap_ratios=[0.0, 0.2], scaled_images_feature_dims=[12, 12],
        use_fov_model=fov,
        image_model_config={"model_type": "dinov2", "num_hidden_layers": 2, "hidden_size": 16,
                            "num_attention_heads": 1, "patch_size": 4},
        patch_model_config={"model_type": "vit", "num_hidden_layers": 2, "hidden_size": 24,
                            "num_attention_heads": 2, "intermediate_size": 32, "patch_size": 6},
        fov_model_config={"model_type": "vit", "num_hidden_layers": 2, "hidden_size": 32,
                          "num_attention_heads": 4, "intermediate_size": 32, "patch_size": 8})
    model = transformers.DepthProForDepthEstimation(config)
    if fov:
        last = model.fov_model.head.layers[-1]
        with torch.no_grad():
            last.weight.mul_(0.01)
            last.bias.fill_(FOV_DEG)
    model.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("mono_depth")
    return {"depth_anything": save_tiny_depth_anything(root / "depth-anything"),
            "depth_pro": save_tiny_depth_pro(root / "depth-pro")}


def depth_config(folders, backend: str, **options) -> DepthConfig:
    cfg = DepthConfig(backend=backend, **options)
    section = getattr(cfg, backend)
    section.model, section.device = folders[backend], "cpu"
    return cfg


@pytest.fixture(scope="module")
def rgb():
    return np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)


def test_depth_anything_with_user_intrinsics(folders, rgb):
    estimator = build_depth_estimator(depth_config(folders, "depth_anything"))
    assert isinstance(estimator, DepthAnythingEstimator)
    frame = rgb_frame(estimator, rgb, CameraIntrinsics(W, H, K.copy()), stamp=1.5)
    assert frame.depth.shape == (H, W) and frame.depth.dtype == np.float32
    assert frame.valid.all() and np.all(frame.depth <= 20)  # metric head: up to max_depth m
    assert np.array_equal(frame.camera.K, K) and frame.stamp == 1.5


def test_depth_anything_intrinsics_from_fov_or_refused(folders, rgb):
    estimator = build_depth_estimator(depth_config(folders, "depth_anything", fov_deg=60.0))
    result = estimator.estimate(rgb, None)
    assert result.K_source == "fov_deg"
    assert result.K[0, 0] == pytest.approx(W / 2 / math.tan(math.radians(30)))
    assert result.K[:2, 2].tolist() == [(W - 1) / 2, (H - 1) / 2]
    estimator = build_depth_estimator(depth_config(folders, "depth_anything"))
    with pytest.raises(SceneMakerError, match="pipeline.depth.fov_deg") as err:
        rgb_frame(estimator, rgb)
    assert "--camera-info" in str(err.value) and "\n" not in str(err.value)


def test_relative_depth_anything_is_refused(tmp_path):
    cfg = depth_config({"depth_anything": save_tiny_depth_anything(tmp_path, "relative")},
                       "depth_anything")
    with pytest.raises(SceneMakerError, match="relative-depth checkpoint"):
        build_depth_estimator(cfg)


def test_depth_pro_recovers_intrinsics(folders, rgb):
    estimator = build_depth_estimator(depth_config(folders, "depth_pro"))
    assert isinstance(estimator, DepthProEstimator) and estimator.input_size == 16
    estimated = estimator.estimate(rgb, None)
    assert estimated.K_source == "estimated" and estimated.depth.shape == (H, W)
    assert estimated.depth.dtype == np.float32 and np.all(estimated.depth > 0)
    fov = 2 * math.degrees(math.atan(W / 2 / estimated.K[0, 0]))
    assert fov == pytest.approx(FOV_DEG, abs=1.0)
    assert np.allclose(estimated.K, intrinsics_from_fov(W, H, fov))
    frame = rgb_frame(estimator, rgb)  # no camera info: the estimate becomes the camera
    assert np.allclose(frame.camera.K, estimated.K)
    # with the user's focal length the metric scale follows it: depth = fx / (W * c)
    user = estimator.estimate(rgb, K)
    doubled = K.copy()
    doubled[0, 0] *= 2
    assert user.K_source == "user"
    assert np.allclose(estimator.estimate(rgb, doubled).depth, 2 * user.depth, rtol=1e-5)
    assert np.allclose(user.depth / estimated.depth, K[0, 0] / estimated.K[0, 0], rtol=1e-5)


def test_depth_pro_without_fov_head_needs_intrinsics(tmp_path, rgb):
    folders = {"depth_pro": save_tiny_depth_pro(tmp_path, fov=False)}
    estimator = build_depth_estimator(depth_config(folders, "depth_pro"))
    with pytest.raises(SceneMakerError, match="no usable field-of-view estimate"):
        estimator.estimate(rgb, None)
    assert build_depth_estimator(depth_config(folders, "depth_pro", fov_deg=70.0)).estimate(
        rgb, None).K_source == "fov_deg"


def test_none_backend_and_fallback(tmp_path, rgb):
    assert build_depth_estimator(DepthConfig()) is None
    cfg = load_config()
    with pytest.raises(SceneMakerError, match="needs a monocular depth backend") as err:
        ScenePipeline.from_config(cfg).complete(rgb)
    assert "['depth_anything', 'depth_pro']" in str(err.value)
    missing = DepthConfig(backend="depth_pro", fallback="none")
    missing.depth_pro.model = str(tmp_path / "DepthPro-hf")
    assert build_depth_estimator(missing) is None  # the configured fallback
    missing.fallback = ""
    with pytest.raises(SceneMakerError, match="hf download apple/DepthPro-hf"):
        build_depth_estimator(missing)


def test_bad_rgb_and_camera_size(folders):
    estimator = build_depth_estimator(depth_config(folders, "depth_pro"))
    with pytest.raises(SceneMakerError, match=r"\(H, W, 3\) uint8"):
        rgb_frame(estimator, np.zeros((H, W), np.uint8))
    with pytest.raises(SceneMakerError, match="camera info is 100x60"):
        rgb_frame(estimator, np.zeros((H, W, 3), np.uint8), CameraIntrinsics(100, H, K))


def test_scenemaker_run_without_depth(folders, tmp_path, rgb):
    """``scenemaker run --rgb`` alone: Depth Pro estimates depth and intrinsics, the pipeline
    runs (an empty scene is fine for random weights), the effective config is saved."""
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    config = {"pipeline": {"depth": {"backend": "depth_pro",
                                     "depth_pro": {"model": folders["depth_pro"],
                                                   "device": "cpu"}}}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "scene"
    assert main(["run", "--rgb", str(tmp_path / "rgb.png"), "--out", str(out),
                 "--config", str(tmp_path / "config.yaml")]) == 0
    assert (out / "scene.json").exists()
    assert load_config(out / "config.yaml").pipeline.depth.backend == "depth_pro"
