"""De-occlusion: each segmented object's whole (amodal) mask and a completed RGB crop of it.

A backend is anything with ``deocclude(frame, segmentation) -> list[DeoccludedObject]`` (the
Deoccluder protocol); ``BACKENDS`` maps config names to builders and ``build_deoccluder(cfg)``
picks one. The crop is what an image-to-3D backend receives: RGB with the hidden part filled in,
plus the visible-mask channel.

The embedded default, "depth_order" (CPU, numpy/scipy, no weights):

1. Occlusion from depth order: every pair of pixels up to boundary_px apart along a row or a
   column that belong to two different objects votes for the nearer one when the depths differ
   by more than occlusion_margin (relative). Object j occludes object i when most of their
   shared boundary votes for j; a depth-continuous contact (stacked, touching) is no occlusion.
2. Amodal mask: the visible mask plus the part of the object's shape prior that lies behind its
   occluders. The prior is the convex hull of the object's visible points and their projections
   onto the support plane (an object stands on the plane, so its hidden base reaches down to
   it), projected into the image; without a plane, the convex hull of the visible mask. Hidden
   pixels can only be where an occluder is, so a prior never grows into free space.
3. Crop and inpainting: the amodal mask's box grown by crop_margin per side, clipped to the
   image. Hidden pixels take the colour of the nearest visible pixel of the same object (a
   Euclidean distance transform), then inpaint_iterations of Jacobi diffusion with the visible
   pixels fixed smooth the seams (a harmonic fill). Pixels off the amodal mask get background.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from scenemaker_ros.config import DeocclusionConfig, DepthOrderConfig
from scenemaker_ros.frames import RGBDFrame
from scenemaker_ros.geometry import depth_to_points, project_points
from scenemaker_ros.stages.backends import build_backend
from scenemaker_ros.stages.segmentation import Segmentation, SupportPlane, mask_box

# -----------------------------------------------------------------------------
# interface


@dataclass
class DeoccludedObject:
    """One object after de-occlusion; full-frame masks are (H, W) bool.

    index: the object's mask in the Segmentation. visible: its visible mask. amodal: its
    estimated whole mask, a superset of visible. occluders: indices of the objects in front of
    it. box: (x0, y0, x1, y1) half-open crop box, pixels. rgb: (y1 - y0, x1 - x0, 3) uint8 crop,
    hidden pixels inpainted, background off the amodal mask. mask: (y1 - y0, x1 - x0) bool, the
    crop's visible-mask channel.
    """

    index: int
    visible: np.ndarray
    amodal: np.ndarray
    occluders: list[int]
    box: tuple[int, int, int, int]
    rgb: np.ndarray
    mask: np.ndarray

    @property
    def hidden(self) -> np.ndarray:
        """(H, W) bool: estimated hidden pixels, amodal and not visible."""
        return self.amodal & ~self.visible


class Deoccluder(Protocol):
    def deocclude(self, frame: RGBDFrame, segmentation: Segmentation) -> list[DeoccludedObject]:
        """One DeoccludedObject per mask of segmentation, in its order."""
        ...


# -----------------------------------------------------------------------------
# the "depth_order" backend


class DepthOrderDeoccluder:
    """Occlusion from depth order, convex amodal completion, diffusion inpainting (module
    docstring)."""

    def __init__(self, cfg: DepthOrderConfig):
        self.cfg = cfg

    def deocclude(self, frame: RGBDFrame, segmentation: Segmentation) -> list[DeoccludedObject]:
        cfg, masks = self.cfg, segmentation.masks
        # 1. who hides whom
        occluders = occlusion_order(segmentation.instance_image(), frame.depth, cfg.boundary_px,
                                    cfg.occlusion_margin)
        objects = []
        for i, visible in enumerate(masks):
            # 2. the amodal mask: the shape prior, where it lies behind an occluder
            amodal = visible.copy()
            if occluders[i]:
                behind = masks[occluders[i]].any(axis=0)
                amodal |= behind & shape_prior(frame, visible, segmentation.plane)
            # 3. crop and fill the hidden pixels
            box = _grown_box(amodal, cfg.crop_margin)
            rgb = completed_crop(frame.rgb, visible, amodal, box, cfg.background,
                                 cfg.inpaint_iterations)
            x0, y0, x1, y1 = box
            objects.append(DeoccludedObject(index=i, visible=visible, amodal=amodal,
                                            occluders=occluders[i], box=box, rgb=rgb,
                                            mask=visible[y0:y1, x0:x1].copy()))
        return objects


def occlusion_order(instance: np.ndarray, depth: np.ndarray, reach: int, margin: float
                    ) -> list[list[int]]:
    """Occluders of each object from depth order along shared boundaries (module docstring,
    step 1). instance (H, W) int, 0 = none, k + 1 = object k; depth (H, W) metres, 0 = invalid.
    Returns, per object k, the sorted indices of the objects in front of it."""
    n = int(instance.max())
    votes = np.zeros((n + 1, n + 1))  # votes[i, j]: boundary samples with j in front of i
    samples = np.zeros((n + 1, n + 1))
    for offset in range(1, reach + 1):
        for a, b, za, zb in ((instance[:, :-offset], instance[:, offset:], depth[:, :-offset],
                              depth[:, offset:]),
                             (instance[:-offset], instance[offset:], depth[:-offset],
                              depth[offset:])):
            pair = (a > 0) & (b > 0) & (a != b) & (za > 0) & (zb > 0)
            i, j, zi, zj = a[pair], b[pair], za[pair], zb[pair]
            np.add.at(samples, (i, j), 1)
            np.add.at(samples, (j, i), 1)
            np.add.at(votes, (i, j), zj < zi * (1 - margin))
            np.add.at(votes, (j, i), zi < zj * (1 - margin))
    front = votes > 0.5 * np.maximum(samples, 1)
    return [sorted(int(j) - 1 for j in np.flatnonzero(front[k + 1])) for k in range(n)]


def shape_prior(frame: RGBDFrame, visible: np.ndarray, plane: SupportPlane | None
                ) -> np.ndarray:
    """(H, W) bool convex prior of an object's whole mask (module docstring, step 2); the
    visible mask itself when its hull is degenerate."""
    if plane is None:
        rows, cols = np.nonzero(visible)
        uv = np.stack([cols, rows], axis=1).astype(np.float64)
    else:
        points = depth_to_points(frame.depth, frame.camera.K, visible)
        base = points - plane.height(points)[:, None] * plane.normal  # dropped onto the plane
        uv = project_points(frame.camera.K, np.concatenate([points, base]))
        uv = uv[np.all(np.isfinite(uv), axis=1)]
    return visible | convex_fill(uv, visible.shape)


def convex_fill(uv: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) bool: the pixels whose centres lie in the convex hull of points uv (N, 2) (x, y)
    pixels, grown by half a pixel; all False when the hull is degenerate."""
    out = np.zeros(shape, bool)
    try:
        hull = ConvexHull(uv)
    except (QhullError, ValueError):
        return out
    lo = np.clip(np.floor(uv[hull.vertices].min(axis=0)), 0, [shape[1], shape[0]]).astype(int)
    hi = np.clip(np.ceil(uv[hull.vertices].max(axis=0)) + 1, 0, [shape[1], shape[0]]).astype(int)
    xs, ys = np.meshgrid(np.arange(lo[0], hi[0]), np.arange(lo[1], hi[1]))
    centres = np.stack([xs.ravel(), ys.ravel()], axis=1)
    inside = np.all(centres @ hull.equations[:, :2].T + hull.equations[:, 2] <= 0.5, axis=1)
    out[ys.ravel()[inside], xs.ravel()[inside]] = True
    return out


def _grown_box(mask: np.ndarray, margin: float) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) half-open box of mask (H, W) bool, grown by margin times its size per
    side and clipped to the image."""
    x0, y0, x1, y1 = mask_box(mask)
    grow_x, grow_y = int(np.ceil(margin * (x1 - x0))), int(np.ceil(margin * (y1 - y0)))
    height, width = mask.shape
    return (max(x0 - grow_x, 0), max(y0 - grow_y, 0), min(x1 + grow_x, width),
            min(y1 + grow_y, height))


def completed_crop(rgb: np.ndarray, visible: np.ndarray, amodal: np.ndarray,
                   box: tuple[int, int, int, int], background: tuple[int, int, int],
                   iterations: int) -> np.ndarray:
    """(h, w, 3) uint8 crop of rgb (H, W, 3) uint8 over box: visible pixels kept, hidden ones
    (amodal, not visible) inpainted from them (module docstring, step 3), background elsewhere."""
    x0, y0, x1, y1 = box
    crop = np.s_[y0:y1, x0:x1]
    known, hidden = visible[crop], amodal[crop] & ~visible[crop]
    out = np.empty((y1 - y0, x1 - x0, 3), np.float64)
    out[:] = background
    out[known] = rgb[crop][known]
    if hidden.any():
        nearest = ndimage.distance_transform_edt(~known, return_distances=False,
                                                 return_indices=True)
        out[hidden] = rgb[crop][nearest[0][hidden], nearest[1][hidden]]
        out = _diffuse(out, known, hidden, iterations)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _diffuse(image: np.ndarray, known: np.ndarray, hidden: np.ndarray, iterations: int
             ) -> np.ndarray:
    """Jacobi iterations of Laplace's equation on the hidden pixels of image (h, w, 3) float:
    each becomes the mean of its 4-neighbours among known and hidden pixels."""
    x0, y0, x1, y1 = mask_box(hidden)
    window = np.s_[max(y0 - 1, 0):y1 + 1, max(x0 - 1, 0):x1 + 1]
    part, fill = image[window], hidden[window]  # part is a view: updates land in image
    source = (known[window] | fill).astype(np.float64)[..., None]
    weight = np.maximum(_neighbour_sum(source)[fill], 1)
    for _ in range(iterations):
        part[fill] = _neighbour_sum(part * source)[fill] / weight
    return image


def _neighbour_sum(image: np.ndarray) -> np.ndarray:
    """(h, w, c): the sum of each pixel's 4-neighbours in image (h, w, c), zero outside."""
    padded = np.pad(image, ((1, 1), (1, 1), (0, 0)))
    return padded[:-2, 1:-1] + padded[2:, 1:-1] + padded[1:-1, :-2] + padded[1:-1, 2:]


# -----------------------------------------------------------------------------
# backends


def _build_depth_order(cfg: DeocclusionConfig) -> Deoccluder:
    return DepthOrderDeoccluder(cfg.depth_order)


def _build_flux_kontext(cfg: DeocclusionConfig) -> Deoccluder:
    from scenemaker_ros.stages.kontext import build_flux_kontext  # torch + diffusers

    return build_flux_kontext(cfg)


BACKENDS: dict[str, Callable[[DeocclusionConfig], Deoccluder]] = {
    "depth_order": _build_depth_order,
    "flux_kontext": _build_flux_kontext,
}


def build_deoccluder(cfg: DeocclusionConfig) -> Deoccluder:
    """The de-occlusion backend cfg.backend names; SceneMakerError lists the valid names."""
    return build_backend(BACKENDS, cfg, "pipeline.deocclusion.backend")
