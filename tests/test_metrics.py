"""Analytic checks of scenemaker_ros.metrics under both protocols.

Sampling floor used below: two independent uniform samplings of N points on one surface of area A
(2D Poisson, density N / A) put a sample's nearest neighbour at E[d] = 1 / (2 sqrt(N / A)) and
E[d^2] = A / (pi N). So identical scenes score CD ~= sqrt(A / N) / 2 under "metric" (mean of the
two directed means) and CD ~= 2 A / (pi N) under "paper" (sum of two mean squares), with A the
area in the evaluation frame. Nearest-sample distances never undercut distance-to-surface, so a
known surface distance is a lower bound and the floor bounds the excess.
"""

import math

import numpy as np
import pytest
import trimesh
from scipy.spatial.transform import Rotation

from scenemaker_ros.geometry import compose_pose, transform_points
from scenemaker_ros.metrics import (
    PosedMesh,
    SceneMetrics,
    average_metrics,
    evaluate_both,
    evaluate_scene,
)

N_SCENE, N_OBJECT = 20000, 4000  # the defaults


def box(lo, hi) -> PosedMesh:
    mesh = trimesh.creation.box(bounds=[lo, hi])
    return PosedMesh(mesh.vertices, mesh.faces)


def moved(scene: list[PosedMesh], T: np.ndarray) -> list[PosedMesh]:
    return [PosedMesh(transform_points(T, m.vertices), m.faces) for m in scene]


# three boxes in the camera optical frame (metres); the scene box's longest side is z: 1.9 m
SCENE = [
    box([-0.9, 0.2, 2.5], [-0.3, 0.9, 3.1]),
    box([0.1, 0.4, 2.8], [0.7, 0.9, 3.2]),
    box([-0.2, -0.4, 3.6], [0.6, 0.9, 4.4]),
]
SCENE_SIDE = 1.9
UNIT_CUBE = box([-0.5, -0.5, 2.5], [0.5, 0.5, 3.5])
HALF_EXTENT = {"paper": 0.95, "metric": 1.0}


def sampling_floor(protocol: str, area: float, longest_side: float, n: int) -> float:
    """Expected CD of a surface against itself (module docstring), area in m^2, side in m."""
    area = area * (2 * HALF_EXTENT[protocol] / longest_side) ** 2  # in evaluation units
    return 2 * area / (math.pi * n) if protocol == "paper" else math.sqrt(area / n) / 2


def object_side(m: PosedMesh) -> float:
    return float(np.ptp(m.vertices, axis=0).max())


@pytest.mark.parametrize("protocol", ["paper", "metric"])
def test_identical_scene_scores_the_sampling_floor(protocol):
    r = evaluate_scene(SCENE, SCENE, protocol=protocol)
    floor_s = sampling_floor(protocol, sum(m.area for m in SCENE), SCENE_SIDE, N_SCENE)
    floor_o = np.mean([sampling_floor(protocol, m.area, object_side(m), N_OBJECT) for m in SCENE])
    assert 0 < r.cd_s < 1.25 * floor_s  # honest: different sample streams, non-zero floor
    assert 0 < r.cd_o < 1.25 * floor_o
    assert r.fscore_s > 0.999 and r.fscore_o > 0.999
    assert [(i, j) for i, j, _ in r.matches] == [(0, 0), (1, 1), (2, 2)]
    if protocol == "metric":
        assert r.iou_b == 1.0  # boxes are exact and no alignment is estimated
    else:
        assert r.iou_b > 0.98  # ICP fits a tiny motion to the sampling noise (0.990-0.998)
    assert (r.n_pred, r.n_gt) == (3, 3)


def test_far_offset_cd_is_the_offset():
    # A unit cube moved D = 10 m along x: a moved point q + D e_x is nearest to the GT face
    # x = +0.5 at distance q_x + D - 0.5, whose mean over the surface is D - 0.5 (E[q_x] = 0);
    # the same holds the other way. The GT cube's longest side (1 m) becomes 2 units.
    d = 10.0
    pred = moved([UNIT_CUBE], compose_pose(np.eye(3), [d, 0, 0], 1))
    r = evaluate_scene(pred, [UNIT_CUBE], protocol="metric")
    assert r.cd_s == pytest.approx(2 * (d - 0.5), abs=0.02)
    # disjoint boxes: IoU 0, so no match
    assert r.matches == [] and r.iou_b == 0.0 and r.fscore_o == 0.0 and math.isnan(r.cd_o)
    assert r.fscore_s == 0.0


def test_small_offset_iou_and_cd():
    # Unit cube moved d along x. IoU = (1 - d) / (1 + d). Mean distance from the moved surface
    # to the GT surface (metres), by face: x = +0.5 + d face: d; x = -0.5 + d face (inside the
    # GT cube): E[min(d, U, V)], U, V ~ U(0, 0.5), = (1 - (1 - 2d)^3) / 6; the four side faces
    # lie on the GT's except a strip of width d: 4 * d * d / 2. Same both ways; x2 for units.
    d = 0.2
    pred = moved([UNIT_CUBE], compose_pose(np.eye(3), [d, 0, 0], 1))
    r = evaluate_scene(pred, [UNIT_CUBE], protocol="metric")
    assert r.matches == [(0, 0, pytest.approx((1 - d) / (1 + d), abs=1e-12))]
    exact = 2 * (d + (1 - (1 - 2 * d) ** 3) / 6 + 2 * d**2) / 6
    floor = sampling_floor("metric", UNIT_CUBE.area, 1.0, N_SCENE)
    assert exact - 0.003 < r.cd_s < exact + floor


def test_missing_object_lowers_iou_b():
    r = evaluate_scene(SCENE[:2], SCENE, protocol="metric")
    assert r.iou_b == pytest.approx(2 / 3, abs=1e-12)
    assert [(i, j) for i, j, _ in r.matches] == [(0, 0), (1, 1)]
    assert r.fscore_o == pytest.approx(2 / 3, abs=0.01)  # the missed object counts 0
    assert r.cd_o < 0.05  # over matched pairs only
    assert r.fscore_s < 0.9  # recall misses the third object's surface
    assert (r.n_pred, r.n_gt) == (2, 3)


@pytest.mark.parametrize("degrees", [0.0, 5.0])
def test_rigid_motion_forgiven_by_paper_protocol_only(degrees):
    centre = np.array([0.0, 0.25, 3.45])  # rotate about the scene centre, then shift
    R = Rotation.from_rotvec(np.deg2rad([0, degrees, 0])).as_matrix()
    pred = moved(SCENE, compose_pose(R, centre - R @ centre + [0.3, -0.1, 0.4], 1))
    paper, metric = evaluate_both(pred, SCENE).values()
    floor = sampling_floor("paper", sum(m.area for m in SCENE), SCENE_SIDE, N_SCENE)
    assert paper.cd_s < 1.5 * floor and paper.fscore_s > 0.999 and paper.iou_b > 0.95
    assert paper.fscore_o > 0.999
    floor = sampling_floor("metric", sum(m.area for m in SCENE), SCENE_SIDE, N_SCENE)
    assert metric.cd_s > 10 * floor and metric.fscore_s < 0.5 and metric.iou_b < 0.2


@pytest.mark.parametrize("protocol", ["paper", "metric"])
def test_matching_is_order_invariant(protocol):
    shifts = [[0.05, 0, 0], [0, 0.08, 0], [0, 0, -0.1]]
    pred = [moved([m], compose_pose(np.eye(3), s, 1))[0] for m, s in zip(SCENE, shifts)]
    pred.append(box([1.0, -0.6, 2.4], [1.3, -0.3, 2.7]))  # a spurious object: matches nothing
    perm = [2, 3, 0, 1]
    r = evaluate_scene(pred, SCENE, protocol=protocol)
    rp = evaluate_scene([pred[k] for k in perm], SCENE, protocol=protocol)
    assert [(i, j) for i, j, _ in r.matches] == [(0, 0), (1, 1), (2, 2)]
    assert sorted((perm[i], j) for i, j, _ in rp.matches) == [(i, j) for i, j, _ in r.matches]
    # boxes are exact; only the samples (one random stream per side, drawn object by object)
    # and so the paper's ICP depend on the order: those metrics agree to sampling noise
    tol = 1e-12 if protocol == "metric" else 0.02
    assert rp.iou_b == pytest.approx(r.iou_b, abs=tol)
    for key in ("cd_s", "fscore_s", "cd_o", "fscore_o"):
        assert getattr(rp, key) == pytest.approx(getattr(r, key), rel=0.1)


def test_empty_prediction_and_averaging():
    failed = PosedMesh(np.zeros((0, 3)), np.zeros((0, 3), int))  # a failed object: no surface
    for pred in ([], [failed]):
        r = evaluate_scene(pred, SCENE)
        assert r.iou_b == r.fscore_s == r.fscore_o == 0.0 and r.matches == []
        assert math.isnan(r.cd_s) and math.isnan(r.cd_o)
        assert (r.n_pred, r.n_gt) == (len(pred), 3)
    # a failed object keeps its index out of the matches; the others keep theirs
    r = evaluate_scene([failed, *SCENE], SCENE, protocol="metric")
    assert [(i, j) for i, j, _ in r.matches] == [(1, 0), (2, 1), (3, 2)] and r.n_pred == 4
    good = evaluate_scene(SCENE, SCENE)
    mean = average_metrics([good, evaluate_scene([], SCENE)])
    assert mean["n_scenes"] == 2 and mean["n_cd_s_undefined"] == mean["n_cd_o_undefined"] == 1
    assert mean["cd_s"] == good.cd_s and mean["iou_b"] == pytest.approx(good.iou_b / 2)


def test_invalid_inputs_raise():
    with pytest.raises(ValueError):
        evaluate_scene(SCENE, [])
    with pytest.raises(ValueError):
        evaluate_scene(SCENE, SCENE, protocol="midi")
    with pytest.raises(ValueError):
        PosedMesh(np.zeros((4, 3)), [[0, 1, 4]])  # face index out of range
    with pytest.raises(ValueError):
        average_metrics([evaluate_scene(SCENE, SCENE, protocol=p) for p in ("paper", "metric")])


def test_results_are_deterministic_and_serialisable():
    kw = {"n_scene_samples": 5000, "n_object_samples": 1000}
    a, b = (
        evaluate_scene(SCENE[:2], SCENE, seed=3, **kw),
        evaluate_scene(SCENE[:2], SCENE, seed=3, **kw),
    )
    assert a == b and isinstance(a, SceneMetrics)
    d = a.as_dict()
    assert set(d) >= {"cd_s", "fscore_s", "iou_b", "cd_o", "fscore_o", "matches", "n_pred", "n_gt"}
    assert evaluate_scene(SCENE[:2], SCENE, seed=4, **kw).cd_s != a.cd_s  # the seed drives sampling
