"""Scoring a posed mesh against the depth it should explain, and scale-aware ICP refinement.

Both work on one object at a time, in the camera optical frame (metres):
  ``fit_score``    mean distance from the object's observed points to the posed surface, plus a
                   free-space term: the fraction of posed surface samples that would sit in front
                   of what the camera saw (a mesh too large, or in the wrong place, pokes into
                   space the depth image shows empty), weighted by the object's size. Hidden
                   parts behind other objects are never penalised.
  ``refine_pose``  ICP from the observed points to the posed surface samples with a uniform scale
                   (Umeyama), then with a scale per canonical axis (``axis_scale_icp``); each
                   step kept only if it improves the score, sizes bounded.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import minimum_filter
from scipy.spatial import cKDTree

from scenemaker_ros.geometry import (
    compose_pose,
    decompose_pose,
    icp,
    pixel_indices,
    transform_points,
    umeyama,
)

FREE_SPACE_MARGIN_M = 0.01  # a surface sample counts as in free space beyond this
FREE_SPACE_WEIGHT = 0.1  # metres of score per unit violation fraction, times the object size
PROBE_ITERATIONS = 5  # refine_starts: iterations that rank the starts before one is finished
SCALE_REUSE = 0.01  # axis_scale_icp rebuilds its search tree once a scale moved this fraction
PROPER_SIGNS = [np.diag(s) for s in itertools.product((1, -1), repeat=3) if np.prod(s) > 0]


@dataclass(frozen=True)
class DepthView:
    """What the fit is measured against: depth (H, W) float metres (0 = invalid), K (3, 3).

    ``nearest`` is the smallest valid depth in each pixel's 3x3 neighbourhood (inf where none):
    free space is tested against it, so that samples on an object's silhouette, which may round
    to a background pixel, do not count as violations.
    """

    depth: np.ndarray
    K: np.ndarray
    nearest: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        depth = np.where(self.depth > 0, self.depth, np.inf)
        object.__setattr__(self, "nearest", minimum_filter(depth, size=3, mode="nearest"))


def free_space_fractions(points: np.ndarray, view: DepthView) -> np.ndarray:
    """(K,) per set of camera-frame points (K, M, 3): the fraction lying in front of the observed
    depth (``nearest``) by more than FREE_SPACE_MARGIN_M, among those projecting onto valid
    depth pixels (0 where none does)."""
    K, M = points.shape[:2]
    u, v, on_image = pixel_indices(view.K, points.reshape(-1, 3), view.depth.shape)
    observed = np.full(K * M, np.inf)
    observed[on_image] = view.nearest[v[on_image], u[on_image]]
    valid = np.isfinite(observed).reshape(K, M)
    inside = (points[..., 2] < observed.reshape(K, M) - FREE_SPACE_MARGIN_M) & valid
    return inside.sum(1) / np.maximum(valid.sum(1), 1)


def fit_scores(Ts: np.ndarray, surface: np.ndarray, observed: np.ndarray, view: DepthView,
               surface_tree: cKDTree | None = None) -> np.ndarray:
    """(K,) fit_score of each pose Ts (K, 4, 4) in one pass. surface_tree, a cKDTree of surface,
    saves a tree per pose when every pose is a similarity (uniform scale s): the observed points
    go to the canonical frame instead, where distances are 1 / s of the camera frame's."""
    A, t = Ts[:, :3, :3], Ts[:, :3, 3]
    posed = np.einsum("kij,mj->kmi", A, surface) + t[:, None]  # (K, M, 3)
    s2 = np.einsum("kij,kij->k", A, A) / 3  # squared scale of a similarity
    similar = np.allclose(np.einsum("kji,kjl->kil", A, A), s2[:, None, None] * np.eye(3),
                          rtol=0, atol=1e-9 * s2.max())
    if surface_tree is not None and similar:
        canonical = np.einsum("kij,knj->kni", np.linalg.inv(A), observed[None] - t[:, None])
        distance = np.sqrt(s2) * surface_tree.query(canonical)[0].mean(1)
    else:
        distance = np.array([cKDTree(p).query(observed)[0].mean() for p in posed])
    size = np.ptp(posed, axis=1).max(1)
    return distance + FREE_SPACE_WEIGHT * size * free_space_fractions(posed, view)


def fit_score(T_cam_obj: np.ndarray, surface: np.ndarray, observed: np.ndarray,
              view: DepthView) -> float:
    """Lower is better: mean distance (m) from observed points (N, 3) to the canonical surface
    samples (M, 3) posed by T_cam_obj (4, 4), plus the weighted free-space fraction."""
    return float(fit_scores(np.asarray(T_cam_obj, float)[None], surface, observed, view)[0])


def refine_pose(T_cam_obj: np.ndarray, surface: np.ndarray, observed: np.ndarray,
                view: DepthView, iterations: int = 30, max_scale_change: float = 0.25
                ) -> tuple[np.ndarray, float, bool]:
    """(refined pose, its fit_score, whether refinement was kept) for one object.

    ICP aligns the observed points (src) to the posed surface samples (dst) with a uniform scale,
    pairs farther than twice the starting mean distance (at least 5 mm) dropped; the pose moves
    by the inverse of that alignment. A scale change beyond max_scale_change falls back to a rigid
    fit. Then ``axis_scale_icp`` adjusts the size per axis. Each result is kept only if its score
    is lower than the best so far. ``max_scale_change=0`` (a metric mesh) runs the rigid fit only.
    """
    start = fit_score(T_cam_obj, surface, observed, view)
    if len(observed) < 3:
        return T_cam_obj, start, False
    posed = transform_points(T_cam_obj, surface)
    reach = max(2 * cKDTree(posed).query(observed)[0].mean(), 0.005)
    best = (T_cam_obj, start, False)
    for with_scale in (True, False) if max_scale_change > 0 else (False,):
        result = icp(observed, posed, with_scale=with_scale, max_iterations=iterations,
                     max_correspondence_distance=reach)
        scale = np.cbrt(np.linalg.det(result.transform[:3, :3]))
        if with_scale and abs(scale - 1) > max_scale_change:
            continue
        T = np.linalg.inv(result.transform) @ T_cam_obj
        score = fit_score(T, surface, observed, view)
        if score < best[1]:
            best = (T, score, True)
        if with_scale and best[2]:
            break
    if max_scale_change == 0:  # a metric mesh: its size is given
        return best
    T = axis_scale_icp(best[0], surface, observed, reach, iterations, max_scale_change)
    score = fit_score(T, surface, observed, view)
    return (T, score, True) if score < best[1] else best


def refine_starts(starts: list[np.ndarray], surface: np.ndarray, observed: np.ndarray,
                  view: DepthView, iterations: int = 30, max_scale_change: float = 0.25,
                  finish: int | None = None) -> tuple[np.ndarray, float]:
    """(pose, fit_score) of the best of several starts (4, 4) for one object, each refined by
    ``refine_pose``. With ``finish``, every start is first refined for PROBE_ITERATIONS only and
    just the ``finish`` best by score go on to ``iterations``: worth it when the starts are
    already fits (a wrong one shows at once), not for raw axis starts that need many
    iterations to show which is right."""
    best = []
    if finish is not None and finish < len(starts):
        probed = sorted((refine_pose(T, surface, observed, view, PROBE_ITERATIONS,
                                     max_scale_change)[:2] for T in starts),
                        key=lambda pose_score: pose_score[1])
        starts, best = [T for T, _ in probed[:finish]], probed[:1]
    refined = [refine_pose(T, surface, observed, view, iterations, max_scale_change)[:2]
               for T in starts]
    return min(best + refined, key=lambda pose_score: pose_score[1])


def axis_scale_icp(T_cam_obj: np.ndarray, surface: np.ndarray, observed: np.ndarray,
                   reach: float, iterations: int = 30, max_scale_change: float = 0.25
                   ) -> np.ndarray:
    """Pose [R diag(s) | t] refined with a separate scale per canonical axis.

    Each iteration pairs every observed point p with its nearest posed surface sample q (pairs
    farther than ``reach`` dropped) and alternates: per-axis scales and translation by linear
    least squares in the object's axes (v = R^T p = diag(s) q + c), then R and t by a rigid
    Umeyama fit of diag(s) q to p. Scales stay within max_scale_change of the start's; an axis
    along which the paired samples barely spread keeps its scale. Uniform-scale ICP cannot fix
    the per-axis stretch that real objects (and our anisotropic shapes) have. Pairs are found
    in the object's axes, where posing is a translation and a rotation away (distances kept), on
    samples scaled by the current scales to within SCALE_REUSE (so the tree is rarely rebuilt).
    """
    R, t, s0 = decompose_pose(T_cam_obj)
    s, tree_scale, tree = s0.copy(), None, None
    for _ in range(iterations):
        if tree is None or np.any(np.abs(s - tree_scale) > SCALE_REUSE * np.abs(tree_scale)):
            tree_scale, tree = s.copy(), cKDTree(surface * s)
        dist, j = tree.query((observed - t) @ R, distance_upper_bound=reach)
        ok = np.isfinite(dist)
        if ok.sum() < 10:
            break
        q, p = surface[j[ok]], observed[ok]
        v = p @ R  # (N, 3) observed points in the object's axes (rotation only)
        q_c, v_c = q - q.mean(0), v - v.mean(0)
        spread = (q_c**2).mean(0)  # (3,) canonical variance per axis
        fitted = (q_c * v_c).mean(0) / np.maximum(spread, 1e-12)
        usable = spread * s**2 > (0.1 * np.sqrt((spread * s**2).max())) ** 2
        s = np.where(usable, np.clip(fitted, s0 * (1 - max_scale_change),
                                     s0 * (1 + max_scale_change)), s)
        previous = (R, t)
        R, t, _ = umeyama(q * s, p, with_scale=False)
        if np.abs(R - previous[0]).max() < 1e-4 and np.abs(t - previous[1]).max() < 1e-5:
            break  # converged: the pairs no longer change
    return compose_pose(R, t, s)


def principal_axes(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(centroid (3,), axes (3, 3) columns by decreasing variance with det +1, longest extent:
    the 2nd-98th percentile range along the first axis) of points (N, 3)."""
    centre = points.mean(0)
    _, vectors = np.linalg.eigh(np.cov((points - centre).T))
    axes = vectors[:, ::-1]
    axes[:, 2] *= np.linalg.det(axes)
    lo, hi = np.percentile((points - centre) @ axes[:, 0], [2, 98])
    return centre, axes, float(hi - lo)


def principal_axes_starts(observed: np.ndarray, surface: np.ndarray,
                          reference: np.ndarray | None = None) -> list[np.ndarray]:
    """Poses (4, 4) of the canonical surface samples (M, 3) whose principal axes lie along those
    of the observed points (N, 3), one per proper sign choice (4).

    With a reference pose (e.g. the model's), each start keeps its per-axis scale and its
    translation and only takes the rotation from the axes. Without one, the scale is uniform,
    the ratio of the two longest extents, and the centroids coincide (the classical start).
    """
    centre, axes, extent = principal_axes(observed)
    s_centre, s_axes, s_extent = principal_axes(surface)
    starts = []
    for signs in PROPER_SIGNS:
        R = axes @ signs @ s_axes.T
        if reference is None:
            scale = extent / max(s_extent, 1e-9)
            starts.append(compose_pose(R, centre - scale * R @ s_centre, scale))
        else:
            scale = np.linalg.norm(reference[:3, :3], axis=0)  # the reference's per-axis scale
            starts.append(compose_pose(R, reference[:3, 3], scale))
    return starts
