"""Procedural open-set shape library: parametric mesh families standing in for Objaverse.

Every shape is a triangle mesh in a canonical frame: centred on its axis-aligned bounding box,
longest bbox side exactly 1 (unitless; the scene generator scales it to metres), +z its natural
"up" (the way it would stand) and z its rotational symmetry axis, if it has one.

Every part is a closed, consistently outward-wound solid with no degenerate faces and no
unreferenced vertices; open objects (bowl, mug, lamp shade, open vase) are thick-walled, i.e. a
lathe of a closed wall profile. The composite families (``COMPOSITE_FAMILIES``: mug, table, lamp,
box_cylinder) are plain concatenations of such parts, which may intersect each other: they are
watertight edge-wise but not a single 2-manifold solid, and their mesh volume double-counts the
overlaps.

Symmetry annotation: ``symmetry_rotations`` holds canonical-frame rotations g (identity first)
with g(shape) == shape; "continuous" shapes get 36 steps about z (plus each composed with 180°
about x when the shape is also up-down symmetric). Only symmetries that hold for the instance's
random parameters are listed; the list may be a subgroup of the full group (a sphere-like
superquadric gets no extra axes).

Building blocks: ``_revolve`` (lathe of an (r, z) profile), ``_extrude`` (prism of a polygon),
``_loft`` (rings of vertices joined into a closed mesh, used by the other two), ``_superquadric``,
``_sweep_tube`` and ``_convex_hull``.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import trimesh
from scipy.interpolate import PchipInterpolator
from scipy.spatial import ConvexHull

from scenemaker_ros.geometry import raycasting_scene

Mesh = tuple[np.ndarray, np.ndarray]  # (V, 3) float64 vertices, (F, 3) int64 faces
Built = tuple[np.ndarray, np.ndarray, str, np.ndarray]  # vertices, faces, symmetry, rotations

_SEGMENTS = 48  # vertices around a main lathe; a multiple of 4 so that 90° turns are exact
_SMALL_SEGMENTS = 16  # vertices around thin parts (legs, handle)
_CONTINUOUS_STEPS = 36  # discretisation of a continuous symmetry about z


@dataclass(frozen=True, eq=False)
class Shape:
    """One procedural shape in its canonical frame (arrays are read-only).

    vertices: (V, 3) float64, bbox-centred, longest bbox side 1.
    faces: (F, 3) int64 vertex indices, counter-clockwise seen from outside.
    symmetry: "none" | "discrete" | "continuous".
    symmetry_rotations: (M, 3, 3) float64 rotations mapping the shape onto itself, identity first.
    """

    family: str
    seed: int
    vertices: np.ndarray
    faces: np.ndarray
    symmetry: str
    symmetry_rotations: np.ndarray

    def to_trimesh(self) -> trimesh.Trimesh:
        """The mesh as a writable trimesh (no vertex merging or other processing)."""
        return trimesh.Trimesh(self.vertices.copy(), self.faces.copy(), process=False)


#################################################################################
#                               Rotation groups                                 #
#################################################################################


def _rot_x(angle: float) -> np.ndarray:
    """(3, 3) rotation by ``angle`` radians about x."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _rot_z(angle: float) -> np.ndarray:
    """(3, 3) rotation by ``angle`` radians about z."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _rotations_about_z(n: int, flip: bool) -> np.ndarray:
    """(n, 3, 3) turns by 2*pi*k/n about z, identity first; ``flip`` appends each composed with
    180° about x (the dihedral group, (2n, 3, 3))."""
    turns = [_rot_z(2 * np.pi * k / n) for k in range(n)]
    if flip:
        turns += [r @ _rot_x(np.pi) for r in turns]
    return np.stack(turns)


_IDENTITY = np.eye(3)[None]


def _continuous(flip: bool) -> tuple[str, np.ndarray]:
    return "continuous", _rotations_about_z(_CONTINUOUS_STEPS, flip)


def _discrete(n: int, flip: bool) -> tuple[str, np.ndarray]:
    return "discrete", _rotations_about_z(n, flip)


#################################################################################
#                              Mesh building blocks                             #
#################################################################################


def _orient_outward(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Faces of a closed, consistently wound mesh, flipped if needed so its signed volume is > 0."""
    v = vertices[faces]
    signed_volume = np.einsum("ij,ij->", v[:, 0], np.cross(v[:, 1], v[:, 2]))
    return faces if signed_volume > 0 else faces[:, ::-1].copy()


def _strip_faces(n_rings: int, n_seg: int, closed: bool) -> np.ndarray:
    """(F, 3) two triangles per quad joining ring k (vertices k*n_seg .. k*n_seg + n_seg - 1) to
    ring k + 1; ``closed`` also joins the last ring to the first."""
    k, j = np.meshgrid(
        np.arange(n_rings if closed else n_rings - 1), np.arange(n_seg), indexing="ij"
    )
    a = k * n_seg + j
    b = k * n_seg + (j + 1) % n_seg
    c = (k + 1) % n_rings * n_seg + (j + 1) % n_seg
    d = (k + 1) % n_rings * n_seg + j
    return np.concatenate([np.stack([a, b, c], -1), np.stack([a, c, d], -1)]).reshape(-1, 3)


def _loft(rings: np.ndarray, poles: np.ndarray | None = None) -> Mesh:
    """Closed, outward-wound mesh through rings (K, S, 3) of S vertices each.

    With poles (2, 3), the first and last rings are capped by triangle fans to poles[0] and
    poles[1] (sphere topology); without, the last ring joins the first (torus topology).
    """
    n_rings, n_seg = rings.shape[:2]
    vertices = rings.reshape(-1, 3)
    if poles is None:
        faces = _strip_faces(n_rings, n_seg, closed=True)
    else:
        j, j_next = np.arange(n_seg), (np.arange(n_seg) + 1) % n_seg
        last = (n_rings - 1) * n_seg
        bottom = np.stack([np.full(n_seg, n_rings * n_seg), j_next, j], -1)
        top = np.stack([np.full(n_seg, n_rings * n_seg + 1), last + j, last + j_next], -1)
        vertices = np.concatenate([vertices, poles])
        faces = np.concatenate([_strip_faces(n_rings, n_seg, closed=False), bottom, top])
    return vertices, _orient_outward(vertices, faces)


def _revolve(profile_rz: np.ndarray, segments: int = _SEGMENTS) -> Mesh:
    """Lathe of a (K, 2) profile of (radius, z) points about z.

    A profile that starts and ends on the axis (r == 0) gives a solid capped at both poles; one
    with all r > 0 is a closed loop (ring, tube, thick wall) and gives a torus-like solid.
    """
    profile_rz = np.asarray(profile_rz, dtype=np.float64)
    on_axis = np.isclose(profile_rz[[0, -1], 0], 0.0, atol=1e-9)
    theta = 2 * np.pi * np.arange(segments) / segments
    body = profile_rz[1:-1] if on_axis.all() else profile_rz
    rings = np.stack(
        [
            body[:, :1] * np.cos(theta),
            body[:, :1] * np.sin(theta),
            np.broadcast_to(body[:, 1:], (len(body), segments)),
        ],
        axis=-1,
    )
    if not on_axis.any():
        return _loft(rings)
    if not on_axis.all():
        raise ValueError("a profile must touch the axis at both ends or at neither")
    return _loft(rings, poles=np.column_stack([[0.0, 0.0], [0.0, 0.0], profile_rz[[0, -1], 1]]))


def _cross_2d(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """z-component of the cross product of 2D vectors (..., 2)."""
    return u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]


def _triangulate(polygon: np.ndarray) -> np.ndarray:
    """(K - 2, 3) ear-clipping triangulation of a simple counter-clockwise polygon (K, 2)."""
    remaining = list(range(len(polygon)))
    triangles = []
    while len(remaining) > 3:
        for k in range(len(remaining)):
            ear = [remaining[k - 1], remaining[k], remaining[(k + 1) % len(remaining)]]
            a, b, c = polygon[ear]
            if _cross_2d(b - a, c - b) <= 1e-12:  # reflex or collinear corner
                continue
            others = polygon[[i for i in remaining if i not in ear]]
            edges = [_cross_2d(q - p, others - p) for p, q in ((a, b), (b, c), (c, a))]
            if np.any((edges[0] >= 0) & (edges[1] >= 0) & (edges[2] >= 0)):
                continue  # another vertex lies inside or on this ear
            triangles.append(ear)
            remaining.pop(k)
            break
        else:
            raise ValueError("polygon is not simple")
    return np.array(triangles + [remaining])


def _extrude(polygon: np.ndarray, height: float) -> Mesh:
    """Prism of a simple polygon (K, 2) in the xy-plane spanning z in [-height/2, height/2]."""
    x, y = polygon.T
    if np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y) < 0:  # make it counter-clockwise
        polygon = polygon[::-1]
    n = len(polygon)
    vertices = np.concatenate(
        [np.column_stack([polygon, np.full(n, z)]) for z in (-height / 2, height / 2)]
    )
    caps = _triangulate(polygon)
    faces = np.concatenate([_strip_faces(2, n, closed=False), caps[:, ::-1], caps + n])
    return vertices, _orient_outward(vertices, faces)


def _superquadric(radii: np.ndarray, e1: float, e2: float, n_lat: int = 24) -> Mesh:
    """Superquadric with semi-axes radii (3,), exponents e1 (latitude) and e2 (longitude); a
    latitude-longitude grid symmetric under 90° turns about z and 180° turns about x."""

    def signed_pow(x: np.ndarray, e: float) -> np.ndarray:
        return np.sign(x) * np.abs(x) ** e

    eta = np.linspace(-np.pi / 2, np.pi / 2, n_lat + 1)[1:-1, None]
    omega = 2 * np.pi * np.arange(_SEGMENTS) / _SEGMENTS
    ce, se = signed_pow(np.cos(eta), e1), signed_pow(np.sin(eta), e1)
    rings = np.stack(
        [
            radii[0] * ce * signed_pow(np.cos(omega), e2),
            radii[1] * ce * signed_pow(np.sin(omega), e2),
            np.broadcast_to(radii[2] * se, (n_lat - 1, _SEGMENTS)),
        ],
        axis=-1,
    )
    return _loft(rings, poles=np.array([[0.0, 0.0, -radii[2]], [0.0, 0.0, radii[2]]]))


def _sweep_tube(path: np.ndarray, radius: float) -> Mesh:
    """Tube of circular section ``radius`` along a path (K, 3) in the xz-plane, capped flat at
    both ends."""
    tangent = np.gradient(path, axis=0)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
    normal = np.column_stack([tangent[:, 2], np.zeros(len(path)), -tangent[:, 0]])
    phi = 2 * np.pi * np.arange(_SMALL_SEGMENTS) / _SMALL_SEGMENTS
    circle = np.cos(phi)[:, None, None] * normal + np.sin(phi)[:, None, None] * [0.0, 1.0, 0.0]
    return _loft(path[:, None] + radius * circle.transpose(1, 0, 2), poles=path[[0, -1]])


def _convex_hull(points: np.ndarray) -> Mesh:
    """Convex hull of points (N, 3), outward wound, interior points dropped."""
    hull = ConvexHull(points)
    used, faces = np.unique(hull.simplices, return_inverse=True)
    vertices, faces = points[used], faces.reshape(-1, 3)
    v = vertices[faces]
    normals = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
    inward = np.einsum("ij,ij->i", normals, hull.equations[:, :3]) < 0  # qhull planes face out
    faces[inward] = faces[inward, ::-1]
    return vertices, faces


def _chamfered_rect(half_x: float, half_y: float, cut: float) -> np.ndarray:
    """(8, 2) counter-clockwise octagon: the rectangle [-half_x, half_x] x [-half_y, half_y] with
    its corners cut by ``cut``."""
    hx, hy, c = half_x, half_y, cut
    return np.array(
        [[hx, c - hy], [hx, hy - c], [hx - c, hy], [c - hx, hy],
         [-hx, hy - c], [-hx, c - hy], [c - hx, -hy], [hx - c, -hy]]
    )  # fmt: skip


def _bevelled_box(half: np.ndarray, bevel: float) -> Mesh:
    """Box with half extents (3,), centred at the origin, all 12 edges chamfered at 45° by
    ``bevel`` (< min(half) / 2)."""
    hx, hy, hz = half
    levels = [
        (hx - bevel, hy - bevel, -hz),
        (hx, hy, bevel - hz),
        (hx, hy, hz - bevel),
        (hx - bevel, hy - bevel, hz),
    ]
    rings = np.stack(
        [np.column_stack([_chamfered_rect(x, y, bevel), np.full(8, z)]) for x, y, z in levels]
    )
    return _loft(rings, poles=np.array([[0.0, 0.0, -hz], [0.0, 0.0, hz]]))


def _cylinder(radius: float, z0: float, z1: float, bevel: float, segments: int = _SEGMENTS) -> Mesh:
    """Cylinder about z from z0 to z1 with both rim edges chamfered by ``bevel``."""
    profile = [(0, z0), (radius - bevel, z0), (radius, z0 + bevel),
               (radius, z1 - bevel), (radius - bevel, z1), (0, z1)]  # fmt: skip
    return _revolve(np.array(profile), segments)


def _translate(mesh: Mesh, offset: Sequence[float]) -> Mesh:
    return mesh[0] + np.asarray(offset, dtype=np.float64), mesh[1]


def _concatenate(parts: Sequence[Mesh]) -> Mesh:
    """One mesh from closed parts (may intersect; see the module docstring)."""
    starts = np.cumsum([0] + [len(v) for v, _ in parts[:-1]])
    return (
        np.concatenate([v for v, _ in parts]),
        np.concatenate([f + s for (_, f), s in zip(parts, starts)]),
    )


def _arc(center: Sequence[float], radius: float, a0: float, a1: float, n: int) -> np.ndarray:
    """(n, 2) points on a circular arc from angle a0 to a1 (radians), both included."""
    angle = np.linspace(a0, a1, n)
    return np.asarray(center) + radius * np.column_stack([np.cos(angle), np.sin(angle)])


def _rotate_to_xz(mesh: Mesh) -> Mesh:
    """Turn a mesh extruded along z so that its polygon stands in the xz-plane (y = -old z)."""
    return mesh[0] @ _rot_x(np.pi / 2).T, mesh[1]


#################################################################################
#                                   Families                                    #
#################################################################################


def _box(rng: np.random.Generator) -> Built:
    half = rng.uniform(0.15, 0.5, 3)
    square = rng.random() < 0.3
    if square:  # square section: 4-fold about z; keep the height clearly different (no cube)
        half[1] = half[0]
        half[2] = half[0] * rng.uniform(1.3, 2.5) ** rng.choice([-1, 1])
    bevel = rng.uniform(0.04, 0.2) * half.min()
    return *_bevelled_box(half, bevel), *_discrete(4 if square else 2, flip=True)


def _cylinder_family(rng: np.random.Generator) -> Built:
    radius, half_height = rng.uniform(0.15, 0.5, 2)
    bevel = rng.uniform(0.03, 0.15) * min(radius, half_height)
    return *_cylinder(radius, -half_height, half_height, bevel), *_continuous(flip=True)


def _cone(rng: np.random.Generator) -> Built:
    radius, height = rng.uniform(0.2, 0.5), rng.uniform(0.3, 1.0)
    top = [(radius * rng.uniform(0.15, 0.7), height)] if rng.random() < 0.5 else []  # truncated
    profile = np.array([(0, 0), (radius, 0), *top, (0, height)])
    return *_revolve(profile), *_continuous(flip=False)


def _ellipsoid(rng: np.random.Generator) -> Built:
    radii = rng.uniform(0.2, 0.5, 3)
    if rng.random() < 0.5:  # spheroid, clearly not a sphere
        radii[1] = radii[0]
        radii[2] = radii[0] * rng.uniform(1.25, 2.0) ** rng.choice([-1, 1])
        return *_superquadric(radii, 1.0, 1.0), *_continuous(flip=True)
    return *_superquadric(radii, 1.0, 1.0), *_discrete(2, flip=True)


def _torus(rng: np.random.Generator) -> Built:
    major = rng.uniform(0.3, 0.5)
    minor = major * rng.uniform(0.15, 0.6)
    section = _arc((major, 0), minor, 0, 2 * np.pi, 25)[:-1]
    return *_revolve(section), *_continuous(flip=True)


def _tube(rng: np.random.Generator) -> Built:
    outer, half_height = rng.uniform(0.2, 0.5), rng.uniform(0.05, 0.5)
    half_wall = outer * rng.uniform(0.05, 0.3)
    cut = 0.3 * min(half_wall, half_height)
    section = _chamfered_rect(half_wall, half_height, cut) + [outer - half_wall, 0.0]
    return *_revolve(section), *_continuous(flip=True)


def _capsule(rng: np.random.Generator) -> Built:
    radius, half_length = rng.uniform(0.15, 0.4), rng.uniform(0.05, 0.5)
    profile = np.concatenate(
        [
            _arc((0, -half_length), radius, -np.pi / 2, 0, 9),
            _arc((0, half_length), radius, 0, np.pi / 2, 9),
        ]
    )
    return *_revolve(profile), *_continuous(flip=True)


def _mug(rng: np.random.Generator) -> Built:
    radius = rng.uniform(0.25, 0.4)
    height = radius * rng.uniform(1.8, 2.8)
    wall = radius * rng.uniform(0.08, 0.14)
    bevel = 0.5 * wall
    rim = _arc((radius - wall / 2, height - wall / 2), wall / 2, 0, np.pi, 7)
    profile = np.array(
        [
            (0, 0),
            (radius - bevel, 0),
            (radius, bevel),
            *rim,
            (radius - wall, 1.5 * wall),
            (0, 1.5 * wall),
        ]
    )
    # D-shaped handle: half an ellipse whose ends sit inside the wall
    x0, reach = radius - wall / 2, radius * rng.uniform(0.45, 0.75) + wall / 2
    z_mid, half_span = height * rng.uniform(0.45, 0.55), height * rng.uniform(0.22, 0.3)
    t = np.linspace(-np.pi / 2, np.pi / 2, 24)
    path = np.column_stack(
        [x0 + reach * np.cos(t), np.zeros_like(t), z_mid + half_span * np.sin(t)]
    )
    handle = _sweep_tube(path, radius * rng.uniform(0.07, 0.12))
    return *_concatenate([_revolve(profile), handle]), "none", _IDENTITY


def _bowl(rng: np.random.Generator) -> Built:
    radius = rng.uniform(0.3, 0.5)
    height = radius * rng.uniform(0.35, 0.8)
    wall = radius * rng.uniform(0.04, 0.08)
    foot = radius * rng.uniform(0.3, 0.55)
    t = np.linspace(0, np.pi / 2, 11)
    outer = np.column_stack([foot + (radius - foot) * np.sin(t), height * (1 - np.cos(t))])
    inner = outer[::-1] + np.column_stack([np.full_like(t, -wall), wall * np.cos(t[::-1])])
    rim = _arc((radius - wall / 2, height), wall / 2, 0, np.pi, 7)[1:-1]  # rounded lip
    profile = np.concatenate([[(0, 0)], outer, rim, inner, [(0, wall)]])
    return *_revolve(profile), *_continuous(flip=False)


def _bottle(rng: np.random.Generator) -> Built:
    radius = rng.uniform(0.15, 0.3)
    body = radius * rng.uniform(1.5, 3.5)
    neck_radius = radius * rng.uniform(0.3, 0.5)
    shoulder = radius * rng.uniform(0.6, 1.5)
    neck_top = body + shoulder + radius * rng.uniform(0.5, 1.5)
    lip, bevel = 0.3 * neck_radius, 0.1 * radius
    u = np.linspace(0, 1, 10)[1:]
    shoulder_rz = np.column_stack(
        [neck_radius + (radius - neck_radius) * (1 + np.cos(np.pi * u)) / 2, body + shoulder * u]
    )
    profile = np.concatenate(
        [
            [(0, 0), (radius - bevel, 0), (radius, bevel), (radius, body)],
            shoulder_rz,
            [(neck_radius, neck_top), (neck_radius + lip / 2, neck_top)],
            [(neck_radius + lip / 2, neck_top + lip), (0, neck_top + lip)],
        ]
    )
    return *_revolve(profile), *_continuous(flip=False)


def _vase(rng: np.random.Generator) -> Built:
    height = rng.uniform(0.6, 1.0)
    radius_at = PchipInterpolator(np.linspace(0, height, 5), rng.uniform(0.12, 0.4, 5))
    z = np.linspace(0, height, 16)
    outer = np.column_stack([radius_at(z), z])
    if rng.random() < 0.5:  # solid
        profile = np.concatenate([[(0, 0)], outer, [(0, height)]])
    else:  # open, thick-walled
        wall = rng.uniform(0.02, 0.04)
        z_in = np.linspace(height, wall, 16)
        inner = np.column_stack([radius_at(z_in) - wall, z_in])
        profile = np.concatenate([[(0, 0)], outer, inner, [(0, wall)]])
    return *_revolve(profile), *_continuous(flip=False)


def _prism(rng: np.random.Generator) -> Built:
    """Extrusion of a random star-shaped (often non-convex) polygon."""
    n = rng.integers(5, 11)
    angle = 2 * np.pi * (np.arange(n) + rng.uniform(-0.3, 0.3, n)) / n
    polygon = rng.uniform(0.45, 1.0, (n, 1)) * np.column_stack([np.cos(angle), np.sin(angle)])
    return *_extrude(polygon, rng.uniform(0.2, 1.0)), "none", _IDENTITY


def _regular_prism(rng: np.random.Generator) -> Built:
    n = int(rng.choice([3, 5, 6, 8]))
    angle = 2 * np.pi * np.arange(n) / n  # a vertex on +x: mirror-symmetric in y
    polygon = 0.5 * np.column_stack([np.cos(angle), np.sin(angle)])
    mesh = _extrude(polygon, rng.uniform(0.2, 1.2))
    if n % 2:  # odd n: the bbox centre is off the polygon centre; only 180° about x is left
        return *mesh, "discrete", np.stack([np.eye(3), _rot_x(np.pi)])
    return *mesh, *_discrete(n, flip=True)


def _l_block(rng: np.random.Generator) -> Built:
    width = rng.uniform(0.5, 1.0)
    height = width * rng.uniform(1.25, 1.8) ** rng.choice([-1, 1])  # unequal arms: no symmetry
    t_foot, t_post = rng.uniform(0.15, 0.45, 2) * min(width, height)
    polygon = np.array(
        [(0, 0), (width, 0), (width, t_foot), (t_post, t_foot), (t_post, height), (0, height)]
    )
    return *_rotate_to_xz(_extrude(polygon, rng.uniform(0.2, 0.8))), "none", _IDENTITY


def _t_block(rng: np.random.Generator) -> Built:
    half_bar, stem_height = rng.uniform(0.3, 0.5), rng.uniform(0.3, 0.8)
    half_stem, bar = rng.uniform(0.15, 0.5) * half_bar, rng.uniform(0.1, 0.3)
    top = stem_height + bar
    polygon = np.array(
        [(-half_stem, 0), (half_stem, 0), (half_stem, stem_height), (half_bar, stem_height),
         (half_bar, top), (-half_bar, top), (-half_bar, stem_height), (-half_stem, stem_height)]
    )  # fmt: skip
    return *_rotate_to_xz(_extrude(polygon, rng.uniform(0.15, 0.6))), *_discrete(2, flip=False)


def _u_block(rng: np.random.Generator) -> Built:
    half_width, height = rng.uniform(0.3, 0.5), rng.uniform(0.3, 0.8)
    side, base = rng.uniform(0.15, 0.35) * half_width, rng.uniform(0.15, 0.4) * height
    inner = half_width - side
    polygon = np.array(
        [(-half_width, 0), (half_width, 0), (half_width, height), (inner, height),
         (inner, base), (-inner, base), (-inner, height), (-half_width, height)]
    )  # fmt: skip
    return *_rotate_to_xz(_extrude(polygon, rng.uniform(0.15, 0.6))), *_discrete(2, flip=False)


def _superquadric_family(rng: np.random.Generator) -> Built:
    radii = rng.uniform(0.2, 0.5, 3)
    e1, e2 = rng.uniform(0.25, 1.5, 2)
    square = rng.random() < 0.35
    if square:  # equal x/y semi-axes: 4-fold about z
        radii[1] = radii[0]
        radii[2] = radii[0] * rng.uniform(1.3, 2.0) ** rng.choice([-1, 1])
    return *_superquadric(radii, e1, e2), *_discrete(4 if square else 2, flip=True)


def _blob(rng: np.random.Generator) -> Built:
    """Convex hull of random points: few (faceted) or a dense bumpy sphere (smooth)."""
    radii = rng.uniform(0.25, 0.5, 3)
    if rng.random() < 0.5:
        directions = rng.normal(size=(rng.integers(12, 41), 3))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        points = directions * rng.uniform(0.7, 1.0, (len(directions), 1))
    else:  # Fibonacci sphere with a low-frequency random radius
        i = np.arange(400) + 0.5
        polar, azimuth = np.arccos(1 - 2 * i / 400), np.pi * (1 + 5**0.5) * i
        directions = np.column_stack(
            [np.sin(polar) * np.cos(azimuth), np.sin(polar) * np.sin(azimuth), np.cos(polar)]
        )
        waves = rng.normal(size=(3, 3))
        bumps = np.sin(directions @ waves.T * rng.uniform(1, 3, 3) + rng.uniform(0, 2 * np.pi, 3))
        points = directions * (1 + 0.15 * bumps.sum(1, keepdims=True))
    return *_convex_hull(points * radii), "none", _IDENTITY


def _table(rng: np.random.Generator) -> Built:
    height, thick = rng.uniform(0.5, 0.9), rng.uniform(0.03, 0.06)
    if rng.random() < 0.3:  # round pedestal table
        top_radius, foot = rng.uniform(0.35, 0.5), rng.uniform(0.02, 0.04)
        parts = [
            _cylinder(top_radius, height - thick, height, 0.3 * thick),
            _cylinder(
                rng.uniform(0.03, 0.06), foot / 2, height - thick / 2, 0.005, _SMALL_SEGMENTS
            ),
            _cylinder(top_radius * rng.uniform(0.4, 0.6), 0, foot, 0.3 * foot),
        ]
        return *_concatenate(parts), *_continuous(flip=False)
    square = rng.random() < 0.35
    half_x = 0.5
    half_y = half_x if square else half_x * rng.uniform(0.5, 0.85)
    top = _translate(
        _bevelled_box(np.array([half_x, half_y, thick / 2]), 0.3 * thick),
        [0, 0, height - thick / 2],
    )
    leg_radius = rng.uniform(0.025, 0.045)
    leg = _cylinder(leg_radius, 0, height - thick / 2, 0.3 * leg_radius, _SMALL_SEGMENTS)
    inset = leg_radius * rng.uniform(1.5, 3.0)
    legs = [
        _translate(leg, [sx * (half_x - inset), sy * (half_y - inset), 0])
        for sx in (-1, 1)
        for sy in (-1, 1)
    ]
    return *_concatenate([top, *legs]), *_discrete(4 if square else 2, flip=False)


def _lamp(rng: np.random.Generator) -> Built:
    base_radius, base_height = rng.uniform(0.15, 0.25), rng.uniform(0.02, 0.04)
    stem_radius, stem = rng.uniform(0.012, 0.025), rng.uniform(0.4, 0.8)
    top = base_height + stem
    shade_bottom = rng.uniform(0.15, 0.3)
    shade_top = shade_bottom * rng.uniform(0.4, 0.8)
    shade_z0, t = top - stem * rng.uniform(0.25, 0.45), 0.01
    shade = [(0, top - t), (shade_top - t, top - t), (shade_bottom - t, shade_z0),
             (shade_bottom, shade_z0), (shade_top, top), (0, top)]  # fmt: skip
    parts = [
        _cylinder(base_radius, 0, base_height, 0.3 * base_height),
        _cylinder(stem_radius, base_height / 2, top - t / 2, 0.2 * stem_radius, _SMALL_SEGMENTS),
        _revolve(np.array(shade)),  # open at the bottom, capped on top, the stem ends in the cap
    ]
    return *_concatenate(parts), *_continuous(flip=False)


def _box_cylinder(rng: np.random.Generator) -> Built:
    """A slab with a cylinder standing off-centre on it."""
    half = np.array([*rng.uniform(0.25, 0.5, 2), rng.uniform(0.08, 0.25)])
    radius = rng.uniform(0.3, 0.6) * half[:2].min()
    offset = [
        rng.uniform(0.5, 1.0) * (half[0] - radius) * rng.choice([-1, 1]),
        rng.uniform(-1.0, 1.0) * (half[1] - radius),
        0,
    ]
    cylinder = _cylinder(radius, half[2] / 2, half[2] + rng.uniform(0.3, 1.0), 0.1 * radius)
    parts = [_bevelled_box(half, 0.1 * half.min()), _translate(cylinder, offset)]
    return *_concatenate(parts), "none", _IDENTITY


def _pyramid(rng: np.random.Generator) -> Built:
    half_x = rng.uniform(0.25, 0.5)
    square = rng.random() < 0.4
    half_y = half_x if square else half_x * rng.uniform(0.5, 0.8)
    height = rng.uniform(0.3, 1.0)
    base = np.array([(half_x, -half_y), (half_x, half_y), (-half_x, half_y), (-half_x, -half_y)])
    rings = [np.column_stack([base, np.zeros(4)])]
    if rng.random() < 0.5:  # frustum
        rings.append(np.column_stack([base * rng.uniform(0.2, 0.6), np.full(4, height)]))
    mesh = _loft(np.stack(rings), poles=np.array([[0.0, 0.0, 0.0], [0.0, 0.0, height]]))
    return *mesh, *_discrete(4 if square else 2, flip=False)


def _wedge(rng: np.random.Generator) -> Built:
    """An isosceles roof (2-fold about z) or a ramp (no symmetry), extruded along y."""
    width = rng.uniform(0.5, 1.0)
    depth = rng.uniform(0.2, 1.0)
    if rng.random() < 0.5:
        polygon = np.array([(-width / 2, 0), (width / 2, 0), (0, width * rng.uniform(0.2, 0.8))])
        return *_rotate_to_xz(_extrude(polygon, depth)), *_discrete(2, flip=False)
    polygon = np.array([(0, 0), (width, 0), (0, width * rng.uniform(0.25, 0.7))])
    return *_rotate_to_xz(_extrude(polygon, depth)), "none", _IDENTITY


FAMILIES: dict[str, Callable[[np.random.Generator], Built]] = {
    "box": _box,
    "cylinder": _cylinder_family,
    "cone": _cone,
    "ellipsoid": _ellipsoid,
    "torus": _torus,
    "tube": _tube,
    "capsule": _capsule,
    "mug": _mug,
    "bowl": _bowl,
    "bottle": _bottle,
    "vase": _vase,
    "prism": _prism,
    "regular_prism": _regular_prism,
    "l_block": _l_block,
    "t_block": _t_block,
    "u_block": _u_block,
    "superquadric": _superquadric_family,
    "blob": _blob,
    "table": _table,
    "lamp": _lamp,
    "box_cylinder": _box_cylinder,
    "pyramid": _pyramid,
    "wedge": _wedge,
}
"""Registry: family name -> builder(rng) returning (vertices, faces, symmetry, rotations) in the
builder's own frame (make_shape canonicalises)."""

COMPOSITE_FAMILIES = frozenset({"mug", "table", "lamp", "box_cylinder"})
"""Families whose mesh is several closed parts that may intersect (not one 2-manifold solid)."""


#################################################################################
#                                  Public API                                   #
#################################################################################


def _canonicalize(vertices: np.ndarray) -> np.ndarray:
    """Vertices (V, 3) centred on their bbox and scaled so that the longest bbox side is 1."""
    lo, hi = vertices.min(axis=0), vertices.max(axis=0)
    return (vertices - (lo + hi) / 2) / (hi - lo).max()


def _read_only(array: np.ndarray, dtype: type) -> np.ndarray:
    array = np.array(array, dtype=dtype)  # a fresh copy
    array.setflags(write=False)
    return array


def make_shape(family: str, seed: int) -> Shape:
    """Build one shape of ``family`` with parameters drawn from ``seed`` (>= 0); deterministic."""
    if family not in FAMILIES:
        raise ValueError(f"unknown shape family {family!r}; valid: {', '.join(FAMILIES)}")
    vertices, faces, symmetry, rotations = FAMILIES[family](np.random.default_rng(seed))
    return Shape(
        family=family,
        seed=seed,
        vertices=_read_only(_canonicalize(vertices), np.float64),
        faces=_read_only(faces, np.int64),
        symmetry=symmetry,
        symmetry_rotations=_read_only(rotations, np.float64),
    )


def sample_shape(seed: int, families: Sequence[str] | None = None) -> Shape:
    """A shape of a family picked uniformly from ``families`` (default: all) by ``seed``."""
    names = list(FAMILIES) if families is None else list(families)
    # an independent stream, so the family choice is uncorrelated with the shape's parameters
    pick = np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0]).integers(len(names))
    return make_shape(names[pick], seed)


def _render(shape: Shape, size: int) -> np.ndarray:
    """(size, size, 3) float image in [0, 1]: Lambert-shaded ray cast, camera above-front-right."""
    import open3d as o3d  # heavy; only needed for previews

    eye = np.array([1.2, -1.5, 1.0])
    eye *= 2.4 / np.linalg.norm(eye)  # the unit-bbox shape fits a 45° field of view
    forward = -eye / np.linalg.norm(eye)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    pixel = (np.arange(size) + 0.5) / size * 2 - 1  # -1 .. 1
    u, v = np.meshgrid(pixel, -pixel)  # image rows run top to bottom
    direction = forward + np.tan(np.radians(22.5)) * (u[..., None] * right + v[..., None] * up)
    direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
    rays = np.concatenate([np.broadcast_to(eye, direction.shape), direction], axis=-1)

    scene = raycasting_scene([(shape.vertices, shape.faces)])
    hits = scene.cast_rays(o3d.core.Tensor(rays.astype(np.float32)))
    hit = np.isfinite(hits["t_hit"].numpy())
    normal = hits["primitive_normals"].numpy()
    light = 0.8 * up - 0.4 * right - 0.6 * forward  # from above-left, behind the camera
    shade = 0.25 + 0.75 * np.clip(normal @ (light / np.linalg.norm(light)), 0, 1)
    tint = {
        "none": (0.95, 0.6, 0.3),
        "discrete": (0.45, 0.8, 0.45),
        "continuous": (0.45, 0.65, 0.95),
    }
    return np.where(hit[..., None], shade[..., None] * np.array(tint[shape.symmetry]), 1.0)


def save_shape_grid(shapes: Sequence[Shape], path: str | Path, columns: int = 6) -> None:
    """Save a PNG preview grid of ``shapes``, each titled with its family and symmetry (tint:
    orange none, green discrete, blue continuous)."""
    from matplotlib.figure import Figure

    rows = -(-len(shapes) // columns)
    figure = Figure(figsize=(2.2 * columns, 2.4 * rows), dpi=100)
    for i, shape in enumerate(shapes):
        ax = figure.add_subplot(rows, columns, i + 1)
        ax.imshow(_render(shape, 200))
        ax.set_title(
            f"{shape.family} #{shape.seed}\n{shape.symmetry} ({len(shape.symmetry_rotations)}), "
            f"{len(shape.faces)} f",
            fontsize=8,
        )
        ax.axis("off")
    figure.tight_layout()
    figure.savefig(path)
