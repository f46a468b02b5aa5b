"""Rectified flow (flow matching) for the pose model: time sampling, loss, Euler sampler.

Like diffusers' FlowMatchEulerDiscreteScheduler, this is plain functions over tensors: no
nn.Module, no hidden state. The model knows no schedule; it is called as
``model(x_t, t, conditions, obj_mask) -> velocity`` with ``conditions = model.encode_conditions``.

Convention: t = 0 is Gaussian noise x0, t = 1 is the data x1 (the pose vector, see
``pose.model``), x_t = (1 - t) * x0 + t * x1, and the velocity target is v = x1 - x0.
"""

from typing import Literal

import torch

from scenemaker_ros.pose.model import (
    LOG_SCALE,
    POSE_DIM,
    ROT6D,
    TRANSLATION,
    PoseBatch,
    PoseModel,
    matrix_to_rotation_6d,
    rotation_6d_to_matrix,
)

TimeDistribution = Literal["logit_normal", "uniform"]
# Each pose part gets an equal-weight L2 term (SceneMaker, "Loss & Training").
POSE_PARTS = {"rotation": ROT6D, "translation": TRANSLATION, "scale": LOG_SCALE}


def sample_time(batch_size: int, time_distribution: TimeDistribution = "logit_normal",
                generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Training times (B,) in (0, 1): logit-normal sigmoid(N(0, 1)) (as SD3) or uniform."""
    if time_distribution == "logit_normal":
        return torch.sigmoid(torch.randn(batch_size, generator=generator, device=device))
    if time_distribution == "uniform":
        return torch.rand(batch_size, generator=generator, device=device)
    raise ValueError(
        f"time_distribution must be 'logit_normal' or 'uniform', got {time_distribution!r}"
    )


def interpolate(noise: torch.Tensor, data: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = (1 - t) * noise + t * data; noise, data (B, ...), t (B,)."""
    t = t.view(-1, *[1] * (data.dim() - 1))  # (B, 1, ...)
    return (1 - t) * noise + t * data


def nearest_symmetric_target(noise: torch.Tensor, pose_data: torch.Tensor,
                             symmetries: torch.Tensor) -> torch.Tensor:
    """Each object's target with its rotation R replaced by the symmetric equivalent R g nearest
    (in 6D) to the noise's rotation part; noise, pose_data (B, K, 12), symmetries (B, K, M, 3, 3)
    canonical rotations g of each object (pad with identities).

    For a shape with g(shape) = shape, the poses R and R g place the same surface, so any of them
    is a correct answer. Regressing to one fixed R would teach the model to average them (a blur
    between equivalent answers); pairing each noise sample with its nearest equivalent keeps the
    flow paths short and the target unique, like choosing the nearest mode in optimal-transport
    flow matching. Translation and scale are unchanged: the symmetries kept for an object are
    those its anisotropic scale leaves intact (S g = g S).
    """
    rot = rotation_6d_to_matrix(pose_data[..., ROT6D])  # (B, K, 3, 3)
    candidates = matrix_to_rotation_6d(rot[:, :, None] @ symmetries)  # (B, K, M, 6)
    distance = (candidates - noise[:, :, None, ROT6D]).square().sum(-1)  # (B, K, M)
    nearest = distance.argmin(dim=2)[..., None, None].expand(-1, -1, 1, 6)  # (B, K, 1, 6)
    return torch.cat([candidates.gather(2, nearest)[:, :, 0], pose_data[..., 6:]], dim=-1)


def flow_matching_loss(
    model: PoseModel,
    batch: PoseBatch,
    pose_data: torch.Tensor,
    obj_mask: torch.Tensor,
    generator: torch.Generator | None = None,
    time_distribution: TimeDistribution = "logit_normal",
    symmetries: torch.Tensor | None = None,
    times_per_scene: int = 1,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Flow-matching loss of one batch; pose_data (B, K, 12) targets, obj_mask (B, K) bool.

    Returns the loss (sum of the rotation, translation and scale terms, each the mean squared
    velocity error over its dimensions and the valid objects) and the three terms, detached, for
    logging. ``symmetries`` (B, K, M, 3, 3) makes each target the symmetric equivalent nearest to
    its noise (``nearest_symmetric_target``). ``times_per_scene`` draws that many (noise, time)
    pairs per scene against one encoding of the conditions, which is most of a step's cost.
    ``generator`` must live on pose_data's device.
    """
    n = times_per_scene
    conditions = model.encode_conditions(batch).repeat_interleave(n)  # B -> B * n
    pose_data, obj_mask = pose_data.repeat_interleave(n, 0), obj_mask.repeat_interleave(n, 0)
    noise = torch.randn(pose_data.shape, generator=generator, device=pose_data.device)
    target = pose_data
    if symmetries is not None:
        target = nearest_symmetric_target(noise, pose_data, symmetries.repeat_interleave(n, 0))
    t = sample_time(len(pose_data), time_distribution, generator, pose_data.device)  # (B * n,)
    x_t = interpolate(noise, target, t)  # (B * n, K, 12)
    velocity = model(x_t, t, conditions, obj_mask)  # (B * n, K, 12)
    error = (velocity.float() - (target - noise)).square()  # (B * n, K, 12)
    valid = obj_mask.float()  # (B * n, K)
    parts = {
        name: (error[..., dims].mean(-1) * valid).sum() / valid.sum().clamp(min=1)
        for name, dims in POSE_PARTS.items()
    }
    loss = sum(parts.values())
    return loss, {name: part.detach() for name, part in parts.items()}


def time_grid(steps: int) -> torch.Tensor:
    """steps + 1 equally spaced times from 0 (noise) to 1 (data), float32."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float32)


def step(velocity: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor,
         x: torch.Tensor) -> torch.Tensor:
    """One Euler step from t to t_next, in float32."""
    return x.float() + (t_next - t).float() * velocity.float()


@torch.inference_mode()
def sample(
    model: PoseModel,
    cond_batch: PoseBatch,
    obj_mask: torch.Tensor,
    steps: int = 8,
    generator: torch.Generator | None = None,
    n_hypotheses: int | None = None,
) -> torch.Tensor:
    """Integrate the flow from noise (t = 0) to poses (t = 1) with ``steps`` Euler steps.

    Returns (B, K, 12), or (B, H, K, 12) for ``n_hypotheses=H`` independent samples per scene;
    padded objects are zero. The conditions are encoded once and reused at every step.
    ``generator`` must live on the model's device.
    """
    if n_hypotheses is not None and n_hypotheses < 1:
        raise ValueError(f"n_hypotheses must be >= 1 or None, got {n_hypotheses}")
    grid = time_grid(steps)  # (steps + 1,)
    H = n_hypotheses or 1
    B, K = obj_mask.shape
    device = obj_mask.device
    conditions = model.encode_conditions(cond_batch).repeat_interleave(H)  # B -> B * H
    mask = obj_mask.repeat_interleave(H, dim=0)  # (B * H, K)
    x = torch.randn((B * H, K, POSE_DIM), generator=generator, device=device)  # t = 0: noise
    for t, t_next in zip(grid[:-1].to(device), grid[1:].to(device)):
        velocity = model(x, t.expand(B * H), conditions, mask)  # (B * H, K, 12)
        x = step(velocity, t, t_next, x)  # (B * H, K, 12)
    x = x.masked_fill(~mask[..., None], 0.0)  # padded objects -> 0
    return x.view(B, K, POSE_DIM) if n_hypotheses is None else x.view(B, H, K, POSE_DIM)
