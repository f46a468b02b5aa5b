"""The "boundary_net" segmentation: instance boundaries learned on our procedural scenes, then a
watershed (CPU, weights shipped with the package).

The whole network is in this file, like DiT's ``models.py``: inputs, blocks, model, presets, the
segmenter that runs it. Shapes: B batch, C channels, H x W a crop of the frame (multiples of 16).

1. Support plane and candidate pixels as in "depth_clusters" (its settings): the plane fit, the
   pixels above its noise band, blobs of at least min_pixels.
2. Inputs (``boundary_inputs``), per pixel of the candidates' box: RGB, surface normal, depth
   relative to the candidates' median depth, height above the plane over that depth, and the
   candidate mask; relative quantities, so one net serves near and far cameras.
3. ``BoundaryNet``, a small U-Net, gives each pixel the probability that another object lies
   within ``BOUNDARY_RADIUS_PX`` (``boundary_targets``): a band along every contact or occlusion
   between two objects, none along an object's own creases and self-occlusions.
4. Seeds: the 4-connected components of candidate pixels below ``threshold``, off depth jumps
   (an occlusion separates two seeds even where the net saw no boundary), of at least
   ``min_seed_pixels``; a watershed on the boundary probability grows them over the candidates.
   Inside the band the watershed may give a strip of a nearer surface to the object behind it:
   each object's depth-continuous pieces but its largest join the object they continue
   (``reattach_across_jumps``), so no mask straddles a depth jump it does not own. A candidate
   blob without a seed (an object thinner than the band) is an object of its own.
5. Touching objects of one colour merge (``merge_by_colour``: depth_clusters' same_color rule,
   or one palette of colours for textured objects; the net splits multi-part objects at their
   concave joints); clusters below min_pixels are dropped and enclosed holes filled, as in
   "depth_clusters".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch import nn
from torch.nn import functional as F

from scenemaker_ros.config import DepthClustersConfig, SegmentationConfig
from scenemaker_ros.frames import RGBDFrame
from scenemaker_ros.stages.checkpoints import load_checkpoint, save_checkpoint, torch_threads
from scenemaker_ros.stages.hub import resolve_device
from scenemaker_ros.stages.segmentation import (
    SAME_COLOR_MIN_PIXELS,
    Segmentation,
    SupportPlane,
    candidate_crop,
    candidate_pixels,
    components,
    depth_jumps,
    empty_segmentation,
    fill_holes,
    normal_image,
    one_colour,
    ranked_labels,
)

FORMAT = "scenemaker-boundary-1"
SHIPPED_CHECKPOINT = Path(__file__).parent / "weights" / "boundary-S.safetensors"
BOUNDARY_RADIUS_PX = 2  # a pixel is "boundary" when another object lies this close (Chebyshev)
INPUT_CHANNELS = 9  # rgb 3, normal 3, relative depth, relative height, candidate
STRIDE = 16  # crops are padded to multiples of this (four 2x downsamplings)
TRAINING_FOCAL_PX = 600.0  # the training cameras' focal length (data.camera.fx_range 540-660)
PALETTE_BIN = 0.02  # chromaticity histogram bin width (one_palette)
PALETTE_BINS = int(round(1 / PALETTE_BIN))
PALETTE_OVERLAP = 0.6  # histogram overlap of two regions of one palette
PALETTE_COLOURED = 0.5  # share of coloured pixels a region needs to take part
DARK = 60.0  # r + g + b under this: too dark for a reliable chromaticity


# -----------------------------------------------------------------------------
# inputs and targets


def boundary_inputs(rgb: np.ndarray, points: np.ndarray, candidate: np.ndarray,
                    heights: np.ndarray, normal_sigma: float) -> np.ndarray:
    """(C, h, w) float32 network input of a crop (module docstring, step 2): rgb (h, w, 3) uint8,
    points (h, w, 3) camera frame metres (0 = no depth), candidate (h, w) bool, heights (h, w)
    metres above the support plane."""
    z = points[..., 2]
    valid = z > 0
    reference = float(np.median(z[candidate])) if candidate.any() else 1.0
    normals = normal_image(points, valid, normal_sigma)  # (h, w, 3)
    relative_depth = np.clip(10.0 * (z / reference - 1.0), -3.0, 3.0) * valid
    relative_height = np.clip(5.0 * heights / reference, -1.0, 3.0) * valid
    channels = [rgb.astype(np.float32).transpose(2, 0, 1) / 255.0 - 0.5,
                normals.transpose(2, 0, 1), relative_depth[None], relative_height[None],
                candidate[None]]
    return np.ascontiguousarray(np.concatenate(channels), dtype=np.float32)


def network_inputs(frame: RGBDFrame, plane: SupportPlane | None, candidate: np.ndarray,
                   clusters: DepthClustersConfig
                   ) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray]:
    """The candidates' box (``candidate_crop``), its points (h, w, 3) and the network input
    (C, h, w) (``boundary_inputs``; heights 0 without a plane): what the segmenter runs the net
    on and what training caches."""
    box, K, points = candidate_crop(frame, candidate, clusters)
    heights = (np.zeros(points.shape[:2], np.float32) if plane is None
               else plane.pixel_heights(frame.depth[box], K))
    inputs = boundary_inputs(frame.rgb[box], points, candidate[box], heights,
                             clusters.normal_smoothing_px)
    return box, points, inputs


def boundary_targets(instance: np.ndarray, radius: int = BOUNDARY_RADIUS_PX) -> np.ndarray:
    """(h, w) bool: pixels of an object (instance (h, w) int, 0 = none) with a pixel of another
    object within radius (Chebyshev distance)."""
    size = 2 * radius + 1
    instance = instance.astype(np.int32)
    highest = ndimage.maximum_filter(instance, size=size)
    none = instance.max() + 1  # above every id, so that the minimum finds the lowest neighbour
    lowest = ndimage.minimum_filter(np.where(instance > 0, instance, none), size=size)
    return (instance > 0) & ((highest != instance) | (lowest != instance))


# -----------------------------------------------------------------------------
# blocks


class ConvBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and ReLU; the first may stride 2."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class UpBlock(nn.Module):
    """2x bilinear upsampling, concatenation with the skip, one ConvBlock."""

    def __init__(self, c_in: int, c_skip: int, c_out: int):
        super().__init__()
        self.block = ConvBlock(c_in + c_skip, c_out)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.block(torch.cat([x, skip], dim=1))


# -----------------------------------------------------------------------------
# model


@dataclass
class BoundaryModelConfig:
    widths: list[int] = field(default_factory=lambda: [16, 32, 48, 64])  # at strides 2, 4, 8, 16
    in_channels: int = INPUT_CHANNELS


class BoundaryNet(nn.Module):
    """A U-Net from the (B, C, H, W) inputs to (B, 1, H, W) boundary logits, computed at
    stride 2 and upsampled."""

    def __init__(self, config: BoundaryModelConfig):
        super().__init__()
        self.config = config
        w = config.widths
        self.down = nn.ModuleList([ConvBlock(config.in_channels, w[0], stride=2)] +
                                  [ConvBlock(a, b, stride=2) for a, b in zip(w[:-1], w[1:])])
        self.up = nn.ModuleList([UpBlock(b, a, a) for a, b in zip(w[:-1], w[1:])][::-1])
        self.head = nn.Conv2d(w[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        assert H % STRIDE == 0 and W % STRIDE == 0, f"input {H}x{W} not a multiple of {STRIDE}"
        skips = []
        for block in self.down:  # (B, w_i, H / 2^(i+1), W / 2^(i+1))
            x = block(x)
            skips.append(x)
        x = skips.pop()  # (B, w_-1, H / 16, W / 16)
        for block in self.up:
            x = block(x, skips.pop())  # up to (B, w_0, H / 2, W / 2)
        logits = self.head(x)  # (B, 1, H / 2, W / 2)
        return F.interpolate(logits, size=(H, W), mode="bilinear", align_corners=False)


BOUNDARY_MODELS = {
    "boundary-S": lambda: BoundaryNet(BoundaryModelConfig(widths=[16, 32, 48, 64])),
    "boundary-XS": lambda: BoundaryNet(BoundaryModelConfig(widths=[8, 16, 24, 32])),
}


# -----------------------------------------------------------------------------
# checkpoints: safetensors, the model config and training info in the metadata (no pickle)


def save_boundary_checkpoint(path: str | Path, model: BoundaryNet, info: dict[str, Any]) -> None:
    save_checkpoint(path, model, FORMAT, info)


def load_boundary_checkpoint(path: str | Path) -> tuple[BoundaryNet, dict[str, Any]]:
    """(model in eval mode on the CPU, training info); one-line SceneMakerError otherwise."""
    return load_checkpoint(path, FORMAT, BoundaryModelConfig, BoundaryNet, "boundary",
                           "pipeline.segmentation.boundary_net.checkpoint")


# -----------------------------------------------------------------------------
# the segmenter


class BoundaryNetSegmenter:
    """Candidates from the depth, boundaries from the net, seeds grown by a watershed (module
    docstring)."""

    def __init__(self, cfg: SegmentationConfig):
        self.clusters, self.cfg = cfg.depth_clusters, cfg.boundary_net
        self.device = resolve_device(self.cfg.device, "pipeline.segmentation.boundary_net.device")
        model, self.info = load_boundary_checkpoint(self.cfg.checkpoint or SHIPPED_CHECKPOINT)
        self.model = model.to(self.device)

    def segment(self, frame: RGBDFrame) -> Segmentation:
        from skimage.segmentation import watershed

        clusters = self.clusters
        plane, candidate = candidate_pixels(frame, clusters)  # 1.
        if not candidate.any():
            return empty_segmentation(frame.depth.shape, plane)
        box, points, inputs = network_inputs(frame, plane, candidate, clusters)  # 2.
        crop = candidate[box]
        probability = self.boundary_probability(inputs, frame.camera.K[0, 0])  # 3.
        z = points[..., 2]
        inside = crop & (probability < self.cfg.threshold) & ~depth_edges(z, crop,
                                                                           clusters.depth_jump)
        seeds, n = ndimage.label(inside)  # 4.
        sizes = np.bincount(seeds.ravel(), minlength=n + 1)
        seeds[(sizes < self.cfg.min_seed_pixels)[seeds]] = 0
        labels = reattach_across_jumps(watershed(probability, seeds, mask=crop), z,
                                       clusters.depth_jump)
        if clusters.same_color > 0:
            labels = merge_by_colour(labels, frame.rgb[box], clusters.same_color)
        blobs, _ = ndimage.label(crop & (labels == 0))  # blobs no seed reached
        labels = np.where(blobs > 0, blobs + labels.max(), labels)
        labels = fill_holes(ranked_labels(labels.ravel(), clusters.min_pixels)
                            .reshape(crop.shape), clusters.max_hole_pixels)  # 5.
        if not labels.any():
            return empty_segmentation(frame.depth.shape, plane)
        instance = np.zeros(frame.depth.shape, np.int64)
        instance[box] = labels
        interior = ndimage.mean(1.0 - probability, labels, np.arange(1, labels.max() + 1))
        return Segmentation.from_instance_image(instance, plane, np.asarray(interior, np.float32))

    @torch.no_grad()
    def boundary_probability(self, inputs: np.ndarray, focal_px: float) -> np.ndarray:
        """(h, w) float32 boundary probability of a (C, h, w) input seen with focal length
        focal_px. The net learnt its band and its receptive field in the pixels of the training
        cameras, so the input is resampled to their scale (TRAINING_FOCAL_PX) when it differs
        by more than a quarter, zero-padded to multiples of STRIDE, run on ``threads`` torch
        threads, and the probability resampled back."""
        h, w = inputs.shape[1:]
        x = torch.from_numpy(inputs)[None].to(self.device)
        scale = TRAINING_FOCAL_PX / focal_px
        size = (h, w) if 0.8 <= scale <= 1.25 else (round(h * scale), round(w * scale))
        if size != (h, w):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        x = F.pad(x, (0, -size[1] % STRIDE, 0, -size[0] % STRIDE))
        with torch_threads(self.cfg.threads):
            logits = self.model(x)[..., :size[0], :size[1]]
        if size != (h, w):
            logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
        return torch.sigmoid(logits)[0, 0].float().cpu().numpy()


def reattach_across_jumps(labels: np.ndarray, z: np.ndarray, jump: float) -> np.ndarray:
    """labels (h, w) int (0 = none) with each label's depth-continuous pieces (4-neighbours
    within jump of each other in depth z (h, w), relative) checked: every piece but the largest
    joins the label it continues most (a sliver of the front surface that the watershed gave
    the object behind it); a piece that continues no other label (a handle seen across its own
    body) stays."""
    h, w = labels.shape
    flat, depth = labels.ravel(), z.ravel()
    a, b = label_edges(labels)
    za, zb = depth[a], depth[b]
    smooth = ~depth_jumps(za, zb, jump)
    same = smooth & (flat[a] == flat[b])
    piece = components(h * w, a[same], b[same])  # (h * w,) piece id per pixel
    sizes = np.bincount(piece[flat > 0], minlength=h * w)
    labelled = np.flatnonzero(flat > 0)
    largest = np.zeros(flat.max() + 1, np.int64)  # each label's largest piece size
    np.maximum.at(largest, flat[labelled], sizes[piece[labelled]])
    is_main = sizes[piece] == largest[flat]
    # continuous contacts of minor pieces with other labels: (piece, other label) votes
    contact = smooth & (flat[a] != flat[b])
    src = np.concatenate([a[contact], b[contact]])
    dst = np.concatenate([b[contact], a[contact]])
    minor = (flat[src] > 0) & ~is_main[src]
    if not minor.any():
        return labels
    pairs, votes = np.unique(np.stack([piece[src[minor]], flat[dst[minor]]]), axis=1,
                             return_counts=True)
    order = np.lexsort((votes, pairs[0]))  # per piece, the most-voted label last
    pairs = pairs[:, order]
    last = np.r_[pairs[0, 1:] != pairs[0, :-1], True]
    target = np.zeros(h * w, np.int64)
    target[pairs[0, last]] = pairs[1, last]
    moved = (flat > 0) & ~is_main & (target[piece] > 0)
    return np.where(moved, target[piece], flat).reshape(h, w)


def merge_by_colour(labels: np.ndarray, rgb: np.ndarray, threshold: float) -> np.ndarray:
    """labels (h, w) int (0 = none) with touching objects of one colour (``one_colour``, as in
    "depth_clusters") or of one palette (``one_palette``: textured objects) merged: the net
    splits multi-part objects at their concave joints, where only colour says that the parts
    belong together."""
    a, b = label_edges(labels)
    flat = labels.ravel()
    a, b = a[flat[a] != flat[b]], b[flat[a] != flat[b]]
    pairs = np.unique(np.stack([np.minimum(flat[a], flat[b]), np.maximum(flat[a], flat[b])]),
                      axis=1)
    merge = one_colour(rgb, flat, flat > 0, pairs, threshold)
    merge |= one_palette(rgb, flat, flat > 0, pairs, threshold)
    merged = components(flat.max() + 1, pairs[0, merge], pairs[1, merge])
    return np.where(labels > 0, merged[labels] + 1, 0)


def one_palette(rgb: np.ndarray, region: np.ndarray, counted: np.ndarray, pairs: np.ndarray,
                threshold: float) -> np.ndarray:
    """(P,) bool: which region pairs (2, P) show one mixture of colours: histograms of their
    coloured pixels' chromaticity (r, g) (farther than threshold from grey, not dark) that
    overlap by PALETTE_OVERLAP, both regions at least PALETTE_COLOURED coloured and of at least
    SAME_COLOR_MIN_PIXELS pixels. The parts of a textured object (checker, stripes) share a
    palette while their mean colours may differ, or both be grey (complementary colours);
    rgb (h, w, 3) uint8, region (h * w,) int ids, counted (h * w,) bool."""
    flat = rgb.reshape(-1, 3)[counted].astype(np.float64) + 1.0
    brightness = flat.sum(1)
    chroma = flat / brightness[:, None]
    ids, n = region[counted], region.max() + 1
    coloured = (np.linalg.norm(chroma - 1 / 3, axis=1) > threshold) & (brightness > DARK)
    bins = np.minimum((chroma[:, :2] / PALETTE_BIN).astype(np.int64), PALETTE_BINS - 1)
    key = (ids * PALETTE_BINS + bins[:, 0]) * PALETTE_BINS + bins[:, 1]
    hist = np.bincount(key[coloured], minlength=n * PALETTE_BINS ** 2).astype(np.float64)
    hist = ndimage.uniform_filter(hist.reshape(n, PALETTE_BINS, PALETTE_BINS), (1, 3, 3))
    hist /= np.maximum(hist.sum((1, 2), keepdims=True), 1e-12)  # neighbouring bins blend
    sizes = np.bincount(ids, minlength=n)
    share = np.bincount(ids[coloured], minlength=n) / np.maximum(sizes, 1)
    usable = (share >= PALETTE_COLOURED) & (sizes >= SAME_COLOR_MIN_PIXELS)
    overlap = np.minimum(hist[pairs[0]], hist[pairs[1]]).sum((1, 2))
    return usable[pairs[0]] & usable[pairs[1]] & (overlap >= PALETTE_OVERLAP)


def label_edges(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat pixel indices (E,), (E,) of the 4-neighbour pairs of labels (h, w) with both > 0."""
    h, w = labels.shape
    index = np.arange(h * w).reshape(h, w)
    across = (labels[:, :-1] > 0) & (labels[:, 1:] > 0)
    down = (labels[:-1] > 0) & (labels[1:] > 0)
    return (np.concatenate([index[:, :-1][across], index[:-1][down]]),
            np.concatenate([index[:, 1:][across], index[1:][down]]))


def depth_edges(z: np.ndarray, candidate: np.ndarray, jump: float) -> np.ndarray:
    """(h, w) bool: candidates with a candidate 4-neighbour whose depth z (h, w) differs by more
    than jump (relative): both sides of every occlusion or self-occlusion."""
    h, w = z.shape
    z = np.where(candidate, z, 0.0)
    edge = np.zeros((h, w), bool)
    for dy, dx in ((0, 1), (1, 0)):
        a, b = z[:h - dy, :w - dx], z[dy:, dx:]
        cut = (a > 0) & (b > 0) & depth_jumps(a, b, jump)
        edge[:h - dy, :w - dx] |= cut
        edge[dy:, dx:] |= cut
    return edge


def build_boundary_net(cfg: SegmentationConfig) -> BoundaryNetSegmenter:
    return BoundaryNetSegmenter(cfg)
