"""DINOv2 image features on a tiny randomly initialised model (no weights, no network)."""

import subprocess
import sys

import pytest
import torch
import transformers

from scenemaker_ros.errors import SceneMakerError
from scenemaker_ros.pose.dinov2 import Dinov2Features, build_image_features
from scenemaker_ros.pose.model import ImageEncoder

OUT_DIM = 24


def tiny_config():
    return transformers.Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, patch_size=14, image_size=56)


def tiny(in_channels: int, **options) -> Dinov2Features:
    torch.manual_seed(0)
    return Dinov2Features(in_channels, OUT_DIM, model=tiny_config(), **options)


@pytest.mark.parametrize("in_channels", [3, 4])
def test_output_shape(in_channels):
    features = tiny(in_channels, image_size=(56, 84))  # 4 x 6 patches, interpolated positions
    out = features(torch.rand(2, in_channels, 30, 40))
    assert features.out_dim == OUT_DIM
    assert out.shape == (2, 24, OUT_DIM) and out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_backbone_frozen_projection_trains():
    features = tiny(4).train()
    assert not features.backbone.training  # a frozen backbone stays in eval mode
    features(torch.rand(2, 4, 32, 32)).square().mean().backward()
    assert all(not p.requires_grad and p.grad is None for p in features.backbone.parameters())
    for layer in (features.proj, features.mask_embed):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.parameters())


def test_unfrozen_backbone_trains():
    features = tiny(3, freeze=False).train()
    assert features.backbone.training
    features(torch.rand(1, 3, 28, 28)).square().mean().backward()
    grads = [p.grad for p in features.backbone.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)


def test_mask_channel_changes_output():
    features = tiny(4).eval()
    image = torch.rand(1, 4, 56, 56)
    other = image.clone()
    other[:, 3] = 1.0 - other[:, 3]
    assert not torch.allclose(features(image), features(other))
    flipped_rgb = image.clone()
    flipped_rgb[:, :3] = 1.0 - flipped_rgb[:, :3]
    assert not torch.allclose(features(image), features(flipped_rgb))


def test_bfloat16_backbone():
    features = tiny(3, dtype=torch.bfloat16)
    assert features.backbone.dtype == torch.bfloat16 and features.proj.weight.dtype == torch.float32
    assert features(torch.rand(1, 3, 28, 28)).dtype == torch.float32


def test_wrong_channels_and_image_size():
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        tiny(3)(torch.rand(1, 4, 28, 28))
    with pytest.raises(SceneMakerError, match="multiples of the patch size 14"):
        tiny(3, image_size=100)


def test_pretrained_from_local_folder(tmp_path):
    torch.manual_seed(0)
    transformers.Dinov2Model(tiny_config()).save_pretrained(tmp_path)
    features = Dinov2Features(3, OUT_DIM, model=str(tmp_path), image_size=56)
    assert features(torch.rand(1, 3, 56, 56)).shape == (1, 16, OUT_DIM)


def test_missing_weights_clear_error(tmp_path):
    missing = tmp_path / "dinov2-small"
    with pytest.raises(SceneMakerError, match="hf download facebook/dinov2-small") as err:
        Dinov2Features(3, OUT_DIM, model=str(missing))
    assert str(missing) in str(err.value) and "\n" not in str(err.value)


def test_transformers_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import raises ImportError
    with pytest.raises(SceneMakerError, match=r"pip install transformers==\d"):
        Dinov2Features(3, OUT_DIM, model=tiny_config())


def test_builder():
    assert isinstance(build_image_features("cnn", 4, 32), ImageEncoder)
    dino = build_image_features("dinov2", 4, 32, model=tiny_config(), image_size=28)
    assert isinstance(dino, Dinov2Features) and dino.out_dim == 32
    with pytest.raises(SceneMakerError, match="unknown image_features"):
        build_image_features("vit", 3, 32)
    with pytest.raises(SceneMakerError, match="takes no options"):
        build_image_features("cnn", 3, 32, image_size=224)


def test_cnn_path_never_imports_transformers():
    code = ("import sys; from scenemaker_ros.pose.dinov2 import build_image_features; "
            "import scenemaker_ros.pose.model; build_image_features('cnn', 3, 32); "
            "assert 'transformers' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_pose_model_with_dinov2_features_from_a_local_folder(tmp_path):
    from scenemaker_ros.config import PoseInputConfig
    from scenemaker_ros.pose.checkpoint import load_checkpoint, save_checkpoint
    from scenemaker_ros.pose.model import POSE_MODELS
    from tests.helpers import make_batch

    torch.manual_seed(0)
    transformers.Dinov2Model(tiny_config()).save_pretrained(tmp_path / "tiny-dinov2")
    model = POSE_MODELS["pose-XS"](image_features="dinov2",
                                   image_backbone=str(tmp_path / "tiny-dinov2"),
                                   crop_feature_size=28, scene_feature_size=(28, 42))
    assert isinstance(model.crop_encoder, Dinov2Features)
    assert all(not p.requires_grad for p in model.crop_encoder.backbone.parameters())
    batch, obj_mask, pose_t, t = make_batch()
    velocity = model(pose_t, t, model.encode_conditions(batch), obj_mask)
    assert velocity.shape == (2, 3, 12) and torch.isfinite(velocity).all()
    save_checkpoint(tmp_path / "m.safetensors", model, PoseInputConfig(), {})
    loaded, _, _ = load_checkpoint(tmp_path / "m.safetensors")
    assert loaded.config.image_features == "dinov2"
    assert torch.equal(loaded.crop_encoder.proj.weight, model.crop_encoder.proj.weight)
