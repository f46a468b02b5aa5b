"""LiveScene (the node's core, no ROS): stable ids, relations, boxes, live files, export root."""

import json
from pathlib import Path

import numpy as np
import pytest

from scenemaker_ros.config import load_config
from scenemaker_ros.errors import SceneMakerError
from scenemaker_ros.frames import load_frame
from scenemaker_ros.geometry import transform_points
from scenemaker_ros.live import LIVE_DIR, LiveScene, SceneTracker, object_box, resolve_under
from scenemaker_ros.scene import SceneObject

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "tabletop"


def test_tracker_keeps_ids_of_objects_that_stay():
    tracker = SceneTracker(max_distance_m=0.1)
    ids, vanished = tracker.assign(["mug", "box", "can"], np.array(
        [[0.0, 0, 1], [0.3, 0, 1], [-0.3, 0, 1]]))
    assert ids == [0, 1, 2] and vanished == []
    # shuffled order, small motion, the can gone, a new object far away
    ids, vanished = tracker.assign(["box", "mug", "bowl"], np.array(
        [[0.31, 0, 1], [0.01, 0.02, 1], [0.0, 0.5, 1]]))
    assert ids == [1, 0, 3] and vanished == [2]
    # an object that jumped beyond the gate is a new object; ids are never reused
    ids, vanished = tracker.assign(["box"], np.array([[0.6, 0, 1]]))
    assert ids == [4] and vanished == [0, 1, 3]
    tracker.reset()
    assert tracker.assign(["box"], np.zeros((1, 3)))[0] == [0]


def test_tracker_prefers_the_same_label_between_equal_distances():
    tracker = SceneTracker(max_distance_m=0.1)
    tracker.assign(["mug", "box"], np.array([[0.0, 0, 1], [0.06, 0, 1]]))
    ids, _ = tracker.assign(["box", "mug"], np.array([[0.03, 0, 1], [0.03, 0, 1]]))
    assert ids == [1, 0]


def test_object_box_is_the_posed_scaled_box():
    vertices = np.array([[0, 0, 0], [2, 1, 4], [1, 0.5, 2.0]])  # box centre (1, .5, 2)
    R = np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1.0]])
    pose = np.eye(4)
    pose[:3, :3], pose[:3, 3] = R @ np.diag([0.1, 0.2, 0.05]), [1, 2, 3]
    box = object_box(SceneObject(0, "x", 1.0, "m.ply", pose), vertices)
    np.testing.assert_allclose(box.size, [0.2, 0.2, 0.2])
    np.testing.assert_allclose(box.pose[:3, :3], R)
    np.testing.assert_allclose(box.pose[:3, 3], transform_points(pose, np.array([[1, .5, 2]]))[0])


def test_resolve_under_refuses_paths_outside_the_root(tmp_path):
    assert resolve_under(tmp_path, "a/b") == tmp_path / "a" / "b"
    for bad in ("../x", "a/../../x", "/etc", "", "."):
        with pytest.raises(SceneMakerError, match="export"):
            resolve_under(tmp_path, bad)


@pytest.fixture(scope="module")
def live_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("export_root")
    cfg = load_config(overrides={"node.export_root": str(root), "node.stream_formats": ["sdf"],
                                 "node.publish_sdf": True})
    live = LiveScene.from_config(cfg)
    frame = load_frame(EXAMPLE / "rgb.png", EXAMPLE / "depth.png", EXAMPLE / "camera_info.yaml")
    first = live.update(frame)
    assert first.relations == []  # relations come after the objects (the node publishes them)
    live.relate(first)
    live.write_live(first)
    second = live.update(frame)
    return live, first, second, root


def test_same_frame_twice_keeps_every_id(live_run):
    _, first, second, _ = live_run
    assert len(first.scene.objects) >= 4
    assert [o.id for o in first.scene.objects] == [o.id for o in second.scene.objects]
    assert second.removed == []
    for obj in second.scene.objects:
        assert obj.mesh == f"meshes/object_{obj.id:03d}.ply"
        assert set(obj.attributes["occluded_by"]) <= {o.id for o in second.scene.objects}


def test_update_adds_relations_boxes_and_the_support_plane(live_run):
    _, first, _, _ = live_run
    ids = {o.id for o in first.scene.objects}
    assert set(first.boxes) == ids
    on_ground = {r.subject for r in first.relations if r.predicate == "on" and r.object == -1}
    assert len(on_ground) >= len(ids) - 2  # objects stand on the table (a few may be stacked)
    assert len(first.scene.metadata["support_plane"]) == 4
    assert first.scene.relations == [r.to_dict() for r in first.relations]


def test_live_folder_and_streamed_sdf(live_run):
    _, first, _, root = live_run
    live_dir = root / LIVE_DIR
    assert first.scene_dir == live_dir
    scene = json.loads((live_dir / "scene.json").read_text())
    assert len(scene["objects"]) == len(first.scene.objects) and scene["relations"]
    assert (live_dir / "sdf" / "world.sdf").is_file()
    assert first.sdf.startswith("<?xml") and "<model" in first.sdf


def test_export_writes_under_the_root_only(live_run):
    live, _, _, root = live_run
    out = live.export("snapshots/one", ["usd"])
    assert out == root / "snapshots" / "one"
    assert {"scene.json", "scene.glb", "scene.usda"} <= {p.name for p in out.iterdir()}
    with pytest.raises(SceneMakerError, match="leaves the export root"):
        live.export("../outside", [])
    with pytest.raises(SceneMakerError, match="live scene folder"):
        live.export(LIVE_DIR, [])


def test_export_without_a_scene_is_refused(tmp_path):
    live = LiveScene(pipeline=None, cfg=load_config(overrides={"node.export_root": str(tmp_path)}))
    with pytest.raises(SceneMakerError, match="no scene yet"):
        live.export("x", [])


def test_node_config_is_validated():
    with pytest.raises(SceneMakerError, match="stream_formats"):
        load_config(overrides={"node.stream_formats": ["obj"]})
    with pytest.raises(SceneMakerError, match="live_scene"):
        load_config(overrides={"node.publish_sdf": True, "node.live_scene": False})
    with pytest.raises(SceneMakerError, match="node.mode"):
        load_config(overrides={"node.mode": "sometimes"})


def test_a_watcher_never_reads_a_half_written_live_file(live_run):
    """Simulators poll the live folder: every read of world.sdf / scene.json while the node
    rewrites them parses. The watcher polls every millisecond, as a simulator would; a loop
    with no pause starves the writer of the GIL (34 s instead of 2 s here, past the timeout on
    CI, where the leaked loop then slowed every later test)."""
    import threading
    import xml.etree.ElementTree as ET

    live, first, _, root = live_run
    sdf, scene = root / LIVE_DIR / "sdf" / "world.sdf", root / LIVE_DIR / "scene.json"
    done, reads, errors = threading.Event(), [0], []

    def watch():
        while not done.wait(0.001):
            try:
                ET.fromstring(sdf.read_text())
                json.loads(scene.read_text())
                reads[0] += 1
            except Exception as err:  # any partial read is a failure
                errors.append(repr(err))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        for _ in range(4):
            live.write_live(first)
    finally:
        done.set()
        watcher.join()
    assert not errors and reads[0] > 4
