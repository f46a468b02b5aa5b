"""Analytic checks of scenemaker_ros.geometry: sampling, poses, resting poses, Umeyama, ICP, box
IoU."""

import numpy as np
import pytest
import trimesh
from scipy.spatial.transform import Rotation

from scenemaker_ros.geometry import (
    aabb_iou,
    aabb_iou_matrix,
    compose_pose,
    decompose_pose,
    horizontal_axes,
    icp,
    resting_rotations,
    sample_surface,
    solid_centroid,
    transform_points,
    umeyama,
)
from scenemaker_ros.synth.shapes import make_shape


def l_shape_points(n: int, seed: int = 0) -> np.ndarray:
    """(n, 3) surface samples of an L-shaped pair of boxes: no symmetry for ICP to slip along."""
    parts = [
        trimesh.creation.box(bounds=[[0, 0, 0], [1.0, 0.3, 0.4]]),
        trimesh.creation.box(bounds=[[0, 0.3, 0], [0.3, 0.9, 0.4]]),
    ]
    mesh = trimesh.util.concatenate(parts)
    return sample_surface(mesh.vertices, mesh.faces, n, np.random.default_rng(seed))


def test_sample_surface_on_surface_and_area_weighted():
    # two disjoint triangles in the plane z = 0, of areas 1 and 3
    vertices = np.array(
        [[0, 0, 0], [2, 0, 0], [0, 1, 0], [10, 0, 0], [13, 0, 0], [10, 2, 0]], float
    )
    faces = np.array([[0, 1, 2], [3, 4, 5]])
    points = sample_surface(vertices, faces, 40000, np.random.default_rng(0))
    assert points.shape == (40000, 3) and points.dtype == np.float64
    assert np.all(points[:, 2] == 0)
    x, y = points[:, 0], points[:, 1]
    in_small = (x >= 0) & (y >= 0) & (x / 2 + y <= 1 + 1e-12)
    in_large = (x >= 10) & (y >= 0) & ((x - 10) / 3 + y / 2 <= 1 + 1e-12)
    assert np.all(in_small ^ in_large)
    # area weighting: 3 / (1 + 3) of the samples on the large one; binomial std is 0.002
    assert in_large.mean() == pytest.approx(0.75, abs=0.01)
    # deterministic given the generator
    again = sample_surface(vertices, faces, 40000, np.random.default_rng(0))
    np.testing.assert_array_equal(points, again)


def test_sample_surface_rejects_zero_area():
    vertices = np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0]], float)  # collinear
    with pytest.raises(ValueError):
        sample_surface(vertices, [[0, 1, 2]], 10, np.random.default_rng(0))


def test_compose_decompose_round_trip():
    R = Rotation.from_rotvec([0.3, -1.2, 0.7]).as_matrix()
    t, s = np.array([0.5, -1.0, 3.0]), np.array([0.5, 2.0, 3.0])
    T = compose_pose(R, t, s)
    np.testing.assert_allclose(T[:3, :3], R @ np.diag(s), atol=1e-12)
    R2, t2, s2 = decompose_pose(T)
    np.testing.assert_allclose(R2, R, atol=1e-12)
    np.testing.assert_allclose(t2, t)
    np.testing.assert_allclose(s2, s)
    assert np.linalg.det(R2) == pytest.approx(1.0)
    # transform_points agrees with the homogeneous product
    p = np.random.default_rng(0).normal(size=(5, 3))
    expected = (T @ np.c_[p, np.ones(5)].T).T[:, :3]
    np.testing.assert_allclose(transform_points(T, p), expected, atol=1e-12)


@pytest.mark.parametrize(
    "T",
    [
        compose_pose(np.eye(3), np.zeros(3), [1.0, 0.0, 1.0]),  # zero scale
        compose_pose(np.diag([1.0, 1.0, -1.0]), np.zeros(3), 1.0),  # reflection
        np.array([[1, 0.5, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]]),  # shear
        np.full((4, 4), np.nan),
    ],
)
def test_decompose_rejects_degenerate(T):
    with pytest.raises(ValueError):
        decompose_pose(T)


def test_umeyama_recovers_similarity():
    src = np.random.default_rng(1).normal(size=(50, 3))
    R = Rotation.from_rotvec([0.4, 0.1, -2.0]).as_matrix()
    t, s = np.array([1.0, -2.0, 0.5]), 2.5
    dst = s * src @ R.T + t
    R2, t2, s2 = umeyama(src, dst, with_scale=True)
    np.testing.assert_allclose(R2, R, atol=1e-10)
    np.testing.assert_allclose(t2, t, atol=1e-10)
    assert s2 == pytest.approx(s)
    R3, t3, s3 = umeyama(src, src @ R.T + t, with_scale=False)
    np.testing.assert_allclose(R3, R, atol=1e-10)
    np.testing.assert_allclose(t3, t, atol=1e-10)
    assert s3 == 1.0


def test_umeyama_never_returns_a_reflection():
    src = np.random.default_rng(2).normal(size=(30, 3))
    R, _, _ = umeyama(src, src * [1, 1, -1], with_scale=False)  # best fit would be a mirror
    assert np.linalg.det(R) == pytest.approx(1.0)


def test_icp_recovers_small_rigid_transform():
    src = l_shape_points(3000)
    T_true = compose_pose(
        Rotation.from_rotvec(np.deg2rad([2, -4, 3])).as_matrix(), [0.03, -0.02, 0.05], 1
    )
    result = icp(src, transform_points(T_true, src))
    np.testing.assert_allclose(result.transform, T_true, atol=1e-6)
    assert result.fitness == 1.0 and result.rmse < 1e-6 and 0 < result.iterations < 50


def test_icp_recovers_scale():
    src = l_shape_points(3000)
    T_true = compose_pose(
        Rotation.from_rotvec(np.deg2rad([0, 3, -2])).as_matrix(), [0.02, 0, -0.03], 1.1
    )
    result = icp(src, transform_points(T_true, src), with_scale=True, max_iterations=200)
    _, _, s = decompose_pose(result.transform)
    np.testing.assert_allclose(s, 1.1, atol=1e-4)
    np.testing.assert_allclose(result.transform, T_true, atol=1e-4)
    # the rigid variant cannot absorb the scale
    assert icp(src, transform_points(T_true, src)).rmse > 1e-3


def test_icp_max_correspondence_distance_sets_fitness():
    dst = l_shape_points(1000)
    src = np.concatenate([dst, dst + [0, 0, 10.0]])  # half of src are far-away outliers
    result = icp(src, dst, max_correspondence_distance=0.5)
    assert result.fitness == 0.5
    np.testing.assert_allclose(result.transform, np.eye(4), atol=1e-9)  # outliers ignored
    assert icp(src, dst).fitness == 1.0  # no limit: every point is paired, outliers pull


def test_aabb_iou_analytic():
    unit = np.zeros(3), np.ones(3)
    assert aabb_iou(*unit, *unit) == 1.0
    assert aabb_iou(*unit, [0.5, 0, 0], [1.5, 1, 1]) == pytest.approx(0.5 / 1.5)
    assert aabb_iou(*unit, [2.0, 0, 0], [3.0, 1, 1]) == 0.0
    assert aabb_iou(*unit, [1.0, 0, 0], [2.0, 1, 1]) == 0.0  # touching faces
    iou = aabb_iou_matrix(
        np.zeros((2, 3)), [[1, 1, 1], [2, 2, 2]], np.zeros((3, 3)), np.ones((3, 3))
    )
    assert iou.shape == (2, 3)
    np.testing.assert_allclose(iou, [[1, 1, 1], [1 / 8] * 3])


def test_project_points_pinhole_and_behind_camera():
    from scenemaker_ros.geometry import project_points

    K = np.array([[500.0, 0, 320], [0, 400.0, 240], [0, 0, 1]])
    uv = project_points(K, np.array([[0.2, -0.1, 2.0], [0.0, 0.0, -1.0]]))
    np.testing.assert_allclose(uv[0], [320 + 500 * 0.1, 240 - 400 * 0.05])
    assert np.isnan(uv[1]).all()


def _facet_normals(rotations):
    """The outward normal of the facet each resting rotation (S, 3, 3) turns down: R n = -z."""
    assert np.allclose(rotations @ rotations.transpose(0, 2, 1), np.eye(3), atol=1e-9)
    assert np.allclose(np.linalg.det(rotations), 1.0)
    return -rotations[:, 2, :]


def test_resting_rotations_of_a_box_a_cone_and_a_leaning_block():
    box = make_shape("box", 0)
    rotations, chance = resting_rotations(box.vertices, box.vertices.mean(axis=0))
    normals = _facet_normals(rotations)
    axis_aligned = np.abs(normals).max(axis=1) > 0.999  # its six faces (bevels may balance too)
    assert axis_aligned.sum() == 6 and np.isclose(chance.sum(), 1.0)
    assert chance[axis_aligned].sum() > 0.8
    # a cone with its mass low: the base is by far the likeliest rest
    cone = make_shape("cone", 0)
    com = np.array([0.0, 0.0, cone.vertices[:, 2].min() + np.ptp(cone.vertices[:, 2]) / 4])
    rotations, chance = resting_rotations(cone.vertices, com)
    normals = _facet_normals(rotations)
    assert np.allclose(normals[np.argmax(chance)], [0, 0, -1], atol=1e-6)
    assert chance.max() > 0.3
    # a strongly leaning parallelepiped cannot rest on its bottom or top: the centre of mass
    # projects outside them
    base = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], float)
    leaning = np.concatenate([base, base + [2.0, 0.0, 0.5]])
    normals = _facet_normals(resting_rotations(leaning, leaning.mean(axis=0))[0])
    assert len(normals) == 4 and np.all(np.abs(normals[:, 2]) < 0.99)


def test_horizontal_axes_are_right_handed_with_up():
    for up in (np.array([0.0, 0.0, 1.0]), np.array([0.96, 0.0, 0.28]), np.array([0.0, -0.6, -0.8])):
        frame = np.column_stack([horizontal_axes(up), up])
        np.testing.assert_allclose(frame.T @ frame, np.eye(3), atol=1e-12)
        assert np.isclose(np.linalg.det(frame), 1.0)


def test_solid_centroid_of_a_box_a_cone_and_a_flat_sheet():
    box = trimesh.creation.box(bounds=[[0, 0, 0], [1.0, 2.0, 3.0]])
    extra = np.concatenate([box.vertices, [[0.1, 0.1, 0.1]] * 50])  # interior points: no weight
    np.testing.assert_allclose(solid_centroid(extra), [0.5, 1.0, 1.5], atol=1e-12)
    cone = trimesh.creation.cone(radius=1.0, height=2.0, sections=64)  # base at z = 0
    np.testing.assert_allclose(solid_centroid(cone.vertices), [0.0, 0.0, 0.5], atol=1e-9)
    sheet = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], float)
    np.testing.assert_allclose(solid_centroid(sheet), [0.5, 0.5, 0.0])
    assert resting_rotations(sheet, solid_centroid(sheet))[0].shape == (0, 3, 3)
