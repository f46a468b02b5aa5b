"""scenemaker_ros.pose.model: shapes, identity at init, equivariance, masking, ablation routing."""

import dataclasses

import pytest
import torch

from scenemaker_ros.pose.model import (
    LOG_SCALE,
    POSE_MODELS,
    ROT6D,
    TRANSLATION,
    decode_pose,
    encode_pose,
    matrix_to_rotation_6d,
    rotation_6d_to_matrix,
)
from tests.helpers import make_batch, perturbed

PER_OBJECT = ["geometry", "obj_cloud", "obj_cloud_mask", "obj_cloud_center", "obj_cloud_extent",
              "obj_crop"]


def run(model, batch, obj_mask, pose_t, t):
    with torch.no_grad():
        return model(pose_t, t, model.encode_conditions(batch), obj_mask)


def test_output_shape_and_zero_at_init():
    torch.manual_seed(0)
    model = POSE_MODELS["pose-XS"]()
    batch, obj_mask, pose_t, t = make_batch()
    cond = model.encode_conditions(batch)
    out = model(pose_t, t, cond, obj_mask)
    assert out.shape == (2, 3, 12)
    assert torch.equal(out, torch.zeros_like(out))
    # every block starts as the identity
    x = torch.randn(2, 12, model.config.width)
    c = model.t_embedder(t)
    for layer, block in enumerate(model.blocks):
        assert torch.equal(block(x, c, cond, layer, obj_mask), x)


def test_finite_with_empty_and_sparse_clouds():
    model = perturbed(POSE_MODELS["pose-XS"]())
    batch, obj_mask, pose_t, t = make_batch()
    assert run(model, batch, obj_mask, pose_t, t).isfinite().all()


def test_permutation_equivariance():
    torch.manual_seed(0)
    model = perturbed(POSE_MODELS["pose-XS"]())
    batch, obj_mask, pose_t, t = make_batch()
    out = run(model, batch, obj_mask, pose_t, t)
    perm = torch.tensor([2, 0, 1])
    permuted = dataclasses.replace(batch, **{k: getattr(batch, k)[:, perm] for k in PER_OBJECT})
    out_perm = run(model, permuted, obj_mask[:, perm], pose_t[:, perm], t)
    valid = obj_mask[:, perm]
    assert torch.allclose(out_perm[valid], out[:, perm][valid], atol=1e-5)
    assert out.abs().max() > 1e-3  # non-trivial


def test_padded_objects_do_not_affect_valid_ones():
    model = perturbed(POSE_MODELS["pose-XS"]())
    batch, obj_mask, pose_t, t = make_batch()
    out = run(model, batch, obj_mask, pose_t, t)
    changed = dataclasses.replace(batch, **{
        k: getattr(batch, k).clone() for k in ["geometry", "obj_cloud_center", "obj_crop"]
    })
    changed.geometry[1, 2] += 5.0
    changed.obj_cloud_center[1, 2] = 3.0
    changed.obj_crop[1, 2] = 1.0
    pose_changed = pose_t.clone()
    pose_changed[1, 2] += 4.0
    out_changed = run(model, changed, obj_mask, pose_changed, t)
    assert torch.allclose(out_changed[obj_mask], out[obj_mask], atol=1e-6)


def changes(model, edit):
    """Whether edit(batch, pose_t) changes the model's output; returns (B, K, 12) bool."""
    batch, obj_mask, pose_t, t = make_batch()
    out = run(model, batch, obj_mask, pose_t, t)
    batch = dataclasses.replace(batch, **{k: v.clone() for k, v in vars(batch).items()})
    pose_t = pose_t.clone()
    edit(batch, pose_t)
    return (run(model, batch, obj_mask, pose_t, t) - out).abs() > 1e-6


@pytest.mark.parametrize("global_self_attn", [True, False])
def test_global_self_attention_switch(global_self_attn):
    """Objects only see each other through global self-attention."""
    model = perturbed(POSE_MODELS["pose-XS"](global_self_attn=global_self_attn))

    def edit_object_1(batch, pose_t):
        pose_t[0, 1] += 1.0
        batch.obj_cloud[0, 1] *= 2.0

    changed = changes(model, edit_object_1)
    assert changed[0, 1].all()
    assert changed[0, 0].any() == global_self_attn
    assert not changed[1].any()  # other scenes never change


@pytest.mark.parametrize("local_self_attn", [True, False])
def test_local_self_attention_switch(local_self_attn):
    """Without global attention, an object's R token sees its own T token only through local
    self-attention."""
    model = perturbed(POSE_MODELS["pose-XS"](global_self_attn=False,
                                             local_self_attn=local_self_attn))

    def edit_translation(batch, pose_t):
        pose_t[0, 0, TRANSLATION] += 1.0

    changed = changes(model, edit_translation)
    assert changed[0, 0, TRANSLATION].all()
    assert changed[0, 0, ROT6D].any() == local_self_attn


@pytest.mark.parametrize("local_cross_attn", [True, False])
def test_local_cross_attention_switch(local_cross_attn):
    """With local cross-attention, R tokens never read the scene; without it they do."""
    model = perturbed(POSE_MODELS["pose-XS"](global_self_attn=False, local_self_attn=False,
                                             local_cross_attn=local_cross_attn))

    def edit_scene(batch, pose_t):
        batch.scene_image[0] = 1.0 - batch.scene_image[0]
        batch.scene_cloud[0] += 0.5

    changed = changes(model, edit_scene)
    assert changed[0, :, TRANSLATION].all() and changed[0, :, LOG_SCALE].all()
    assert changed[0, :, ROT6D].any() == (not local_cross_attn)


def test_default_preset_size():
    n = sum(p.numel() for p in POSE_MODELS["pose-S"]().parameters())
    assert 1e6 <= n <= 4e6, n


def test_too_many_objects_raise():
    model = POSE_MODELS["pose-XS"]()
    batch, _, _, _ = make_batch(K=17)
    with pytest.raises(AssertionError, match="at most 16"):
        model.encode_conditions(batch)


def test_rot6d_round_trip_and_orthonormal():
    g = torch.Generator().manual_seed(0)
    rot = rotation_6d_to_matrix(torch.randn(100, 6, generator=g))  # (100, 3, 3)
    eye = torch.eye(3).expand(100, 3, 3)
    assert torch.allclose(rot.transpose(-1, -2) @ rot, eye, atol=1e-5)
    assert torch.allclose(torch.linalg.det(rot), torch.ones(100), atol=1e-5)
    assert torch.allclose(rotation_6d_to_matrix(matrix_to_rotation_6d(rot)), rot, atol=1e-5)
    translation, scale = torch.randn(100, 3, generator=g), torch.rand(100, 3, generator=g) + 0.1
    rot2, translation2, scale2 = decode_pose(encode_pose(rot, translation, scale))
    assert torch.allclose(rot2, rot, atol=1e-5)
    assert torch.allclose(translation2, translation) and torch.allclose(scale2, scale, atol=1e-6)
