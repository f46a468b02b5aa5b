import copy

import numpy as np
import pytest
import trimesh

from scenemaker_ros.config import CarvingConfig, load_config
from scenemaker_ros.geometry import depth_to_points, transform_points
from scenemaker_ros.pose.refine import DepthView
from scenemaker_ros.stages import completion
from scenemaker_ros.stages.carving import snap_to_depth, support_floors, unseen_prefix
from scenemaker_ros.stages.completion import grid_inputs
from scenemaker_ros.stages.geometry import build_geometry, evaluate_geometry, posed_chamfer
from scenemaker_ros.stages.segmentation import SupportPlane, fit_support_plane
from scenemaker_ros.synth.scenes import generate_scene
from scenemaker_ros.synth.shapes import make_shape
from tests.test_geometry_stage import _data_config, _frame_and_points

SEEDS = (1000, 1001, 1002, 1003)  # the scenes test_geometry_stage.py rates retrieval on


@pytest.fixture(scope="module")
def geometry_cfg():
    return load_config().pipeline.geometry


@pytest.fixture(scope="module")
def carving(geometry_cfg):
    return build_geometry(geometry_cfg)


def _frame_points_plane(sample):
    frame, masks, points = _frame_and_points(sample)
    plane = fit_support_plane(frame.depth, frame.camera.K, load_config().pipeline.segmentation
                              .depth_clusters, np.random.default_rng(0))
    return frame, masks, points, plane


def test_carving_is_nearer_than_the_bounding_box():
    """Measured on these 12 objects: Chamfer 6.3 mm vs 12.9 mm for the box (retrieval: 7.7),
    nearer on 11 of 12."""
    backend = build_geometry(load_config().pipeline.geometry)
    samples = [generate_scene(_data_config(), np.random.default_rng(seed)) for seed in SEEDS]
    scores = [s for sample in samples for s in evaluate_geometry(backend, sample)]
    chamfer = np.array([s.chamfer_m for s in scores])
    box = np.array([s.box_chamfer_m for s in scores])
    assert len(scores) >= 10
    assert chamfer.mean() < 0.5 * box.mean()
    assert np.mean(chamfer < box) > 0.8


def test_carved_mesh_stands_on_the_plane_in_metres(carving):
    sample = generate_scene(_data_config(stacking_prob=0.0), np.random.default_rng(1001))
    frame, masks, points, plane = _frame_points_plane(sample)
    for g, obj in zip(carving.geometry(frame, points, masks, plane=plane), sample.scene.objects,
                      strict=True):
        assert g.metric and g.source == "carved" and g.label == "object"
        assert np.allclose(g.T_cam_obj[:3, 2], plane.normal)  # z up (REP 103)
        assert np.allclose(g.T_cam_obj[:3, :3].T @ g.T_cam_obj[:3, :3], np.eye(3))  # no scale
        assert abs(g.vertices[:, 2].min()) < 1e-9  # the origin is on the floor
        assert abs(plane.height(g.T_cam_obj[:3, 3])) < 1e-9  # ... which is the table, not below
        assert trimesh.Trimesh(g.vertices, g.faces).is_watertight
        true = transform_points(obj.pose_matrix, sample.meshes[obj.id][0])
        true_height = np.ptp(plane.height(true))
        assert abs(np.ptp(g.vertices[:, 2]) - true_height) < 0.15 * true_height + 0.005
        assert posed_chamfer(g, *sample.meshes[obj.id], obj.pose_matrix) < 0.01


def test_columns_stop_where_the_camera_sees_through():
    depth = np.full((40, 40), 2.0)
    depth[:, :20] = 1.0  # a wall on the left half, the floor 2 m away on the right
    view = DepthView(depth, np.array([[40.0, 0, 20], [0, 40.0, 20], [0, 0, 1]]))
    z = np.array([1.2, 1.5, 2.5, 3.0])
    left = np.stack([np.full(4, -0.5) * z, np.zeros(4), z], axis=1)  # pixel u = 0: behind the wall
    right = np.stack([np.full(4, 0.25) * z, np.zeros(4), z], axis=1)  # u = 30: open to 2 m
    kept = unseen_prefix(np.stack([left, right]), view, margin=0.01)
    assert kept[0].all()  # hidden by the wall all the way
    assert kept[1].tolist() == [False, False, False, False]  # seen through at 1.2 m already


def test_seen_vertices_move_onto_the_measured_depth():
    depth = np.full((40, 40), 1.0)
    mask = np.zeros((40, 40), bool)
    mask[:, :20] = True  # the object covers the left half
    view = DepthView(depth, np.array([[40.0, 0, 20], [0, 40.0, 20], [0, 0, 1]]))
    vertices = np.array([[-0.25, 0.0, 0.99],  # left, facing the camera, 1 cm short: snaps
                         [-0.25, 0.0, 0.99],  # ... but facing away (a hidden side): stays
                         [0.25, 0.0, 0.99],  # right: off the object's mask, stays
                         [-0.25, 0.0, 0.90]])  # 10 cm short: beyond reach, stays
    normals = np.array([[0.0, 0, -1], [0, 0, 1], [0, 0, -1], [0, 0, -1]])
    snapped = snap_to_depth(vertices, normals, mask, view, reach=0.02)
    np.testing.assert_allclose(snapped[0], vertices[0] / 0.99)  # along its ray, z = 1
    np.testing.assert_array_equal(snapped[1:], vertices[1:])


def test_an_object_on_another_stands_on_its_top():
    plane = SupportPlane(np.array([0.0, 0.0, 1.0]), 0.0, 0.0, 1.0)  # z up, table at z = 0
    rng = np.random.default_rng(0)
    lower = rng.uniform([-0.1, -0.1, 0.0], [0.1, 0.1, 0.1], (500, 3))
    upper = rng.uniform([-0.03, -0.03, 0.1], [0.03, 0.03, 0.16], (200, 3))
    beside = rng.uniform([0.2, -0.05, 0.0], [0.3, 0.05, 0.2], (200, 3))
    floors = support_floors([lower, upper, beside], plane, CarvingConfig())
    assert floors[0] == 0.0 and floors[2] == 0.0
    assert floors[1] == pytest.approx(np.percentile(lower[:, 2], 98))
    assert support_floors([lower, upper], None, CarvingConfig()) == [0.0, 0.0]


def test_without_a_plane_columns_follow_the_rays(carving):
    sample = generate_scene(_data_config(max_objects=2), np.random.default_rng(3))
    frame, masks, points, _ = _frame_points_plane(sample)
    for g, p in zip(carving.geometry(frame, points, masks, plane=None), points, strict=True):
        deepest = transform_points(g.T_cam_obj, g.vertices)[:, 2].max()
        assert deepest > p[:, 2].max() + 0.005  # it has a back
        assert np.allclose(g.T_cam_obj[:3, 2], [0.0, -1.0, 0.0])  # z: the camera's up


def test_too_few_points_give_none(carving):
    sample = generate_scene(_data_config(max_objects=2), np.random.default_rng(3))
    frame, masks, points, plane = _frame_points_plane(sample)
    result = carving.geometry(frame, [points[0][:5], points[1]], masks, plane=plane)
    assert result[0] is None and result[1] is not None


def test_known_meshes_first_then_carving(geometry_cfg, tmp_path):
    mug, box = make_shape("mug", 5), make_shape("box", 3)
    data = _data_config(min_size_m=0.1, max_size_m=0.1, anisotropy=0.0, stacking_prob=0.0)
    sample = generate_scene(data, np.random.default_rng(8), shapes=[mug, mug, box])
    trimesh.Trimesh(mug.vertices * 0.1, mug.faces).export(tmp_path / "mug.ply")
    backend = build_geometry(geometry_cfg, tmp_path)
    frame, masks, points, plane = _frame_points_plane(sample)
    result = backend.geometry(frame, points, masks, plane=plane)
    assert [g.source for g in result] == ["known:mug.ply", "known:mug.ply", "carved"]


def test_segmentation_slips_mended_by_matched_known_meshes(geometry_cfg, tmp_path,
                                                          monkeypatch):
    """Two mugs and a box, segmented badly: mug 0 loses a fragment of its pixels (the right
    fifth) to a segment of its own, and the box's segment takes in the right fifth of mug 1.
    The fragment lies on the mug matched to the rest of mug 0, so it goes; the mug part of the
    box's segment leaves it, and the box is carved from its own points only. The completion
    net sees the pixels the box lost as another object's, as in its training."""
    mug, box = make_shape("mug", 5), make_shape("box", 3)
    data = _data_config(min_size_m=0.1, max_size_m=0.1, anisotropy=0.0, stacking_prob=0.0)
    sample = generate_scene(data, np.random.default_rng(8), shapes=[mug, mug, box])
    trimesh.Trimesh(mug.vertices * 0.1, mug.faces).export(tmp_path / "mug.ply")
    frame, true_masks, _, plane = _frame_points_plane(sample)

    def right_fifth(mask):
        u = np.nonzero(mask)[1]
        return mask & (np.arange(mask.shape[1]) >= np.percentile(u, 80))[None]

    fragment, slice_of_mug = right_fifth(true_masks[0]), right_fifth(true_masks[1])
    masks = np.stack([true_masks[0] & ~fragment, fragment, true_masks[1] & ~slice_of_mug,
                      true_masks[2] | slice_of_mug])
    points = [depth_to_points(frame.depth, frame.camera.K, m) for m in masks]
    box_alone = build_geometry(geometry_cfg).geometry(frame, points[:3] + [
        depth_to_points(frame.depth, frame.camera.K, true_masks[2])], true_masks[[0, 0, 1, 2]],
        plane=plane)[3]

    others = []  # the completion net's "other objects" input of each carved object

    def recording_grid_inputs(grid, depth, K, mask, other):
        others.append(other)
        return grid_inputs(grid, depth, K, mask, other)

    monkeypatch.setattr(completion, "grid_inputs", recording_grid_inputs)
    result = build_geometry(geometry_cfg, tmp_path).geometry(frame, points, masks, plane=plane)
    assert [None if g is None else g.source for g in result] == [
        "known:mug.ply", None, "known:mug.ply", "carved"]
    assert len(others) == 1 and others[0][slice_of_mug & (frame.depth > 0)].mean() > 0.99
    carved, alone = (transform_points(g.T_cam_obj, g.vertices) for g in (result[3], box_alone))
    assert np.abs(np.ptp(carved, axis=0) - np.ptp(alone, axis=0)).max() < 0.005

    off = copy.deepcopy(geometry_cfg)  # the check can fail: without the mending, both slips stay
    off.retrieval.known_explain_m = 0.0
    unmended = build_geometry(off, tmp_path).geometry(frame, points, masks, plane=plane)
    assert unmended[1] is not None and unmended[3].source == "carved"
    merged = transform_points(unmended[3].T_cam_obj, unmended[3].vertices)
    assert np.abs(np.ptp(merged, axis=0) - np.ptp(alone, axis=0)).max() > 0.01
