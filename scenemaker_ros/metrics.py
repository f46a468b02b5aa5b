"""Scene metrics of the SceneMaker paper (CD-S, F-Score-S, IoU-B, CD-O, F-Score-O), two protocols.

A scene is a list of PosedMesh, every mesh placed in one common frame (the camera optical frame,
metres). Each scene gets n_scene_samples surface samples (default 20000, spread over its objects
by area) and each object n_object_samples (default 4000); prediction and ground truth draw from
different random streams derived from one seed, so identical scenes score a small non-zero
sampling floor, as in any real evaluation. Samples are expressed in an evaluation frame that
depends on the protocol and compared by nearest-neighbour distances (scipy cKDTree):

  paper   (compare with the MIDI / SceneMaker tables) each scene is normalised on its own into
          [-0.95, 0.95]^3 (its box centred, its longest side -> 1.9), then the prediction is
          aligned to the GT by rigid ICP from identity. CD = mean(d_pg^2) + mean(d_gp^2).
          A rigid shift of the whole prediction is forgiven; a rotation only partly, as it
          changes the prediction's box and so its normalisation scale, which rigid ICP keeps.
  metric  (what a robot needs) both scenes in the GT's frame, scaled once so the GT scene box's
          longest side is 2 (centred on it): errors in position, rotation and size all count.
          CD = (mean(d_pg) + mean(d_gp)) / 2, in units of half the GT scene's longest side.

d_pg: distance from each predicted sample to its nearest GT sample; d_gp the reverse. F-Score at
tau (default 0.1, in evaluation-frame units) is the harmonic mean of precision mean(d_pg < tau)
and recall mean(d_gp < tau).

Boxes are the axis-aligned boxes of each object's surface in the evaluation frame (exactly: of its
face vertices, the limit of its samples' box). Predicted objects are matched to GT objects by the
Hungarian algorithm maximising box IoU, ties broken by centre distance; pairs with IoU 0 are not
matches. IoU-B = sum of matched IoUs / n_gt (a missed GT object counts 0).
Object level, per matched pair: paper normalises each object on its own by its box into
[-0.95, 0.95]^3 (after the scene alignment); metric applies the GT object's box (its centre, its
longest side -> 2) to both. F-Score-O = sum of matched F-Scores / n_gt (a missed GT object counts
0); CD-O = mean CD over the matched pairs.

Empty predictions: predicted meshes with zero surface area (failed objects) are never sampled or
matched. With no usable predicted object, IoU-B and the F-Scores are 0 and CD-S is NaN (a distance
to an empty set is undefined); CD-O is NaN whenever nothing matched. average_metrics averages CDs
over the scenes where they are defined and counts the others. An empty ground truth, or a GT mesh
without surface area, raises ValueError.
"""

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial import cKDTree

from scenemaker_ros.geometry import (
    aabb_iou_matrix,
    decompose_pose,
    icp,
    sample_surface,
    transform_points,
    triangle_areas,
)

Protocol = Literal["paper", "metric"]
PROTOCOLS: tuple[Protocol, ...] = ("paper", "metric")
HALF_EXTENT = {"paper": 0.95, "metric": 1.0}  # boxes' longest side -> 2 * HALF_EXTENT
ICP_SAMPLES = 2000  # paper: predicted scene samples (a uniform random subset) used to fit ICP


@dataclass
class PosedMesh:
    """A triangle mesh placed in the scene frame (camera optical frame, metres)."""

    vertices: np.ndarray  # (V, 3) float64
    faces: np.ndarray  # (F, 3) int64 indices into vertices

    def __post_init__(self):
        self.vertices = np.asarray(self.vertices, dtype=np.float64)
        self.faces = np.asarray(self.faces, dtype=np.int64)
        if self.faces.size == 0:
            self.faces = self.faces.reshape(0, 3)
        if self.vertices.ndim != 2 or self.vertices.shape[1] != 3:
            raise ValueError(f"vertices must be (V, 3), got {self.vertices.shape}")
        if self.faces.ndim != 2 or self.faces.shape[1] != 3:
            raise ValueError(f"faces must be (F, 3), got {self.faces.shape}")
        if self.faces.size and not 0 <= self.faces.min() <= self.faces.max() < len(self.vertices):
            raise ValueError("faces index vertices out of range")

    @classmethod
    def from_pose(cls, vertices: np.ndarray, faces: np.ndarray, pose: np.ndarray) -> "PosedMesh":
        """A canonical mesh placed by pose (4, 4), canonical -> scene frame."""
        return cls(transform_points(pose, vertices), faces)

    @property
    def area(self) -> float:
        """Surface area in m^2; 0 for a failed (empty or degenerate) mesh."""
        return float(triangle_areas(self.vertices, self.faces).sum())


@dataclass
class SceneMetrics:
    """Metrics of one predicted scene against its ground truth (see the module docstring)."""

    protocol: Protocol
    cd_s: float  # scene Chamfer distance; NaN if the prediction is empty
    fscore_s: float  # scene F-Score at tau, in [0, 1]
    iou_b: float  # sum of matched box IoUs / n_gt, in [0, 1]
    cd_o: float  # mean object Chamfer distance over matched pairs; NaN if no match
    fscore_o: float  # sum of matched object F-Scores / n_gt, in [0, 1]
    matches: list[tuple[int, int, float]] = field(default_factory=list)  # (pred, gt, IoU)
    n_pred: int = 0
    n_gt: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


# -----------------------------------------------------------------------------
# building blocks


def _boxes(meshes: list[PosedMesh], T: np.ndarray) -> np.ndarray:
    """(K, 2, 3) min and max corners of each mesh's surface after the (4, 4) transform T."""
    boxes = []
    for m in meshes:
        points = transform_points(T, m.vertices[np.unique(m.faces)])
        boxes.append([points.min(0), points.max(0)])
    return np.array(boxes)


def _normaliser(box: np.ndarray, half_extent: float) -> np.ndarray:
    """(4, 4) similarity moving a (2, 3) box's centre to 0 and its longest side to 2*half_extent."""
    scale = 2 * half_extent / (box[1] - box[0]).max()
    T = np.diag([scale, scale, scale, 1.0])
    T[:3, 3] = -scale * box.mean(0)
    return T


def _scene_normaliser(meshes: list[PosedMesh], half_extent: float) -> np.ndarray:
    """_normaliser of the box around all the meshes, in the camera frame."""
    boxes = _boxes(meshes, np.eye(4))
    return _normaliser(np.stack([boxes[:, 0].min(0), boxes[:, 1].max(0)]), half_extent)


def _sample(meshes: list[PosedMesh], n_scene: int, n_object: int, rng: np.random.Generator):
    """Scene samples (n_scene, 3), spread over the meshes by area, and (n_object, 3) per mesh."""
    offsets = np.cumsum([0] + [len(m.vertices) for m in meshes[:-1]])
    vertices = np.concatenate([m.vertices for m in meshes])
    faces = np.concatenate([m.faces + o for m, o in zip(meshes, offsets, strict=True)])
    scene = sample_surface(vertices, faces, n_scene, rng)
    return scene, [sample_surface(m.vertices, m.faces, n_object, rng) for m in meshes]


def _chamfer_fscore(pred: np.ndarray, gt: np.ndarray, tau: float, squared: bool):
    """(CD, F-Score at tau) between (N, 3) and (M, 3) samples (see the module docstring)."""
    d_pg = cKDTree(gt).query(pred)[0]
    d_gp = cKDTree(pred).query(gt)[0]
    cd = np.mean(d_pg**2) + np.mean(d_gp**2) if squared else (np.mean(d_pg) + np.mean(d_gp)) / 2
    precision, recall = np.mean(d_pg < tau), np.mean(d_gp < tau)
    fscore = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return float(cd), float(fscore)


def _match(pred_boxes: np.ndarray, gt_boxes: np.ndarray) -> list[tuple[int, int, float]]:
    """Hungarian matching of (P, 2, 3) to (G, 2, 3) boxes maximising IoU; IoU-0 pairs dropped."""
    iou = aabb_iou_matrix(pred_boxes[:, 0], pred_boxes[:, 1], gt_boxes[:, 0], gt_boxes[:, 1])
    dist = np.linalg.norm(pred_boxes.mean(1)[:, None] - gt_boxes.mean(1)[None], axis=-1)  # (P, G)
    cost = -iou + 1e-6 * dist / max(dist.max(), 1e-12)  # tie-break far below any IoU difference
    rows, cols = linear_sum_assignment(cost)
    return sorted(
        (int(i), int(j), float(iou[i, j])) for i, j in zip(rows, cols, strict=True) if iou[i, j] > 0
    )


# -----------------------------------------------------------------------------
# evaluation


def evaluate_scene(
    pred: Sequence[PosedMesh],
    gt: Sequence[PosedMesh],
    protocol: Protocol = "paper",
    n_scene_samples: int = 20000,
    n_object_samples: int = 4000,
    tau: float = 0.1,
    seed: int = 0,
) -> SceneMetrics:
    """Compare a predicted scene with its ground truth, both lists of PosedMesh in one frame.

    Definitions (protocols, sample counts, tau, matching, empty scenes) in the module docstring.
    Deterministic for a given seed. Raises ValueError on an unknown protocol or an empty GT.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if len(gt) == 0:
        raise ValueError("the ground-truth scene has no objects")
    for j, m in enumerate(gt):
        if not m.area > 0:
            raise ValueError(f"ground-truth object {j} has no surface area")
    kept = [i for i, m in enumerate(pred) if m.area > 0]  # failed objects are never matched
    if not kept:
        return SceneMetrics(protocol, np.nan, 0.0, 0.0, np.nan, 0.0, [], len(pred), len(gt))
    n_pred, pred = len(pred), [pred[i] for i in kept]
    paper, half_extent = protocol == "paper", HALF_EXTENT[protocol]
    rng_pred, rng_gt = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    pred_scene, pred_objects = _sample(pred, n_scene_samples, n_object_samples, rng_pred)
    gt_scene, gt_objects = _sample(gt, n_scene_samples, n_object_samples, rng_gt)

    # evaluation frames: (4, 4) maps from the camera frame, one per side
    to_gt = _scene_normaliser(gt, half_extent)
    if paper:  # normalise the prediction on its own, then align it rigidly to the GT
        to_pred = _scene_normaliser(pred, half_extent)
        src = transform_points(to_pred, pred_scene[:ICP_SAMPLES])  # samples are in random order
        to_pred = icp(src, transform_points(to_gt, gt_scene)).transform @ to_pred
    else:
        to_pred = to_gt

    # scene level
    pred_scene, gt_scene = transform_points(to_pred, pred_scene), transform_points(to_gt, gt_scene)
    cd_s, fscore_s = _chamfer_fscore(pred_scene, gt_scene, tau, squared=paper)

    # boxes and matching, in the evaluation frames
    pred_boxes, gt_boxes = _boxes(pred, to_pred), _boxes(gt, to_gt)
    matches = _match(pred_boxes, gt_boxes)

    # object level: paper normalises each object by its own box, metric both by the GT's box
    cds, fscores = [], []
    for i, j, _ in matches:
        gt_norm = _normaliser(gt_boxes[j], half_extent) @ to_gt
        pred_norm = _normaliser(pred_boxes[i] if paper else gt_boxes[j], half_extent) @ to_pred
        cd, fscore = _chamfer_fscore(
            transform_points(pred_norm, pred_objects[i]),
            transform_points(gt_norm, gt_objects[j]),
            tau,
            squared=paper,
        )
        cds.append(cd)
        fscores.append(fscore)

    return SceneMetrics(
        protocol=protocol,
        cd_s=cd_s,
        fscore_s=fscore_s,
        iou_b=sum(iou for _, _, iou in matches) / len(gt),
        cd_o=float(np.mean(cds)) if cds else np.nan,
        fscore_o=sum(fscores) / len(gt),
        matches=[(kept[i], j, iou) for i, j, iou in matches],
        n_pred=n_pred,
        n_gt=len(gt),
    )


def evaluate_both(
    pred: Sequence[PosedMesh], gt: Sequence[PosedMesh], **kwargs
) -> dict[str, SceneMetrics]:
    """evaluate_scene under each protocol -> {"paper": ..., "metric": ...}; kwargs as there."""
    return {p: evaluate_scene(pred, gt, protocol=p, **kwargs) for p in PROTOCOLS}


def average_metrics(results: Sequence[SceneMetrics]) -> dict[str, float]:
    """Means over scenes of one protocol, for benchmark tables.

    F-Scores and IoU-B average over all scenes (an empty prediction counts 0). CD-S and CD-O
    average over the scenes where they are defined (NaN if none); n_cd_s_undefined and
    n_cd_o_undefined count the scenes left out (empty prediction, or no match for CD-O).
    """
    if not results:
        raise ValueError("no results to average")
    protocols = {r.protocol for r in results}
    if len(protocols) > 1:
        raise ValueError(f"cannot average results of different protocols: {sorted(protocols)}")
    out: dict[str, float] = {"n_scenes": len(results)}
    for key in ("cd_s", "fscore_s", "iou_b", "cd_o", "fscore_o"):
        values = np.array([getattr(r, key) for r in results], dtype=np.float64)
        defined = values[np.isfinite(values)]
        out[key] = float(defined.mean()) if len(defined) else np.nan
        if key.startswith("cd"):
            out[f"n_{key}_undefined"] = len(values) - len(defined)
    return out


def pose_errors(T_pred: np.ndarray, T_gt: np.ndarray, symmetries: np.ndarray | None = None
                ) -> tuple[float, float, float]:
    """One object's pose errors: rotation (degrees), translation (metres), scale (mean relative).

    Poses (4, 4) = [R diag(s) | t] map the canonical mesh into one frame. The rotation error is
    the smallest angle between R_pred and R_gt g over the canonical symmetry rotations g (M, 3, 3)
    (identity only when None), so any symmetric equivalent of the truth scores 0. The scale error
    is mean_i |s_pred,i / s_gt,i - 1|.
    """
    R_pred, t_pred, s_pred = decompose_pose(T_pred)
    R_gt, t_gt, s_gt = decompose_pose(T_gt)
    symmetries = np.eye(3)[None] if symmetries is None else np.asarray(symmetries)
    cos = (np.einsum("ij,mij->m", R_pred, R_gt[None] @ symmetries) - 1) / 2  # trace(Rp^T Rg g)
    rotation = float(np.degrees(np.arccos(np.clip(cos.max(), -1.0, 1.0))))
    return rotation, float(np.linalg.norm(t_pred - t_gt)), float(np.mean(np.abs(s_pred / s_gt - 1)))
