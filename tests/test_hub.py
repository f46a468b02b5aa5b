"""Loading helpers of the heavy backends (stages/hub.py) and the stage fallback (backends.py)."""

import logging

import pytest
import torch
import transformers

from scenemaker_ros.config import GroundedSamConfig, SegmentationConfig
from scenemaker_ros.errors import SceneMakerError
from scenemaker_ros.stages.hub import (
    Runtime,
    from_pretrained,
    out_of_memory_hint,
    require,
    resolve_device,
    resolve_dtype,
)
from scenemaker_ros.stages.segmentation import DepthClusterSegmenter, build_segmenter

KEY = "pipeline.depth.depth_pro.device"
GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


@pytest.fixture
def no_cuda(monkeypatch):
    """A machine without a CUDA device, whatever this one has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


def tiny_dinov2(folder):
    torch.manual_seed(0)
    config = transformers.Dinov2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=32, patch_size=14, image_size=28)
    transformers.Dinov2Model(config).save_pretrained(folder)
    return folder


def test_devices(no_cuda, caplog):
    assert resolve_device("cpu", KEY) == torch.device("cpu")
    with caplog.at_level(logging.WARNING):
        assert resolve_device("auto", KEY, "depth_pro") == torch.device("cpu")
    assert "depth_pro runs on the CPU" in caplog.text
    for name in ("cuda", "cuda:1"):
        with pytest.raises(SceneMakerError, match="no CUDA device") as err:
            resolve_device(name, KEY)
        assert f"set {KEY} to 'cpu' or 'auto'" in one_line(err)
    with pytest.raises(SceneMakerError, match=f"{KEY} must be"):
        resolve_device("tpu", KEY)


def test_dtypes():
    cpu = torch.device("cpu")
    assert resolve_dtype("auto", cpu) == torch.float32
    assert resolve_dtype("bfloat16", cpu) == torch.bfloat16
    with pytest.raises(SceneMakerError, match="x.dtype must be one of"):
        resolve_dtype("int8", cpu, "x.dtype")


def test_missing_weights_are_one_line(tmp_path):
    load = transformers.Dinov2Model.from_pretrained
    with pytest.raises(SceneMakerError) as err:
        from_pretrained(load, str(tmp_path / "dinov2"), "dinov2", True, "train.image_backbone",
                        hub_id="facebook/dinov2-small")
    text = one_line(err)
    assert str(tmp_path / "dinov2") in text and "no such folder" in text
    assert "hf download facebook/dinov2-small" in text and "set train.image_backbone" in text
    with pytest.raises(SceneMakerError) as err:  # a hub id that is not in the local cache
        from_pretrained(load, "scenemaker-tests/not-a-model", "dinov2", True, "a.b.model")
    text = one_line(err)
    assert "not found offline" in text and "hf download scenemaker-tests/not-a-model" in text
    assert "set a.b.offline: false" in text


def test_unreadable_weights_are_one_line(tmp_path):
    folder = tiny_dinov2(tmp_path / "dinov2")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # a truncated download
    with pytest.raises(SceneMakerError, match="unreadable") as err:
        from_pretrained(transformers.Dinov2Model.from_pretrained, str(folder), "dinov2", True)
    assert str(folder) in one_line(err)


def test_runtime_loads_places_and_calls_on_the_cpu(tmp_path):
    cfg = GroundedSamConfig(device="cpu", dtype="bfloat16")
    runtime = Runtime.from_config(cfg, "pipeline.segmentation.grounded_sam", "grounded_sam")
    model = runtime.place(runtime.load(transformers.Dinov2Model.from_pretrained,
                                       str(tiny_dinov2(tmp_path / "m"))))
    assert not model.training and model.dtype == torch.bfloat16
    with runtime.call(model):
        out = model(pixel_values=torch.rand(1, 3, 28, 28, dtype=torch.bfloat16))
        assert torch.is_inference_mode_enabled()
    assert out.last_hidden_state.shape == (1, 5, 16)


def test_out_of_memory_is_one_line():
    key = "pipeline.geometry.image_to_3d"
    with pytest.raises(SceneMakerError, match="out of GPU memory") as err:
        with out_of_memory_hint("image_to_3d", key):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
    text = one_line(err)
    for fix in ("dtype: float16", "cpu_offload: true", "free_after_use: true", "smaller model"):
        assert fix in text


def test_require_names_the_install_command():
    with pytest.raises(SceneMakerError, match="pip install -r requirements.txt"):
        require("scenemaker_no_such_package", "a backend")


def test_fallback_backend_when_the_primary_cannot_load(tmp_path, caplog):
    cfg = SegmentationConfig(backend="grounded_sam", fallback="depth_clusters")
    cfg.grounded_sam.detector = str(tmp_path / "missing-grounding-dino")
    with caplog.at_level(logging.WARNING):
        assert isinstance(build_segmenter(cfg), DepthClusterSegmenter)
    assert "using the fallback 'depth_clusters'" in caplog.text
    assert "missing-grounding-dino" in caplog.text
    cfg.fallback = ""
    with pytest.raises(SceneMakerError, match="missing-grounding-dino"):
        build_segmenter(cfg)
    cfg.fallback = "sam3"
    with pytest.raises(SceneMakerError, match="pipeline.segmentation.fallback must be one of"):
        build_segmenter(cfg)


def test_fallback_when_cuda_is_asked_without_a_gpu(no_cuda, caplog):
    cfg = SegmentationConfig(backend="grounded_sam", fallback="depth_clusters")
    cfg.grounded_sam.device = "cuda"
    with caplog.at_level(logging.WARNING):
        assert isinstance(build_segmenter(cfg), DepthClusterSegmenter)
    assert "pipeline.segmentation.grounded_sam.device is 'cuda'" in caplog.text


@GPU
@pytest.mark.parametrize("cpu_offload, free_after_use", [(False, False), (False, True),
                                                         (True, False)])
def test_runtime_on_a_gpu(tmp_path, cpu_offload, free_after_use):
    cfg = GroundedSamConfig(device="cuda", dtype="auto", cpu_offload=cpu_offload,
                            free_after_use=free_after_use)
    runtime = Runtime.from_config(cfg, "k", "test")
    assert runtime.dtype in (torch.bfloat16, torch.float16)
    model = runtime.place(runtime.load(transformers.Dinov2Model.from_pretrained,
                                       str(tiny_dinov2(tmp_path / "m"))))
    # between calls: on the GPU; on the CPU (free_after_use); in accelerate's CPU copy with
    # meta parameters (cpu_offload)
    waits_on = "meta" if cpu_offload else "cpu" if free_after_use else "cuda"
    assert next(model.parameters()).device.type == waits_on
    with runtime.call(model):
        pixels = torch.rand(1, 3, 28, 28, device="cuda", dtype=runtime.dtype)
        out = model(pixel_values=pixels).last_hidden_state
    assert out.device.type == "cuda" and out.dtype == runtime.dtype
    assert next(model.parameters()).device.type == waits_on
