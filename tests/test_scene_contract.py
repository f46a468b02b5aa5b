import json

import numpy as np
import pytest
import trimesh

from scenemaker_ros.errors import SceneMakerError
from scenemaker_ros.scene import (
    CameraIntrinsics,
    Scene,
    SceneObject,
    load_mesh,
    load_scene,
    posed_vertices,
    save_scene,
)

K = np.array([[600.0, 0, 320], [0, 600, 240], [0, 0, 1]])


def _pose(angle=0.3, t=(0.1, -0.05, 0.8), s=(0.1, 0.2, 0.05)):
    c, si = np.cos(angle), np.sin(angle)
    T = np.eye(4)
    T[:3, :3] = np.array([[c, -si, 0], [si, c, 0], [0, 0, 1]]) @ np.diag(s)
    T[:3, 3] = t
    return T


def _scene():
    objects = [SceneObject(id=0, label="box", score=0.9, mesh="meshes/box.ply",
                           pose_matrix=_pose(), attributes={"family": "box"}),
               SceneObject(id=3, label="ball", score=1.0, mesh="meshes/ball.obj",
                           pose_matrix=_pose(1.0, (0, 0, 1), (0.05, 0.05, 0.05)))]
    return Scene(frame_id="camera_color_optical_frame",
                 camera=CameraIntrinsics(640, 480, K, np.eye(4)), objects=objects, stamp=12.5)


def _meshes():
    box = trimesh.creation.box()
    ball = trimesh.creation.icosphere(2)
    return {0: (box.vertices, box.faces), 3: (ball.vertices, ball.faces)}


def test_round_trip(tmp_path):
    save_scene(_scene(), tmp_path, _meshes())
    loaded = load_scene(tmp_path)
    assert [o.id for o in loaded.objects] == [0, 3]
    np.testing.assert_allclose(loaded.objects[0].pose_matrix, _pose())
    np.testing.assert_allclose(loaded.objects[0].scale, [0.1, 0.2, 0.05])
    np.testing.assert_allclose(loaded.objects[0].rotation @ loaded.objects[0].rotation.T, np.eye(3),
                               atol=1e-12)
    np.testing.assert_allclose(loaded.camera.K, K)
    assert loaded.stamp == 12.5 and loaded.objects[0].attributes == {"family": "box"}
    vertices, faces = load_mesh(tmp_path / "meshes" / "box.ply")
    assert faces.shape == (12, 3)
    posed = posed_vertices(tmp_path, loaded)
    np.testing.assert_allclose(posed[0][0], vertices @ _pose()[:3, :3].T + _pose()[:3, 3])


def _write(tmp_path, data):
    (tmp_path / "scene.json").write_text(json.dumps(data))


def _valid_dict(tmp_path):
    save_scene(_scene(), tmp_path, _meshes())
    return json.loads((tmp_path / "scene.json").read_text())


def test_missing_file_and_bad_json(tmp_path):
    with pytest.raises(SceneMakerError, match="no such file"):
        load_scene(tmp_path)
    (tmp_path / "scene.json").write_text("{not json")
    with pytest.raises(SceneMakerError, match="not valid JSON"):
        load_scene(tmp_path)


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["objects"][0].pop("mesh"), "'mesh' is a required property"),
    (lambda d: d["objects"][0].__setitem__("score", 1.5), "objects/0/score"),
    (lambda d: d["objects"][0].__setitem__("translation", [9, 9, 9]), "disagrees"),
    (lambda d: d["objects"][1].__setitem__("id", 0), "not unique"),
    (lambda d: d["objects"][0].__setitem__("mesh", "/abs/path.ply"), "objects/0/mesh"),
    (lambda d: d["camera"].__setitem__("K", [[0, 0, 320], [0, 600, 240], [0, 0, 1]]),
     "focal length"),
    (lambda d: d.__setitem__("extra", 1), "Additional properties"),
])
def test_invalid_scene_names_the_problem(tmp_path, mutate, message):
    data = _valid_dict(tmp_path)
    mutate(data)
    _write(tmp_path, data)
    with pytest.raises(SceneMakerError, match=message):
        load_scene(tmp_path)


def test_improper_rotation_rejected(tmp_path):
    data = _valid_dict(tmp_path)
    mirror = np.diag([1.0, 1.0, -1.0])
    obj = data["objects"][0]
    obj["rotation"] = mirror.tolist()
    obj["pose_matrix"] = np.block([[mirror * 0.1, np.zeros((3, 1))], [0, 0, 0, 1]]).tolist()
    obj["scale"], obj["translation"] = [0.1] * 3, [0, 0, 0]
    _write(tmp_path, data)
    with pytest.raises(SceneMakerError, match="proper rotation"):
        load_scene(tmp_path)


def test_missing_mesh_and_corrupt_mesh(tmp_path):
    save_scene(_scene(), tmp_path, _meshes())
    (tmp_path / "meshes" / "ball.obj").unlink()
    with pytest.raises(SceneMakerError, match="mesh 'meshes/ball.obj' not found"):
        load_scene(tmp_path)
    (tmp_path / "broken.ply").write_bytes(b"ply\nformat garbage\n")
    with pytest.raises(SceneMakerError, match="broken.ply"):
        load_mesh(tmp_path / "broken.ply")
