"""Open-set shapes from pybullet_data random_urdfs 000-499 (benchmark only, never training)."""

import numpy as np
import pytest
import trimesh

from scenemaker_ros.errors import SceneMakerError
from scenemaker_ros.synth.scenes import generate_scene
from scenemaker_ros.synth.urdf_shapes import (
    BROKEN_RANDOM_URDFS,
    USABLE_RANDOM_URDFS,
    _load_mesh,
    load_random_urdf_shape,
    random_urdf_path,
    random_urdf_shapes,
)
from tests.helpers import small_data_config

INDICES = [0, 1, 37, 123, 499]  # 37: pieces with coincident corners; 123: 123 pieces


@pytest.mark.parametrize("index", [-1, 500, 999, True, 2.0, "7"])
def test_index_outside_policy_is_refused(index):
    with pytest.raises(SceneMakerError, match="data policy permits only .* 000-499"):
        load_random_urdf_shape(index)


def test_broken_mesh_is_refused_and_listed():
    assert BROKEN_RANDOM_URDFS == {168}
    assert len(USABLE_RANDOM_URDFS) == 499
    with pytest.raises(SceneMakerError, match="non-finite"):
        load_random_urdf_shape(168)


@pytest.mark.parametrize("index", INDICES)
def test_canonical_frame(index):
    shape = load_random_urdf_shape(index)
    v, f = shape.vertices, shape.faces
    assert (shape.family, shape.seed, shape.symmetry) == (f"urdf_{index:03d}", index, "none")
    np.testing.assert_array_equal(shape.symmetry_rotations, np.eye(3)[None])
    assert v.dtype == np.float64 and f.dtype == np.int64 and v.shape[1] == f.shape[1] == 3
    assert not (v.flags.writeable or f.flags.writeable or shape.symmetry_rotations.flags.writeable)
    np.testing.assert_allclose(v.min(0) + v.max(0), 0.0, atol=1e-12)
    assert np.ptp(v, axis=0).max() == pytest.approx(1.0, abs=1e-12)
    assert f.min() == 0 and f.max() == len(v) - 1
    mesh = shape.to_trimesh()
    assert mesh.is_watertight and mesh.is_winding_consistent and mesh.volume > 0
    assert mesh.nondegenerate_faces().all()


@pytest.mark.parametrize("index", [0, 123])
def test_keeps_urdf_axes(index):
    """No axis is permuted or flipped: the extents match the raw OBJ's (uniform URDF scale)."""
    obj = random_urdf_path(index).with_suffix(".obj")
    raw = trimesh.load(obj, force="mesh", process=False, skip_materials=True).vertices
    shape = load_random_urdf_shape(index)
    np.testing.assert_allclose(np.ptp(shape.vertices, 0), np.ptp(raw, 0) / np.ptp(raw, 0).max())
    centre = (raw.min(0) + raw.max(0)) / 2
    corner = raw[np.argmax(raw.sum(1))]  # the +x+y+z-most raw vertex stays in that role
    expected = (corner - centre) / np.ptp(raw, 0).max()
    np.testing.assert_allclose(shape.vertices[np.argmax(shape.vertices.sum(1))], expected,
                               atol=1e-12)


def test_cached_per_process():
    assert load_random_urdf_shape(5) is load_random_urdf_shape(np.int64(5))
    assert [s.seed for s in random_urdf_shapes([7, 5, 7])] == [7, 5, 7]


def test_urdf_scale_and_origin_are_applied(tmp_path):
    """Mesh point p lands at Rz(yaw) Ry(pitch) Rx(roll) (scale * p) + xyz in the link frame."""
    (tmp_path / "m.obj").write_text(
        "o a\nv 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\nf 1 3 2\nf 1 2 4\nf 1 4 3\nf 2 3 4\n")
    (tmp_path / "m.urdf").write_text(
        '<robot name="t"><link name="l"><visual><origin rpy="0 0 1.5707963267948966" '
        'xyz="5 0 0"/><geometry><mesh filename="m.obj" scale="2 3 4"/></geometry></visual>'
        "</link></robot>")
    vertices, faces = _load_mesh(tmp_path / "m.urdf")
    expected = {(5.0, 0.0, 0.0), (5.0, 2.0, 0.0), (2.0, 0.0, 0.0), (5.0, 0.0, 4.0)}
    assert {tuple(np.round(v, 9) + 0.0) for v in vertices} == expected
    assert trimesh.Trimesh(vertices, faces, process=False).volume > 0  # outward after transform


def test_visual_mesh_outside_object_folder_is_refused(tmp_path):
    (tmp_path / "m.urdf").write_text(
        '<robot name="t"><link name="l"><visual><geometry><mesh filename="../x/m.obj"/>'
        "</geometry></visual></link></robot>")
    with pytest.raises(SceneMakerError, match="outside the object's folder"):
        _load_mesh(tmp_path / "m.urdf")


def test_generate_scene_with_urdf_shapes():
    shapes = random_urdf_shapes([0, 37, 123, 499])
    by_family = {s.family: s for s in shapes}
    sample = generate_scene(small_data_config(), np.random.default_rng(0), shapes=shapes)
    assert sample.rgb.shape[:2] == (240, 320)
    assert len(sample.scene.objects) >= 2
    for i, obj in enumerate(sample.scene.objects):
        shape = by_family[obj.label]
        assert obj.attributes["shape_seed"] == shape.seed
        assert obj.attributes["symmetry"] == "none"
        assert sample.meshes[i][0] is shape.vertices and sample.meshes[i][1] is shape.faces
    assert (sample.instance > 0).any()
