"""scenemaker_msgs (msg/, built by scripts/build_msgs.sh): construction, CDR round trip, constants.

Skipped when scenemaker_msgs is not importable, unless SCENEMAKER_REQUIRE_ROS is set (then failed).
tf2_msgs (interfaces/tf2_msgs, built from its standard definition) must hash as upstream.
"""

import math
import random

import pytest

from tests.ros_helpers import require_ros

PREDICATES = ["on", "supported_by", "touching", "near", "inside", "contains", "left_of",
              "right_of", "in_front_of", "behind"]


@pytest.fixture(scope="module")
def msgs():
    return require_ros()


def _graph(m):
    from geometry_msgs.msg import Point, Pose, Quaternion, Vector3

    g = m.SceneGraph()
    g.header.frame_id = "camera_color_optical_frame"
    g.header.stamp.sec, g.header.stamp.nanosec = 12, 345
    mug = m.SceneObject(
        id=7, label="mug", score=0.75,
        pose=Pose(position=Point(x=0.1, y=-0.2, z=0.9),
                  orientation=Quaternion(x=0.0, y=0.0, z=math.sqrt(0.5), w=math.sqrt(0.5))),
        scale=Vector3(x=0.5, y=0.5, z=1.25),
        bbox_center=Pose(position=Point(x=0.1, y=-0.2, z=0.9)),
        bbox_size=Vector3(x=0.08, y=0.08, z=0.1),
        mesh_uri="file:///tmp/meshes/mug.glb", visible_fraction=0.5)
    table = m.SceneObject(id=3, label="table", score=0.5, mesh_uri="package://pkg/table.glb",
                          visible_fraction=float("nan"))
    g.objects = [mug, table]
    g.relations = [m.Relation(subject_id=7, object_id=3, predicate=m.Relation.PREDICATE_ON,
                              distance=float("nan"), confidence=0.875)]
    return g


def test_predicate_constants(msgs):
    for p in PREDICATES:
        assert getattr(msgs.Relation, f"PREDICATE_{p.upper()}") == p


def test_scene_graph_cdr_round_trip(msgs):
    from rclpy.serialization import deserialize_message, serialize_message

    g = _graph(msgs)
    g2 = deserialize_message(serialize_message(g), msgs.SceneGraph)
    assert g2.header.frame_id == "camera_color_optical_frame"
    assert (g2.header.stamp.sec, g2.header.stamp.nanosec) == (12, 345)
    assert [(o.id, o.label) for o in g2.objects] == [(7, "mug"), (3, "table")]
    mug = g2.objects[0]
    assert mug.score == 0.75 and mug.visible_fraction == 0.5
    assert (mug.pose.position.x, mug.pose.position.y, mug.pose.position.z) == (0.1, -0.2, 0.9)
    assert mug.pose.orientation.z == pytest.approx(math.sqrt(0.5))
    assert (mug.scale.x, mug.scale.y, mug.scale.z) == (0.5, 0.5, 1.25)
    assert mug.bbox_size.z == pytest.approx(0.1) and mug.bbox_center.position.z == 0.9
    assert mug.mesh_uri == "file:///tmp/meshes/mug.glb"
    assert g2.objects[1].mesh_uri == "package://pkg/table.glb"
    assert math.isnan(g2.objects[1].visible_fraction)
    (rel,) = g2.relations
    assert (rel.subject_id, rel.object_id, rel.predicate) == (7, 3, "on")
    assert math.isnan(rel.distance) and rel.confidence == 0.875


def test_publisher_of_scene_graph(msgs, monkeypatch):
    import rclpy

    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=random.randint(100, 200))
    try:
        node = rclpy.create_node("test_msgs_pub", context=ctx)
        pub = node.create_publisher(msgs.SceneGraph, "scene_graph", 1)
        pub.publish(_graph(msgs))
        (info,) = node.get_publishers_info_by_topic("/scene_graph")
        assert info.topic_type == "scenemaker_msgs/msg/SceneGraph"
        node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)


def test_ground_id_and_export_service(msgs):
    from scenemaker_msgs.srv import ExportScene

    assert msgs.Relation.GROUND_ID == 2**32 - 1
    request = ExportScene.Request(path="snap", formats=["sdf", "usd"])
    assert list(request.formats) == ["sdf", "usd"]
    assert ExportScene.Response().scene_dir == ""


def test_tf_message_has_the_upstream_type_hash(msgs):
    """Our tf2_msgs build interoperates with real ROS installs: same RIHS01 hash as Kilted's."""
    import json
    from pathlib import Path

    import tf2_msgs
    from rosbags.typesys import Stores, get_typestore

    share = Path(tf2_msgs.__file__).parents[4] / "share" / "tf2_msgs" / "msg" / "TFMessage.json"
    hashes = {h["type_name"]: h["hash_string"]
              for h in json.loads(share.read_text())["type_hashes"]}
    expected = get_typestore(Stores.ROS2_KILTED).hash_rihs01("tf2_msgs/msg/TFMessage")
    assert hashes["tf2_msgs/msg/TFMessage"] == expected
