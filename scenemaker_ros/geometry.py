"""Shared 3D geometry helpers (numpy and scipy only): surface sampling, poses, resting poses,
fits, ICP, boxes.

Conventions: points are (N, 3) float64 arrays in whatever frame the caller uses (the project's
scenes use the camera optical frame, in metres); a pose is a (4, 4) float64 matrix
T = [R @ diag(s) | t] that maps object coordinates to that frame, p' = R @ (s * p) + t.
"""

from dataclasses import dataclass

import numpy as np
from scipy.spatial import ConvexHull, QhullError, cKDTree

# -----------------------------------------------------------------------------
# sampling and transforms


def triangle_areas(vertices, faces) -> np.ndarray:
    """Areas (F,) float64 of a mesh's triangles; vertices (V, 3) float, faces (F, 3) int."""
    tri = np.asarray(vertices, dtype=np.float64)[np.asarray(faces, dtype=np.int64)]  # (F, 3, 3)
    return 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)


def sample_surface(vertices, faces, n: int, rng: np.random.Generator) -> np.ndarray:
    """Area-weighted uniform samples on a triangle mesh's surface.

    vertices: (V, 3) float; faces: (F, 3) int indices into vertices; n: number of samples;
    rng: the only source of randomness. Returns (n, 3) float64 points, in vertices' frame and
    in random order. Raises ValueError if the mesh has no surface area.
    """
    cum_area = np.cumsum(triangle_areas(vertices, faces))  # (F,)
    if len(cum_area) == 0 or not cum_area[-1] > 0:
        raise ValueError("cannot sample a mesh with zero surface area")
    idx = np.searchsorted(cum_area, rng.random(n) * cum_area[-1], side="right")
    idx = np.minimum(idx, len(cum_area) - 1)  # guards the float edge case u * total == total
    faces = np.asarray(faces, dtype=np.int64)[idx]  # (n, 3), one triangle per sample
    tri = np.asarray(vertices, dtype=np.float64)[faces]  # (n, 3, 3)
    u, v = rng.random((2, n))
    flip = u + v > 1  # fold the unit square onto the triangle u + v <= 1
    u[flip], v[flip] = 1 - u[flip], 1 - v[flip]
    return tri[:, 0] + u[:, None] * (tri[:, 1] - tri[:, 0]) + v[:, None] * (tri[:, 2] - tri[:, 0])


def raycasting_scene(meshes):
    """An open3d RaycastingScene of meshes, (vertices (V, 3), faces (F, 3)) pairs; a hit's
    geometry id is its mesh's index. open3d is imported here, on first use."""
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    for vertices, faces in meshes:
        scene.add_triangles(o3d.core.Tensor(np.asarray(vertices, dtype=np.float32)),
                            o3d.core.Tensor(np.asarray(faces, dtype=np.uint32)))
    return scene


def surface_distances(scene, points: np.ndarray) -> np.ndarray:
    """Exact distance (N,) from points (N, 3) to the surfaces of a ``raycasting_scene``."""
    import open3d as o3d

    return scene.compute_distance(o3d.core.Tensor(np.asarray(points, np.float32))).numpy()


def transform_points(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a (4, 4) affine transform to (N, 3) points; returns (N, 3) float64."""
    T = np.asarray(T, dtype=np.float64)
    return np.asarray(points, dtype=np.float64) @ T[:3, :3].T + T[:3, 3]


def project_points(K: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Camera-frame points (N, 3) -> pixel coordinates (N, 2) with pinhole K (3, 3); points at or
    behind the camera (z <= 1e-6) -> NaN."""
    z = points[:, 2:3]
    return (points @ K.T)[:, :2] / np.where(z > 1e-6, z, np.nan)


def pixel_indices(K: np.ndarray, points: np.ndarray, shape: tuple[int, ...]
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The nearest pixel u, v (N,) int64 of camera-frame points (N, 3) with pinhole K (3, 3), and
    (N,) bool whether it lies on an image of ``shape`` (H, W, ...); points at or behind the
    camera are off the image."""
    uv = np.nan_to_num(project_points(K, points), nan=-1.0)
    u, v = np.round(uv[:, 0]).astype(np.int64), np.round(uv[:, 1]).astype(np.int64)
    return u, v, (u >= 0) & (u < shape[1]) & (v >= 0) & (v < shape[0])


def depth_to_points(depth: np.ndarray, K: np.ndarray, mask: np.ndarray | None = None
                    ) -> np.ndarray:
    """Back-project depth (H, W) float z-depth in metres with pinhole K (3, 3) -> (N, 3) float64
    camera-frame points, the inverse of project_points; pixel centres at integer (u, v) as in
    OpenCV and ROS. Invalid depth (0, negative, NaN, inf) is skipped; ``mask`` (H, W) bool
    restricts the pixels further. Points come in row-major pixel order."""
    valid = np.isfinite(depth) & (depth > 0)
    if mask is not None:
        valid &= mask
    v, u = np.nonzero(valid)
    z = depth[v, u].astype(np.float64)
    return np.stack([(u - K[0, 2]) * z / K[0, 0], (v - K[1, 2]) * z / K[1, 1], z], axis=1)


def compose_pose(rotation: np.ndarray, translation: np.ndarray, scale) -> np.ndarray:
    """Pose T = [R @ diag(s) | t] (4, 4) from R (3, 3), t (3,) and s (3,) or a scalar."""
    T = np.eye(4)
    T[:3, :3] = np.asarray(rotation, dtype=np.float64) * np.broadcast_to(scale, (3,))[None, :]
    T[:3, 3] = translation
    return T


def decompose_pose(
    T: np.ndarray, ortho_tol: float = 1e-3
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of compose_pose: (4, 4) pose -> (R (3, 3) with det +1, t (3,), s (3,) > 0).

    Round-off (e.g. from float32 storage) is removed by projecting R onto the nearest rotation.
    Raises ValueError if T is not finite, its last row is not [0, 0, 0, 1], a scale is zero,
    the linear part is a reflection, or it has shear beyond ortho_tol.
    """
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise ValueError(f"pose must be a finite (4, 4) matrix, got shape {T.shape}")
    if not np.allclose(T[3], [0, 0, 0, 1]):
        raise ValueError(f"pose's last row must be [0, 0, 0, 1], got {T[3]}")
    s = np.linalg.norm(T[:3, :3], axis=0)
    if not np.all(s > 1e-12):
        raise ValueError(f"pose has a zero scale: {s}")
    R = T[:3, :3] / s
    if np.linalg.det(R) <= 0:
        raise ValueError("pose is a reflection (det < 0); it has no rotation + positive scale")
    if np.abs(R.T @ R - np.eye(3)).max() > ortho_tol:
        raise ValueError("pose has shear; it is not a rotation times a per-axis scale")
    U, _, Vt = np.linalg.svd(R)
    return U @ Vt, T[:3, 3].copy(), s


# -----------------------------------------------------------------------------
# resting on a floor


def horizontal_axes(up: np.ndarray) -> np.ndarray:
    """(3, 2) orthonormal axes perpendicular to the unit vector up (3,), right-handed with it."""
    helper = np.array([1.0, 0.0, 0.0]) if abs(up[0]) < 0.9 else np.array([0.0, 0.0, 1.0])
    a = np.cross(up, helper)
    a /= np.linalg.norm(a)
    return np.stack([a, np.cross(up, a)], axis=1)


def rotations_about_z(angles: np.ndarray) -> np.ndarray:
    """Rotations (K, 3, 3) by angles (K,) radians about z, counter-clockwise seen from +z."""
    c, s = np.cos(angles), np.sin(angles)
    R = np.zeros((len(angles), 3, 3))
    R[:, 0, 0], R[:, 0, 1], R[:, 1, 0], R[:, 1, 1], R[:, 2, 2] = c, -s, s, c, 1.0
    return R


def solid_centroid(vertices: np.ndarray) -> np.ndarray:
    """Centre of mass (3,) of the convex hull of vertices (V, 3) taken as a uniform solid; their
    mean when the hull is flat."""
    try:
        hull = ConvexHull(vertices)
    except QhullError:
        return vertices.mean(axis=0)
    apex = vertices[hull.vertices].mean(axis=0)
    tetrahedra = vertices[hull.simplices] - apex  # (T, 3, 3) the hull's faces seen from inside
    volumes = np.abs(np.linalg.det(tetrahedra))  # (T,) six times each volume
    return apex + (volumes[:, None] * tetrahedra.sum(axis=1) / 4).sum(axis=0) / volumes.sum()


def resting_rotations(vertices: np.ndarray, center_of_mass: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """How a rigid body of vertices (V, 3) can rest on a floor z = const (z up): the rotations
    (S, 3, 3) turning each convex-hull facet it can rest on to face down (its outward normal to
    -z), and the chance (S,) of landing on each (the facet's solid angle seen from the centre of
    mass (3,)).

    A facet is stable when the centre of mass projects inside it. Coplanar hull triangles are
    merged into one facet by their plane equation. A flat body (no hull volume) has none.
    """
    try:
        hull = ConvexHull(vertices)
    except QhullError:
        return np.zeros((0, 3, 3)), np.zeros(0)
    planes = np.round(hull.equations, 6)  # (T, 4): unit normal, offset; n.x + d <= 0 inside
    _, facet_of, counts = np.unique(planes, axis=0, return_inverse=True, return_counts=True)
    facet_of = facet_of.ravel()
    corners = vertices[hull.simplices] - center_of_mass  # (T, 3, 3)
    solid = _solid_angles(corners)
    n = hull.equations[:, :3]
    height = -(hull.equations[:, :3] @ center_of_mass + hull.equations[:, 3])  # > 0
    foot = center_of_mass + height[:, None] * n  # (T, 3) centre of mass projected on the plane
    inside = _point_in_triangles(foot, vertices[hull.simplices], n)
    stable_facets = np.unique(facet_of[inside])
    if len(stable_facets) == 0:
        return np.zeros((0, 3, 3)), np.zeros(0)
    chance = np.bincount(facet_of, weights=solid, minlength=len(counts))[stable_facets]
    first = np.array([np.flatnonzero(facet_of == f)[0] for f in stable_facets])
    return np.array([_rotation_to_down(normal) for normal in n[first]]), chance / chance.sum()


def _solid_angles(corners: np.ndarray) -> np.ndarray:
    """Solid angle (T,) of triangles (T, 3, 3) seen from the origin (Van Oosterom-Strackee)."""
    a, b, c = corners[:, 0], corners[:, 1], corners[:, 2]
    la, lb, lc = (np.linalg.norm(x, axis=1) for x in (a, b, c))
    numerator = np.abs(np.einsum("ij,ij->i", a, np.cross(b, c)))
    denominator = (la * lb * lc + np.einsum("ij,ij->i", a, b) * lc
                   + np.einsum("ij,ij->i", a, c) * lb + np.einsum("ij,ij->i", b, c) * la)
    return 2.0 * np.arctan2(numerator, denominator)


def _point_in_triangles(points: np.ndarray, triangles: np.ndarray, normals: np.ndarray
                        ) -> np.ndarray:
    """Whether each point (T, 3), lying in its triangle's plane, is inside it (T,) bool.

    Works for either winding: inside means on the same side of all three edges.
    """
    sides = np.stack([np.einsum("ij,ij->i", np.cross(triangles[:, (i + 1) % 3] - triangles[:, i],
                                                     points - triangles[:, i]), normals)
                      for i in range(3)], axis=1)  # (T, 3)
    return np.all(sides >= -1e-12, axis=1) | np.all(sides <= 1e-12, axis=1)


def _rotation_to_down(normal: np.ndarray) -> np.ndarray:
    """The rotation (3, 3) turning unit ``normal`` to -z (Rodrigues, the shortest arc)."""
    down = np.array([0.0, 0.0, -1.0])
    axis = np.cross(normal, down)
    sin, cos = np.linalg.norm(axis), float(normal @ down)
    if sin < 1e-9:
        return np.eye(3) if cos > 0 else np.diag([1.0, -1.0, -1.0])
    k = axis / sin
    K = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + sin * K + (1.0 - cos) * K @ K


# -----------------------------------------------------------------------------
# registration


def umeyama(
    src: np.ndarray, dst: np.ndarray, with_scale: bool
) -> tuple[np.ndarray, np.ndarray, float]:
    """Least-squares similarity (or rigid, with_scale=False) fit: dst ~= s * R @ src + t.

    src, dst: (N, 3) corresponding points, N >= 3. Returns R (3, 3) with det +1 (never a
    reflection), t (3,) and the uniform scale s (1.0 when with_scale is False).
    Umeyama, "Least-squares estimation of transformation parameters...", TPAMI 1991.
    """
    src, dst = np.asarray(src, dtype=np.float64), np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 3 or len(src) < 3:
        raise ValueError(f"need two (N >= 3, 3) arrays, got {src.shape} and {dst.shape}")
    mu_src, mu_dst = src.mean(0), dst.mean(0)
    xs, xd = src - mu_src, dst - mu_dst
    U, S, Vt = np.linalg.svd(xd.T @ xs / len(src))  # cross-covariance (3, 3)
    d = np.ones(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        d[2] = -1.0  # flip the weakest axis: the best proper rotation, not a reflection
    R = (U * d) @ Vt
    s = 1.0
    if with_scale:
        var_src = (xs**2).sum() / len(src)
        if not var_src > 0:
            raise ValueError("cannot fit a scale to coincident source points")
        s = float((S * d).sum() / var_src)
    return R, mu_dst - s * R @ mu_src, s


@dataclass(frozen=True)
class IcpResult:
    transform: np.ndarray  # (4, 4) maps src into dst's frame: s * R @ p + t
    fitness: float  # fraction of src points with a correspondence within the max distance
    rmse: float  # RMS distance of those correspondences, in dst's units
    iterations: int  # number of Umeyama updates made


def icp(
    src: np.ndarray,
    dst: np.ndarray,
    init: np.ndarray | None = None,
    with_scale: bool = False,
    max_iterations: int = 50,
    tolerance: float = 1e-6,
    max_correspondence_distance: float | None = None,
) -> IcpResult:
    """Point-to-point ICP aligning src (N, 3) to dst (M, 3), deterministic.

    Each iteration pairs every transformed src point with its nearest dst point (cKDTree),
    drops pairs farther than max_correspondence_distance (None keeps all) and refits the whole
    transform with Umeyama: rigid, or rigid + uniform scale with with_scale. init: (4, 4) start
    (identity if None). Stops after max_iterations or when the RMSE changes by < tolerance;
    fitness and rmse describe the returned transform.
    """
    src = np.asarray(src, dtype=np.float64)
    tree = cKDTree(np.asarray(dst, dtype=np.float64))
    limit = np.inf if max_correspondence_distance is None else max_correspondence_distance

    def correspond(T):
        dist, j = tree.query(transform_points(T, src), distance_upper_bound=limit)
        ok = np.isfinite(dist)
        rmse = float(np.sqrt(np.mean(dist[ok] ** 2))) if ok.any() else np.inf
        return ok, j, rmse

    T = np.eye(4) if init is None else np.asarray(init, dtype=np.float64).copy()
    ok, j, rmse = correspond(T)
    iterations = 0
    while iterations < max_iterations and ok.sum() >= 3:
        R, t, s = umeyama(src[ok], tree.data[j[ok]], with_scale)
        T = compose_pose(R, t, s)
        prev_rmse = rmse
        ok, j, rmse = correspond(T)
        iterations += 1
        if abs(prev_rmse - rmse) < tolerance:
            break
    return IcpResult(T, float(ok.mean()), rmse, iterations)


# -----------------------------------------------------------------------------
# axis-aligned boxes


def aabb_iou_matrix(a_min, a_max, b_min, b_max) -> np.ndarray:
    """Pairwise 3D IoU of axis-aligned boxes: a_* (N, 3), b_* (M, 3) corners -> (N, M).

    A pair whose union has zero volume (e.g. two flat boxes) has IoU 0.
    """
    a_min, a_max, b_min, b_max = (np.asarray(x, np.float64) for x in (a_min, a_max, b_min, b_max))
    overlap = np.minimum(a_max[:, None], b_max[None]) - np.maximum(a_min[:, None], b_min[None])
    inter = np.clip(overlap, 0, None).prod(-1)  # (N, M)
    union = (a_max - a_min).prod(-1)[:, None] + (b_max - b_min).prod(-1)[None] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def aabb_iou(a_min, a_max, b_min, b_max) -> float:
    """3D IoU of two axis-aligned boxes given by (3,) min and max corners."""
    boxes = (np.reshape(x, (1, 3)) for x in (a_min, a_max, b_min, b_max))
    return float(aabb_iou_matrix(*boxes)[0, 0])
