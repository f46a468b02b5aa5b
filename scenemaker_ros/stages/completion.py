"""Learned shape completion for the "carving" geometry: what one view cannot show (CPU, weights
shipped with the package).

Carving fills each object straight down from its seen surface. That is right for a box, but the
far slope of a cone or an ellipsoid lies behind its top, and the underside of a ball or a lying
capsule is not a column down to the floor. ``CompletionNet``, a small 3D U-Net trained on our
procedural scenes (``scenemaker train completion``), predicts the object's occupancy from what
the depth image says about the space around it. The whole network is in this file, like DiT's
``models.py``. Shapes: B objects, C channels, G = GRID cells per side.

1. Grid (``object_grid``), per object standing on the support plane: z along the plane normal
   from FLOOR_CELLS cells below the object's floor, y the horizontal viewing direction to the
   object, x = y cross z; centred on the seen footprint's box; cell = the seen extent's largest
   side (footprint or height) / CELLS_PER_EXTENT, so the grid reaches well past the hidden
   far side.
2. Inputs (``grid_inputs``, (C, G, G, G)) at every cell centre, from its pixel: the signed
   distance to the measured depth along the ray in cells (clipped; positive: the camera sees
   through the cell), whether the pixel belongs to the object, to another object, has depth,
   and the cell's height above the floor.
3. Output: the probability that the cell lies inside the object (trilinear between centres).
   Carving then drops its column samples where the probability is below ``completion_remove``
   (the underside of a ball; the seen points stay), and adds points, one per carving voxel,
   where it is at least ``completion_add`` and the camera cannot see through them (the far
   slope of a cone).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from torch import nn
from torch.nn import functional as F

from scenemaker_ros.geometry import pixel_indices, raycasting_scene
from scenemaker_ros.stages.checkpoints import load_checkpoint, save_checkpoint, torch_threads

FORMAT = "scenemaker-completion-1"
SHIPPED_CHECKPOINT = Path(__file__).parent / "weights" / "completion-S.safetensors"
GRID = 32  # cells per side
CELLS_PER_EXTENT = 16  # the seen extent's largest side spans this many cells
FLOOR_CELLS = 2  # cells below the floor (always empty: the net sees where the floor is)
INPUT_CHANNELS = 5  # signed ray distance, own mask, other mask, valid depth, height
SDF_CLIP_CELLS = 3.0


# -----------------------------------------------------------------------------
# the object's grid and its inputs


@dataclass
class ObjectGrid:
    """A cubic grid of GRID^3 cells around one object: T_cam_grid (4, 4) maps grid coordinates
    (metres; cell (i, j, k) has its centre at ((i, j, k) + 0.5) * cell) to the camera frame."""

    T_cam_grid: np.ndarray
    cell: float

    def centres(self) -> np.ndarray:
        """(G, G, G, 3) camera-frame cell centres."""
        index = np.arange(GRID, dtype=np.float64)
        return self.to_camera(np.stack(np.meshgrid(index, index, index, indexing="ij"), axis=-1))

    def to_camera(self, cells: np.ndarray) -> np.ndarray:
        """(..., 3) camera-frame points of fractional cell coordinates (..., 3) (centres at
        integers): the inverse of to_cells."""
        local = (cells + 0.5) * self.cell
        return local @ self.T_cam_grid[:3, :3].T + self.T_cam_grid[:3, 3]

    def to_cells(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) fractional cell coordinates (centres at integers) of camera-frame points."""
        local = (points - self.T_cam_grid[:3, 3]) @ self.T_cam_grid[:3, :3]
        return local / self.cell - 0.5


def object_grid(points: np.ndarray, normal: np.ndarray, floor_height: float,
                plane_offset: float) -> ObjectGrid:
    """The grid of module docstring step 1 for an object's seen points (N, 3) on the plane
    normal @ p + plane_offset = 0 (unit normal (3,) towards the camera), its floor floor_height
    metres above the plane."""
    z = normal
    ahead = points.mean(axis=0) - (points.mean(axis=0) @ z) * z  # the viewing ray, horizontal
    if np.linalg.norm(ahead) < 1e-6:  # looking straight down: any horizontal axis
        ahead = np.cross(z, [1.0, 0.0, 0.0] if abs(z[0]) < 0.9 else [0.0, 0.0, 1.0])
    y = ahead / np.linalg.norm(ahead)
    x = np.cross(y, z)
    R = np.stack([x, y, z], axis=1)  # grid axes in the camera frame
    local = points @ R
    heights = points @ z + plane_offset - floor_height
    lo, hi = local.min(axis=0), local.max(axis=0)
    extent = max(hi[0] - lo[0], hi[1] - lo[1], float(heights.max()), 1e-3)
    cell = extent / CELLS_PER_EXTENT
    centre, half = (lo + hi) / 2, GRID * cell / 2
    floor_z = float(floor_height) - plane_offset  # the floor's z along the normal
    origin = R @ np.array([centre[0] - half, centre[1] - half, floor_z - FLOOR_CELLS * cell])
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, origin
    return ObjectGrid(T, cell)


def grid_inputs(grid: ObjectGrid, depth: np.ndarray, K: np.ndarray, own: np.ndarray,
                other: np.ndarray) -> np.ndarray:
    """(C, G, G, G) float32 inputs (module docstring, step 2): depth (H, W) metres (0 = none),
    K (3, 3), own and other (H, W) bool masks of the object and of every other object."""
    centres = grid.centres().reshape(-1, 3)
    u, v, on_image = pixel_indices(K, centres, depth.shape)
    observed = np.zeros(len(centres))
    observed[on_image] = depth[v[on_image], u[on_image]]
    valid = observed > 0
    distance = np.where(valid, np.clip((observed - centres[:, 2]) / grid.cell,
                                       -SDF_CLIP_CELLS, SDF_CLIP_CELLS) / SDF_CLIP_CELLS, 0.0)
    own_pixel, other_pixel = np.zeros(len(centres), bool), np.zeros(len(centres), bool)
    own_pixel[on_image] = own[v[on_image], u[on_image]]
    other_pixel[on_image] = other[v[on_image], u[on_image]]
    height = (np.arange(GRID) + 0.5 - FLOOR_CELLS) / CELLS_PER_EXTENT  # (G,) in seen extents
    height = np.broadcast_to(height, (GRID, GRID, GRID)).reshape(-1)
    channels = [distance, own_pixel, other_pixel, valid, height]
    return np.stack(channels).reshape(INPUT_CHANNELS, GRID, GRID, GRID).astype(np.float32)


def training_target(grid: ObjectGrid, vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(G, G, G) bool: the cell centres inside a closed mesh (vertices (V, 3) camera frame)."""
    import open3d as o3d

    query = o3d.core.Tensor(grid.centres().reshape(-1, 3).astype(np.float32))
    scene = raycasting_scene([(vertices, faces)])
    inside = scene.compute_occupancy(query, nsamples=3).numpy() > 0.5
    return inside.reshape(GRID, GRID, GRID)


# -----------------------------------------------------------------------------
# blocks


class ConvBlock3d(nn.Module):
    """Two 3x3x3 convolutions with batch norm and ReLU; the first may stride 2."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv3d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm3d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv3d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm3d(c_out),
            nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class UpBlock3d(nn.Module):
    """2x trilinear upsampling, concatenation with the skip, one ConvBlock3d."""

    def __init__(self, c_in: int, c_skip: int, c_out: int):
        super().__init__()
        self.block = ConvBlock3d(c_in + c_skip, c_out)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-3:], mode="trilinear", align_corners=False)
        return self.block(torch.cat([x, skip], dim=1))


# -----------------------------------------------------------------------------
# model


@dataclass
class CompletionModelConfig:
    widths: list[int] = field(default_factory=lambda: [16, 32, 48])  # at G/2, G/4, G/8
    in_channels: int = INPUT_CHANNELS


class CompletionNet(nn.Module):
    """A 3D U-Net from (B, C, G, G, G) inputs to (B, 1, G, G, G) occupancy logits, computed at
    G / 2 and upsampled."""

    def __init__(self, config: CompletionModelConfig):
        super().__init__()
        self.config = config
        w = config.widths
        self.down = nn.ModuleList([ConvBlock3d(config.in_channels, w[0], stride=2)] +
                                  [ConvBlock3d(a, b, stride=2) for a, b in zip(w[:-1], w[1:])])
        self.up = nn.ModuleList([UpBlock3d(b, a, a) for a, b in zip(w[:-1], w[1:])][::-1])
        self.head = nn.Conv3d(w[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-3:]
        skips = []
        for block in self.down:  # (B, w_i, G / 2^(i+1), ...)
            x = block(x)
            skips.append(x)
        x = skips.pop()  # (B, w_-1, G / 8, G / 8, G / 8)
        for block in self.up:
            x = block(x, skips.pop())  # up to (B, w_0, G / 2, G / 2, G / 2)
        logits = self.head(x)  # (B, 1, G / 2, G / 2, G / 2)
        return F.interpolate(logits, size=size, mode="trilinear", align_corners=False)


COMPLETION_MODELS = {
    "completion-S": lambda: CompletionNet(CompletionModelConfig(widths=[16, 32, 48])),
    "completion-XS": lambda: CompletionNet(CompletionModelConfig(widths=[8, 16, 24])),
}


def save_completion_checkpoint(path: str | Path, model: CompletionNet, info: dict) -> None:
    save_checkpoint(path, model, FORMAT, info)


def load_completion_checkpoint(path: str | Path) -> tuple[CompletionNet, dict]:
    """(model in eval mode on the CPU, training info); one-line SceneMakerError otherwise."""
    return load_checkpoint(path, FORMAT, CompletionModelConfig, CompletionNet, "completion",
                           "pipeline.geometry.carving.completion_checkpoint")


# -----------------------------------------------------------------------------
# completion of a carved object


class Completer:
    """Runs the net on the grids of a frame's objects and applies each object's probabilities to
    carving's samples (module docstring, step 3)."""

    def __init__(self, checkpoint: str | Path | None = None, threads: int = 0):
        self.model, self.info = load_completion_checkpoint(checkpoint or SHIPPED_CHECKPOINT)
        self.threads = threads

    @torch.no_grad()
    def probabilities(self, inputs: np.ndarray) -> np.ndarray:
        """(B, G, G, G) float32 occupancy probabilities of (B, C, G, G, G) inputs."""
        with torch_threads(self.threads):
            logits = self.model(torch.from_numpy(inputs))
        return torch.sigmoid(logits)[:, 0].numpy()

    def complete(self, grid: ObjectGrid, probability: np.ndarray, seeds: np.ndarray,
                 samples: np.ndarray, step: float, add: float, remove: float, unseen
                 ) -> np.ndarray:
        """The seen seeds (N, 3), carving's samples (M, 3) where the probability is at least
        remove, and points every step metres in the cells of probability at least add that
        ``unseen`` (points (P, 3) -> (P,) bool) keeps; returns (M', 3) camera-frame points."""
        kept = samples[ndimage.map_coordinates(probability, grid.to_cells(samples).T, order=1,
                                               mode="constant", cval=0.0) >= remove]
        n = max(1, int(round(grid.cell / step)))
        offsets = (np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij"), -1).reshape(-1, 3)
                   + 0.5) / n - 0.5  # (n^3, 3) about a cell's centre, in cells
        likely = np.argwhere(probability >= add)  # (L, 3) cells
        cells = (likely[:, None, :] + offsets[None]).reshape(-1, 3)  # (L n^3, 3)
        cells = cells[ndimage.map_coordinates(probability, cells.T, order=1) >= add]
        added = grid.to_camera(cells)
        return np.concatenate([seeds, kept, added[unseen(added)]])
