"""The SceneMaker unified pose model: a small DiT over per-object (R, G, T, S) token quadruples.

The whole network is in this one file. It predicts the flow-matching velocity of every object's
pose [rot6d | translation | log-scale] (12 numbers) from the noisy pose, the flow time and the
conditions (canonical geometry, object crops and partial clouds, scene image and scene cloud).
The noise schedule lives in ``pose/flow.py``; the model knows none.

References:
  SceneMaker (CVPR 2026), "Unified Pose Estimation Model": global/local self-attention and
    decoupled cross-attention over rotation/translation/scale/geometry tokens.
  DiT, Peebles & Xie 2023 (facebookresearch/DiT models.py): adaLN-Zero blocks, zero-init output.
  Zhou et al. 2019, "On the Continuity of Rotation Representations": 6D rotations.
  PointNet, Qi et al. 2017: shared point MLP + max pooling.

Shape legend: B scenes, K objects (padded), N = B * K, P points, T tokens, D width,
  H x W image size. Token roles per object: R rotation, G geometry, T translation, S scale.

Token routing (one PoseBlock):
  local self-attention   the 4 tokens of one object attend to each other.
  global self-attention  all 4K tokens of a scene attend to each other (padded objects masked).
  cross-attention        decoupled by role:
    R, G -> object context: the object's own crop tokens + normalised partial-cloud tokens.
            Rotation is defined in the object's canonical frame and is visible in the crop and in
            the centred, scale-normalised cloud; the scene adds nothing but distractors. G reads the
            same context so that the canonical shape is matched against the visible part, which R
            then reads through local self-attention.
    T, S -> scene context: scene image tokens + scene cloud tokens + the object's own object
            context. The scene cloud alone does not say which object is which, so T and S tokens
            also carry the object's observed-cloud centre and extent in scene space (added to their
            embedding); the own-object tokens tell how much of the shape is visible, which moves
            the true centre and size away from the visible centroid and extent. Other objects'
            context is masked out: they are reached through global self-attention.
  With ``local_cross_attn=False`` all four roles share the scene route (coupled cross-attention).
There is no positional encoding over objects: the model is permutation-equivariant in K.
"""

import itertools
import math
from dataclasses import dataclass, fields
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from scenemaker_ros.pose.dinov2 import build_image_features

# Layout of the 12-number pose vector, in normalised scene space.
POSE_DIM = 12
ROT6D = slice(0, 6)  # first two columns of R (Zhou et al. 2019)
TRANSLATION = slice(6, 9)  # object origin in scene space
LOG_SCALE = slice(9, 12)  # per-axis log scale: canonical geometry (longest side 1) -> scene

# Token roles inside one object's quadruple; the object-routed roles come first so that the
# decoupled cross-attention routes a slice.
ROLE_R, ROLE_G, ROLE_T, ROLE_S = range(4)
N_ROLES = 4


#################################################################################
#                        Pose vector <-> rotation matrices                      #
#################################################################################


def rotation_6d_to_matrix(d6: torch.Tensor) -> torch.Tensor:
    """(..., 6) first two columns (unnormalised) -> (..., 3, 3) rotation via Gram-Schmidt."""
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = F.normalize(a1, dim=-1)
    b2 = F.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)  # columns


def matrix_to_rotation_6d(rot: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) rotation -> (..., 6) its first two columns, concatenated."""
    return torch.cat([rot[..., :, 0], rot[..., :, 1]], dim=-1)


def encode_pose(rot: torch.Tensor, translation: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """R (..., 3, 3), translation (..., 3), per-axis scale (..., 3) > 0 -> pose (..., 12)."""
    return torch.cat([matrix_to_rotation_6d(rot), translation, scale.log()], dim=-1)


def decode_pose(pose: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pose (..., 12) -> R (..., 3, 3), translation (..., 3), per-axis scale (..., 3)."""
    rot = rotation_6d_to_matrix(pose[..., ROT6D])  # (..., 3, 3)
    return rot, pose[..., TRANSLATION], pose[..., LOG_SCALE].exp()


#################################################################################
#                              Inputs and conditions                            #
#################################################################################


@dataclass
class PoseBatch:
    """The conditions of B scenes padded to K objects, in the normalised scene space.

    Padded objects hold zeros and all-False masks; which objects are valid is passed to the model
    separately as ``obj_mask`` (B, K) bool.
    """

    geometry: torch.Tensor  # (B, K, Ng, 3) points on the canonical mesh, longest side 1
    obj_cloud: torch.Tensor  # (B, K, Np, 3) observed partial cloud, (p - centre) / extent
    obj_cloud_mask: torch.Tensor  # (B, K, Np) bool, valid points
    obj_cloud_center: torch.Tensor  # (B, K, 3) mean of the object's observed points, scene space
    obj_cloud_extent: torch.Tensor  # (B, K) the extent obj_cloud was divided by, scene units
    obj_crop: torch.Tensor  # (B, K, 4, Hc, Wc) float [0, 1]: RGB + visible-mask channel
    scene_cloud: torch.Tensor  # (B, Ns, 3) whole observed cloud, scene space
    scene_cloud_mask: torch.Tensor  # (B, Ns) bool
    scene_image: torch.Tensor  # (B, 3, Hs, Ws) float [0, 1], downscaled full image

    def to(self, device: torch.device | str) -> "PoseBatch":
        return PoseBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


@dataclass
class Conditions:
    """Encoded conditions. No field depends on the flow time, so sampling encodes them once.

    Besides the G token and the location embedding, they hold every block's cross-attention keys
    and values (E = depth blocks, 2D = keys then values), the bulk of a step's work otherwise.
    Lo = object-context tokens per object (crop, then partial cloud); Ls = scene-context tokens
    (scene image, scene cloud, then every object's Lo tokens; ``scene_mask`` keeps each object to
    its own).
    """

    geometry: torch.Tensor  # (B, K, D) G token content
    location: torch.Tensor  # (B, K, D) embedded observed centre + extent, added to T and S
    object_kv: torch.Tensor | None  # (B, E, K, Lo, 2D); None without local cross-attention
    object_mask: torch.Tensor  # (B, K, Lo) bool
    scene_kv: torch.Tensor  # (B, E, Ls, 2D)
    scene_mask: torch.Tensor  # (B, K, Ls) bool: keys each object's scene-routed tokens may see

    def repeat_interleave(self, n: int) -> "Conditions":
        """Each scene n times in a row: B -> B * n (for several hypotheses per scene)."""
        return Conditions(**{
            f.name: None if getattr(self, f.name) is None
            else getattr(self, f.name).repeat_interleave(n, dim=0)
            for f in fields(self)
        })


#################################################################################
#                                   Embedders                                   #
#################################################################################


class TimestepEmbedder(nn.Module):
    """Flow time t in [0, 1] -> (B, D): sinusoidal frequencies, then an MLP (as in DiT)."""

    def __init__(self, width: int, frequency_size: int = 256):
        super().__init__()
        self.frequency_size = frequency_size
        self.mlp = nn.Sequential(
            nn.Linear(frequency_size, width), nn.SiLU(), nn.Linear(width, width)
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:  # t (B,)
        half = self.frequency_size // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / half)  # (F/2,)
        args = 1000.0 * t.float()[:, None] * freqs[None]  # (B, F/2): t scaled to DiT's 0..1000
        return self.mlp(torch.cat([torch.cos(args), torch.sin(args)], dim=-1))  # (B, D)


def mlp(in_dim: int, width: int) -> nn.Sequential:
    """Two-layer embedder (in_dim -> D) for small vectors: pose slices, centre + extent."""
    return nn.Sequential(nn.Linear(in_dim, width), nn.SiLU(), nn.Linear(width, width))


#################################################################################
#                                    Encoders                                   #
#################################################################################


class ImageFeatures(Protocol):
    """Image backbone contract: image (B, C, H, W) float in [0, 1] -> tokens (B, T, out_dim).

    C is 4 for object crops (RGB + visible mask) and 3 for the scene image; T may depend on H, W.
    Tokens carry their own image position. ``ImageEncoder`` is the from-scratch default; a frozen
    DINOv2 backend would take the RGB channels (patch tokens plus a linear projection to
    ``out_dim``) and pool the mask channel per patch into an extra feature.
    """

    out_dim: int

    def __call__(self, image: torch.Tensor) -> torch.Tensor: ...


class ImageEncoder(nn.Module):
    """Small CNN from scratch: 4 stride-2 convs (H/16 x W/16 grid) on the image + pixel coords."""

    def __init__(self, in_channels: int, out_dim: int):
        super().__init__()
        self.out_dim = out_dim
        chans = [in_channels + 2, out_dim // 4, out_dim // 2, out_dim, out_dim]
        layers = []
        for c_in, c_out in itertools.pairwise(chans):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.GELU()]
        self.convs = nn.Sequential(*layers[:-1])  # no activation after the last conv
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, image: torch.Tensor) -> torch.Tensor:  # image (B, C, H, W)
        B, _, H, W = image.shape
        ys = torch.linspace(-1, 1, H, device=image.device).view(1, 1, H, 1).expand(B, 1, H, W)
        xs = torch.linspace(-1, 1, W, device=image.device).view(1, 1, 1, W).expand(B, 1, H, W)
        h = self.convs(torch.cat([image, xs, ys], dim=1))  # (B, D, H/16, W/16)
        return self.norm(h.flatten(2).transpose(1, 2))  # (B, T, D)


def farthest_point_indices(points: torch.Tensor, mask: torch.Tensor, n: int) -> torch.Tensor:
    """Indices (N, n) of n farthest-point-sampled valid points; repeats once all are taken."""
    dist = torch.full(mask.shape, float("inf"), device=points.device)  # (N, P)
    dist = dist.masked_fill(~mask, -1.0)  # invalid points stay at -1, never chosen
    idx = mask.int().argmax(dim=1)  # (N,) first valid point
    chosen = []
    for _ in range(n):
        chosen.append(idx)
        centre = points.gather(1, idx[:, None, None].expand(-1, 1, 3))  # (N, 1, 3)
        dist = torch.minimum(dist, (points - centre).square().sum(-1))  # (N, P)
        idx = dist.argmax(dim=1)  # (N,)
    return torch.stack(chosen, dim=1)  # (N, n)


class PointEncoder(nn.Module):
    """PointNet: shared point MLP; masked max + mean pooling -> one summary token, and n_local
    tokens max-pooled over the points nearest to each of n_local farthest-point centres."""

    def __init__(self, width: int, n_local: int, hidden: int = 64):
        super().__init__()
        self.n_local = n_local
        self.point_mlp = nn.Sequential(
            nn.Linear(3, hidden), nn.GELU(), nn.Linear(hidden, 2 * hidden), nn.GELU(),
            nn.Linear(2 * hidden, width),
        )
        self.summary = nn.Linear(2 * width, width)
        self.centre_embed = nn.Linear(3, width) if n_local > 0 else None
        self.norm = nn.LayerNorm(width)

    def forward(self, points: torch.Tensor, mask: torch.Tensor):
        """points (N, P, 3), mask (N, P) bool -> tokens (N, 1 + n_local, D), token mask."""
        feats = self.point_mlp(points)  # (N, P, D)
        valid = mask[..., None]  # (N, P, 1)
        token_mask = mask.any(1, keepdim=True)  # (N, 1) the summary is valid if any point is
        f_max = feats.masked_fill(~valid, float("-inf")).amax(1)  # (N, D)
        f_max = f_max.masked_fill(~token_mask, 0.0)  # no valid point -> 0
        f_mean = (feats * valid).sum(1) / valid.sum(1).clamp(min=1)  # (N, D)
        tokens = self.summary(torch.cat([f_max, f_mean], dim=-1))[:, None]  # (N, 1, D)
        if self.centre_embed is not None:
            local, local_mask = self._local_tokens(points, mask, feats)  # (N, n, D), (N, n)
            tokens = torch.cat([tokens, local], dim=1)  # (N, 1 + n, D)
            token_mask = torch.cat([token_mask, local_mask], dim=1)  # (N, 1 + n)
        return self.norm(tokens), token_mask

    def _local_tokens(self, points, mask, feats):
        N, _, D = feats.shape
        idx = farthest_point_indices(points, mask, self.n_local)  # (N, n)
        centres = points.gather(1, idx[..., None].expand(-1, -1, 3))  # (N, n, 3)
        group = torch.cdist(points, centres).argmin(-1)  # (N, P) nearest centre (first on ties)
        group = group.masked_fill(~mask, self.n_local)  # invalid points -> a dropped extra group
        pooled = torch.full((N, self.n_local + 1, D), float("-inf"), device=feats.device)
        pooled = pooled.scatter_reduce(1, group[..., None].expand(-1, -1, D), feats, "amax")
        pooled = pooled[:, :-1]  # (N, n, D)
        local_mask = pooled[..., 0].isfinite()  # (N, n) empty groups (repeated centres) are -inf
        pooled = pooled.masked_fill(~local_mask[..., None], 0.0)  # (N, n, D)
        return pooled + self.centre_embed(centres), local_mask


#################################################################################
#                                     Blocks                                    #
#################################################################################


class AdaLNZero(nn.Module):
    """LayerNorm modulated by the time embedding; also returns the residual gate (zero at init)."""

    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 3 * width))

    def forward(self, x: torch.Tensor, c: torch.Tensor):  # x (B, L, D), c (B, D)
        shift, scale, gate = self.modulation(c)[:, None].chunk(3, dim=-1)  # 3 x (B, 1, D)
        return self.norm(x) * (1 + scale) + shift, gate  # (B, L, D), (B, 1, D)


class Attention(nn.Module):
    """Multi-head attention; keys and values come from ``context_kv`` (of x for self-attention).

    Masks are bool, True = may attend.
    """

    def __init__(self, width: int, heads: int):
        super().__init__()
        assert width % heads == 0, f"width {width} must be divisible by heads {heads}"
        self.heads = heads
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)
        self.proj = nn.Linear(width, width)

    def context_kv(self, context: torch.Tensor) -> torch.Tensor:
        """Context (..., Lk, D) -> keys and values (..., Lk, 2D), cacheable for cross-attention."""
        return self.kv(context)

    def forward(self, x, kv=None, mask=None):
        """x (N, Lq, D), kv (N, Lk, 2D), mask (N, Lk) or (N, Lq, Lk) bool -> (N, Lq, D)."""
        kv = self.context_kv(x) if kv is None else kv
        N, Lq, D = x.shape
        q = self.q(x).view(N, Lq, self.heads, -1).transpose(1, 2)  # (N, h, Lq, D/h)
        kv = kv.view(N, -1, 2, self.heads, D // self.heads)  # (N, Lk, 2, h, D/h)
        k, v = kv.permute(2, 0, 3, 1, 4)  # 2 x (N, h, Lk, D/h)
        if mask is not None:  # (N, Lk) -> (N, 1, 1, Lk); (N, Lq, Lk) -> (N, 1, Lq, Lk)
            mask = mask[:, None, None] if mask.dim() == 2 else mask[:, None]
        h = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (N, h, Lq, D/h)
        return self.proj(h.transpose(1, 2).reshape(N, Lq, D))  # (N, Lq, D)


class DecoupledCrossAttention(nn.Module):
    """R, G tokens read the object context; T, S tokens the scene context (see module doc).
    Without an object route (``local_cross_attn=False``) all four roles read the scene context."""

    def __init__(self, width: int, heads: int, local_cross_attn: bool):
        super().__init__()
        self.object_attn = Attention(width, heads) if local_cross_attn else None
        self.scene_attn = Attention(width, heads)

    def context_kv(self, object_context, scene_context):
        """(B, K, Lo, D), (B, Ls, D) -> keys/values (B, K, Lo, 2D) or None, (B, Ls, 2D)."""
        scene_kv = self.scene_attn.context_kv(scene_context)  # (B, Ls, 2D)
        if self.object_attn is None:
            return None, scene_kv
        return self.object_attn.context_kv(object_context), scene_kv  # (B, K, Lo, 2D), ...

    def forward(self, x, object_kv, scene_kv, cond: Conditions):
        """x (B, K, 4, D), object_kv (B, K, Lo, 2D) or None, scene_kv (B, Ls, 2D) -> x's shape."""
        B, K, _, D = x.shape
        if self.object_attn is None:
            mask = cond.scene_mask.repeat_interleave(N_ROLES, dim=1)  # (B, 4K, Ls)
            h = self.scene_attn(x.reshape(B, K * N_ROLES, D), scene_kv, mask)  # (B, 4K, D)
            return h.view(B, K, N_ROLES, D)
        rg = x[:, :, ROLE_R:ROLE_G + 1].reshape(B * K, 2, D)  # (N, 2, D)
        rg = self.object_attn(rg, object_kv.flatten(0, 1), cond.object_mask.flatten(0, 1))
        ts = x[:, :, ROLE_T:ROLE_S + 1].reshape(B, K * 2, D)  # (B, 2K, D)
        mask = cond.scene_mask.repeat_interleave(2, dim=1)  # (B, 2K, Ls)
        ts = self.scene_attn(ts, scene_kv, mask)  # (B, 2K, D)
        return torch.cat([rg.view(B, K, 2, D), ts.view(B, K, 2, D)], dim=2)  # (B, K, 4, D)


class PoseBlock(nn.Module):
    """adaLN-Zero block: local self-attn, global self-attn, decoupled cross-attn, MLP."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, local_self_attn: bool,
                 global_self_attn: bool, local_cross_attn: bool):
        super().__init__()
        self.local_norm = AdaLNZero(width) if local_self_attn else None
        self.local_attn = Attention(width, heads) if local_self_attn else None
        self.global_norm = AdaLNZero(width) if global_self_attn else None
        self.global_attn = Attention(width, heads) if global_self_attn else None
        self.cross_norm = AdaLNZero(width)
        self.cross_attn = DecoupledCrossAttention(width, heads, local_cross_attn)
        self.mlp_norm = AdaLNZero(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width)
        )

    def forward(self, x, c, cond: Conditions, layer: int, obj_mask):
        """x (B, 4K, D), c (B, D), obj_mask (B, K) -> (B, 4K, D); layer indexes the cached kv."""
        B, L, D = x.shape
        K = L // N_ROLES
        if self.local_attn is not None:
            h, gate = self.local_norm(x, c)  # (B, 4K, D), (B, 1, D)
            h = self.local_attn(h.reshape(B * K, N_ROLES, D)).reshape(B, L, D)  # per object
            x = x + gate * h  # (B, 4K, D)
        if self.global_attn is not None:
            h, gate = self.global_norm(x, c)  # (B, 4K, D), (B, 1, D)
            key_mask = obj_mask.repeat_interleave(N_ROLES, dim=1)  # (B, 4K)
            x = x + gate * self.global_attn(h, mask=key_mask)  # (B, 4K, D)
        h, gate = self.cross_norm(x, c)  # (B, 4K, D), (B, 1, D)
        object_kv = None if cond.object_kv is None else cond.object_kv[:, layer]  # (B, K, Lo, 2D)
        h = self.cross_attn(h.view(B, K, N_ROLES, D), object_kv, cond.scene_kv[:, layer], cond)
        x = x + gate * h.reshape(B, L, D)  # (B, 4K, D)
        h, gate = self.mlp_norm(x, c)  # (B, 4K, D), (B, 1, D)
        return x + gate * self.mlp(h)  # (B, 4K, D)


class FinalLayer(nn.Module):
    """adaLN + one linear head per role: R -> rot6d, T -> translation, S -> log-scale."""

    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.rot_head = nn.Linear(width, 6)
        self.trans_head = nn.Linear(width, 3)
        self.scale_head = nn.Linear(width, 3)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:  # x (B, K, 4, D)
        shift, scale = self.modulation(c)[:, None, None].chunk(2, dim=-1)  # 2 x (B, 1, 1, D)
        x = self.norm(x) * (1 + scale) + shift  # (B, K, 4, D)
        return torch.cat([
            self.rot_head(x[:, :, ROLE_R]),  # (B, K, 6)
            self.trans_head(x[:, :, ROLE_T]),  # (B, K, 3)
            self.scale_head(x[:, :, ROLE_S]),  # (B, K, 3)
        ], dim=-1)  # (B, K, 12)


#################################################################################
#                                      Model                                    #
#################################################################################


@dataclass
class PoseModelConfig:
    width: int = 128
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    max_objects: int = 16  # objects per scene the model is built and tested for
    object_cloud_tokens: int = 16  # local tokens per object cloud (plus one summary token)
    scene_cloud_tokens: int = 32  # local tokens of the scene cloud (plus one summary token)
    point_hidden: int = 64  # hidden width of the per-point MLPs
    # Image features: "cnn" (``ImageEncoder``, trained from scratch) or "dinov2" (frozen DINOv2
    # through transformers, ``pose/dinov2.py``) loaded from image_backbone (model id or folder).
    image_features: str = "cnn"
    image_backbone: str = "facebook/dinov2-small"
    crop_feature_size: int = 112  # dinov2: crops resized to this (a multiple of 14)
    scene_feature_size: tuple[int, int] = (168, 224)  # dinov2: scene image (height, width)
    # Ablations (SceneMaker Table "attention mechanisms"):
    local_self_attn: bool = True  # attention inside each object's (R, G, T, S)
    global_self_attn: bool = True  # attention across all objects of a scene
    local_cross_attn: bool = True  # False: R, G read the scene context like T, S


class PoseModel(nn.Module):
    """Velocity of every object's pose; call ``model(pose_t, t, conditions, obj_mask)`` with
    ``conditions = model.encode_conditions(batch)``."""

    def __init__(self, config: PoseModelConfig):
        super().__init__()
        self.config = config
        D = config.width
        # condition encoders (independent of t)
        self.geometry_encoder = PointEncoder(D, 0, config.point_hidden)
        self.object_cloud_encoder = PointEncoder(D, config.object_cloud_tokens, config.point_hidden)
        self.scene_cloud_encoder = PointEncoder(D, config.scene_cloud_tokens, config.point_hidden)
        self.crop_encoder: ImageFeatures = build_image_features(
            config.image_features, 4, D, **self._image_options(config.crop_feature_size))
        self.scene_image_encoder: ImageFeatures = build_image_features(
            config.image_features, 3, D, **self._image_options(config.scene_feature_size))
        self.location_embed = mlp(4, D)  # observed centre (3) + extent (1)
        # pose tokens
        self.t_embedder = TimestepEmbedder(D)
        self.rot_embed = mlp(6, D)
        self.trans_embed = mlp(3, D)
        self.scale_embed = mlp(3, D)
        self.role_embed = nn.Parameter(torch.zeros(N_ROLES, D))
        self.blocks = nn.ModuleList([
            PoseBlock(D, config.heads, config.mlp_ratio, config.local_self_attn,
                      config.global_self_attn, config.local_cross_attn)
            for _ in range(config.depth)
        ])
        self.final_layer = FinalLayer(D)
        self.initialize_weights()

    def _image_options(self, size) -> dict:
        if self.config.image_features == "cnn":
            return {}
        return {"model": self.config.image_backbone, "image_size": size}

    def initialize_weights(self):
        # Linear layers: xavier uniform, zero bias (as DiT); a pretrained backbone keeps its own.
        for module in self.modules():
            if isinstance(module, nn.Linear) and all(p.requires_grad for p in module.parameters()):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        # Role embeddings and the time MLP: small normal.
        nn.init.normal_(self.role_embed, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        # adaLN-Zero: gates start at zero, so every block begins as the identity.
        for module in self.modules():
            if isinstance(module, AdaLNZero):
                nn.init.zeros_(module.modulation[-1].weight)
                nn.init.zeros_(module.modulation[-1].bias)
        # Output layer: zero modulation and heads, so the model predicts zero velocity at init.
        for layer in [self.final_layer.modulation[-1], self.final_layer.rot_head,
                      self.final_layer.trans_head, self.final_layer.scale_head]:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def encode_conditions(self, batch: PoseBatch) -> Conditions:
        """Encode everything that does not depend on the flow time (once per scene)."""
        B, K, Ng, _ = batch.geometry.shape
        assert K <= self.config.max_objects, (
            f"{K} objects per scene, but the model supports at most {self.config.max_objects}"
        )
        assert batch.obj_cloud.shape[:2] == (B, K) and batch.obj_crop.shape[:3] == (B, K, 4), (
            f"obj_cloud {tuple(batch.obj_cloud.shape)} and obj_crop {tuple(batch.obj_crop.shape)}"
            f" must be (B, K, Np, 3) and (B, K, 4, Hc, Wc) with B, K = {B}, {K} as in geometry"
        )
        N = B * K
        geometry, _ = self.geometry_encoder(
            batch.geometry.flatten(0, 1), batch.geometry.new_ones(N, Ng, dtype=torch.bool)
        )  # (N, 1, D): the summary token only
        geometry = geometry[:, 0].unflatten(0, (B, K))  # (B, K, D)
        location = self.location_embed(torch.cat(
            [batch.obj_cloud_center, batch.obj_cloud_extent[..., None]], dim=-1
        ))  # (B, K, D)
        # object context: crop tokens (always valid) + partial-cloud tokens
        crop = self.crop_encoder(batch.obj_crop.flatten(0, 1))  # (N, Tc, D)
        cloud, cloud_mask = self.object_cloud_encoder(
            batch.obj_cloud.flatten(0, 1), batch.obj_cloud_mask.flatten(0, 1)
        )  # (N, Tp, D), (N, Tp)
        crop_mask = cloud_mask.new_ones(crop.shape[:2])  # (N, Tc)
        object_context = torch.cat([crop, cloud], dim=1).unflatten(0, (B, K))  # (B, K, Lo, D)
        object_mask = torch.cat([crop_mask, cloud_mask], dim=1).unflatten(0, (B, K))  # (B, K, Lo)
        # scene context: scene image tokens + scene cloud tokens + every object's context
        image = self.scene_image_encoder(batch.scene_image)  # (B, Ti, D)
        scene_cloud, scene_cloud_mask = self.scene_cloud_encoder(
            batch.scene_cloud, batch.scene_cloud_mask
        )  # (B, Ts, D), (B, Ts)
        scene_context = torch.cat([image, scene_cloud, object_context.flatten(1, 2)], dim=1)
        image_mask = scene_cloud_mask.new_ones(image.shape[:2])  # (B, Ti)
        scene_only = torch.cat([image_mask, scene_cloud_mask], dim=1)  # (B, Ti + Ts)
        own = torch.eye(K, dtype=torch.bool, device=object_mask.device)  # (K, K) own object only
        own = (own[None, :, :, None] & object_mask[:, None]).flatten(2)  # (B, K, K * Lo)
        scene_mask = torch.cat([scene_only[:, None].expand(-1, K, -1), own], dim=2)  # (B, K, Ls)
        # every block's cross-attention keys and values
        kvs = [block.cross_attn.context_kv(object_context, scene_context) for block in self.blocks]
        object_kv = None if kvs[0][0] is None else torch.stack([o for o, _ in kvs], dim=1)
        scene_kv = torch.stack([s for _, s in kvs], dim=1)  # (B, E, Ls, 2D)
        return Conditions(geometry, location, object_kv, object_mask, scene_kv, scene_mask)

    def forward(self, pose_t: torch.Tensor, t: torch.Tensor, cond: Conditions,
                obj_mask: torch.Tensor) -> torch.Tensor:
        """pose_t (B, K, 12) noisy pose at time t (B,); obj_mask (B, K) bool -> velocity (B, K, 12).

        Outputs of padded objects are meaningless; they never affect valid objects.
        """
        B, K, _ = pose_t.shape
        assert K <= self.config.max_objects, (
            f"{K} objects per scene, but the model supports at most {self.config.max_objects}"
        )
        assert cond.geometry.shape[:2] == (B, K), (
            f"conditions are for {tuple(cond.geometry.shape[:2])} (B, K), pose_t for {(B, K)}"
        )
        assert obj_mask.any(dim=1).all(), "every scene needs at least one valid object"
        c = self.t_embedder(t)  # (B, D)
        x = torch.stack([
            self.rot_embed(pose_t[..., ROT6D]),  # R (B, K, D)
            cond.geometry,  # G (B, K, D)
            self.trans_embed(pose_t[..., TRANSLATION]) + cond.location,  # T (B, K, D)
            self.scale_embed(pose_t[..., LOG_SCALE]) + cond.location,  # S (B, K, D)
        ], dim=2) + self.role_embed  # (B, K, 4, D)
        x = x.flatten(1, 2)  # (B, 4K, D)
        for layer, block in enumerate(self.blocks):
            x = block(x, c, cond, layer, obj_mask)  # (B, 4K, D)
        return self.final_layer(x.view(B, K, N_ROLES, -1), c)  # (B, K, 12)


#################################################################################
#                                    Presets                                    #
#################################################################################


def pose_s(**kwargs) -> PoseModel:
    return PoseModel(PoseModelConfig(**kwargs))


def pose_xs(**kwargs) -> PoseModel:
    return PoseModel(PoseModelConfig(**{
        "width": 64, "depth": 2, "heads": 4, "object_cloud_tokens": 4, "scene_cloud_tokens": 8,
        "point_hidden": 32, **kwargs,
    }))


POSE_MODELS = {"pose-S": pose_s, "pose-XS": pose_xs}
