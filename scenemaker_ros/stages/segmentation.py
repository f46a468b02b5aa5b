"""Instance segmentation: an RGB-D frame -> a mask per object standing on the support plane.

A backend is anything with ``segment(frame) -> Segmentation`` (the Segmenter protocol);
``BACKENDS`` maps config names to builders and ``build_segmenter(cfg)`` picks one.

The embedded default, "depth_clusters" (CPU, numpy/scipy, no weights), works in the camera
optical frame (REP 103, metres):

1. Back-project every valid depth pixel.
2. Support plane: RANSAC over a random subset of the points, each hypothesis oriented so that the
   camera lies on its positive side; the plane with most inliers is refitted by least squares.
   The noise is measured on its inliers as std = noise * z^2 of their distances to it (stereo
   noise grows with z^2; a robust MAD estimate), and the plane band is max(plane_band_m,
   plane_band_sigmas * noise * z^2). No plane with plane_min_fraction of the points: every
   point is a candidate (warned).
3. Candidates: valid pixels above the band, in 4-connected blobs of at least min_pixels.
4. Regions: the 4-neighbour graph of candidates, cut where neighbour depths jump by more than
   depth_jump (relative) or where their colours differ by more than color_edge.
5. Merging: two regions split by colour edges only are merged back unless their shared edge is
   a concave crease, as where two touching objects meet. The crease test is the LCCP criterion
   (Stein et al., CVPR 2014), (n_a - n_b) . (x_a - x_b) / |x_a - x_b| < -crease, with normals
   n and points x taken crease_offset_px either side of each edge and averaged over the whole
   shared edge, so texture and shadow edges on smooth or convex surfaces do not split objects.
   Neighbouring regions of one colour (mean chromaticity within same_color; both of at least
   SAME_COLOR_MIN_PIXELS and not grey) are merged across any cut, depth jumps included: shading
   makes colour edges and concave creases between the faces of one object, and its parts hide
   each other. Two touching objects of one colour merge too (set same_color: 0 where that is
   common, e.g. bins of identical parts).
6. Clusters below min_pixels are dropped, enclosed holes up to max_hole_pixels filled.

Each mask's score is the fraction of its outline that geometry separates (depth jumps, the plane,
no depth); the rest of its outline is a colour crease only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from scenemaker_ros.config import DepthClustersConfig, SegmentationConfig
from scenemaker_ros.frames import RGBDFrame
from scenemaker_ros.geometry import depth_to_points
from scenemaker_ros.stages.backends import build_backend

log = logging.getLogger(__name__)

OBJECT_LABEL = "object"
SAME_COLOR_MIN_PIXELS = 20  # smaller regions take no part in the same-colour merge


# -----------------------------------------------------------------------------
# interface


@dataclass
class SupportPlane:
    """The plane the objects stand on, camera optical frame: normal @ p + offset = 0.

    normal: (3,) float64 unit, pointing to the camera's side (away from gravity on a table).
    offset: metres, > 0 (the camera is above the plane). noise: the spread of the plane's
    inliers about it, std = noise * z^2 (metres, z the depth in metres; depth noise seen along
    the normal). inlier_fraction: share of the valid depth points on the plane.
    """

    normal: np.ndarray
    offset: float
    noise: float
    inlier_fraction: float

    def height(self, points: np.ndarray) -> np.ndarray:
        """Signed distance (...,) in metres of points (..., 3) above the plane."""
        return points @ self.normal + self.offset

    def pixel_heights(self, depth: np.ndarray, K: np.ndarray) -> np.ndarray:
        """Signed distance (H, W) float32 metres above the plane of each back-projected pixel
        of depth (H, W) metres (pinhole K (3, 3)); equals ``offset`` where depth is 0."""
        h, w = depth.shape
        ray_x = (np.arange(w) - K[0, 2]) / K[0, 0]  # a pixel's point is depth * (ray_x, ray_y, 1)
        ray_y = (np.arange(h) - K[1, 2]) / K[1, 1]
        along = (self.normal[0] * ray_x[None, :] + self.normal[1] * ray_y[:, None]
                 + self.normal[2]).astype(np.float32)
        return depth * along + np.float32(self.offset)

    def band(self, depth: np.ndarray, floor: float, sigmas: float) -> np.ndarray:
        """Plane band half-width (H, W) float32 metres: max(floor, sigmas * noise * depth^2)."""
        return np.maximum(np.float32(floor), np.float32(sigmas * self.noise) * depth * depth)


@dataclass
class Segmentation:
    """Instances of one frame.

    masks: (M, H, W) bool, disjoint, largest first. scores: (M,) float32 in [0, 1]. labels: M
    class names. plane: the support plane, or None when none was found.
    """

    masks: np.ndarray
    scores: np.ndarray
    labels: list[str]
    plane: SupportPlane | None

    def __len__(self) -> int:
        return len(self.masks)

    def instance_image(self) -> np.ndarray:
        """(H, W) uint16: 0 = no object, k + 1 = masks[k]."""
        ids = np.arange(1, len(self.masks) + 1, dtype=np.uint16)[:, None, None]
        return (self.masks * ids).max(axis=0, initial=0).astype(np.uint16)

    @classmethod
    def from_instance_image(cls, instance: np.ndarray, plane: SupportPlane | None = None,
                            scores: np.ndarray | None = None) -> Segmentation:
        """Masks from an (H, W) int label image, 0 = none, one mask per id in increasing order;
        scores (M,) default to 1."""
        ids = np.unique(instance[instance > 0])
        scores = np.ones(len(ids), np.float32) if scores is None else scores
        return cls(masks=instance[None] == ids[:, None, None], scores=scores,
                   labels=[OBJECT_LABEL] * len(ids), plane=plane)


class Segmenter(Protocol):
    def segment(self, frame: RGBDFrame) -> Segmentation:
        """Masks of the objects in a validated frame; an empty Segmentation when none."""
        ...


# -----------------------------------------------------------------------------
# support plane


def fit_support_plane(depth: np.ndarray, K: np.ndarray, cfg: DepthClustersConfig,
                      rng: np.random.Generator) -> SupportPlane | None:
    """RANSAC + least-squares support plane of depth (H, W) metres, 0 = invalid, with pinhole K
    (3, 3), on plane_samples random valid pixels (module docstring, step 2); None when no plane
    holds plane_min_fraction of them."""
    valid = np.flatnonzero(depth > 0)
    if len(valid) < 3:
        return None
    chosen = np.zeros(depth.size, bool)
    chosen[rng.choice(valid, min(len(valid), cfg.plane_samples))] = True
    sample = depth_to_points(depth, K, chosen.reshape(depth.shape))  # (S, 3)
    z2 = sample[:, 2] ** 2
    normals, offsets = _plane_hypotheses(sample, cfg.plane_iterations, rng)
    threshold = np.maximum(cfg.plane_band_m, cfg.plane_threshold_m * z2)
    inliers = np.abs(sample @ normals.T + offsets) < threshold[:, None]  # (S, hypotheses)
    if not inliers.any():
        return None
    inlier = inliers[:, inliers.sum(axis=0).argmax()]
    for _ in range(3):  # refit, re-measure the noise, re-select
        normal, offset = _least_squares_plane(sample[inlier])
        residual = np.abs(sample @ normal + offset)
        noise = 1.4826 * float(np.median(residual[inlier] / z2[inlier]))
        inlier = residual < np.maximum(cfg.plane_band_m, cfg.plane_band_sigmas * noise * z2)
    if inlier.mean() < cfg.plane_min_fraction:
        return None
    return SupportPlane(normal, offset, noise, float(inlier.mean()))


def _plane_hypotheses(points: np.ndarray, n: int, rng: np.random.Generator
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Planes through random point triples: normals (n', 3), offsets (n',), camera side > 0."""
    tri = points[rng.integers(len(points), size=(n, 3))]  # (n, 3 points, 3)
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    length = np.linalg.norm(normals, axis=1)
    keep = length > 1e-12  # degenerate (collinear) triples give no plane
    normals = normals[keep] / length[keep, None]
    offsets = -np.einsum("ij,ij->i", normals, tri[keep, 0])
    sign = np.where(offsets < 0, -1.0, 1.0)
    return normals * sign[:, None], offsets * sign


def _least_squares_plane(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Total least-squares plane (normal (3,), offset) of points (N >= 3, 3), camera side > 0."""
    centre = points.mean(axis=0)
    normal = np.linalg.svd(points - centre, full_matrices=False)[2][2]
    offset = -float(normal @ centre)
    return (normal, offset) if offset >= 0 else (-normal, -offset)


# -----------------------------------------------------------------------------
# the "depth_clusters" backend


class DepthClusterSegmenter:
    """Support-plane removal + colour/depth-edge clustering (module docstring)."""

    def __init__(self, cfg: DepthClustersConfig):
        self.cfg = cfg

    def segment(self, frame: RGBDFrame) -> Segmentation:
        cfg = self.cfg
        plane, candidate = candidate_pixels(frame, cfg)  # 1.-3.
        if not candidate.any():
            return empty_segmentation(frame.depth.shape, plane)
        # 4.-6. cluster inside the candidates' bounding box, then paste back
        box, _, points = candidate_crop(frame, candidate, cfg)
        labels, scores = _cluster(frame.rgb[box], points, candidate[box], cfg)
        if not scores.size:
            log.warning("nothing found above the support plane")
            return empty_segmentation(frame.depth.shape, plane)
        instance = np.zeros(frame.depth.shape, np.int64)
        instance[box] = labels
        return Segmentation.from_instance_image(instance, plane, scores)


def candidate_pixels(frame: RGBDFrame, cfg: DepthClustersConfig
                     ) -> tuple[SupportPlane | None, np.ndarray]:
    """Steps 1-3 of the module docstring: the support plane (None when none is found, warned)
    and the candidate pixels (H, W) bool above its noise band, in blobs of min_pixels or more
    (none: warned)."""
    plane = fit_support_plane(frame.depth, frame.camera.K, cfg, np.random.default_rng(cfg.seed))
    if plane is None:
        log.warning("no support plane found: every depth point is an object candidate")
        candidate = frame.valid
    else:
        band = plane.band(frame.depth, cfg.plane_band_m, cfg.plane_band_sigmas)
        candidate = frame.valid & (plane.pixel_heights(frame.depth, frame.camera.K) > band)
    # blobs too small to hold an object go (a cut only makes them smaller)
    candidate = _large_components(candidate, cfg.min_pixels)
    if not candidate.any():
        log.warning("nothing found above the support plane")
    return plane, candidate


def empty_segmentation(shape: tuple[int, int], plane: SupportPlane | None) -> Segmentation:
    return Segmentation(np.zeros((0, *shape), bool), np.zeros(0, np.float32), [], plane)


def crop_box(mask: np.ndarray, K: np.ndarray, margin: int
             ) -> tuple[tuple[slice, slice], np.ndarray]:
    """The (rows, cols) slices of a non-empty mask's (H, W) box grown by margin pixels per side
    (clipped to the image) and the crop's pinhole K (3, 3)."""
    x0, y0, x1, y1 = mask_box(mask)
    H, W = mask.shape
    rows = slice(max(y0 - margin, 0), min(y1 + margin, H))
    cols = slice(max(x0 - margin, 0), min(x1 + margin, W))
    K = np.asarray(K, np.float64).copy()
    K[0, 2] -= cols.start
    K[1, 2] -= rows.start
    return (rows, cols), K


def candidate_crop(frame: RGBDFrame, candidate: np.ndarray, cfg: DepthClustersConfig
                   ) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray]:
    """The box around the non-empty candidates (H, W) bool, grown by crease_offset_px + 1 (the
    crease test looks that far), its pinhole K (3, 3) and its camera-frame points (h, w, 3)
    metres, 0 where the depth is invalid."""
    box, K = crop_box(candidate, frame.camera.K, cfg.crease_offset_px + 1)
    points = np.zeros((*candidate[box].shape, 3))
    points[frame.valid[box]] = depth_to_points(frame.depth[box], K)
    return box, K, points


def _large_components(mask: np.ndarray, min_pixels: int) -> np.ndarray:
    """mask (H, W) bool without its 4-connected components smaller than min_pixels."""
    labels, n = ndimage.label(mask)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    sizes[0] = 0
    return (sizes >= min_pixels)[labels]


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) half-open pixel box of a non-empty mask (H, W) bool."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        raise ValueError("an empty mask has no box")
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


@dataclass
class _Edges:
    """4-neighbour pixel pairs (a, b) between candidates: flat pixel indices (E,) and per edge
    whether depth jumps, whether colour changes, and the crease measure (E,) float."""

    a: np.ndarray
    b: np.ndarray
    jump: np.ndarray
    color: np.ndarray
    crease: np.ndarray


def _cluster(rgb: np.ndarray, points: np.ndarray, candidate: np.ndarray,
             cfg: DepthClustersConfig) -> tuple[np.ndarray, np.ndarray]:
    """Steps 4-6 on a crop: rgb (h, w, 3) uint8, points (h, w, 3) metres, candidate (h, w) bool
    -> labels (h, w) int (0 = none, 1..M largest first) and scores (M,) float32."""
    normals = normal_image(points, points[..., 2] > 0, cfg.normal_smoothing_px)
    edges = _candidate_edges(rgb, points, normals, candidate, cfg)
    n = candidate.size
    smooth = ~edges.jump & ~edges.color
    region = components(n, edges.a[smooth], edges.b[smooth])
    cut = region[edges.a] != region[edges.b]
    ra, rb = region[edges.a[cut]], region[edges.b[cut]]
    pairs, which = np.unique(np.stack([np.minimum(ra, rb), np.maximum(ra, rb)]), axis=1,
                             return_inverse=True)  # (2, P) neighbouring regions, edge -> pair
    # merge regions across colour edges that are no concave crease on average
    colour_only = ~edges.jump[cut]
    count = np.bincount(which, colour_only, minlength=pairs.shape[1])
    crease = np.bincount(which, edges.crease[cut] * colour_only, minlength=pairs.shape[1])
    merge = (count > 0) & (crease >= -cfg.crease * count)
    # and regions of one colour across any cut (shading, shadows, self-occlusion); grey ones
    # (black, white) are told apart by nothing but brightness, which shading changes too, and
    # tiny ones (mixed pixels on outlines) have no reliable colour
    if cfg.same_color > 0:
        merge |= one_colour(rgb, region, candidate.ravel(), pairs, cfg.same_color)
    cluster = components(n, pairs[0, merge], pairs[1, merge])[region]
    labels = ranked_labels(np.where(candidate.ravel(), cluster + 1, 0), cfg.min_pixels)
    labels = fill_holes(labels.reshape(candidate.shape), cfg.max_hole_pixels)
    return labels, _outline_scores(labels, edges)


def one_colour(rgb: np.ndarray, region: np.ndarray, counted: np.ndarray, pairs: np.ndarray,
               threshold: float) -> np.ndarray:
    """(P,) bool: which region pairs (2, P) are one colour: mean chromaticities (over the counted
    (h * w,) pixels of rgb (h, w, 3), region (h * w,) int ids) within threshold of each other,
    both regions coloured (that far from grey) and of at least SAME_COLOR_MIN_PIXELS pixels."""
    chroma = _region_chroma(rgb, region, counted)
    coloured = ((np.linalg.norm(chroma - 1 / 3, axis=1) > threshold)
                & (np.bincount(region, minlength=len(chroma)) >= SAME_COLOR_MIN_PIXELS))
    return (coloured[pairs[0]] & coloured[pairs[1]]
            & (np.linalg.norm(chroma[pairs[0]] - chroma[pairs[1]], axis=1) < threshold))


def _region_chroma(rgb: np.ndarray, region: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """(R, 3) mean chromaticity (r, g, b) / (r + g + b) of each region's candidate pixels: rgb
    (h, w, 3) uint8, region (h * w,) int ids, candidate (h * w,) bool. Shading and shadows scale
    a surface's colour, which leaves its chromaticity alone."""
    flat = rgb.reshape(-1, 3)[candidate].astype(np.float64) + 1.0  # + 1: black has no hue
    chroma = flat / flat.sum(1, keepdims=True)
    ids, n = region[candidate], region.max() + 1
    sums = np.stack([np.bincount(ids, chroma[:, i], minlength=n) for i in range(3)], 1)
    return sums / np.maximum(np.bincount(ids, minlength=n), 1)[:, None]


def normal_image(points: np.ndarray, valid: np.ndarray, sigma: float) -> np.ndarray:
    """(h, w, 3) unit surface normals facing the camera from points (h, w, 3), smoothed over
    valid pixels with a Gaussian of sigma pixels; central differences two pixels apart."""
    weight = np.maximum(ndimage.gaussian_filter(valid.astype(np.float64), sigma), 1e-9)
    smooth = np.stack([ndimage.gaussian_filter(points[..., i], sigma) for i in range(3)], -1)
    smooth /= weight[..., None]
    du, dv = np.zeros_like(smooth), np.zeros_like(smooth)
    du[:, 1:-1] = smooth[:, 2:] - smooth[:, :-2]
    dv[1:-1] = smooth[2:] - smooth[:-2]
    normals = np.cross(dv, du)  # x right, y down: dv x du points to -z, the camera
    return normals / np.maximum(np.linalg.norm(normals, axis=-1, keepdims=True), 1e-12)


def _candidate_edges(rgb: np.ndarray, points: np.ndarray, normals: np.ndarray,
                     candidate: np.ndarray, cfg: DepthClustersConfig) -> _Edges:
    """Every 4-neighbour pair of candidate pixels with its cut flags and crease measure."""
    h, w = candidate.shape
    flat_rgb = rgb.reshape(-1, 3).astype(np.float32)
    flat_points, flat_normals = points.reshape(-1, 3), normals.reshape(-1, 3)
    parts = []
    for step, size in ((1, w), (w, h)):  # horizontal pairs, then vertical pairs
        pair = candidate[:, :-1] & candidate[:, 1:] if step == 1 else candidate[:-1] & candidate[1:]
        rows, cols = np.nonzero(pair)
        a = rows * w + cols
        b = a + step
        position = cols if step == 1 else rows  # along the step's axis
        reach = cfg.crease_offset_px - 1  # outer pixels a - reach * step, b + reach * step
        outer_a = a - np.minimum(position, reach) * step
        outer_b = b + np.minimum(size - 2 - position, reach) * step
        za, zb = flat_points[a, 2], flat_points[b, 2]
        parts.append((a, b, depth_jumps(za, zb, cfg.depth_jump),
                      np.linalg.norm(flat_rgb[a] - flat_rgb[b], axis=1) > cfg.color_edge,
                      _crease(flat_points, flat_normals, candidate.ravel(), outer_a, outer_b)))
    return _Edges(*(np.concatenate(column) for column in zip(*parts)))


def depth_jumps(za: np.ndarray, zb: np.ndarray, jump: float) -> np.ndarray:
    """Whether neighbour depths za, zb (metres, same shape) differ by more than the fraction
    jump of the nearer one."""
    return np.abs(za - zb) > jump * np.minimum(za, zb)


def _crease(points: np.ndarray, normals: np.ndarray, candidate: np.ndarray, a: np.ndarray,
            b: np.ndarray) -> np.ndarray:
    """LCCP convexity (E,) of pixel pairs a, b: (n_a - n_b) . (x_a - x_b) / |x_a - x_b|, < 0 for
    a concave crease; 0 where either pixel is no candidate."""
    dx = points[a] - points[b]
    value = np.einsum("ij,ij->i", normals[a] - normals[b], dx)
    value /= np.maximum(np.linalg.norm(dx, axis=1), 1e-12)
    return np.where(candidate[a] & candidate[b], value, 0.0)


def components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Connected-component id (n,) of n nodes joined by the edges a[i] - b[i]."""
    graph = coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def ranked_labels(labels: np.ndarray, min_pixels: int) -> np.ndarray:
    """Relabel ids > 0 as 1..M by decreasing size; ids with fewer than min_pixels become 0."""
    sizes = np.bincount(labels)
    sizes[0] = 0
    order = np.argsort(-sizes, kind="stable")
    order = order[sizes[order] >= min_pixels]
    rank = np.zeros(len(sizes), np.int64)
    rank[order] = np.arange(1, len(order) + 1)
    return rank[labels]


def fill_holes(labels: np.ndarray, max_pixels: int) -> np.ndarray:
    """Give each unlabelled 4-connected region of at most max_pixels, off the border of labels
    (h, w) int (0 = none), whose neighbours all carry one label that label."""
    holes, n = ndimage.label(labels == 0)
    small = np.bincount(holes.ravel(), minlength=n + 1) <= max_pixels
    small[0] = False
    small[np.concatenate([holes[0], holes[-1], holes[:, 0], holes[:, -1]])] = False
    inside = small[holes]
    if not inside.any():
        return labels
    cross = ndimage.generate_binary_structure(2, 1)
    none = labels.max() + 1  # above every label: erosion then finds the lowest neighbour label
    highest, lowest = np.zeros(n + 1, labels.dtype), np.full(n + 1, none)
    np.maximum.at(highest, holes[inside], ndimage.grey_dilation(labels, footprint=cross)[inside])
    np.minimum.at(lowest, holes[inside], ndimage.grey_erosion(
        np.where(labels > 0, labels, none), footprint=cross)[inside])
    value = np.where(highest == lowest, highest, 0)
    return np.where(inside, value[holes], labels)


def _outline_scores(labels: np.ndarray, edges: _Edges) -> np.ndarray:
    """(M,) float32: fraction of each label's 4-neighbour outline that is not a colour-only cut
    to another label."""
    flat = labels.ravel()
    m = int(flat.max())
    outline = np.zeros(m + 1)
    for a, b in ((labels[:, :-1], labels[:, 1:]), (labels[:-1], labels[1:])):
        differ = a != b
        outline += np.bincount(a[differ], minlength=m + 1) + np.bincount(b[differ], minlength=m + 1)
    la, lb = flat[edges.a], flat[edges.b]
    weak = ~edges.jump & (la != lb) & (la > 0) & (lb > 0)
    weak_count = np.bincount(la[weak], minlength=m + 1) + np.bincount(lb[weak], minlength=m + 1)
    return (1.0 - weak_count[1:] / np.maximum(outline[1:], 1)).astype(np.float32)


# -----------------------------------------------------------------------------
# backends


def _build_depth_clusters(cfg: SegmentationConfig) -> Segmenter:
    return DepthClusterSegmenter(cfg.depth_clusters)


def _build_grounded_sam(cfg: SegmentationConfig) -> Segmenter:
    from scenemaker_ros.stages.grounded_sam import build_grounded_sam  # torch + transformers

    return build_grounded_sam(cfg)


def _build_boundary_net(cfg: SegmentationConfig) -> Segmenter:
    from scenemaker_ros.stages.boundary_net import build_boundary_net  # torch

    return build_boundary_net(cfg)


BACKENDS: dict[str, Callable[[SegmentationConfig], Segmenter]] = {
    "depth_clusters": _build_depth_clusters,
    "boundary_net": _build_boundary_net,
    "grounded_sam": _build_grounded_sam,
}


def build_segmenter(cfg: SegmentationConfig) -> Segmenter:
    """The segmentation backend cfg.backend names; SceneMakerError lists the valid names."""
    return build_backend(BACKENDS, cfg, "pipeline.segmentation.backend")
