"""ROS message conversions: image encodings and their refusals, CameraInfo, output messages."""

import math
from pathlib import Path

import numpy as np
import pytest

from scenemaker_ros.config import load_config
from scenemaker_ros.errors import SceneMakerError
from scenemaker_ros.frames import CameraInfo, load_camera_info
from scenemaker_ros.live import SceneUpdate, object_box
from scenemaker_ros.relations import compute_relations
from scenemaker_ros.scene import load_mesh, load_scene, posed_vertices
from scenemaker_ros.timing import StageTimer
from tests.ros_helpers import require_ros

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "tabletop"


@pytest.fixture(scope="module")
def ros():
    require_ros()
    from scenemaker_ros.ros import convert
    return convert


def _header():
    from std_msgs.msg import Header
    return Header(frame_id="camera_color_optical_frame")


def _image(data: np.ndarray, encoding: str, pad: int = 0, bigendian: bool = False):
    from sensor_msgs.msg import Image
    h, w = data.shape[:2]
    rows = data.reshape(h, -1).view(np.uint8).reshape(h, -1)
    rows = np.concatenate([rows, np.zeros((h, pad), np.uint8)], axis=1)
    return Image(height=h, width=w, encoding=encoding, step=rows.shape[1],
                 is_bigendian=bigendian, data=rows.tobytes())


@pytest.mark.parametrize("encoding, order, channels", [
    ("rgb8", [0, 1, 2], 3), ("bgr8", [2, 1, 0], 3), ("rgba8", [0, 1, 2], 4),
    ("bgra8", [2, 1, 0], 4)])
def test_colour_encodings(ros, encoding, order, channels):
    rgb = np.random.default_rng(0).integers(0, 255, (4, 5, 3), dtype=np.uint8)
    stored = np.concatenate([rgb[..., order], np.full((4, 5, channels - 3), 7, np.uint8)], 2)
    np.testing.assert_array_equal(ros.image_to_rgb(_image(stored, encoding, pad=3)), rgb)


def test_mono8_is_replicated(ros):
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    np.testing.assert_array_equal(ros.image_to_rgb(_image(grey, "mono8")),
                                  np.repeat(grey[..., None], 3, axis=2))


def test_depth_encodings(ros):
    mm = np.array([[0, 1000], [65535, 250]], dtype=np.uint16)
    np.testing.assert_allclose(ros.image_to_depth(_image(mm, "16UC1", pad=2), 0.001),
                               [[0, 1.0], [65.535, 0.25]], rtol=1e-6)
    big = _image(mm.astype(">u2"), "16UC1", bigendian=True)
    np.testing.assert_allclose(ros.image_to_depth(big, 0.001), [[0, 1.0], [65.535, 0.25]],
                               rtol=1e-6)
    metres = np.array([[np.nan, 1.5], [-1.0, np.inf]], dtype=np.float32)
    np.testing.assert_array_equal(ros.image_to_depth(_image(metres, "32FC1"), 0.001),
                                  [[0, 1.5], [0, 0]])


def test_round_trip_of_the_publishing_helpers(ros):
    rgb = np.random.default_rng(1).integers(0, 255, (6, 7, 3), dtype=np.uint8)
    depth = np.random.default_rng(2).uniform(0.3, 3.0, (6, 7)).astype(np.float32)
    np.testing.assert_array_equal(ros.image_to_rgb(ros.rgb_to_image(rgb, _header())), rgb)
    for encoding, tol in (("16UC1", 5e-4), ("32FC1", 0)):
        back = ros.image_to_depth(ros.depth_to_image(depth, _header(), encoding), 0.001)
        np.testing.assert_allclose(back, depth, atol=tol)


def test_bad_colour_images_are_refused(ros):
    from sensor_msgs.msg import Image
    with pytest.raises(SceneMakerError, match="encoding 'yuv422' is not supported"):
        ros.image_to_rgb(_image(np.zeros((2, 2, 2), np.uint8), "yuv422"))
    with pytest.raises(SceneMakerError, match="empty"):
        ros.image_to_rgb(Image(encoding="rgb8"))


def test_truncated_and_wrong_depth_images_are_refused(ros):
    from sensor_msgs.msg import Image
    short = Image(height=4, width=4, encoding="16UC1", step=8, data=bytes(20))
    with pytest.raises(SceneMakerError, match="do not hold 4x4 16UC1"):
        ros.image_to_depth(short, 0.001)
    with pytest.raises(SceneMakerError, match="depth image encoding 'rgb8'"):
        ros.image_to_depth(Image(height=1, width=1, encoding="rgb8", step=3, data=bytes(3)),
                           0.001)


def test_camera_info_checks_and_binning(ros):
    info = load_camera_info(EXAMPLE / "camera_info.yaml")
    msg = ros.camera_info_msg(info, _header())
    back = ros.camera_info_from_msg(msg)
    np.testing.assert_allclose(back.K, info.K)
    msg.binning_x = msg.binning_y = 2
    msg.roi.x_offset, msg.roi.y_offset, msg.roi.width, msg.roi.height = 100, 50, 400, 300
    binned = ros.camera_info_from_msg(msg)
    assert (binned.width, binned.height) == (200, 150)
    np.testing.assert_allclose(binned.K[0], [info.K[0, 0] / 2, 0, (info.K[0, 2] - 100) / 2])
    zero = ros.camera_info_msg(CameraInfo(640, 480, np.eye(3)), _header())
    zero.k = [0.0] * 9
    with pytest.raises(SceneMakerError, match="focal length must be positive"):
        ros.camera_info_from_msg(zero)


@pytest.fixture(scope="module")
def update():
    scene_dir = EXAMPLE / "ground_truth"
    scene = load_scene(scene_dir)
    meshes = {o.id: load_mesh(scene_dir / o.mesh) for o in scene.objects}
    relations = compute_relations(scene, posed_vertices(scene_dir, scene), load_config().relations)
    boxes = {o.id: object_box(o, meshes[o.id][0]) for o in scene.objects}
    return SceneUpdate(scene, meshes, boxes, relations, removed=[41], timer=StageTimer(),
                       scene_dir=scene_dir)


def test_scene_graph_message(ros, update):
    from scenemaker_msgs.msg import Relation

    graph = ros.scene_graph_msg(update, _header())
    assert [o.id for o in graph.objects] == [o.id for o in update.scene.objects]
    for msg, obj in zip(graph.objects, update.scene.objects):
        p, q = msg.pose.position, msg.pose.orientation
        np.testing.assert_allclose([p.x, p.y, p.z], obj.translation)
        assert math.isclose(q.x**2 + q.y**2 + q.z**2 + q.w**2, 1.0, rel_tol=1e-9)
        np.testing.assert_allclose([msg.scale.x, msg.scale.y, msg.scale.z], obj.scale)
        assert msg.mesh_uri.startswith("file:///") and msg.mesh_uri.endswith(obj.mesh)
        assert Path(msg.mesh_uri[len("file://"):]).is_file()
    grounded = [r for r in graph.relations if r.object_id == Relation.GROUND_ID]
    assert grounded and all(r.predicate in ("on", "supported_by") for r in grounded)
    assert len(graph.relations) == len(update.relations)


def test_markers_and_transforms(ros, update):
    from visualization_msgs.msg import Marker

    markers = ros.markers_msg(update, _header()).markers
    meshes = [m for m in markers if m.ns == "objects" and m.action == Marker.ADD]
    labels = [m for m in markers if m.ns == "labels" and m.action == Marker.ADD]
    assert len(meshes) == len(labels) == len(update.scene.objects)
    for marker, obj in zip(meshes, update.scene.objects):
        assert marker.type == Marker.TRIANGLE_LIST
        assert len(marker.points) == 3 * len(update.meshes[obj.id][1])
    assert {(m.ns, m.id) for m in markers if m.action == Marker.DELETE} == {
        ("objects", 41), ("labels", 41)}
    frames = ros.transforms(update, _header(), "scenemaker/object_")
    assert [t.child_frame_id for t in frames] == [f"scenemaker/object_{o.id}"
                                                   for o in update.scene.objects]
    assert all(t.header.frame_id == "camera_color_optical_frame" for t in frames)
