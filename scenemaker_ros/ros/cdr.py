"""visualization_msgs/MarkerArray as little-endian plain CDR (XCDR1, what Fast DDS sends), with
the triangle lists' points written straight from numpy arrays.

rclpy turns a Marker's points into one geometry_msgs/Point object each and converts them one by
one when it serializes; here an (N, 3) float64 array is written as its bytes. The result
deserializes to the same message and equals ``rclpy.serialization.serialize_message`` byte for
byte except alignment padding, which rclpy leaves uninitialised and this writes as zeros
(tests/test_ros_cdr.py); it goes straight to ``Publisher.publish``.

Rules: each primitive is aligned to its size (at most 8), counted from the byte after the 4-byte
encapsulation header; a string is a uint32 length (counting the NUL), the UTF-8 bytes and a NUL;
a sequence is a uint32 count, then its elements.
"""

from __future__ import annotations

import functools
import struct

import numpy as np
from std_msgs.msg import Header
from visualization_msgs.msg import Marker, MarkerArray

CDR_LE = b"\x00\x01"  # encapsulation header of serialized messages: plain CDR, little endian
ENCAPSULATION = CDR_LE + b"\x00\x00"  # ... with no options: what serialize_message emits


@functools.cache
def _packer(fmt: str) -> tuple[struct.Struct, int]:
    """Little-endian struct of ``fmt`` and its alignment (the size of its last code)."""
    return struct.Struct("<" + fmt), struct.calcsize(fmt[-1])


class CdrWriter:
    """Appends CDR fields to ``buf``, which starts with the encapsulation header."""

    def __init__(self):
        self.buf = bytearray(ENCAPSULATION)

    def _align(self, size: int) -> None:
        self.buf += bytes(-(len(self.buf) - len(ENCAPSULATION)) % size)

    def put(self, fmt: str, *values) -> None:
        """Primitives of one size, e.g. "iI" (int32, uint32), "7d" (7 float64), "?" (bool)."""
        packer, size = _packer(fmt)
        self._align(size)
        self.buf += packer.pack(*values)

    def string(self, text: str) -> None:
        data = text.encode()
        self.put("I", len(data) + 1)
        self.buf += data + b"\0"

    def octets(self, data) -> None:
        """sequence<uint8> from anything with the buffer protocol (bytes, array.array)."""
        data = memoryview(data).cast("B")
        self.put("I", len(data))
        self.buf += data

    def sequence(self, items, dtype: str) -> None:
        """A sequence of structs whose fields are all of one primitive ``dtype`` ("<f8": Point,
        "<f4": ColorRGBA, UVCoordinate): (N, fields) array-like, one row per element."""
        items = np.ascontiguousarray(items, dtype)
        self.put("I", len(items))
        if len(items):
            self._align(items.itemsize)
            self.buf += items.tobytes()


def _header(w: CdrWriter, header: Header) -> None:  # std_msgs/Header
    w.put("iI", header.stamp.sec, header.stamp.nanosec)
    w.string(header.frame_id)


def _marker(w: CdrWriter, m: Marker, points: np.ndarray | None) -> None:
    """visualization_msgs/Marker, every field in definition order; ``points`` (N, 3) float64
    metres, when given, stand for ``m.points``."""
    _header(w, m.header)
    w.string(m.ns)
    w.put("iii", m.id, m.type, m.action)
    p, q, s, c = m.pose.position, m.pose.orientation, m.scale, m.color
    w.put("7d", p.x, p.y, p.z, q.x, q.y, q.z, q.w)  # pose: Point, Quaternion
    w.put("3d", s.x, s.y, s.z)  # scale: Vector3
    w.put("4f", c.r, c.g, c.b, c.a)  # color: ColorRGBA
    w.put("iI", m.lifetime.sec, m.lifetime.nanosec)  # lifetime: Duration
    w.put("?", m.frame_locked)
    if points is None:
        points = [(pt.x, pt.y, pt.z) for pt in m.points]
    w.sequence(points, "<f8")  # points: Point[]
    w.sequence([(k.r, k.g, k.b, k.a) for k in m.colors], "<f4")  # colors: ColorRGBA[]
    w.string(m.texture_resource)
    _header(w, m.texture.header)  # texture: sensor_msgs/CompressedImage
    w.string(m.texture.format)
    w.octets(m.texture.data)
    w.sequence([(uv.u, uv.v) for uv in m.uv_coordinates], "<f4")  # uv_coordinates
    w.string(m.text)
    w.string(m.mesh_resource)
    w.string(m.mesh_file.filename)  # mesh_file: MeshFile
    w.octets(m.mesh_file.data)
    w.put("?", m.mesh_use_embedded_materials)


def marker_array_cdr(msg: MarkerArray, points: dict[int, np.ndarray] | None = None) -> bytes:
    """Serialized ``msg``; ``points[i]`` (N, 3) float64, when present, stands for
    ``msg.markers[i].points`` (which may then be left empty)."""
    points = points or {}
    w = CdrWriter()
    w.put("I", len(msg.markers))
    for i, marker in enumerate(msg.markers):
        _marker(w, marker, points.get(i))
    return bytes(w.buf)
