"""ROS messages <-> the core's types, with numpy only (no cv_bridge).

Inputs: sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, mono8 colour; 16UC1 / mono16 millimetres
or 32FC1 metres depth) and sensor_msgs/CameraInfo, each checked and refused with one
SceneMakerError line. Outputs: the SceneGraph message, a MarkerArray (one TRIANGLE_LIST and one
label per object; ``markers_cdr`` serializes it with numpy, ``ros/cdr.py``) and the objects' TF
frames.
"""

from __future__ import annotations

import struct

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, Pose, Quaternion, TransformStamped, Vector3
from scenemaker_msgs.msg import Relation as RelationMsg
from scenemaker_msgs.msg import SceneGraph, SceneObject
from sensor_msgs.msg import CameraInfo as CameraInfoMsg
from sensor_msgs.msg import Image
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from scenemaker_ros.errors import SceneMakerError
from scenemaker_ros.export.world import quaternion_wxyz
from scenemaker_ros.frames import CameraInfo, camera_info_from_mapping
from scenemaker_ros.geometry import compose_pose
from scenemaker_ros.live import SceneUpdate
from scenemaker_ros.relations import GROUND_ID
from scenemaker_ros.ros.cdr import marker_array_cdr
from scenemaker_ros.viz import object_colors

COLOR_ENCODINGS = {"rgb8": (3, [0, 1, 2]), "bgr8": (3, [2, 1, 0]), "rgba8": (4, [0, 1, 2]),
                   "bgra8": (4, [2, 1, 0]), "mono8": (1, [0, 0, 0])}
DEPTH_ENCODINGS = {"16UC1": np.uint16, "mono16": np.uint16, "32FC1": np.float32}
MARKER_NAMESPACES = ("objects", "labels")
_PALETTE = object_colors(10)


# -----------------------------------------------------------------------------
# inputs


def stamp_seconds(stamp: Time) -> float:
    return stamp.sec + 1e-9 * stamp.nanosec


CDR_STAMP_LE = struct.Struct("<iI")  # builtin_interfaces/Time in little-endian CDR
_CDR_STAMPS = {0: struct.Struct(">iI"), 1: CDR_STAMP_LE}  # by the header's byte order


def cdr_stamp_ns(data: bytes, offset: int = 4) -> int:
    """The builtin_interfaces/Time at ``offset`` of a serialized message (4: the header stamp
    of a message that starts with a std_msgs/Header), in nanoseconds, without deserializing."""
    if len(data) < offset + 8 or data[1] not in _CDR_STAMPS:
        raise SceneMakerError(f"not a CDR-serialized message with a header ({len(data)} bytes)")
    sec, nanosec = _CDR_STAMPS[data[1]].unpack_from(data, offset)
    return sec * 10**9 + nanosec


def _pixels(msg: Image, dtype: type, channels: int, what: str) -> np.ndarray:
    """(H, W, channels) array of an Image's rows, checking size, step and byte order."""
    if msg.width == 0 or msg.height == 0:
        raise SceneMakerError(f"{what} image is empty ({msg.width}x{msg.height})")
    itemsize = np.dtype(dtype).itemsize
    row = msg.width * channels * itemsize
    if msg.step < row or len(msg.data) < msg.step * msg.height:
        raise SceneMakerError(f"{what} image: {len(msg.data)} bytes with step {msg.step} do not "
                              f"hold {msg.width}x{msg.height} {msg.encoding}")
    order = ">" if msg.is_bigendian else "<"
    data = np.frombuffer(msg.data, dtype=np.uint8, count=msg.step * msg.height)
    rows = data.reshape(msg.height, msg.step)[:, :row]
    pixels = rows.copy().view(np.dtype(dtype).newbyteorder(order) if itemsize > 1 else dtype)
    return pixels.reshape(msg.height, msg.width, channels).astype(dtype, copy=False)


def image_to_rgb(msg: Image) -> np.ndarray:
    """sensor_msgs/Image -> (H, W, 3) uint8 RGB."""
    if msg.encoding not in COLOR_ENCODINGS:
        raise SceneMakerError(f"colour image encoding '{msg.encoding}' is not supported (one of "
                              f"{', '.join(COLOR_ENCODINGS)})")
    channels, order = COLOR_ENCODINGS[msg.encoding]
    return np.ascontiguousarray(_pixels(msg, np.uint8, channels, "colour")[..., order])


def image_to_depth(msg: Image, depth_scale: float) -> np.ndarray:
    """sensor_msgs/Image -> (H, W) float32 metres; 16-bit values are scaled by depth_scale
    (0 stays invalid), 32FC1 is metres already; NaN, inf and <= 0 become 0 (invalid)."""
    if msg.encoding not in DEPTH_ENCODINGS:
        raise SceneMakerError(f"depth image encoding '{msg.encoding}' is not supported (16UC1 "
                              "or mono16 in depth_scale units, 32FC1 in metres)")
    depth = _pixels(msg, DEPTH_ENCODINGS[msg.encoding], 1, "depth")[..., 0]
    depth = depth.astype(np.float32) * np.float32(depth_scale if depth.dtype == np.uint16 else 1)
    return np.where(np.isfinite(depth) & (depth > 0), depth, np.float32(0))


def camera_info_from_msg(msg: CameraInfoMsg) -> CameraInfo:
    """sensor_msgs/CameraInfo -> CameraInfo of the published image: binning and a region of
    interest are applied to the intrinsics; SceneMakerError for a zero or invalid calibration."""
    info = camera_info_from_mapping(
        {"width": msg.width, "height": msg.height, "k": list(msg.k), "d": list(msg.d),
         "distortion_model": msg.distortion_model, "r": list(msg.r), "p": list(msg.p)},
        "camera_info")
    roi, bin_x, bin_y = msg.roi, max(msg.binning_x, 1), max(msg.binning_y, 1)
    if roi.width or roi.height or bin_x > 1 or bin_y > 1:
        crop = np.array([[1 / bin_x, 0, -roi.x_offset / bin_x],
                         [0, 1 / bin_y, -roi.y_offset / bin_y], [0, 0, 1]])
        info.K, info.P = crop @ info.K, crop @ info.P
        info.width = (roi.width or msg.width) // bin_x
        info.height = (roi.height or msg.height) // bin_y
    return info


def rgb_to_image(rgb: np.ndarray, header: Header) -> Image:
    """(H, W, 3) uint8 -> rgb8 Image."""
    h, w, _ = rgb.shape
    return Image(header=header, height=h, width=w, encoding="rgb8", step=3 * w,
                 data=np.ascontiguousarray(rgb, dtype=np.uint8).tobytes())


def depth_to_image(depth: np.ndarray, header: Header, encoding: str = "16UC1",
                   depth_scale: float = 0.001) -> Image:
    """(H, W) metres -> 16UC1 (units of depth_scale, 0 = invalid) or 32FC1 (metres) Image."""
    h, w = depth.shape
    if encoding == "16UC1":
        units = np.round(np.nan_to_num(depth, nan=0.0, posinf=0.0) / depth_scale)
        data = np.clip(units, 0, np.iinfo(np.uint16).max).astype("<u2")
    else:
        data = depth.astype("<f4")
    return Image(header=header, height=h, width=w, encoding=encoding,
                 step=w * data.itemsize, data=data.tobytes())


def camera_info_msg(info: CameraInfo, header: Header) -> CameraInfoMsg:
    return CameraInfoMsg(header=header, width=info.width, height=info.height,
                         distortion_model=info.distortion_model,
                         d=[float(v) for v in info.D], k=[float(v) for v in info.K.ravel()],
                         r=[float(v) for v in info.R.ravel()],
                         p=[float(v) for v in info.P.ravel()])


# -----------------------------------------------------------------------------
# outputs


def _pose(T: np.ndarray) -> Pose:
    """Rigid (4, 4) -> geometry_msgs/Pose."""
    w, x, y, z = quaternion_wxyz(T[:3, :3])
    return Pose(position=Point(x=float(T[0, 3]), y=float(T[1, 3]), z=float(T[2, 3])),
                orientation=Quaternion(x=float(x), y=float(y), z=float(z), w=float(w)))


def _vector(v: np.ndarray) -> Vector3:
    return Vector3(x=float(v[0]), y=float(v[1]), z=float(v[2]))


def _rigid(obj) -> np.ndarray:
    return compose_pose(obj.rotation, obj.translation, 1.0)


def scene_graph_msg(update: SceneUpdate, header: Header) -> SceneGraph:
    """The SceneGraph of an update; mesh URIs point into the live scene folder when written."""
    objects = []
    for obj in update.scene.objects:
        box = update.boxes[obj.id]
        uri = (update.scene_dir / obj.mesh).resolve().as_uri() if update.scene_dir else ""
        objects.append(SceneObject(
            id=obj.id, label=obj.label, score=float(obj.score), pose=_pose(_rigid(obj)),
            scale=_vector(obj.scale), bbox_center=_pose(box.pose), bbox_size=_vector(box.size),
            mesh_uri=uri, visible_fraction=float("nan")))
    relations = [RelationMsg(
        subject_id=r.subject, object_id=RelationMsg.GROUND_ID if r.object == GROUND_ID
        else r.object, predicate=r.predicate,
        distance=float("nan") if r.distance is None else float(r.distance),
        confidence=float(r.confidence)) for r in update.relations]
    return SceneGraph(header=header, objects=objects, relations=relations)


def object_color(object_id: int, alpha: float = 0.9) -> ColorRGBA:
    r, g, b = _PALETTE[object_id % len(_PALETTE)]
    return ColorRGBA(r=float(r), g=float(g), b=float(b), a=alpha)


def markers_cdr(update: SceneUpdate, header: Header) -> bytes:
    """``markers_msg`` serialized (CDR, for ``Publisher.publish``), without Point objects."""
    return marker_array_cdr(*_markers(update, header))


def markers_msg(update: SceneUpdate, header: Header) -> MarkerArray:
    """One TRIANGLE_LIST (the scaled mesh at the object's pose) and one text label per object;
    DELETE markers for the objects that vanished."""
    msg, corners = _markers(update, header)
    for i, points in corners.items():
        msg.markers[i].points = [Point(x=x, y=y, z=z) for x, y, z in points.tolist()]
    return msg


def _markers(update: SceneUpdate, header: Header) -> tuple[MarkerArray, dict[int, np.ndarray]]:
    """``markers_msg`` with the triangle lists' points left out, and those points apart: the
    (3F, 3) float64 triangle corners (object frame, metres) by index in ``markers``."""
    markers, corners = [], {}
    up = _up_direction(update)
    for obj in update.scene.objects:
        vertices, faces = update.meshes[obj.id]
        corners[len(markers)] = (vertices * obj.scale)[faces].reshape(-1, 3)  # (3F, 3)
        mesh = Marker(header=header, ns="objects", id=obj.id, type=Marker.TRIANGLE_LIST,
                      action=Marker.ADD, pose=_pose(_rigid(obj)), scale=_vector(np.ones(3)),
                      color=object_color(obj.id))
        box = update.boxes[obj.id]
        label_at = np.eye(4)
        label_at[:3, 3] = box.pose[:3, 3] + up * (0.5 * float(np.abs(box.pose[:3, :3].T @ up)
                                                              @ box.size) + 0.03)
        label = Marker(header=header, ns="labels", id=obj.id, type=Marker.TEXT_VIEW_FACING,
                       action=Marker.ADD, pose=_pose(label_at), scale=_vector([0, 0, 0.04]),
                       color=ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0), text=f"{obj.id}: {obj.label}")
        markers += [mesh, label]
    markers += delete_markers(update.removed, header)
    return MarkerArray(markers=markers), corners


def delete_markers(ids: list[int], header: Header) -> list[Marker]:
    return [Marker(header=header, ns=ns, id=i, action=Marker.DELETE)
            for i in ids for ns in MARKER_NAMESPACES]


def _up_direction(update: SceneUpdate) -> np.ndarray:
    """Up in the camera frame: the support plane's normal, else the image's up (-y)."""
    plane = update.scene.metadata.get("support_plane")
    return np.asarray(plane[:3], dtype=np.float64) if plane else np.array([0.0, -1.0, 0.0])


def transforms(update: SceneUpdate, header: Header, prefix: str) -> list[TransformStamped]:
    """Each object's frame (rotation and translation; TF carries no scale) as a child of the
    header's frame."""
    result = []
    for obj in update.scene.objects:
        pose = _pose(_rigid(obj))
        t = TransformStamped(header=header, child_frame_id=f"{prefix}{obj.id}")
        t.transform.translation = Vector3(x=pose.position.x, y=pose.position.y,
                                          z=pose.position.z)
        t.transform.rotation = pose.orientation
        result.append(t)
    return result
