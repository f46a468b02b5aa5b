"""The "carving" object geometry: each object's mesh completed from its own depth (CPU, no weights).

One view shows an object's top and the faces turned to the camera. What stands under the seen
surface is hidden by that surface itself, so the object is taken to fill it (single-view space
carving on a support):

1. Columns: from every observed point (voxel-thinned) straight down, against the support
   plane's normal, to its floor: the plane, or the top of the object it stands on (stacking:
   another object whose seen points all lie below this one's lowest, and whose footprint holds
   this one's centre). Samples every half voxel.
2. Free space: a column stops at its first sample that the camera sees through (the observed
   depth at its pixel lies more than ``free_space_margin_m`` behind it), so an overhang or a gap
   stays open.
   Completion (``completion``, on a support plane): a small network trained on procedural scenes
   (``stages/completion.py``) rates every point of a grid around the object; column samples it
   rates improbable go (the hidden underside of a ball), and hidden space it rates probable is
   added (the far slope of a cone, behind its top).
3. Volume: the samples mark voxels (``resolution`` along the object's longest side, clamped to
   ``min_voxel_m`` .. ``max_voxel_m``), closed by ``closing_iterations`` dilations + erosions and
   filled, then meshed by marching cubes (scikit-image) every ``mesh_step`` voxels: a closed,
   non-convex mesh in metres (step 2: a quarter of the faces, same accuracy). The surface
   moves in by half a voxel (it passes the outer faces of the outermost voxels), and vertices
   that face the camera and fall on the object's mask move along their rays onto the measured
   depth (within ``snap_voxels``), so the seen side is as sharp as the depth image; vertices
   below the floor (the lowest voxel layer reaches past it) move up onto it.
4. Frame (REP 103): z up along the plane normal, x along the footprint's long axis, origin at the
   footprint's centre on its floor. A simulator spawns it standing where it was seen.

Without a support plane (none found, or an RGB-only frame with no floor in view), columns go
along the viewing rays instead, as deep as the object is wide, and the frame's z is the camera's
up (-y).

Known-object mode works as in "retrieval" (its ``known_*`` settings): the user's meshes are fitted
first, also from their resting poses on the object's floor. Then the segmentation's slips are
mended (``explain_away``): an unmatched object's points that lie on a matched mesh are that
object's, so a fragment of it goes, and an object merged with part of it is matched again on
the rest. An object none of them explains is carved. The mesh is metric and already posed, so the
pipeline keeps its pose (the pose model places canonical meshes: "retrieval", "image_to_3d").
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from scenemaker_ros.config import CarvingConfig, GeometryConfig
from scenemaker_ros.errors import SceneMakerError
from scenemaker_ros.frames import RGBDFrame
from scenemaker_ros.geometry import (
    compose_pose,
    horizontal_axes,
    pixel_indices,
    transform_points,
)
from scenemaker_ros.pose.refine import DepthView
from scenemaker_ros.stages.geometry import KnownMatcher, KnownObject, ObjectGeometry, Support

if TYPE_CHECKING:
    from scenemaker_ros.stages.completion import ObjectGrid
    from scenemaker_ros.stages.deocclusion import DeoccludedObject
    from scenemaker_ros.stages.segmentation import SupportPlane

log = logging.getLogger(__name__)

LABEL = "object"  # carved meshes carry no class name
SMOOTHING_VOXELS = 0.5  # Gaussian sigma of the occupancy before marching cubes
SOURCE = "carved"
MAX_CELLS_PER_RESOLUTION = 4  # the voxel grows past max_voxel_m beyond this many resolutions
Completion = tuple["ObjectGrid", np.ndarray]  # an object's grid, its (G, G, G) probabilities


class CarvedGeometry:
    """Known meshes first (when given), else the carved volume (module docstring)."""

    def __init__(self, cfg: CarvingConfig, known: KnownMatcher | None = None):
        try:
            from skimage.measure import marching_cubes
        except ImportError as e:  # a declared dependency; say which one when it is missing
            raise SceneMakerError("geometry backend 'carving' needs scikit-image "
                                  "(pip install scikit-image)") from e
        self.cfg, self.known, self.marching_cubes = cfg, known, marching_cubes
        self.completer = None
        if cfg.completion:
            from scenemaker_ros.stages.completion import Completer  # torch

            self.completer = Completer(cfg.completion_checkpoint or None, cfg.completion_threads)

    def geometry(self, frame: RGBDFrame, points: list[np.ndarray], masks: np.ndarray,
                 crops: list[DeoccludedObject] | None = None,
                 plane: SupportPlane | None = None) -> list[ObjectGeometry | None]:
        view = DepthView(frame.depth, np.asarray(frame.camera.K, np.float64))
        rng = np.random.default_rng(self.cfg.seed)
        floors = support_floors(points, plane, self.cfg)
        supports = [None if plane is None else Support(plane, floor) for floor in floors]
        result: list[ObjectGeometry | None] = [None] * len(points)
        carved = []
        for k, p in enumerate(points):
            if len(p) < self.cfg.min_points:
                continue
            result[k] = None if self.known is None else self.known.match(p, view, rng,
                                                                         supports[k])
            if result[k] is None:
                carved.append(k)
        anything = np.any(masks, axis=0)  # every object's pixels, those mending moves included
        if self.known is not None and len(carved) < len(points):
            points, masks = list(points), masks.copy()  # explain_away replaces some
            carved = self.explain_away(points, masks, result, carved, view, rng, supports)
        completions = self.completions(view, points, masks, anything, plane, floors, carved)
        for k in carved:
            result[k] = self.carve(points[k], masks[k], view, plane, floors[k],
                                   completions.get(k))
        return result

    def explain_away(self, points: list[np.ndarray], masks: np.ndarray,
                     result: list[ObjectGeometry | None], unmatched: list[int], view: DepthView,
                     rng: np.random.Generator, supports: list[Support | None]) -> list[int]:
        """Known-object mode, after the first matches (result, in place): points of one object
        that lie on another's matched known mesh (``KnownMatcher.on_matched``) are that
        object's, which the segmentation cut in pieces or merged with it. An object with a share
        of at least ``known_fragment_share`` of them (or fewer than min_points of its own) is a
        fragment and goes, whether matched itself (to a copy of the mesh, on a fragment: the
        larger object wins) or not; an unmatched object loses them (points[k] and masks[k]
        change: pass copies) and the rest is matched again. Returns the objects still
        unmatched, to carve."""
        share = self.known.cfg.known_fragment_share
        kept = []
        for k in sorted((k for k, g in enumerate(result) if g is not None),
                        key=lambda k: -len(points[k])):
            if self.known.on_matched([points[k]], [result[j] for j in kept])[0].mean() >= share:
                log.info("object %d: its known mesh lies on a larger object's: a fragment of "
                         "it, left out", k)
                result[k] = None
            else:
                kept.append(k)
        still = []
        ons = self.known.on_matched([points[k] for k in unmatched], [result[j] for j in kept])
        for k, on in zip(unmatched, ons, strict=True):
            if not on.any():
                still.append(k)
                continue
            if on.mean() >= share or (~on).sum() < self.cfg.min_points:
                log.info("object %d: %d of its %d points lie on a matched known mesh: a "
                         "fragment of it, left out", k, on.sum(), len(on))
                continue
            u, v, _ = pixel_indices(view.K, points[k][on], masks[k].shape)
            masks[k][v, u] = False  # the points' own pixels: always on the image
            points[k] = points[k][~on]
            result[k] = self.known.match(points[k], view, rng, supports[k])
            if result[k] is None:
                still.append(k)
        return still

    def completions(self, view: DepthView, points: list[np.ndarray], masks: np.ndarray,
                    anything: np.ndarray, plane: SupportPlane | None, floors: list[float],
                    carved: list[int]) -> dict[int, Completion]:
        """The completion net's grid and occupancy probability of each carved object k, in one
        batch (anything (H, W) bool: the pixels of all objects, the net's other objects' input
        where masks[k] is not); none without a plane or with the completion off."""
        if self.completer is None or plane is None or not carved:
            return {}
        from scenemaker_ros.stages.completion import grid_inputs, object_grid

        grids = [object_grid(points[k], plane.normal, floors[k], plane.offset) for k in carved]
        inputs = np.stack([grid_inputs(grid, view.depth, view.K, masks[k], anything & ~masks[k])
                           for grid, k in zip(grids, carved, strict=True)])
        probabilities = self.completer.probabilities(inputs)
        return {k: (grid, probability)
                for k, grid, probability in zip(carved, grids, probabilities, strict=True)}

    def carve(self, points: np.ndarray, mask: np.ndarray, view: DepthView,
              plane: SupportPlane | None, floor: float, completion: Completion | None = None
              ) -> ObjectGeometry:
        """One object's carved mesh from its observed points (N, 3), camera frame, metres, and
        visible mask (H, W) bool; floor: its support's height above the plane (m); completion:
        the completion net's grid and probability (stages/completion), if any."""
        cfg = self.cfg
        extent = float(np.ptp(points, axis=0).max())
        # at most MAX_CELLS_PER_RESOLUTION * resolution voxels along the longest side, whatever
        # the depth says (a wrong monocular depth can make an "object" kilometres deep)
        voxel = max(float(np.clip(extent / cfg.resolution, cfg.min_voxel_m, cfg.max_voxel_m)),
                    extent / (MAX_CELLS_PER_RESOLUTION * cfg.resolution))
        seeds = points[np.unique(np.floor(points / voxel).astype(np.int64), axis=0,
                                 return_index=True)[1]]  # one observed point per voxel
        if plane is None:
            up = np.array([0.0, -1.0, 0.0])
            filled = ray_columns(seeds, view, voxel, cfg.free_space_margin_m)
        else:
            up = plane.normal
            filled = plane_columns(seeds, view, plane, floor, voxel, cfg.free_space_margin_m)
            if completion is not None:
                margin = cfg.free_space_margin_m
                filled = self.completer.complete(
                    *completion, seeds, filled, voxel, cfg.completion_add, cfg.completion_remove,
                    lambda p: unseen_prefix(p[:, None], view, margin)[:, 0])
        vertices, faces, normals = self.mesh(filled, voxel)
        vertices = snap_to_depth(vertices, normals, mask, view, cfg.snap_voxels * voxel)
        if plane is not None:  # nothing below the floor (step 3)
            below = np.minimum(plane.height(vertices) - floor, 0.0)
            vertices = vertices - below[:, None] * plane.normal
        T_cam_obj = standing_frame(vertices, up)
        return ObjectGeometry(transform_points(np.linalg.inv(T_cam_obj), vertices), faces, LABEL,
                              SOURCE, True, float("nan"), T_cam_obj)

    def mesh(self, points: np.ndarray, voxel: float
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Marching-cubes surface of the closed, filled voxels holding points: vertices (V, 3),
        faces (F, 3), outward unit normals (V, 3)."""
        pad = self.cfg.closing_iterations + 1
        origin = points.min(axis=0)
        cells = np.floor((points - origin) / voxel).astype(np.int64) + pad
        grid = np.zeros(cells.max(axis=0) + pad + 1, bool)
        grid[tuple(cells.T)] = True
        if self.cfg.closing_iterations:
            grid |= ndimage.binary_closing(grid, iterations=self.cfg.closing_iterations)
        grid = ndimage.binary_fill_holes(grid)
        # a slight blur keeps voxels that touch along an edge only from making non-manifold
        # edges; a lone voxel (an object under 2 voxels) peaks below 0.5, hence the level
        occupancy = ndimage.gaussian_filter(grid.astype(np.float32), SMOOTHING_VOXELS)
        level = min(0.5, 0.5 * float(occupancy.max()))
        vertices, faces, normals, _ = self.marching_cubes(occupancy, level,
                                                          step_size=self.cfg.mesh_step)
        # the surface passes the outer faces of the outermost voxels; the points in them lie
        # half a voxel further in on average, so it moves in by that (normals point out)
        return ((vertices - pad + 0.5 - 0.5 * normals) * voxel + origin, faces.astype(np.int64),
                normals)


def snap_to_depth(vertices: np.ndarray, normals: np.ndarray, mask: np.ndarray, view: DepthView,
                  reach: float) -> np.ndarray:
    """vertices (V, 3) moved along their viewing rays onto the observed depth where they face
    the camera (outward normals (V, 3)), project into the object's mask (H, W) bool and lie
    within reach (m) of the depth there (module docstring, step 3)."""
    u, v, seen = pixel_indices(view.K, vertices, mask.shape)
    seen[seen] = mask[v[seen], u[seen]]
    observed = np.zeros(len(vertices))
    observed[seen] = view.depth[v[seen], u[seen]]
    facing = np.einsum("ij,ij->i", normals, vertices) < 0  # the normal points to the camera
    z = vertices[:, 2]
    snap = seen & facing & (observed > 0) & (np.abs(observed - z) < reach)
    snapped = vertices.copy()
    snapped[snap] *= (observed[snap] / z[snap])[:, None]
    return snapped


def plane_columns(seeds: np.ndarray, view: DepthView, plane: SupportPlane, floor: float,
                  step: float, margin: float) -> np.ndarray:
    """seeds (N, 3) and their columns down to ``floor`` m above plane, every step / 2 (module
    docstring, steps 1-2); returns (M, 3) camera-frame points."""
    height = plane.height(seeds) - floor  # (N,)
    length = np.maximum(height, 0.0)
    reach = np.arange(1, int(np.ceil(length.max() / (step / 2))) + 1) * (step / 2)  # (T,)
    down = np.minimum(reach[None, :], length[:, None])  # (N, T)
    samples = seeds[:, None, :] - down[..., None] * plane.normal  # (N, T, 3)
    return np.concatenate([seeds, samples[unseen_prefix(samples, view, margin)]])


def ray_columns(seeds: np.ndarray, view: DepthView, step: float, margin: float) -> np.ndarray:
    """seeds (N, 3) and their continuations along the viewing rays, as deep as the seeds' second
    principal extent, every step / 2; returns (M, 3) camera-frame points."""
    centred = seeds - seeds.mean(axis=0)
    extents = np.sort(np.ptp(centred @ np.linalg.svd(centred, full_matrices=False)[2].T,
                             axis=0))[::-1]
    depth = extents[1] if len(extents) > 1 else extents[0]
    reach = np.arange(1, int(np.ceil(depth / (step / 2))) + 1) * (step / 2)  # (T,)
    rays = seeds / np.linalg.norm(seeds, axis=1, keepdims=True)
    samples = seeds[:, None, :] + reach[None, :, None] * rays[:, None, :]  # (N, T, 3)
    return np.concatenate([seeds, samples[unseen_prefix(samples, view, margin)]])


def unseen_prefix(samples: np.ndarray, view: DepthView, margin: float) -> np.ndarray:
    """(N, T) bool: each column's samples (N, T, 3) before the first one the camera sees through
    (observed depth, 3x3 nearest, more than margin behind it); off-image samples are unseen."""
    n, t, _ = samples.shape
    u, v, on_image = pixel_indices(view.K, samples.reshape(-1, 3), view.depth.shape)
    observed = np.full(n * t, np.inf)
    observed[on_image] = view.nearest[v[on_image], u[on_image]]
    seen_through = (np.isfinite(observed) & (observed > samples.reshape(-1, 3)[:, 2] + margin))
    return np.cumsum(seen_through.reshape(n, t), axis=1) == 0


def support_floors(points: list[np.ndarray], plane: SupportPlane | None, cfg: CarvingConfig
                   ) -> list[float]:
    """Each object's floor height (m above the plane): the top (98th percentile height) of the
    highest other object that it stands on (module docstring, step 1), else 0."""
    floors = [0.0] * len(points)
    if plane is None:
        return floors
    usable = [k for k, p in enumerate(points) if len(p) >= max(cfg.min_points, 4)]
    basis = horizontal_axes(plane.normal)
    heights = {k: plane.height(points[k]) for k in usable}
    bottoms = {k: float(np.percentile(h, 2)) for k, h in heights.items()}
    tops = {k: float(np.percentile(h, 98)) for k, h in heights.items()}
    for a in usable:
        centre = points[a].mean(axis=0) @ basis
        for b in usable:  # footprints only for the rare objects low enough to carry a
            if (b != a and tops[b] > floors[a] and bottoms[a] >= tops[b] - cfg.stack_tolerance_m
                    and footprint_holds(points[b] @ basis, centre)):
                floors[a] = tops[b]
    return floors


def footprint_holds(flat: np.ndarray, point: np.ndarray) -> bool:
    """Whether the convex hull of 2D points flat (N, 2) holds point (2,); a degenerate
    (collinear) footprint holds nothing."""
    try:
        hull = ConvexHull(flat)
    except QhullError:
        return False
    return bool(np.all(hull.equations[:, :2] @ point + hull.equations[:, 2] <= 1e-12))


def standing_frame(vertices: np.ndarray, up: np.ndarray) -> np.ndarray:
    """T_cam_obj (4, 4) of the module docstring's step 4 for a mesh's vertices (V, 3)."""
    flat = horizontal_axes(up)
    ground = vertices @ flat  # (V, 2)
    _, _, vt = np.linalg.svd(ground - ground.mean(axis=0), full_matrices=False)
    x = flat @ vt[0]
    R = np.stack([x, np.cross(up, x), up], axis=1)
    local = vertices @ R
    lo, hi = local.min(axis=0), local.max(axis=0)
    origin = R @ np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, lo[2]])
    return compose_pose(R, origin, 1.0)


def build_carving(cfg: GeometryConfig, known: list[KnownObject] | None) -> CarvedGeometry:
    return CarvedGeometry(cfg.carving, KnownMatcher(cfg.retrieval, known) if known else None)
