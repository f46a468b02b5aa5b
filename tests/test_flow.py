"""scenemaker_ros.pose.flow: interpolation, loss masking, a short overfit, the Euler sampler."""

import pytest
import torch

from scenemaker_ros.pose.flow import (
    flow_matching_loss,
    interpolate,
    nearest_symmetric_target,
    sample,
    sample_time,
    step,
    time_grid,
)
from scenemaker_ros.pose.model import (
    POSE_MODELS,
    encode_pose,
    matrix_to_rotation_6d,
    rotation_6d_to_matrix,
)
from tests.helpers import make_batch, perturbed


def test_interpolation_endpoints():
    noise, data = torch.randn(2, 3, 12), torch.randn(2, 3, 12)
    assert torch.equal(interpolate(noise, data, torch.zeros(2)), noise)
    assert torch.equal(interpolate(noise, data, torch.ones(2)), data)
    mid = interpolate(noise, data, torch.tensor([0.25, 0.5]))
    assert torch.allclose(mid[0], 0.75 * noise[0] + 0.25 * data[0])


def test_time_sampling():
    g = torch.Generator().manual_seed(0)
    for distribution in ["logit_normal", "uniform"]:
        t = sample_time(1000, distribution, g)
        assert t.shape == (1000,) and (t > 0).all() and (t < 1).all()
    with pytest.raises(ValueError, match="time_distribution"):
        sample_time(4, "cosine")


def loss_of(model, batch, pose_data, obj_mask, seed=0, **kwargs):
    return flow_matching_loss(model, batch, pose_data, obj_mask,
                              torch.Generator().manual_seed(seed), **kwargs)


def test_loss_finite_and_ignores_padded_objects():
    model = perturbed(POSE_MODELS["pose-XS"]())
    batch, obj_mask, pose_data, _ = make_batch()
    loss, parts = loss_of(model, batch, pose_data, obj_mask)
    assert loss.isfinite() and loss > 0
    assert set(parts) == {"rotation", "translation", "scale"}
    assert torch.allclose(loss, sum(parts.values()))
    changed = pose_data.clone()
    changed[1, 2] += 100.0  # the padded object
    assert torch.allclose(loss_of(model, batch, changed, obj_mask)[0], loss)


def test_symmetric_target_is_the_equivalent_nearest_the_noise():
    g = torch.Generator().manual_seed(0)
    rot = rotation_6d_to_matrix(torch.randn(1, 2, 6, generator=g))  # (1, 2, 3, 3)
    pose = encode_pose(rot, torch.randn(1, 2, 3, generator=g), torch.rand(1, 2, 3) + 0.5)
    flip = torch.diag(torch.tensor([-1.0, -1.0, 1.0]))  # 180 degrees about z
    symmetries = torch.stack([torch.eye(3), flip]).expand(1, 2, 2, 3, 3)
    noise = torch.randn(1, 2, 12, generator=g)
    noise[0, 0, :6] = matrix_to_rotation_6d(rot[0, 0] @ flip)  # object 0: noise at R g
    noise[0, 1, :6] = pose[0, 1, :6]  # object 1: noise at R
    target = nearest_symmetric_target(noise, pose, symmetries)
    assert torch.allclose(target[0, 0, :6], matrix_to_rotation_6d(rot[0, 0] @ flip), atol=1e-6)
    assert torch.allclose(target[0, 1, :6], pose[0, 1, :6], atol=1e-6)
    assert torch.equal(target[..., 6:], pose[..., 6:])  # translation and scale untouched


def test_loss_with_identity_symmetries_and_several_times_per_scene():
    model = perturbed(POSE_MODELS["pose-XS"]())
    batch, obj_mask, pose_data, _ = make_batch()
    pose_data[..., :6] = matrix_to_rotation_6d(rotation_6d_to_matrix(pose_data[..., :6]))
    identity = torch.eye(3).expand(2, 3, 1, 3, 3)
    plain = loss_of(model, batch, pose_data, obj_mask)[0]
    assert torch.allclose(loss_of(model, batch, pose_data, obj_mask, symmetries=identity)[0],
                          plain, atol=1e-6)
    several = loss_of(model, batch, pose_data, obj_mask, times_per_scene=3)[0]
    assert several.isfinite() and not torch.allclose(several, plain)


def test_training_reduces_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    model = POSE_MODELS["pose-XS"]()
    batch, obj_mask, pose_data, _ = make_batch()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)

    def evaluate():  # the same noise and times each time
        with torch.no_grad():
            return sum(loss_of(model, batch, pose_data, obj_mask, seed=s)[0] for s in range(4)) / 4

    before = evaluate()
    generator = torch.Generator().manual_seed(1)
    for _ in range(100):
        loss, _ = flow_matching_loss(model, batch, pose_data, obj_mask, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert evaluate() < 0.3 * before


def test_euler_step_and_grid():
    x, v = torch.randn(2, 3, 12), torch.randn(2, 3, 12)
    assert torch.allclose(step(v, torch.tensor(0.25), torch.tensor(0.5), x), x + 0.25 * v)
    assert torch.equal(time_grid(4), torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]))
    with pytest.raises(ValueError, match="steps"):
        time_grid(0)


def test_one_step_sample_is_noise_plus_velocity():
    model = perturbed(POSE_MODELS["pose-XS"]())
    batch, obj_mask, _, _ = make_batch()
    poses = sample(model, batch, obj_mask, steps=1, generator=torch.Generator().manual_seed(3))
    noise = torch.randn(2, 3, 12, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        velocity = model(noise, torch.zeros(2), model.encode_conditions(batch), obj_mask)
    expected = (noise + velocity) * obj_mask[..., None]
    assert torch.allclose(poses, expected, atol=1e-6)
    assert velocity.abs().max() > 1e-3  # non-trivial


def test_sample_shapes_and_bad_arguments():
    model = perturbed(POSE_MODELS["pose-XS"]())
    batch, obj_mask, _, _ = make_batch()
    assert sample(model, batch, obj_mask, steps=2).shape == (2, 3, 12)
    poses = sample(model, batch, obj_mask, steps=2, n_hypotheses=3)
    assert poses.shape == (2, 3, 3, 12)
    assert not torch.allclose(poses[:, 0], poses[:, 1])  # independent noise per hypothesis
    assert (poses[1, :, 2] == 0).all()  # padded object
    with pytest.raises(ValueError, match="steps"):
        sample(model, batch, obj_mask, steps=0)
    with pytest.raises(ValueError, match="n_hypotheses"):
        sample(model, batch, obj_mask, n_hypotheses=0)
