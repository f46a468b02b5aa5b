"""Physically plausible tabletop layouts: stable resting poses, no interpenetration.

World frame: z up, the support plane is z = 0, metres. Each new object is given a resting
orientation and a yaw, optionally slid sideways until it touches an existing object, then dropped
straight down until its first contact. Contact is found by ray casting in both directions (the new
object's surface points cast down onto the placed objects, the placed objects' points cast up into
the new object), so objects never interpenetrate and may land on each other (stacking). A landing
is kept only if its centre of mass lies over the convex hull of its contact points.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import open3d as o3d
import trimesh
from scipy.spatial import ConvexHull, QhullError

from scenemaker_ros.config import SceneLayoutConfig
from scenemaker_ros.geometry import (
    raycasting_scene,
    resting_rotations,
    rotations_about_z,
    sample_surface,
    transform_points,
)
from scenemaker_ros.synth.shapes import Shape

CONTACT_TOLERANCE_M = 0.0015  # points this close to the surface below count as contacts
CLEARANCE_M = 0.0002  # gap left after a drop or a slide, so surfaces touch but never cross
SURFACE_POINTS = 600  # samples per object, on top of its vertices, for contact ray casting


@dataclass
class PlacedObject:
    """An object at rest. ``T_world_obj`` (4, 4) = [R @ diag(scale) | t], canonical -> world."""

    shape: Shape
    scale: np.ndarray  # (3,) per-axis scale of the canonical mesh, metres per unit
    T_world_obj: np.ndarray
    symmetry_rotations: np.ndarray  # (M, 3, 3) canonical symmetries that survive the scale
    support: int | None  # index of the object it rests on, None for the support plane


@dataclass
class _Candidate:
    """A posed object being placed: world-frame mesh and contact points, centre of mass."""

    vertices: np.ndarray  # (V, 3) world
    faces: np.ndarray
    points: np.ndarray  # (P, 3) world, vertices + surface samples
    center_of_mass: np.ndarray  # (3,) world
    T_world_obj: np.ndarray

    def translate(self, offset: np.ndarray) -> None:
        self.vertices = self.vertices + offset
        self.points = self.points + offset
        self.center_of_mass = self.center_of_mass + offset
        self.T_world_obj = self.T_world_obj.copy()
        self.T_world_obj[:3, 3] += offset


def layout_scene(shapes: list[Shape], cfg: SceneLayoutConfig, rng: np.random.Generator,
                 clutter: bool = False) -> list[PlacedObject]:
    """Place ``shapes`` one by one; a shape with no valid landing in ``max_attempts`` is dropped.

    Free placements fall in a disc whose radius grows with the objects' mean size and with the
    square root of their number, so small objects make compact scenes.
    """
    scales = [_sample_scale(shape, cfg, rng) for shape in shapes]
    sizes = [float(np.max(np.ptp(shape.vertices, axis=0) * scale))
             for shape, scale in zip(shapes, scales)]
    spread = cfg.clutter_spread if clutter else cfg.spread
    radius = spread * float(np.mean(sizes)) * np.sqrt(len(shapes))
    placed: list[PlacedObject] = []
    meshes: list[_Candidate] = []
    for shape, scale in zip(shapes, scales):
        for _ in range(cfg.max_attempts):
            candidate = _rest_orientation(shape, scale, cfg, rng)
            mode = rng.choice(["free", "touch", "stack"],
                              p=_mode_probabilities(cfg, has_objects=bool(meshes)))
            anchor = meshes[rng.integers(len(meshes))] if meshes else None
            if mode == "stack":
                xy = anchor.center_of_mass[:2] + rng.normal(0.0, 0.01, 2)
            elif mode == "touch":
                xy = _slide_to_touch(candidate, anchor, meshes, rng)
            else:
                xy = _uniform_in_disc(radius, rng) if meshes else np.zeros(2)
            if xy is None:
                continue
            candidate.translate(np.array([*(xy - candidate.center_of_mass[:2]), 0.0]))
            support = _drop(candidate, meshes)
            if support is not False:
                placed.append(PlacedObject(
                    shape=shape, scale=scale, T_world_obj=candidate.T_world_obj,
                    symmetry_rotations=_surviving_symmetries(shape.symmetry_rotations, scale),
                    support=support))
                meshes.append(candidate)
                break
    return placed


def _uniform_in_disc(radius: float, rng: np.random.Generator) -> np.ndarray:
    angle = rng.uniform(0.0, 2.0 * np.pi)
    return radius * np.sqrt(rng.random()) * np.array([np.cos(angle), np.sin(angle)])


def _mode_probabilities(cfg: SceneLayoutConfig, has_objects: bool) -> list[float]:
    if not has_objects:
        return [1.0, 0.0, 0.0]
    touch, stack = cfg.touching_prob, cfg.stacking_prob
    return [1.0 - touch - stack, touch, stack]


def _sample_scale(shape: Shape, cfg: SceneLayoutConfig, rng: np.random.Generator) -> np.ndarray:
    """Longest side log-uniform in [min_size_m, max_size_m]; per-axis jitter by ``anisotropy``.

    Shapes with a continuous symmetry about z keep equal x/y scales so the symmetry survives.
    """
    size = np.exp(rng.uniform(np.log(cfg.min_size_m), np.log(cfg.max_size_m)))
    jitter = 1.0 + rng.uniform(-cfg.anisotropy, cfg.anisotropy, 3)
    if shape.symmetry == "continuous":
        jitter[1] = jitter[0]
    scale = jitter * size
    extent = np.ptp(shape.vertices, axis=0) * scale
    return scale * (size / extent.max())


def _surviving_symmetries(rotations: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Keep the canonical symmetries g with S g S^-1 = g, i.e. those the scale S leaves intact."""
    S = np.diag(scale)
    conjugated = S @ rotations @ np.diag(1.0 / scale)  # (M, 3, 3)
    keep = np.all(np.abs(conjugated - rotations) < 1e-6, axis=(1, 2))
    return rotations[keep]


def _rest_orientation(shape: Shape, scale: np.ndarray, cfg: SceneLayoutConfig,
                      rng: np.random.Generator) -> _Candidate:
    """Upright or a random stable resting pose, a random yaw, lifted above everything."""
    scaled = shape.vertices * scale
    mesh = trimesh.Trimesh(scaled, shape.faces, process=False)
    com = mesh.center_mass if mesh.is_watertight else mesh.convex_hull.center_mass
    rest = np.eye(3)
    if rng.random() >= cfg.upright_prob:
        rests, chances = resting_rotations(scaled, com)
        if len(rests):
            rest = rests[rng.choice(len(rests), p=chances)]
    yaw = rng.uniform(0.0, 2.0 * np.pi)
    R = rotations_about_z(np.array([yaw]))[0] @ rest
    T = np.eye(4)
    T[:3, :3] = R @ np.diag(scale)
    vertices = transform_points(T, shape.vertices)
    T[2, 3] = 2.0 - vertices[:, 2].min()  # start well above any tabletop scene
    samples = sample_surface(shape.vertices, shape.faces, SURFACE_POINTS, rng)
    points = transform_points(T, np.concatenate([shape.vertices, samples]))
    return _Candidate(vertices=transform_points(T, shape.vertices), faces=shape.faces,
                      points=points, center_of_mass=R @ com + T[:3, 3], T_world_obj=T)


def _raycast(meshes: list[tuple[np.ndarray, np.ndarray]], origins: np.ndarray,
             direction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cast rays from ``origins`` (N, 3) along unit ``direction`` into the meshes.

    Returns hit distances (N,) (inf on a miss) and the index of the mesh hit (N,).
    """
    scene = raycasting_scene(meshes)
    rays = np.concatenate([origins, np.broadcast_to(direction, origins.shape)], axis=1)
    hits = scene.cast_rays(o3d.core.Tensor(rays.astype(np.float32)))
    return hits["t_hit"].numpy(), hits["geometry_ids"].numpy().astype(np.int64)


@dataclass
class _Travel:
    """How far a candidate can move along a direction before it meets the placed objects."""

    forward: np.ndarray  # (N,) distance from each candidate point to the placed objects
    hit_ids: np.ndarray  # (N,) index of the placed object each candidate point would hit
    others: np.ndarray  # (M, 3) the placed objects' points
    backward: np.ndarray  # (M,) distance from each of them to the candidate, against the travel
    owners: np.ndarray  # (M,) index of the placed object each of them belongs to


def _gap(candidate: _Candidate, meshes: list[_Candidate], direction: np.ndarray) -> _Travel:
    """Free travel of the candidate along unit ``direction``, found by ray casting both ways."""
    if not meshes:
        n = len(candidate.points)
        return _Travel(forward=np.full(n, np.inf), hit_ids=np.zeros(n, np.int64),
                       others=np.zeros((0, 3)), backward=np.zeros(0),
                       owners=np.zeros(0, np.int64))
    forward, hit_ids = _raycast([(m.vertices, m.faces) for m in meshes], candidate.points,
                                direction)
    others = np.concatenate([m.points for m in meshes])
    owners = np.concatenate([np.full(len(m.points), i) for i, m in enumerate(meshes)])
    backward, _ = _raycast([(candidate.vertices, candidate.faces)], others, -direction)
    return _Travel(forward=forward, hit_ids=hit_ids, others=others, backward=backward,
                   owners=owners)


def _drop(candidate: _Candidate, meshes: list[_Candidate]) -> int | None | bool:
    """Lower the candidate onto the plane or the objects below; False if it would not rest.

    Moves the candidate and returns the supporting object's index (None for the plane).
    """
    travel = _gap(candidate, meshes, np.array([0.0, 0.0, -1.0]))
    to_plane = candidate.points[:, 2]
    fall = min(travel.forward.min(initial=np.inf), travel.backward.min(initial=np.inf),
               to_plane.min())
    on_object = travel.forward <= fall + CONTACT_TOLERANCE_M
    on_plane = to_plane <= fall + CONTACT_TOLERANCE_M
    under = travel.backward <= fall + CONTACT_TOLERANCE_M
    contacts_xy = np.concatenate([candidate.points[on_object | on_plane, :2],
                                  travel.others[under, :2]])
    candidate.translate(np.array([0.0, 0.0, -(fall - CLEARANCE_M)]))
    if not _is_stable(candidate.center_of_mass[:2], contacts_xy):
        return False
    if on_plane.any():
        return None
    supporters = np.concatenate([travel.hit_ids[on_object], travel.owners[under]])
    return int(np.bincount(supporters).argmax())


def _is_stable(com_xy: np.ndarray, contacts_xy: np.ndarray, margin: float = 0.002) -> bool:
    """True if the centre of mass lies inside the contact polygon, ``margin`` metres in."""
    if len(contacts_xy) < 3:
        return False
    try:
        hull = ConvexHull(contacts_xy)
    except QhullError:  # collinear contacts: a knife edge
        return False
    # hull.equations rows: (a, b, c) with a*x + b*y + c <= 0 inside, (a, b) unit normals
    return bool(np.all(hull.equations[:, :2] @ com_xy + hull.equations[:, 2] <= -margin))


def _slide_to_touch(candidate: _Candidate, anchor: _Candidate, meshes: list[_Candidate],
                    rng: np.random.Generator) -> np.ndarray | None:
    """Start beside ``anchor`` on the plane, slide towards it until contact; final (x, y)."""
    direction = rng.normal(size=2)
    direction /= np.linalg.norm(direction)
    reach = (np.ptp(anchor.vertices[:, :2], axis=0).max()
             + np.ptp(candidate.vertices[:, :2], axis=0).max() + 0.05)
    start = anchor.center_of_mass[:2] + direction * reach
    candidate.translate(np.array([*(start - candidate.center_of_mass[:2]),
                                  CLEARANCE_M - candidate.vertices[:, 2].min()]))
    travel = np.array([-direction[0], -direction[1], 0.0])
    gap = _gap(candidate, meshes, travel)
    slide = min(gap.forward.min(initial=np.inf), gap.backward.min(initial=np.inf))
    if not np.isfinite(slide) or slide > 2.0 * reach:
        return None
    return candidate.center_of_mass[:2] + travel[:2] * (slide - CLEARANCE_M)
