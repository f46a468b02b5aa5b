"""Scene-graph relations on constructed box scenes (world z up, camera looking along +y)."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import trimesh
from scipy.spatial.transform import Rotation

from scenemaker_ros.cli import main
from scenemaker_ros.config import RelationsConfig
from scenemaker_ros.errors import SceneMakerError
from scenemaker_ros.geometry import compose_pose
from scenemaker_ros.relations import (
    GROUND_ID,
    PREDICATES,
    Relation,
    compute_relations,
    write_relations,
)
from scenemaker_ros.scene import (
    CameraIntrinsics,
    Scene,
    SceneObject,
    load_scene,
    posed_vertices,
    save_scene,
    scene_schema,
)
from scenemaker_ros.synth.scenes import look_at

REPO = Path(__file__).resolve().parents[1]
K = np.array([[600.0, 0, 320], [0, 600, 240], [0, 0, 1]])
CAMERA_TO_WORLD = look_at([0.0, -0.8, 0.6], [0.0, 0.0, 0.05])  # looks along +y, tilted down
FIRST_ID = 10  # object ids differ from list positions


def box_pose(size, centre, rotation=None) -> np.ndarray:
    """World pose (4, 4) of the unit cube scaled to ``size`` (3,) m, centred at ``centre``,
    turned by ``rotation`` (3, 3; identity if None)."""
    return compose_pose(np.eye(3) if rotation is None else rotation, centre, size)


def save_box_scene(scene_dir, poses, camera_to_world=CAMERA_TO_WORLD, metadata=None,
                   meshes=None) -> Scene:
    """A scene folder with one object per world pose (4, 4): a unit cube unless ``meshes`` maps
    its position to (vertices, faces). Ids start at FIRST_ID; ``camera_to_world`` None leaves it
    out of the scene (the poses still go through CAMERA_TO_WORLD)."""
    cube = trimesh.creation.box()
    objects, files = [], {}
    for i, pose in enumerate(poses):
        obj = SceneObject(id=FIRST_ID + i, label="box", score=1.0, mesh=f"meshes/box_{i}.ply",
                          pose_matrix=np.linalg.inv(CAMERA_TO_WORLD) @ pose)
        objects.append(obj)
        files[obj.id] = (meshes or {}).get(i, (cube.vertices, cube.faces))
    scene = Scene(frame_id="camera_optical_frame",
                  camera=CameraIntrinsics(640, 480, K, camera_to_world), objects=objects,
                  metadata=metadata or {})
    save_scene(scene, scene_dir, files)
    return load_scene(scene_dir)


def relations_of(scene_dir, **config) -> list[Relation]:
    scene = load_scene(scene_dir)
    return compute_relations(scene, posed_vertices(scene_dir, scene), RelationsConfig(**config))


def find(relations, subject, predicate, obj) -> Relation | None:
    hits = [r for r in relations if (r.subject, r.predicate, r.object) == (subject, predicate, obj)]
    return hits[0] if hits else None


A, B, C = FIRST_ID, FIRST_ID + 1, FIRST_ID + 2
STACK = [box_pose([0.2, 0.2, 0.1], [0, 0, 0.05]),
         box_pose([0.1, 0.1, 0.1], [0.02, 0, 0.15], Rotation.from_euler("z", 0.4).as_matrix())]


@pytest.mark.parametrize("camera_to_world", [CAMERA_TO_WORLD, None])
def test_box_on_box_is_on_and_supported(tmp_path, camera_to_world):
    """Also with the gravity direction estimated from the meshes (no camera_to_world)."""
    save_box_scene(tmp_path, STACK, camera_to_world)
    relations = relations_of(tmp_path)
    on = find(relations, B, "on", A)
    assert on is not None and on.confidence > 0.9 and on.distance < 1e-3
    assert find(relations, B, "supported_by", A) is not None
    assert find(relations, A, "on", B) is None and find(relations, A, "supported_by", B) is None
    assert find(relations, A, "on", GROUND_ID) is not None
    assert find(relations, B, "on", GROUND_ID) is None
    assert find(relations, B, "touching", A) is None  # support, not mere contact
    for r in relations:
        assert r.predicate in PREDICATES and 0.0 <= r.confidence <= 1.0


def test_boxes_apart_are_near_not_touching(tmp_path):
    save_box_scene(tmp_path, [box_pose([0.1, 0.1, 0.1], [-0.1, 0, 0.05]),
                              box_pose([0.1, 0.1, 0.1], [0.05, 0, 0.05])])  # 5 cm gap
    relations = relations_of(tmp_path)
    assert find(relations, A, "touching", B) is None and find(relations, B, "touching", A) is None
    for subject, obj in ((A, B), (B, A)):
        near = find(relations, subject, "near", obj)
        assert near is not None and near.distance == pytest.approx(0.05, abs=1e-3)
        assert 0.5 <= near.confidence <= 1.0
    far = relations_of(tmp_path, near_distance_m=0.04)
    assert find(far, A, "near", B) is None


def test_boxes_side_by_side_touch(tmp_path):
    save_box_scene(tmp_path, [box_pose([0.1, 0.1, 0.1], [-0.05, 0, 0.05]),
                              box_pose([0.1, 0.1, 0.2], [0.05, 0.02, 0.1])])
    relations = relations_of(tmp_path)
    for subject, obj in ((A, B), (B, A)):
        touching = find(relations, subject, "touching", obj)
        assert touching is not None and touching.distance < 1e-3 and touching.confidence > 0.9
        assert find(relations, subject, "supported_by", obj) is None
        assert find(relations, subject, "near", obj) is None


def test_left_right_front_behind_from_the_camera(tmp_path):
    """The camera looks along +y: -x is its left, smaller y is closer to it."""
    save_box_scene(tmp_path, [box_pose([0.1, 0.1, 0.1], [-0.25, 0, 0.05]),
                              box_pose([0.1, 0.1, 0.1], [0.25, 0, 0.05]),
                              box_pose([0.1, 0.1, 0.1], [0.0, -0.3, 0.05])])
    relations = relations_of(tmp_path)
    assert find(relations, A, "left_of", B).confidence == 1.0
    assert find(relations, B, "right_of", A).confidence == 1.0
    assert find(relations, B, "left_of", A) is None and find(relations, A, "right_of", B) is None
    for far in (A, B):
        assert find(relations, C, "in_front_of", far).confidence == 1.0
        assert find(relations, far, "behind", C).confidence == 1.0
    assert find(relations, A, "in_front_of", B) is None  # same depth
    assert all(r.distance is None for r in relations if r.predicate in ("left_of", "behind"))


def _tray() -> tuple[np.ndarray, np.ndarray]:
    """An open box (floor 0.02 thick, walls) in a unit cube's frame: a container."""
    parts = [trimesh.creation.box([1, 1, 0.1], trimesh.transformations.translation_matrix(
        [0, 0, -0.45]))]
    for axis, sign in ((0, 1), (0, -1), (1, 1), (1, -1)):
        extents, offset = [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]
        extents[axis], offset[axis] = 0.05, sign * 0.475
        parts.append(trimesh.creation.box(extents,
                                          trimesh.transformations.translation_matrix(offset)))
    mesh = trimesh.util.concatenate(parts)
    return mesh.vertices, mesh.faces


def test_object_in_a_container_is_inside_and_supported(tmp_path):
    save_box_scene(tmp_path, [box_pose([0.3, 0.3, 0.2], [0, 0, 0.1]),
                              box_pose([0.08, 0.08, 0.08], [0.02, 0.03, 0.02 + 0.04])],
                   meshes={0: _tray()})
    relations = relations_of(tmp_path)
    inside, contains = find(relations, B, "inside", A), find(relations, A, "contains", B)
    assert inside is not None and contains is not None and inside.confidence == 1.0
    assert find(relations, B, "supported_by", A) is not None
    assert find(relations, B, "on", A) is None and find(relations, A, "inside", B) is None
    assert find(relations, A, "on", B) is None and find(relations, A, "supported_by", B) is None
    assert find(relations, B, "on", GROUND_ID) is None


def test_leaning_plank_is_supported_by_the_box(tmp_path):
    tilt = Rotation.from_euler("x", -0.35).as_matrix()  # top leans towards +y
    plank = box_pose([0.2, 0.01, 0.25], [0, 0, 0], tilt)
    corners = trimesh.creation.box().vertices @ plank[:3, :3].T
    plank[:3, 3] = [0, 0.05 - corners[:, 1].max(), -corners[:, 2].min()]  # on the ground, its
    wall = box_pose([0.3, 0.1, 0.3], [0, 0.1, 0.15])  # top edge against the wall's face y=0.05
    save_box_scene(tmp_path, [plank, wall])
    relations = relations_of(tmp_path)
    lean = find(relations, A, "supported_by", B)
    assert lean is not None and lean.confidence < 0.8  # inferred from statics
    assert find(relations, A, "on", B) is None and find(relations, A, "on", GROUND_ID)
    assert find(relations, B, "supported_by", A) is None
    assert find(relations, A, "touching", B) is None


def test_write_relations_round_trip_and_cli(tmp_path, capsys):
    save_box_scene(tmp_path, STACK)
    written = write_relations(tmp_path, RelationsConfig())
    stored = load_scene(tmp_path).relations
    assert [Relation.from_dict(r).to_dict() for r in stored] == [r.to_dict() for r in written]
    assert main(["relations", str(tmp_path)]) == 0
    assert "relations to" in capsys.readouterr().out


@pytest.mark.parametrize("relation, message", [
    ({"subject": 10, "predicate": "above", "object": 11, "confidence": 1.0}, "relations/0"),
    ({"subject": 10, "predicate": "on", "object": 99, "confidence": 1.0}, "not in the scene"),
])
def test_bad_relations_in_scene_json_are_one_line_errors(tmp_path, relation, message):
    save_box_scene(tmp_path, STACK)
    data = json.loads((tmp_path / "scene.json").read_text())
    data["relations"] = [relation]
    (tmp_path / "scene.json").write_text(json.dumps(data))
    with pytest.raises(SceneMakerError, match=message) as error:
        load_scene(tmp_path)
    assert "\n" not in str(error.value)


def test_predicates_match_the_message_and_the_schema():
    msg = (REPO / "msg" / "msg" / "Relation.msg").read_text()
    assert tuple(re.findall(r'PREDICATE_\w+="(\w+)"', msg)) == PREDICATES
    assert tuple(scene_schema()["$defs"]["relation"]["properties"]["predicate"]["enum"]) == \
        PREDICATES
