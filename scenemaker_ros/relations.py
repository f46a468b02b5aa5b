"""Scene-graph relations from posed meshes: support, contact, proximity, containment, viewpoint.

Predicates are those of ``msg/Relation.msg``: <subject> <predicate> <object>. Geometry is judged
in the gravity-aligned world frame of ``export/world.py`` (z up, metres); the support plane is the
object ``GROUND_ID`` (-1). Each object is represented by surface samples plus its vertices;
closest-point distances from those to the other mesh are exact (open3d ray-casting scenes).

- ``on`` / ``supported_by``: in contact (``contact_tolerance_m``) and at least half of the
  subject's contact points have an upward-facing part of the other surface directly beneath
  (a short ray cast down; meshes are repaired and oriented outward first); the plane
  supports an object whose lowest point is within the tolerance of it. ``on`` implies
  ``supported_by``; an object inside another is ``supported_by`` but not ``on`` it.
- ``supported_by`` (leaning, hanging): an object whose centre projects outside the hull of its
  support-from-below contacts is also supported by every object it touches otherwise.
- ``touching``: in contact with no support between the two; ``near``: closest-point distance
  above the tolerance and at most ``near_distance_m``. Both listed in both directions.
- ``inside`` / ``contains``: at least ``inside_fraction`` of the subject's samples lie in the
  other's convex hull (so objects in open containers such as bowls count), the subject's hull
  being the smaller.
- ``left_of`` / ``right_of`` / ``in_front_of`` / ``behind``: from the camera's viewpoint, on the
  horizontal plane: bearing difference (left/right) and distance along the viewing direction
  (front = closer); confidence 1 once the two objects' extents no longer overlap that way.

Confidences lie in [0, 1]; relations below ``min_confidence`` are left out. Distances are the
closest-point distance (m) for geometric predicates and None for the viewpoint ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import open3d as o3d
from scipy.spatial import ConvexHull, QhullError

from scenemaker_ros.config import RelationsConfig
from scenemaker_ros.errors import SceneMakerError
from scenemaker_ros.export.world import WorldFrame, gravity_frame, repaired_mesh
from scenemaker_ros.geometry import (
    raycasting_scene,
    sample_surface,
    surface_distances,
    transform_points,
)
from scenemaker_ros.scene import Scene, load_scene, posed_vertices, save_scene

PREDICATES = ("on", "supported_by", "touching", "near", "inside", "contains", "left_of",
              "right_of", "in_front_of", "behind")
GROUND_ID = -1
_BELOW_MIN_FRACTION = 0.5  # share of contact points with the other object right beneath
_LEAN_CONFIDENCE = 0.7  # leaning / hanging support is inferred from statics: less certain


@dataclass(frozen=True)
class Relation:
    """<subject> <predicate> <object> by object id (``GROUND_ID`` for the support plane);
    ``confidence`` in [0, 1]; ``distance``: closest-point distance in m, or None."""

    subject: int
    predicate: str
    object: int
    confidence: float
    distance: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The ``scene.json`` form (confidence rounded to 1e-4, distance to 1e-6 m)."""
        distance = None if self.distance is None else round(float(self.distance), 6)
        return {"subject": self.subject, "predicate": self.predicate, "object": self.object,
                "confidence": round(float(self.confidence), 4), "distance": distance}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Relation:
        return cls(data["subject"], data["predicate"], data["object"], data["confidence"],
                   data.get("distance"))


@dataclass
class _Body:
    """One object in the world frame."""

    id: int
    points: np.ndarray  # (N, 3) surface samples and vertices, m
    centre: np.ndarray  # (3,) mean of the area-uniform samples (stands in for the mass centre)
    lo: np.ndarray  # (3,) axis-aligned box
    hi: np.ndarray
    surface: o3d.t.geometry.RaycastingScene
    hull: np.ndarray | None  # (H, 4) convex-hull planes, n.x + d <= 0 inside; None if flat
    hull_volume: float


def _body(object_id: int, vertices: np.ndarray, faces: np.ndarray, cfg: RelationsConfig,
          rng: np.random.Generator) -> _Body:
    """Samples, box, ray-casting scene and convex hull of a mesh (V, 3) world / (F, 3)."""
    samples = sample_surface(vertices, faces, cfg.samples_per_object, rng)
    oriented = repaired_mesh(vertices, faces)  # outward normals for the facing test
    surface = raycasting_scene([(oriented.vertices, oriented.faces)])
    try:
        hull = ConvexHull(vertices)
        planes, volume = hull.equations, float(hull.volume)
    except QhullError:
        planes, volume = None, 0.0
    return _Body(id=object_id, points=np.concatenate([samples, vertices]),
                 centre=samples.mean(axis=0), lo=vertices.min(axis=0), hi=vertices.max(axis=0),
                 surface=surface, hull=planes, hull_volume=volume)


def _beneath(points: np.ndarray, body: _Body, tol: float) -> np.ndarray:
    """Whether an upward-facing part of the body's surface lies within ``tol`` straight below
    each point (N, 3) -> (N,) bool. Rays start ``tol`` above each point, so slight
    interpenetration still counts; the facing test rejects a body resting on the point."""
    rays = np.zeros((len(points), 6), dtype=np.float32)
    rays[:, :3] = points + [0.0, 0.0, tol]
    rays[:, 5] = -1.0
    hits = body.surface.cast_rays(o3d.core.Tensor(rays))
    facing_up = hits["primitive_normals"].numpy()[:, 2] > 0
    return (hits["t_hit"].numpy() <= 2.0 * tol) & facing_up


def _inside_fraction(inner: _Body, outer: _Body, tol: float) -> float:
    """Share of ``inner``'s points in ``outer``'s convex hull grown by ``tol``."""
    if outer.hull is None:
        return 0.0
    return float(np.mean((inner.points @ outer.hull[:, :3].T + outer.hull[:, 3]).max(1) <= tol))


def _closeness(distance: float, tol: float) -> float:
    """Contact confidence: 1 at distance 0, 0.5 at the contact tolerance."""
    return float(1.0 - 0.5 * min(max(distance, 0.0), tol) / tol)


def _distance_to_support(point: np.ndarray, support: np.ndarray) -> float:
    """Distance (m, 0 inside) from a 2D point (2,) to the convex hull of 2D points (K, 2); a
    line or point of support (collinear contacts) is measured as its segment."""
    try:
        planes = ConvexHull(support).equations
        return max(0.0, float((planes[:, :2] @ point + planes[:, 2]).max()))
    except QhullError:
        mean = support.mean(axis=0)
        axis = np.linalg.svd(support - mean)[2][0]
        along = (support - mean) @ axis
        t = np.clip((point - mean) @ axis, along.min(), along.max())
        return float(np.linalg.norm(mean + t * axis - point))


# -----------------------------------------------------------------------------
# relation families


def _ground_relations(bodies: list[_Body], ground_z: float, tol: float) -> list[Relation]:
    """on / supported_by the support plane for bodies whose lowest point is within ``tol``."""
    relations = []
    for body in bodies:
        gap = float(body.lo[2] - ground_z)
        if gap <= tol:
            confidence, distance = _closeness(gap, tol), max(gap, 0.0)
            relations += [Relation(body.id, "on", GROUND_ID, confidence, distance),
                          Relation(body.id, "supported_by", GROUND_ID, confidence, distance)]
    return relations


@dataclass
class _Pair:
    """Geometry of an ordered pair (a, b) whose boxes are within the near distance."""

    distance: float  # closest-point distance between the two surfaces (symmetric), m
    contact: np.ndarray  # (K, 3) a's points within the contact tolerance of b
    below: float  # share of those with b's surface right beneath, facing up
    inside: float  # share of a's points in b's convex hull (0 unless a's hull is smaller)


def _pairs(bodies: list[_Body], cfg: RelationsConfig) -> dict[tuple[int, int], _Pair]:
    """Pair geometry by (index a, index b) for every ordered pair of bodies whose boxes are
    within the near distance (farther pairs can have no contact, near or inside relation)."""
    tol, pairs, to_other = cfg.contact_tolerance_m, {}, {}
    for a, body_a in enumerate(bodies):
        for b, body_b in enumerate(bodies):
            gap = np.maximum(body_a.lo - body_b.hi, body_b.lo - body_a.hi).max()
            if a != b and gap <= cfg.near_distance_m:
                to_other[a, b] = surface_distances(body_b.surface, body_a.points)
    for (a, b), dist in to_other.items():
        contact = bodies[a].points[dist <= tol]
        below = float(np.mean(_beneath(contact, bodies[b], tol))) if len(contact) else 0.0
        smaller = bodies[a].hull_volume < bodies[b].hull_volume
        inside = _inside_fraction(bodies[a], bodies[b], tol) if smaller else 0.0
        distance = float(min(dist.min(), to_other[b, a].min()))
        pairs[a, b] = _Pair(distance, contact, below, inside)
    return pairs


def _support_relations(bodies: list[_Body], pairs: dict, ground_z: float, cfg: RelationsConfig
                       ) -> tuple[list[Relation], set[tuple[int, int]]]:
    """on / supported_by between objects (from below, then leaning / hanging for objects that
    would tip); returns them and the (a, b) index pairs where a is supported by b."""
    relations, supported = [], set()
    for (a, b), pair in pairs.items():
        if len(pair.contact) and pair.below >= _BELOW_MIN_FRACTION:
            confidence = _closeness(pair.distance, cfg.contact_tolerance_m) * pair.below
            subject, obj = bodies[a].id, bodies[b].id
            relations.append(Relation(subject, "supported_by", obj, confidence, pair.distance))
            if pair.inside < cfg.inside_fraction:
                relations.append(Relation(subject, "on", obj, confidence, pair.distance))
            supported.add((a, b))
    from_below = supported | {(b, a) for a, b in supported}
    leaning = set()
    for a, body in enumerate(bodies):
        if _is_stable(a, body, pairs, supported, ground_z, cfg.contact_tolerance_m):
            continue
        for (i, b), pair in pairs.items():
            if i == a and len(pair.contact) and (a, b) not in from_below:
                confidence = _closeness(pair.distance, cfg.contact_tolerance_m) * _LEAN_CONFIDENCE
                relations.append(Relation(body.id, "supported_by", bodies[b].id, confidence,
                                          pair.distance))
                leaning.add((a, b))
    return relations, supported | leaning


def _is_stable(a: int, body: _Body, pairs: dict, supported: set, ground_z: float, tol: float
               ) -> bool:
    """Whether the body's centre projects into the hull of its support-from-below contacts
    (within a margin of the tolerance or 5 % of its width)."""
    contacts = [pairs[i, b].contact for i, b in supported if i == a]
    contacts.append(body.points[body.points[:, 2] <= ground_z + tol])
    support = np.concatenate(contacts)[:, :2]
    if len(support) == 0:
        return False
    margin = max(tol, 0.05 * float((body.hi - body.lo)[:2].max()))
    return _distance_to_support(body.centre[:2], support) <= margin


def _pair_relations(bodies: list[_Body], pairs: dict, supported: set, cfg: RelationsConfig
                    ) -> list[Relation]:
    """inside / contains, touching and near."""
    tol, near, relations = cfg.contact_tolerance_m, cfg.near_distance_m, []
    linked = supported | {(b, a) for a, b in supported}
    for (a, b), pair in pairs.items():
        ids = bodies[a].id, bodies[b].id
        if pair.inside >= cfg.inside_fraction:
            relations += [Relation(ids[0], "inside", ids[1], pair.inside, pair.distance),
                          Relation(ids[1], "contains", ids[0], pair.inside, pair.distance)]
            linked |= {(a, b), (b, a)}
    for (a, b), pair in pairs.items():
        ids = bodies[a].id, bodies[b].id
        if (a, b) in linked or pair.distance > near:
            continue
        if pair.distance <= tol:
            relations.append(Relation(ids[0], "touching", ids[1],
                                      _closeness(pair.distance, tol), pair.distance))
        else:
            confidence = 1.0 - 0.5 * (pair.distance - tol) / (near - tol)
            relations.append(Relation(ids[0], "near", ids[1], confidence, pair.distance))
    return relations


def _viewpoint_relations(bodies: list[_Body], frame: WorldFrame) -> list[Relation]:
    """left_of / right_of and in_front_of / behind, judged on the horizontal plane from the
    camera: lateral separation at the pair's mean depth (bearing difference) and depth
    difference, each over the sum of the two half-extents in that direction."""
    T = frame.camera_to_world
    forward = T[:3, 2] * [1.0, 1.0, 0.0]
    if np.linalg.norm(forward) < 1e-6:  # looking straight down: the image's up is forward
        forward = -T[:3, 1] * [1.0, 1.0, 0.0]
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    lateral, depth, half_width, half_depth = [], [], [], []
    for body in bodies:
        rel = body.points - T[:3, 3]
        side, ahead = rel @ right, rel @ forward
        lateral.append((body.centre - T[:3, 3]) @ right)
        depth.append(max((body.centre - T[:3, 3]) @ forward, 1e-3))
        half_width.append((side.max() - side.min()) / 2)
        half_depth.append((ahead.max() - ahead.min()) / 2)
    relations = []
    for a, body_a in enumerate(bodies):
        for b, body_b in enumerate(bodies):
            if a == b:
                continue
            mean_depth = (depth[a] + depth[b]) / 2
            shift = (lateral[b] / depth[b] - lateral[a] / depth[a]) * mean_depth
            left = shift / (half_width[a] + half_width[b] + 1e-9)
            ahead = (depth[b] - depth[a]) / (half_depth[a] + half_depth[b] + 1e-9)
            if left > 0:
                conf = min(float(left), 1.0)
                relations += [Relation(body_a.id, "left_of", body_b.id, conf),
                              Relation(body_b.id, "right_of", body_a.id, conf)]
            if ahead > 0:
                conf = min(float(ahead), 1.0)
                relations += [Relation(body_a.id, "in_front_of", body_b.id, conf),
                              Relation(body_b.id, "behind", body_a.id, conf)]
    return relations


# -----------------------------------------------------------------------------
# entry points


def compute_relations(scene: Scene, meshes_posed: list[tuple[np.ndarray, np.ndarray]],
                      config: RelationsConfig) -> list[Relation]:
    """All relations of ``scene``; ``meshes_posed``: each object's mesh in the scene's (camera)
    frame, [(vertices (V, 3) m, faces (F, 3))] in ``scene.objects`` order (``posed_vertices``)."""
    if len(meshes_posed) != len(scene.objects):
        raise SceneMakerError(f"relations: {len(meshes_posed)} meshes for "
                              f"{len(scene.objects)} objects")
    if not scene.objects:
        return []
    frame = gravity_frame(scene, meshes_posed)
    rng = np.random.default_rng(config.seed)
    bodies = [_body(obj.id, transform_points(frame.camera_to_world, v), f, config, rng)
              for obj, (v, f) in zip(scene.objects, meshes_posed)]
    pairs = _pairs(bodies, config)
    support, supported = _support_relations(bodies, pairs, frame.ground_z, config)
    relations = (_ground_relations(bodies, frame.ground_z, config.contact_tolerance_m) + support
                 + _pair_relations(bodies, pairs, supported, config)
                 + _viewpoint_relations(bodies, frame))
    return [r for r in relations if r.confidence >= config.min_confidence]


def write_relations(scene_dir: str | Path, config: RelationsConfig) -> list[Relation]:
    """Compute the relations of a scene folder and store them in its ``scene.json``."""
    scene = load_scene(scene_dir)
    relations = compute_relations(scene, posed_vertices(scene_dir, scene), config)
    scene.relations = [relation.to_dict() for relation in relations]
    save_scene(scene, scene_dir)
    return relations
