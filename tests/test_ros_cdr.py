"""The hand-written MarkerArray CDR against rclpy's: same message back, same bytes (rclpy leaves
alignment padding uninitialised, so there only our zeros are checked)."""

import numpy as np
import pytest

from tests import test_ros_convert
from tests.ros_helpers import require_ros

update = test_ros_convert.update  # fixture: the tabletop example's SceneUpdate


@pytest.fixture(scope="module")
def ros():
    require_ros()
    from rclpy import serialization

    from scenemaker_ros.ros import cdr, convert
    return serialization, cdr, convert


def assert_same_cdr(ours: bytes, ref: bytes) -> None:
    """Equal but for padding: a differing byte must be one of our zeros running up to the next
    4-aligned field (alignment is counted after the 4-byte encapsulation header)."""
    assert len(ours) == len(ref)
    a, b = np.frombuffer(ours, np.uint8), np.frombuffer(ref, np.uint8)
    for i in np.flatnonzero(a != b):
        field = i + 1 + (-(i + 1 - 4) % 4)
        assert not a[i:field].any(), f"byte {i}: ours {a[i]}, rclpy {b[i]}"


def _with_points(msg, points: dict):
    from geometry_msgs.msg import Point
    for i, xyz in points.items():
        msg.markers[i].points = [Point(x=x, y=y, z=z) for x, y, z in xyz.tolist()]
    return msg


def _markers():
    """Every kind the project builds and every Marker field set, strings of odd lengths;
    points (N, 3) float64 by marker index, N in (0, 1, 7, 40)."""
    from builtin_interfaces.msg import Duration, Time
    from geometry_msgs.msg import Point, Pose, Quaternion, Vector3
    from sensor_msgs.msg import CompressedImage
    from std_msgs.msg import ColorRGBA, Header
    from visualization_msgs.msg import Marker, MarkerArray, MeshFile, UVCoordinate

    rng = np.random.default_rng(0)
    header = Header(stamp=Time(sec=1_700_000_000, nanosec=123_456_789), frame_id="cam0")
    pose = Pose(position=Point(x=0.1, y=-0.2, z=1.3), orientation=Quaternion(x=0.5, w=0.5))
    full = Marker(
        header=header, ns="o", id=-7, type=Marker.TRIANGLE_LIST, action=Marker.ADD, pose=pose,
        scale=Vector3(x=1.0, y=2.0, z=3.0), color=ColorRGBA(r=0.25, g=0.5, b=0.75, a=1.0),
        lifetime=Duration(sec=2, nanosec=5), frame_locked=True,
        colors=[ColorRGBA(r=float(r), g=float(g), b=float(b), a=float(a))
                for r, g, b, a in rng.random((3, 4)).astype(np.float32)],
        texture_resource="embedded://t", texture=CompressedImage(
            header=Header(stamp=Time(sec=3), frame_id="tex_frame"), format="png",
            data=rng.integers(0, 256, 13, dtype=np.uint8).tobytes()),
        uv_coordinates=[UVCoordinate(u=float(u), v=float(v))
                        for u, v in rng.random((5, 2)).astype(np.float32)],
        text="Stühle!", mesh_resource="package://m/a.dae",
        mesh_file=MeshFile(filename="a.dae", data=b"\x01\x02\x03\x04\x05"),
        mesh_use_embedded_materials=True)
    given = Marker(header=header, ns="given", id=3, type=Marker.POINTS,
                   points=[Point(x=1.5, y=2.5, z=-3.5), Point(x=4.0)])
    label = Marker(header=header, ns="labels", id=2, type=Marker.TEXT_VIEW_FACING,
                   pose=pose, scale=Vector3(z=0.04), text="2: mug")
    markers = [full, label, given]
    points = {0: rng.normal(size=(7, 3))}
    for n in (0, 1, 40):
        points[len(markers)] = rng.normal(size=(2 * n, 3))[::2]  # strided, not contiguous
        markers.append(Marker(header=Header(frame_id="camera_color_optical_frame"),
                              ns="objects", id=n, type=Marker.TRIANGLE_LIST))
    markers += [Marker(header=header, ns=ns, id=41, action=Marker.DELETE)
                for ns in ("objects", "labels")]
    markers.append(Marker(action=Marker.DELETEALL))
    return MarkerArray(markers=markers), points


def test_marker_array_matches_rclpy(ros):
    serialization, cdr, _ = ros
    from visualization_msgs.msg import MarkerArray

    msg, points = _markers()
    ours = cdr.marker_array_cdr(msg, points)
    filled = _with_points(msg, points)
    assert serialization.deserialize_message(ours, MarkerArray) == filled
    assert_same_cdr(ours, serialization.serialize_message(filled))
    assert cdr.marker_array_cdr(filled) == ours  # points from the message itself
    assert cdr.marker_array_cdr(MarkerArray()) == serialization.serialize_message(MarkerArray())


def test_markers_cdr_is_markers_msg_serialized(ros, update):
    serialization, _, convert = ros
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header
    from visualization_msgs.msg import MarkerArray

    header = Header(stamp=Time(sec=12, nanosec=345), frame_id="camera_color_optical_frame")
    ours = convert.markers_cdr(update, header)
    msg = convert.markers_msg(update, header)
    assert sum(len(m.points) for m in msg.markers) == 3 * sum(
        len(faces) for _, faces in update.meshes.values())
    ref = serialization.serialize_message(msg)
    back = [serialization.deserialize_message(data, MarkerArray) for data in (ours, ref)]
    assert back[0] == back[1]  # not msg: its float32 colours are float64 until serialized
    assert_same_cdr(ours, ref)
