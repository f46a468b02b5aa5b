"""Object geometry: each detected object's mesh, from its observed partial point cloud.

A backend is anything with ``geometry(frame, points, masks, crops, plane) -> list[ObjectGeometry
| None]`` (the GeometryBackend protocol); ``BACKENDS`` maps config names to builders and
``build_geometry(cfg, known_objects_dir)`` picks one. The pose stage then places canonical meshes;
``ObjectGeometry.T_cam_obj`` is the geometry fit's own pose, a fallback or a seed for it, and the
final pose of metric meshes (known, carved).

The embedded "retrieval" backend (CPU, numpy/scipy, no weights; the default is "carving" in
``carving.py``) works in the camera optical frame (REP 103, metres):

1. Library: ``seeds_per_family`` shapes of every procedural family (``synth/shapes.py``), and in
   known-object mode the user's meshes (``load_known_objects``). Each is sampled once
   (``surface_points``) in a normalised frame (bounding-box centred, longest side 1) and seen
   from ``views`` directions on the sphere; a view keeps the samples a coarse orthographic
   z-buffer shows, i.e. the partial cloud a depth camera would see from there.
2. Descriptor (``describe``), alike for a view and for an object's observed points (voxel-thinned
   to about uniform density): the principal extents (2nd-98th percentile along the principal
   axes), their ratios e2 / e1 and e3 / e1, and a histogram of distances to the centroid in
   units of e1. Ratios and histogram are scale-free and compare a partial view with a partial
   view, so they tolerate what the camera cannot see.
3. Shortlist: the ``shortlist`` candidates whose nearest view descriptor is nearest (L1), each
   with its ``views_per_candidate`` best views. Known meshes add |log(e1 / e1_view)| in metres.
4. Starts: the view's principal axes turned onto the observed ones (the proper sign choices that
   keep the view direction facing the camera), a uniform scale from the e1 ratio (known meshes:
   their metric size), centroids put together. Every start is scored by ``refine.fit_score`` on
   a quarter of the samples; the ``refine_starts`` best are refined by ``refine.refine_pose``
   (scale-aware ICP, rigid for known meshes), rescored on the dense samples, and the lowest
   score wins.
5. Known-object mode: the known meshes are fitted first, rigidly and with ``known_effort`` times
   the views and refined starts. Given what the object stands on (``Support``: the support
   plane and the floor's height, which the carving backend passes), each known mesh also
   starts from its resting poses (``resting_starts``: its RESTING_POSES likeliest convex-hull
   facets down, RESTING_YAWS turns about the plane's normal, lowest point on the floor, under
   the observed centroid and where a vote of observed points and seen samples puts it, slid
   along the plane onto the observed points), since tabletop objects mostly lie at rest; these
   compete with the axis starts. The best is accepted when its score is below
   ``known_max_score`` times its size (the score's floor, the spacing of the samples, grows
   with the size) and the observed extent exceeds its visible extent by at most
   ``known_size_tolerance``; otherwise the object falls back to the procedural library. Each
   object is matched on its own, so a known mesh may be found several times.

Scores are ``refine.fit_score`` values: mean distance (m) from the observed points to the posed
surface plus a free-space penalty; lower is better. ``evaluate_geometry`` rates geometries
against synthetic ground truth, next to the oriented bounding box of the observed points.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from scenemaker_ros.config import DepthClustersConfig, GeometryConfig, RetrievalConfig
from scenemaker_ros.errors import SceneMakerError
from scenemaker_ros.frames import RGBDFrame
from scenemaker_ros.geometry import (
    compose_pose,
    depth_to_points,
    horizontal_axes,
    raycasting_scene,
    resting_rotations,
    rotations_about_z,
    sample_surface,
    solid_centroid,
    surface_distances,
    transform_points,
)
from scenemaker_ros.metrics import _chamfer_fscore
from scenemaker_ros.pose.estimator import canonical_frame
from scenemaker_ros.pose.refine import (
    PROPER_SIGNS,
    DepthView,
    fit_score,
    fit_scores,
    principal_axes,
    refine_pose,
)
from scenemaker_ros.scene import load_mesh
from scenemaker_ros.stages.backends import build_backend
from scenemaker_ros.stages.segmentation import SupportPlane, fit_support_plane
from scenemaker_ros.synth.shapes import FAMILIES, make_shape

if TYPE_CHECKING:  # the renderer pulls in open3d, which the stage itself never needs
    from scenemaker_ros.stages.deocclusion import DeoccludedObject
    from scenemaker_ros.synth.scenes import SceneSample

log = logging.getLogger(__name__)

MESH_SUFFIXES = (".obj", ".ply", ".stl", ".glb")
MILLIMETRE_HINT_M = 5.0  # a known mesh longer than this is probably in millimetres
HISTOGRAM_BINS = 8  # centroid-distance histogram over [0, 0.8] e1
ZBUFFER_CELLS = 24  # per side of a view's orthographic z-buffer, over the normalised frame
ZBUFFER_DEPTH = 0.03  # samples this far behind the nearest one in their cell are hidden
KNOWN_SOURCE = "known:"  # ObjectGeometry.source of a user's mesh, before its file name
KNOWN_GOOD_ENOUGH = 0.5  # a known-mesh fit under this share of known_max_score ends the search
RESTING_POSES = 8  # a known mesh's likeliest resting poses tried on the support (step 5)
RESTING_YAWS = 16  # turns about the support's normal per resting pose (ICP closes the gaps)
RESTING_SLIDES = 10  # at most this many steps slide each resting start along the support,
RESTING_SLIDE_DONE_M = 0.0005  # fewer once no start moves further than this (m)
RESTING_SLIDE_POINTS = 16  # observed points (an even subset) that guide the slides and votes
RESTING_KEPT = 32  # the resting starts nearest the guides after the slides go on to scoring
VOTE_SAMPLES = 128  # a resting start's seen surface samples that vote for its shift
VOTE_CELLS_PER_SIZE = 20  # the vote's cells per the mesh's size


# -----------------------------------------------------------------------------
# interface


@dataclass
class ObjectGeometry:
    """One object's mesh in its own frame and the fit that chose it.

    vertices (V, 3) float64, faces (F, 3) int64: the mesh as given (library shapes: canonical,
    longest side 1; known objects: the user's file, metres; carved: metres). label: family, file
    stem or "object". source: "library:<family>:<seed>", "known:<file name>" or "carved".
    metric: True for meshes in metres whose size and pose are kept (known, carved). score:
    fit_score of the fit (m, lower is better; NaN for carved). T_cam_obj (4, 4): the fit's pose,
    mesh frame -> camera optical frame in metres, scale included.
    """

    vertices: np.ndarray
    faces: np.ndarray
    label: str
    source: str
    metric: bool
    score: float
    T_cam_obj: np.ndarray


class GeometryBackend(Protocol):
    def geometry(self, frame: RGBDFrame, points: list[np.ndarray], masks: np.ndarray,
                 crops: list[DeoccludedObject] | None = None,
                 plane: SupportPlane | None = None) -> list[ObjectGeometry | None]:
        """Per object k, in order: its geometry, or None when it cannot have one (too few
        points). points[k] (N_k, 3) float64 observed camera-frame points (metres); masks
        (K, H, W) bool visible masks and crops[k] the de-occluded crops, for backends that read
        the image (retrieval reads neither; image_to_3d needs crops); plane: the segmentation's
        support plane (carving stands objects on it)."""
        ...


# -----------------------------------------------------------------------------
# descriptors and views


@dataclass
class Descriptor:
    """A point set's shape summary: centre (3,), axes (3, 3) principal axes as columns with
    det +1, extents (3,) decreasing 2nd-98th percentile ranges along them (units of the
    points), histogram (HISTOGRAM_BINS,) distances to the centre in units of extents[0]."""

    centre: np.ndarray
    axes: np.ndarray
    extents: np.ndarray
    histogram: np.ndarray

    @property
    def vector(self) -> np.ndarray:
        """Scale-free (2 + HISTOGRAM_BINS,) vector, compared by L1: e2/e1, e3/e1, histogram."""
        return np.concatenate([self.extents[1:] / max(self.extents[0], 1e-12), self.histogram])


def describe(points: np.ndarray) -> Descriptor:
    """The Descriptor of points (N >= 3, 3)."""
    centre, axes, _ = principal_axes(points)
    local = (points - centre) @ axes
    lo, hi = np.percentile(local, [2, 98], axis=0)
    extents = hi - lo
    radius = np.linalg.norm(local, axis=1) / max(extents[0], 1e-12)
    histogram = np.histogram(radius, HISTOGRAM_BINS, (0.0, 0.8))[0] / len(points)
    return Descriptor(centre, axes, extents, histogram)


def view_directions(n: int) -> np.ndarray:
    """(n, 3) unit directions spread evenly over the sphere (Fibonacci lattice)."""
    i = np.arange(n) + 0.5
    z = 1 - 2 * i / n
    phi = np.pi * (1 + 5**0.5) * i
    r = np.sqrt(1 - z**2)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def visible_from(points: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """(N,) bool, or (K, N) for directions (K, 3): which of points (N, 3), in a normalised frame
    (longest side 1), a camera looking along direction (3,) unit sees, by an orthographic
    z-buffer of ZBUFFER_CELLS per side."""
    d = np.atleast_2d(directions)  # (K, 3)
    helper = np.where(np.abs(d[:, :1]) < 0.9, [[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]])
    u = np.cross(d, helper)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    plane = np.stack([u, np.cross(d, u)], axis=2)  # (K, 3, 2) image axes
    cells = np.clip(((np.einsum("nj,kjc->knc", points, plane) + 1) / 2 * ZBUFFER_CELLS)
                    .astype(np.int64), 0, ZBUFFER_CELLS - 1)  # (K, N, 2)
    cell = (np.arange(len(d))[:, None] * ZBUFFER_CELLS + cells[..., 0]) * ZBUFFER_CELLS \
        + cells[..., 1]  # (K, N), one z-buffer per direction
    depth = d @ points.T  # (K, N)
    nearest = np.full(len(d) * ZBUFFER_CELLS**2, np.inf)
    np.minimum.at(nearest, cell, depth)
    seen = depth <= nearest[cell] + ZBUFFER_DEPTH
    return seen if np.ndim(directions) == 2 else seen[0]


def thin_points(points: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """About uniform density: one point per voxel of 1/25 of the largest extent of points
    (N, 3), then at most n at random; returns (<= n, 3)."""
    voxel = max(float(np.ptp(points, axis=0).max()) / 25, 1e-9)
    cells = np.floor((points - points.min(0)) / voxel).astype(np.int64)  # each in 0 .. 25
    keys = (cells[:, 0] * 26 + cells[:, 1]) * 26 + cells[:, 2]
    kept = points[np.sort(np.unique(keys, return_index=True)[1])]
    return kept if len(kept) <= n else kept[np.sort(rng.choice(len(kept), n, replace=False))]


# -----------------------------------------------------------------------------
# candidates


@dataclass
class Candidate:
    """A mesh prepared for matching. surface (M, 3): samples in the normalised frame (bounding
    box centred, longest side 1), dense (4 M, 3) more of them, which rank the final fits (the
    samples' spacing biases fit_score); to_normalised (4, 4): mesh frame -> normalised frame; size:
    longest side in the mesh's units; views: one Descriptor per visible view, directions (D, 3)
    their view directions (normalised frame, camera -> object), vectors (D, 2 + bins); rests
    (S, 3, 3) the rotations setting a known mesh down on its S likeliest resting facets (z up,
    normalised frame; none for library shapes), lows (S,) its lowest z in each."""

    vertices: np.ndarray
    faces: np.ndarray
    label: str
    source: str
    metric: bool
    surface: np.ndarray
    dense: np.ndarray
    to_normalised: np.ndarray
    size: float
    views: list[Descriptor]
    directions: np.ndarray
    vectors: np.ndarray
    rests: np.ndarray
    lows: np.ndarray


def make_candidate(vertices: np.ndarray, faces: np.ndarray, label: str, source: str,
                   metric: bool, cfg: RetrievalConfig) -> Candidate:
    """Sample and describe a mesh (module docstring, step 1); deterministic."""
    to_normalised = canonical_frame(vertices)
    normalised = transform_points(to_normalised, vertices)
    rng = np.random.default_rng(0)
    surface = sample_surface(normalised, faces, cfg.surface_points, rng)
    dense = np.concatenate([surface, sample_surface(normalised, faces, 3 * cfg.surface_points,
                                                    rng)])
    directions, views = [], []
    for direction in view_directions(cfg.views):
        seen = surface[visible_from(surface, direction)]
        if len(seen) >= 3:
            directions.append(direction)
            views.append(describe(seen))
    rests, lows = np.zeros((0, 3, 3)), np.zeros(0)
    if metric:  # known meshes: how they can stand on a support (centre of mass: the hull's)
        rests, chances = resting_rotations(normalised, solid_centroid(normalised))
        rests = rests[np.argsort(-chances, kind="stable")[:RESTING_POSES]]
        lows = (normalised @ rests.transpose(0, 2, 1))[..., 2].min(axis=1)
    return Candidate(np.asarray(vertices, np.float64), np.asarray(faces, np.int64), label,
                     source, metric, surface, dense, to_normalised, 1 / to_normalised[0, 0], views,
                     np.array(directions), np.stack([v.vector for v in views]), rests, lows)


def shape_library(cfg: RetrievalConfig) -> list[Candidate]:
    """Every procedural family's shapes with seeds 0 .. seeds_per_family - 1."""
    shapes = [make_shape(family, seed) for family in FAMILIES
              for seed in range(cfg.seeds_per_family)]
    return [make_candidate(s.vertices, s.faces, s.family, f"library:{s.family}:{s.seed}", False,
                           cfg) for s in shapes]


@dataclass
class KnownObject:
    """A user's mesh: label = file stem, vertices (V, 3) float64 metres, faces (F, 3) int64."""

    label: str
    path: Path
    vertices: np.ndarray
    faces: np.ndarray


def load_known_objects(directory: str | Path) -> list[KnownObject]:
    """The OBJ / PLY / STL / GLB meshes of a folder (a GLB scene merged into one mesh), sorted by
    file name; SceneMakerError for a missing or mesh-less folder, an unreadable or empty mesh
    or two files with one label. A mesh longer than MILLIMETRE_HINT_M is warned about."""
    directory = Path(directory)
    if not directory.is_dir():
        raise SceneMakerError(f"{directory}: known-objects folder not found")
    paths = sorted(p for p in directory.iterdir() if p.suffix.lower() in MESH_SUFFIXES)
    if not paths:
        raise SceneMakerError(f"{directory}: no mesh file ({', '.join(MESH_SUFFIXES)}) in the "
                              "known-objects folder")
    objects, seen = [], {}
    for path in paths:
        if path.stem in seen:
            raise SceneMakerError(f"{directory}: {seen[path.stem]} and {path.name} give the same "
                                  f"label {path.stem!r}")
        seen[path.stem] = path.name
        vertices, faces = load_mesh(path)
        size = float(np.ptp(vertices, axis=0).max()) if len(vertices) else 0.0
        if not size > 0:
            raise SceneMakerError(f"{path}: mesh has zero size")
        if size > MILLIMETRE_HINT_M:
            log.warning("%s: longest side %.1f m; known meshes must be in metres (millimetres? "
                        "scale by 0.001)", path, size)
        objects.append(KnownObject(path.stem, path, vertices, faces))
    return objects


# -----------------------------------------------------------------------------
# fitting


@dataclass
class Fit:
    """A candidate posed onto one object: T_cam_norm (4, 4) normalised frame -> camera frame,
    score (fit_score, m)."""

    candidate: Candidate
    T_cam_norm: np.ndarray
    score: float

    def geometry(self) -> ObjectGeometry:
        c = self.candidate
        return ObjectGeometry(c.vertices, c.faces, c.label, c.source, c.metric, self.score,
                              self.T_cam_norm @ c.to_normalised)


def shortlist(observed: Descriptor, candidates: list[Candidate], n: int, views: int
              ) -> list[tuple[Candidate, np.ndarray]]:
    """The n candidates nearest to observed, each with the indices (views,) of its nearest
    views (module docstring, step 3)."""
    ranked = []
    for c in candidates:
        distance = np.abs(c.vectors - observed.vector).sum(axis=1)  # (D,)
        if c.metric:
            e1 = np.array([v.extents[0] for v in c.views]) * c.size
            distance = distance + np.abs(np.log(observed.extents[0] / e1))
        best = np.argsort(distance)[:views]
        ranked.append((float(distance[best[0]]), c, best))
    ranked.sort(key=lambda item: item[0])
    return [(c, best) for _, c, best in ranked[:n]]


def _quarter_turns() -> list[np.ndarray]:
    """The identity, then turns by 90, 180 and 270 degrees about each coordinate axis."""
    turns = [np.eye(3)]
    for axis in range(3):
        for k in (1, 2, 3):
            c, s = round(np.cos(k * np.pi / 2)), round(np.sin(k * np.pi / 2))
            i, j = [a for a in range(3) if a != axis]
            R = np.eye(3)
            R[i, i], R[i, j], R[j, i], R[j, j] = c, -s, s, c
            turns.append(R)
    return turns


QUARTER_TURNS = _quarter_turns()


def starts(observed: Descriptor, candidate: Candidate, view: int, to_camera: np.ndarray
           ) -> list[np.ndarray]:
    """Poses T_cam_norm (4, 4) putting the view's principal axes onto the observed ones, with
    each proper sign choice that keeps the view direction pointing away from the camera
    (to_camera (3,), unit, object -> camera); scale from e1 (known meshes: their size). Known
    meshes also start turned by quarter turns about each of the view's axes: a body that is
    nearly symmetric (a mug without its handle) leaves its axes free to turn, and rigid ICP
    does not undo a wrong quarter turn (on 12 two-mug scenes: both mugs found in 8, not 6)."""
    seen = candidate.views[view]
    scale = candidate.size if candidate.metric else observed.extents[0] / seen.extents[0]
    result = []
    for turn in (QUARTER_TURNS if candidate.metric else QUARTER_TURNS[:1]):
        for signs in PROPER_SIGNS:
            R = observed.axes @ signs @ turn @ seen.axes.T
            if R @ candidate.directions[view] @ to_camera < 0:
                result.append(compose_pose(R, observed.centre - scale * R @ seen.centre, scale))
    return result


@dataclass(frozen=True)
class Support:
    """What an object stands on: the support plane, and the floor's height above it (m): 0 on
    the plane, the top of the object under it when stacked."""

    plane: SupportPlane
    floor: float


def resting_starts(candidate: Candidate, observed: np.ndarray, support: Support,
                   coarse: np.ndarray, coarse_tree: cKDTree) -> np.ndarray:
    """Poses T_cam_norm (K, 4, 4) of a known mesh standing on the support in each of its resting
    poses, turned about the support's normal in RESTING_YAWS steps, its lowest point on the
    floor, each put in two places: under the observed points' (N, 3) centroid, and shifted as
    ``voted_shifts`` says (the centroid misleads when much of the object is hidden); then slid
    along the support by steps that move its nearest surface samples (coarse (M, 3), normalised
    frame, in coarse_tree) onto the observed points, until a step moves it less than
    RESTING_SLIDE_DONE_M, RESTING_SLIDES at most. RESTING_SLIDE_POINTS of the observed points
    guide the votes and slides; the RESTING_KEPT starts whose samples lie nearest the guides
    are returned, in their order (rests x yaws, under the centroid first)."""
    up, size = support.plane.normal, candidate.size
    flat = horizontal_axes(up)  # (3, 2)
    turns = rotations_about_z(2 * np.pi * np.arange(RESTING_YAWS) / RESTING_YAWS)
    upright = np.column_stack([flat, up])  # support frame (z up) -> camera frame
    R = (upright @ turns[:, None] @ candidate.rests[None]).reshape(-1, 3, 3)  # (K, 3, 3)
    lows = np.tile(candidate.lows, RESTING_YAWS)  # (K,) in the order of R
    centre = observed.mean(axis=0)
    foot = centre - support.plane.height(centre) * up  # under the observed centroid
    t = foot + (support.floor - size * lows)[:, None] * up  # (K, 3)
    guides = observed[::max(1, len(observed) // RESTING_SLIDE_POINTS)]  # (n, 3)
    # each pose from two places: under the observed centroid, and where the vote puts it
    t = np.concatenate([t, t + voted_shifts(R, t, size, coarse, guides, flat, up)])
    R = np.concatenate([R, R])
    moving = np.arange(len(R))  # the starts still sliding
    for _ in range(RESTING_SLIDES):
        Rm, tm = R[moving], t[moving]
        canonical = np.einsum("kji,knj->kni", Rm, guides[None] - tm[:, None]) / size  # (k, n, 3)
        nearest = coarse_tree.query(canonical)[1]
        posed = size * np.einsum("kij,knj->kni", Rm, coarse[nearest]) + tm[:, None]
        slide = ((guides[None] - posed).mean(axis=1) @ flat) @ flat.T  # (k, 3)
        t[moving] = tm + slide
        moving = moving[np.abs(slide).max(axis=1) >= RESTING_SLIDE_DONE_M]
        if not len(moving):
            break
    canonical = np.einsum("kji,knj->kni", R, guides[None] - t[:, None]) / size  # (K, n, 3)
    residual = coarse_tree.query(canonical)[0].mean(axis=1)  # (K,) normalised units
    kept = np.sort(np.argsort(residual, kind="stable")[:RESTING_KEPT])  # in their order
    R, t = R[kept], t[kept]
    T = np.tile(np.eye(4), (len(R), 1, 1))
    T[:, :3, :3], T[:, :3, 3] = size * R, t
    return T


def voted_shifts(R: np.ndarray, t: np.ndarray, size: float, samples: np.ndarray,
                 guides: np.ndarray, flat: np.ndarray, up: np.ndarray) -> np.ndarray:
    """(K, 3) horizontal shifts (along flat (3, 2)) of starts (rotations R (K, 3, 3), positions
    t (K, 3), scale size) that put the most of the samples the camera sees (VOTE_SAMPLES of
    samples (M, 3), normalised frame) under the guides (n, 3): every guide-sample pair votes for
    the shift joining them, in cells of size / VOTE_CELLS_PER_SIZE up to one size either way
    (a Hough transform); the most voted cell (3 x 3 sums) wins."""
    K = len(R)
    toward = np.einsum("kji,kj->ki", R, t / np.linalg.norm(t, axis=1, keepdims=True))
    chosen = np.empty((K, VOTE_SAMPLES), np.int64)  # an even subset of each start's seen samples
    for k, seen in enumerate(visible_from(samples, toward)):
        seen = np.flatnonzero(seen)
        chosen[k] = seen[np.linspace(0, len(seen) - 1, VOTE_SAMPLES).astype(np.int64)]
    axes = np.column_stack([flat, up])  # (3, 3): horizontal axes, then up
    across = size * np.einsum("kij,ic->kjc", R, axes)  # (K, 3, 3): normalised -> support frame
    posed = np.einsum("kmj,kjc->kmc", samples[chosen], across) + (t @ axes)[:, None]  # (K, S, 3)
    cell = size / VOTE_CELLS_PER_SIZE
    bins = 2 * VOTE_CELLS_PER_SIZE  # shifts up to one size either way
    offsets = (guides @ axes)[None, :, None] - posed[:, None]  # (K, n, S, 3)
    index = np.floor(offsets[..., :2] / cell).astype(np.int64) + bins // 2
    ok = np.all((index >= 0) & (index < bins), axis=-1) & (np.abs(offsets[..., 2]) < cell)
    cells = (np.arange(K)[:, None, None] * bins + index[..., 0]) * bins + index[..., 1]
    votes = np.bincount(cells[ok], minlength=K * bins * bins).reshape(K, bins, bins)
    votes = ndimage.uniform_filter(votes.astype(np.float32), size=(1, 3, 3), mode="constant")
    peak = np.stack(np.unravel_index(votes.reshape(K, -1).argmax(axis=1), (bins, bins)), axis=1)
    return ((peak - bins // 2 + 0.5) * cell) @ flat.T


def fit_candidates(observed: np.ndarray, candidates: list[Candidate], view: DepthView,
                   cfg: RetrievalConfig, effort: int = 1, good_enough: float = 0.0,
                   support: Support | None = None) -> Fit | None:
    """The best fit of the candidates onto observed points (N, 3), camera frame (module
    docstring, steps 2-5), with effort times the configured views and refined starts, the
    refinements stopped at the first fit scoring below good_enough times its candidate's size;
    known meshes also start from their resting poses on the support, when given. None when
    there are no candidates."""
    if not candidates:
        return None
    observed_d = describe(observed)
    to_camera = -observed_d.centre / np.linalg.norm(observed_d.centre)
    scored = []
    for candidate, views in shortlist(observed_d, candidates, cfg.shortlist,
                                      effort * cfg.views_per_candidate):
        coarse = candidate.surface[:len(candidate.surface) // 4]  # random order: a uniform subset
        coarse_tree = cKDTree(coarse)
        poses = [T for v in views for T in starts(observed_d, candidate, int(v), to_camera)]
        if support is not None and len(candidate.rests):
            poses += list(resting_starts(candidate, observed, support, coarse, coarse_tree))
        if poses:  # every start is a similarity: one search tree for them all
            scores = fit_scores(np.array(poses), coarse, observed, view, coarse_tree)
            scored += [Fit(candidate, T, float(score)) for T, score in zip(poses, scores)]
    scored.sort(key=lambda fit: fit.score)
    refined = []
    for fit in scored[:effort * cfg.refine_starts]:
        change = 0.0 if fit.candidate.metric else cfg.max_scale_change
        T = refine_pose(fit.T_cam_norm, fit.candidate.surface, observed, view,
                        cfg.refine_iterations, change)[0]
        refined.append(Fit(fit.candidate, T, fit_score(T, fit.candidate.dense, observed, view)))
        if refined[-1].score < good_enough * fit.candidate.size:
            break
    return min(refined, key=lambda fit: fit.score)


def size_agrees(fit: Fit, observed: np.ndarray, tolerance: float) -> bool:
    """Whether observed points (N, 3) extend at most 1 + tolerance times as far as the fitted
    mesh's surface the camera sees (principal extents, 2nd-98th percentile)."""
    surface, T = fit.candidate.surface, fit.T_cam_norm
    toward = np.linalg.solve(T[:3, :3], T[:3, 3])  # camera -> object centre, normalised frame
    seen = transform_points(T, surface[visible_from(surface, toward / np.linalg.norm(toward))])
    return bool(describe(observed).extents[0] <= (1 + tolerance) * describe(seen).extents[0])


# -----------------------------------------------------------------------------
# the "retrieval" backend


class KnownMatcher:
    """Known-object mode (module docstring, step 5): which of the user's meshes an object is."""

    def __init__(self, cfg: RetrievalConfig, known: list[KnownObject]):
        self.cfg = cfg
        self.candidates = [make_candidate(k.vertices, k.faces, k.label, KNOWN_SOURCE + k.path.name,
                                          True, cfg) for k in known]

    def match(self, points: np.ndarray, view: DepthView, rng: np.random.Generator,
              support: Support | None = None) -> ObjectGeometry | None:
        """The known mesh fitted rigidly onto observed points (N, 3), camera frame, metres, or
        None when none is accepted; support: what the object stands on, if known."""
        cfg = self.cfg
        observed = thin_points(points, cfg.object_points, rng)
        fit = fit_candidates(observed, self.candidates, view, cfg, cfg.known_effort,
                             KNOWN_GOOD_ENOUGH * cfg.known_max_score, support)
        if (fit is not None and fit.score < cfg.known_max_score * fit.candidate.size
                and size_agrees(fit, observed, cfg.known_size_tolerance)):
            return fit.geometry()
        return None

    def on_matched(self, point_sets: list[np.ndarray], matched: list[ObjectGeometry]
                   ) -> list[np.ndarray]:
        """For each of point_sets ((N, 3) each, camera frame), (N,) bool: which points lie
        within ``known_explain_m`` of the surface of a matched known mesh (matched: their
        ObjectGeometry, posed by T_cam_obj)."""
        if not matched:
            return [np.zeros(len(points), bool) for points in point_sets]
        surfaces = raycasting_scene([(transform_points(g.T_cam_obj, g.vertices), g.faces)
                                     for g in matched])
        return [surface_distances(surfaces, points) < self.cfg.known_explain_m
                for points in point_sets]


class RetrievalGeometry:
    """Shape-library retrieval, known meshes first when given (module docstring)."""

    def __init__(self, cfg: RetrievalConfig, known: list[KnownObject] | None = None):
        self.cfg = cfg
        self.library = shape_library(cfg)
        self.known = KnownMatcher(cfg, known) if known else None

    def geometry(self, frame: RGBDFrame, points: list[np.ndarray], masks: np.ndarray,
                 crops: list[DeoccludedObject] | None = None,
                 plane: SupportPlane | None = None) -> list[ObjectGeometry | None]:
        view = DepthView(frame.depth, frame.camera.K)
        rng = np.random.default_rng(self.cfg.seed)
        return [self.object_geometry(p, view, rng) for p in points]

    def object_geometry(self, points: np.ndarray, view: DepthView, rng: np.random.Generator
                        ) -> ObjectGeometry | None:
        """One object's geometry from its observed points (N, 3), camera frame, metres."""
        if len(points) < self.cfg.min_points:
            return None
        known = None if self.known is None else self.known.match(points, view, rng)
        if known is not None:
            return known
        observed = thin_points(points, self.cfg.object_points, rng)
        return fit_candidates(observed, self.library, view, self.cfg).geometry()


# -----------------------------------------------------------------------------
# scoring against synthetic ground truth


def box_geometry(points: np.ndarray) -> ObjectGeometry:
    """The naive baseline: the oriented bounding box (principal axes, 2nd-98th percentile
    extents, at least 1 mm) of observed points (N >= 3, 3), as a unit cube posed into the
    camera frame; label "box", score NaN."""
    d = describe(points)
    lo, hi = np.percentile((points - d.centre) @ d.axes, [2, 98], axis=0)
    corners = np.array(np.meshgrid(*[[-0.5, 0.5]] * 3, indexing="ij")).reshape(3, -1).T
    faces = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                      [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])
    T = compose_pose(d.axes, d.centre + d.axes @ ((lo + hi) / 2), np.maximum(hi - lo, 1e-3))
    return ObjectGeometry(corners, faces, "box", "baseline:obb", False, float("nan"), T)


def posed_chamfer(geometry: ObjectGeometry, vertices: np.ndarray, faces: np.ndarray,
                  T_cam_obj: np.ndarray, n: int = 2000, seed: int = 0) -> float:
    """Symmetric Chamfer distance (m, mean of both directions) between geometry posed by its
    T_cam_obj and the mesh vertices (V, 3) / faces (F, 3) posed by T_cam_obj (4, 4); n surface
    samples each."""
    rng = np.random.default_rng(seed)
    pred = sample_surface(transform_points(geometry.T_cam_obj, geometry.vertices),
                          geometry.faces, n, rng)
    gt = sample_surface(transform_points(T_cam_obj, vertices), faces, n, rng)
    return _chamfer_fscore(pred, gt, tau=np.inf, squared=False)[0]


@dataclass
class GeometryScore:
    """One object: true and predicted label, Chamfer distances (m) of the prediction and of the
    bounding-box baseline to the true posed mesh, visible pixels."""

    true_label: str
    label: str
    chamfer_m: float
    box_chamfer_m: float
    visible_pixels: int


def evaluate_geometry(backend: GeometryBackend, sample: SceneSample, min_pixels: int = 100
                      ) -> list[GeometryScore]:
    """Run backend on a synthetic scene's clean depth with its ground-truth visible masks
    (``instance == k + 1``) and the support plane fitted to the depth, and score every object
    seen by at least min_pixels pixels."""
    frame = RGBDFrame(sample.rgb, sample.depth, sample.scene.camera)
    plane = fit_support_plane(frame.depth, frame.camera.K, DepthClustersConfig(),
                              np.random.default_rng(0))
    keep = [k for k in range(len(sample.scene.objects))
            if (sample.instance == k + 1).sum() >= min_pixels]
    masks = sample.instance[None] == np.array(keep, np.int64).reshape(-1, 1, 1) + 1
    points = [depth_to_points(frame.depth, frame.camera.K, m) for m in masks]
    scores = []
    for k, mask, p, pred in zip(keep, masks, points,
                                backend.geometry(frame, points, masks, plane=plane), strict=True):
        obj = sample.scene.objects[k]
        vertices, faces = sample.meshes[k]
        chamfer = np.nan if pred is None else posed_chamfer(pred, vertices, faces,
                                                            obj.pose_matrix)
        scores.append(GeometryScore(obj.label, "" if pred is None else pred.label, chamfer,
                                    posed_chamfer(box_geometry(p), vertices, faces,
                                                  obj.pose_matrix), int(mask.sum())))
    return scores


# -----------------------------------------------------------------------------
# backends


def _build_retrieval(cfg: GeometryConfig, known: list[KnownObject] | None) -> GeometryBackend:
    return RetrievalGeometry(cfg.retrieval, known)


def _build_image_to_3d(cfg: GeometryConfig, known: list[KnownObject] | None) -> GeometryBackend:
    from scenemaker_ros.stages.image_to_3d import build_image_to_3d  # torch + diffusers

    return build_image_to_3d(cfg, known)


def _build_carving(cfg: GeometryConfig, known: list[KnownObject] | None) -> GeometryBackend:
    from scenemaker_ros.stages.carving import build_carving  # scikit-image

    return build_carving(cfg, known)


BACKENDS: dict[str, Callable[[GeometryConfig, list[KnownObject] | None], GeometryBackend]] = {
    "carving": _build_carving,
    "retrieval": _build_retrieval,
    "image_to_3d": _build_image_to_3d,
}


def build_geometry(cfg: GeometryConfig, known_objects_dir: str | Path | None = None
                   ) -> GeometryBackend:
    """The geometry backend cfg.backend names, with the known meshes of known_objects_dir (the
    ``--objects`` folder) when given; SceneMakerError lists the valid names."""
    known = None if known_objects_dir is None else load_known_objects(known_objects_dir)
    return build_backend(BACKENDS, cfg, "pipeline.geometry.backend", known)
