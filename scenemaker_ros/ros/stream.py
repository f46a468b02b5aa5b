"""The ROS side of ``scenemaker bench node``: a synthetic RGB-D camera stream and a probe of the
node's outputs, spun in this process by ``BenchClient``.

``SyntheticCamera`` publishes one generated scene at a fixed rate, reliably, on the RealSense-like
``CAMERA_TOPICS``; its messages are serialised once (a few depth-noise variants, cycled) and only
the header stamp is rewritten in the CDR bytes before each publish, so the load generator costs
little CPU next to the node. ``NodeProbe`` times ``~/markers`` (image stamp -> received) from the
raw bytes, without deserialising the meshes, and keeps the node's ``/diagnostics`` values.
"""

from __future__ import annotations

import struct
import threading
import time

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import serialize_message
from rclpy.signals import SignalHandlerOptions
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from scenemaker_ros.frames import CAMERA_FRAME, CameraInfo
from scenemaker_ros.ros.bag import CAMERA_TOPICS, camera_messages
from scenemaker_ros.ros.cdr import CDR_LE
from scenemaker_ros.ros.convert import CDR_STAMP_LE, cdr_stamp_ns
from scenemaker_ros.synth.noise import DepthNoise, apply_depth_noise
from scenemaker_ros.synth.scenes import SceneSample


class SyntheticCamera(Node):
    """Publishes ``sample`` (rgb8, 16UC1 mm depth with ``variants`` noise draws, CameraInfo) at
    ``rate_hz`` with the wall-clock time as stamp, from its own thread."""

    def __init__(self, sample: SceneSample, noise: DepthNoise, rate_hz: float, variants: int = 8,
                 seed: int = 0, **kwargs):
        super().__init__("scenemaker_bench_camera", **kwargs)
        self.period = 1.0 / rate_hz
        info = CameraInfo.from_intrinsics(sample.scene.camera)
        rng = np.random.default_rng(seed)
        header = Header(frame_id=CAMERA_FRAME)
        self.frames = []  # per variant: [image, depth, camera_info] CDR, stamp rewritten in place
        for _ in range(variants):
            depth = apply_depth_noise(sample.depth, info.K, noise, rng)
            self.frames.append([bytearray(serialize_message(m))
                                for m in camera_messages(sample.rgb, depth, info, header)])
        assert all(f[:2] == CDR_LE for frame in self.frames for f in frame)
        reliable = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        self.outputs = [self.create_publisher(msg_type, topic, reliable)
                        for _, topic, msg_type in CAMERA_TOPICS.items()]
        self.published: list[int] = []  # stamps (ns)
        self.late = 0  # ticks skipped because publishing fell a whole period behind
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-camera", daemon=True)

    def connected(self) -> bool:
        return all(p.get_subscription_count() > 0 for p in self.outputs)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        next_tick = time.monotonic()
        while not self._stop.is_set():
            stamp_ns = time.time_ns()
            frame = self.frames[len(self.published) % len(self.frames)]
            for publisher, data in zip(self.outputs, frame):
                CDR_STAMP_LE.pack_into(data, 4, stamp_ns // 10**9, stamp_ns % 10**9)
                publisher.publish(bytes(data))
            self.published.append(stamp_ns)
            next_tick += self.period
            behind = time.monotonic() - next_tick
            if behind > self.period:
                skipped = int(behind // self.period)
                self.late += skipped
                next_tick += skipped * self.period
            self._stop.wait(max(0.0, next_tick - time.monotonic()))


class NodeProbe(Node):
    """Subscribes to the node's ``markers`` topic (raw) and ``/diagnostics``.

    markers: [(received wall time ns, image stamp ns)]; empty arrays (no objects, nothing
    deleted) carry no stamp and are only counted. diagnostics: [(received ns, {key: value})] of
    the status named ``node_name``."""

    def __init__(self, markers_topic: str, node_name: str = "scenemaker", **kwargs):
        super().__init__("scenemaker_bench_probe", **kwargs)
        self.markers_topic, self.node_name = markers_topic, node_name
        self.markers: list[tuple[int, int]] = []
        self.empty_markers = 0
        self.diagnostics: list[tuple[int, dict[str, str]]] = []
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.create_subscription(MarkerArray, markers_topic, self._on_markers, reliable, raw=True)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, reliable)

    def _on_markers(self, data: bytes) -> None:
        received = time.time_ns()
        (count,) = struct.unpack_from("<I", data, 4)  # MarkerArray.markers length
        if count == 0:
            self.empty_markers += 1
            return
        self.markers.append((received, cdr_stamp_ns(data, 8)))  # markers[0].header.stamp

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.startswith(f"{self.node_name}:"):
                self.diagnostics.append((time.time_ns(), {v.key: v.value
                                                          for v in status.values}))

    def node_connected(self) -> bool:
        return self.count_publishers(self.markers_topic) > 0


class BenchClient:
    """A ``SyntheticCamera`` and a ``NodeProbe`` on their own ROS context (from the environment),
    spun by an executor thread until ``close``."""

    def __init__(self, sample: SceneSample, noise: DepthNoise, rate_hz: float, seed: int,
                 markers_topic: str):
        self.context = rclpy.Context()
        rclpy.init(context=self.context, signal_handler_options=SignalHandlerOptions.NO)
        self.executor = MultiThreadedExecutor(num_threads=2, context=self.context)
        self.camera = SyntheticCamera(sample, noise, rate_hz, seed=seed, context=self.context)
        self.probe = NodeProbe(markers_topic, context=self.context)
        for node in (self.camera, self.probe):
            self.executor.add_node(node)
        threading.Thread(target=self.executor.spin, daemon=True).start()

    def close(self) -> None:
        self.camera.stop()
        self.executor.shutdown(timeout_sec=2.0)
        for node in (self.camera, self.probe):
            node.destroy_node()
        rclpy.try_shutdown(context=self.context)
