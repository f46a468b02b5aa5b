"""The SceneMaker ROS 2 node: camera topics in; posed meshes, scene graph and TF out.

A thin adapter over ``LiveScene`` (pipeline, stable ids, relations, live files). Subscription
callbacks only match stamps and keep the newest matched frame; one worker thread runs the
pipeline on it, so older frames are dropped (and counted), never queued.

Topics (relative names: remap them, e.g. ``image:=/camera/color/image_raw``):
  in   image (sensor_msgs/Image), depth (sensor_msgs/Image), camera_info (sensor_msgs/CameraInfo)
  out  ~/markers (visualization_msgs/MarkerArray), ~/scene_graph (scenemaker_msgs/SceneGraph,
       transient local), /tf (tf2_msgs/TFMessage), /diagnostics, ~/world_sdf (std_msgs/String,
       transient local, when node.publish_sdf)
Services: ~/generate, ~/reset (std_srvs/Trigger), ~/export (scenemaker_msgs/ExportScene).
Parameters: every key of config sections pipeline, pose, export, relations and node.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field, replace
from functools import partial

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from rclpy.serialization import deserialize_message
from scenemaker_msgs.msg import SceneGraph
from scenemaker_msgs.srv import ExportScene
from sensor_msgs.msg import CameraInfo as CameraInfoMsg
from sensor_msgs.msg import Image
from std_msgs.msg import Header, String
from std_srvs.srv import Trigger
from tf2_msgs.msg import TFMessage
from visualization_msgs.msg import Marker, MarkerArray

from scenemaker_ros.config import SceneMakerConfig
from scenemaker_ros.errors import SceneMakerError
from scenemaker_ros.frames import RGBDFrame
from scenemaker_ros.live import LiveScene, SceneUpdate
from scenemaker_ros.ros import convert
from scenemaker_ros.ros.params import config_from_parameters, descriptor, flat_defaults
from scenemaker_ros.ros.sync import ApproximateTimeSync
from scenemaker_ros.ros.transforms import TransformGraph, transform_matrix
from scenemaker_ros.scene import CameraIntrinsics

IMAGE = ("image", Image, "image_qos")
DEPTH = ("depth", Image, "depth_qos")
CAMERA_INFO = ("camera_info", CameraInfoMsg, "camera_info_qos")
FAIL_LOG_PERIOD_S = 2.0
# The executor thread wakes ~100 times a second under a 30 Hz RGB-D stream; with Python's default
# 5 ms GIL switch interval the worker waits up to 5 ms each time it gives the GIL up inside
# numpy/scipy calls (a "convoy"), which made frames many times slower (README "ROS 2 node").
GIL_SWITCH_INTERVAL_S = 0.0005
INPUT_SILENCE_S = 2.0  # an input this much quieter than the others is reported missing
LATENCY_WINDOW = 50  # frames the diagnostics' latency percentiles are taken over


@dataclass
class Counters:
    """What the diagnostics report."""

    received: dict[str, int] = field(default_factory=dict)
    last_received: dict[str, float] = field(default_factory=dict)  # monotonic seconds
    matched: int = 0
    processed: int = 0
    dropped: int = 0  # matched frames replaced by a newer one before the worker took them
    skipped: int = 0  # bad input: logged and skipped
    failed: int = 0  # unexpected errors in the pipeline
    qos_mismatches: int = 0
    last_error: str = ""
    latency: deque = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    stages: dict[str, deque] = field(default_factory=dict)


class SceneMakerNode(Node):
    def __init__(self, **kwargs):
        super().__init__("scenemaker", **kwargs)
        self.stopping, self.new_frame, self.worker = False, threading.Event(), None
        self.cfg = self._declare_config()
        self.live = LiveScene.from_config(self.cfg)
        self.counters = Counters()
        self.lock = threading.Lock()
        self.pending: list | None = None  # newest matched [image, depth, camera_info]
        self.pending_arrival = 0.0  # when it was matched (monotonic s)
        self.generate_requests: list[tuple[threading.Event, float]] = []  # with deadlines
        self.new_cfg: SceneMakerConfig | None = None
        self.camera_cache: tuple[tuple, CameraIntrinsics] | None = None  # calibration, K
        self.last_fail: tuple[str, float] = ("", 0.0)
        self.reported: dict[str, int] = {}  # counters at the previous diagnostics

        node = self.cfg.node
        # node.rgb_only: no depth topic, the monocular depth backend makes the depth
        self.inputs = (IMAGE, CAMERA_INFO) if node.rgb_only else (IMAGE, DEPTH, CAMERA_INFO)
        self.counters.received = {name: 0 for name, *_ in self.inputs}
        self.sync = ApproximateTimeSync(len(self.inputs), node.sync_slop_s, node.sync_queue_size)
        self.subscriptions_by_input: dict[str, tuple] = {}  # topic -> (subscription, reliability)
        self._update_subscriptions()
        self.create_timer(1.0, self._update_subscriptions)

        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.transforms = TransformGraph()
        if node.world_frame:  # where the camera is in the world, for exports and relations
            self.create_subscription(TFMessage, "/tf", self._on_tf, 100)
            self.create_subscription(TFMessage, "/tf_static", self._on_tf, QoSProfile(
                depth=100, reliability=ReliabilityPolicy.RELIABLE,
                durability=DurabilityPolicy.TRANSIENT_LOCAL))
        self.markers_pub = self.create_publisher(MarkerArray, "~/markers", 10)
        self.graph_pub = self.create_publisher(SceneGraph, "~/scene_graph", latched)
        self.tf_pub = self.create_publisher(TFMessage, "/tf", 100)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.sdf_pub = self.create_publisher(String, "~/world_sdf", latched)
        # The services live on a helper node with its own executor thread: ~/generate waits
        # for the worker, and the node's own executor stays single-threaded (see main).
        self.services_node = rclpy.create_node(f"{self.get_name()}_services",
                                               namespace=self.get_namespace(),
                                               context=self.context, use_global_arguments=False)
        private = self.get_fully_qualified_name()
        self.services_node.create_service(Trigger, f"{private}/generate", self._on_generate)
        self.services_node.create_service(Trigger, f"{private}/reset", self._on_reset)
        self.services_node.create_service(ExportScene, f"{private}/export", self._on_export)
        self.services_executor = SingleThreadedExecutor(context=self.context)
        self.services_executor.add_node(self.services_node)
        threading.Thread(target=self._spin_services, name="scenemaker-services",
                         daemon=True).start()
        self.create_timer(node.diagnostics_period_s, self._publish_diagnostics)
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self.worker = threading.Thread(target=self._work, name="scenemaker-worker", daemon=True)
        self.worker.start()
        stages = self.cfg.pipeline
        self.get_logger().info(
            f"ready: {node.mode} mode, segmentation={stages.segmentation.backend}, "
            f"deocclusion={stages.deocclusion.backend}, geometry={stages.geometry.backend}"
            + (f" (known objects from {node.objects_dir})" if node.objects_dir else "")
            + f"; inputs {', '.join(self.resolve_topic_name(n) for n, *_ in self.inputs)}")

    # -- parameters ---------------------------------------------------------------------------

    def _declare_config(self) -> SceneMakerConfig:
        values = {name: self.declare_parameter(name, default, descriptor(name, default)).value
                  for name, default in flat_defaults().items()}
        self.config_keys = set(values)
        return config_from_parameters(values)

    def _on_set_parameters(self, params) -> SetParametersResult:
        changed = {p.name: p.value for p in params if p.name in self.config_keys}
        if not changed:  # ROS's own parameters (use_sim_time, ...)
            return SetParametersResult(successful=True)
        values = {name: self.get_parameter(name).value for name in self.config_keys}
        values.update(changed)
        try:
            cfg = config_from_parameters(values)
        except SceneMakerError as err:
            return SetParametersResult(successful=False, reason=str(err))
        with self.lock:
            self.new_cfg = cfg
        self.new_frame.set()
        return SetParametersResult(successful=True)

    def _apply_new_config(self) -> None:
        """Worker side of a parameter change: rebuild what changed."""
        with self.lock:
            cfg, self.new_cfg = self.new_cfg, None
        if cfg is None:
            return
        old = self.cfg
        if (cfg.pipeline, cfg.pose, cfg.node.objects_dir) != (old.pipeline, old.pose,
                                                              old.node.objects_dir):
            self.get_logger().info("pipeline parameters changed: rebuilding the pipeline")
            try:
                self.live.pipeline = LiveScene.from_config(cfg).pipeline
            except SceneMakerError as err:
                self._fail(f"pipeline rebuild failed, keeping the previous one: {err}")
                return
        self.live.cfg, self.cfg = cfg, cfg
        self.live.tracker.max_distance_m = cfg.node.track_max_distance_m
        self.sync.resize(cfg.node.sync_slop_s, cfg.node.sync_queue_size)

    # -- inputs -------------------------------------------------------------------------------

    def _reliability(self, topic: str, choice: str) -> ReliabilityPolicy:
        if choice == "reliable":
            return ReliabilityPolicy.RELIABLE
        if choice in ("best_effort", "sensor_data"):
            return ReliabilityPolicy.BEST_EFFORT
        offered = {info.qos_profile.reliability for info in self.get_publishers_info_by_topic(
            topic)}
        if not offered:  # no publisher (yet, or any more): keep what there is
            current = self.subscriptions_by_input.get(topic)
            return current[1] if current else ReliabilityPolicy.BEST_EFFORT
        return (ReliabilityPolicy.RELIABLE if ReliabilityPolicy.RELIABLE in offered
                else ReliabilityPolicy.BEST_EFFORT)

    def _update_subscriptions(self) -> None:
        """(Re)create each input's subscription when its resolved reliability changes."""
        for index, (name, msg_type, key) in enumerate(self.inputs):
            topic = self.resolve_topic_name(name)
            reliability = self._reliability(topic, getattr(self.cfg.node, key))
            current = self.subscriptions_by_input.get(topic)
            if current is not None and current[1] == reliability:
                continue
            if current is not None:
                self.destroy_subscription(current[0])
            qos = QoSProfile(history=HistoryPolicy.KEEP_LAST,
                             depth=qos_profile_sensor_data.depth, reliability=reliability,
                             durability=DurabilityPolicy.VOLATILE)
            events = SubscriptionEventCallbacks(
                incompatible_qos=partial(self._on_incompatible_qos, topic))
            subscription = self.create_subscription(  # raw: deserialized by the worker
                msg_type, name, partial(self._on_message, index, name), qos,
                event_callbacks=events, raw=True)
            self.subscriptions_by_input[topic] = (subscription, reliability)
            if current is not None or reliability == ReliabilityPolicy.RELIABLE:
                self.get_logger().info(f"{topic}: subscribed {reliability.name.lower()}")

    def _on_incompatible_qos(self, topic: str, event) -> None:
        self.counters.qos_mismatches += 1
        self.get_logger().warning(
            f"{topic}: QoS mismatch with a publisher (policy {event.last_policy_kind.name}): no "
            "data will arrive. A best-effort publisher needs node.*_qos: best_effort or auto; a "
            "volatile one cannot serve transient-local readers", throttle_duration_sec=5.0)

    def _on_tf(self, msg: TFMessage) -> None:
        for t in msg.transforms:
            r, q = t.transform.translation, t.transform.rotation
            self.transforms.add(t.header.frame_id, t.child_frame_id, transform_matrix(
                [r.x, r.y, r.z], [q.x, q.y, q.z, q.w]))

    def _on_message(self, index: int, name: str, data: bytes) -> None:
        """Never blocks: match stamps (read from the serialized message) and keep the newest
        matched frame. Messages stay serialized until the worker takes them: at 30 Hz most are
        dropped, and deserializing 640x480 images here would take the worker's CPU."""
        self.counters.received[name] += 1
        self.counters.last_received[name] = time.monotonic()
        try:
            stamp = convert.cdr_stamp_ns(data) * 1e-9
        except SceneMakerError as err:
            self.counters.skipped += 1
            self._fail(f"{self.resolve_topic_name(name)}: {err}", key="cdr")
            return
        matched = self.sync.add(index, stamp, data)
        if matched is None:
            return
        with self.lock:
            self.counters.matched += 1
            if self.pending is not None:
                self.counters.dropped += 1
            self.pending, self.pending_arrival = matched, time.monotonic()
        self.new_frame.set()

    # -- the worker ---------------------------------------------------------------------------

    def _work(self) -> None:
        last_start = last_end = 0.0
        while not self.stopping:
            self.new_frame.wait(0.1)
            self._apply_new_config()
            with self.lock:  # ~/generate requests whose time is up
                now = time.monotonic()
                expired = [r for r in self.generate_requests if r[1] < now]
                self.generate_requests = [r for r in self.generate_requests if r[1] >= now]
            self._answer_generate(expired, None)
            node = self.cfg.node
            with self.lock:
                wanted = node.mode == "continuous" or bool(self.generate_requests)
                if self.pending is None or not wanted:
                    self.new_frame.clear()
                    continue
                stale = self.pending_arrival < last_end and node.mode == "continuous"
            if node.mode == "continuous" and node.max_rate_hz > 0:
                wait = last_start + 1.0 / node.max_rate_hz - time.monotonic()
                if wait > 0:
                    time.sleep(min(wait, 0.1))
                    continue
            if stale:  # it waited while the pipeline was busy: a fresher one is due soon
                self._wait_for_fresh_frame(last_end, node.fresh_frame_wait_s)
            with self.lock:
                matched, self.pending = self.pending, None
                requests, self.generate_requests = self.generate_requests, []
                self.new_frame.clear()
            last_start = time.monotonic()
            processed = self._process(matched)
            last_end = time.monotonic()
            self._answer_generate(requests, "processed" if processed else "skipped")

    def _wait_for_fresh_frame(self, since: float, timeout: float) -> None:
        """Up to ``timeout`` s for a frame that arrived after ``since``: latency is then the
        pipeline's alone, not the pipeline's plus the time the frame sat waiting for it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stopping:
            with self.lock:
                if self.pending_arrival >= since:
                    return
            time.sleep(0.002)

    def _process(self, matched: list[bytes]) -> bool:
        """One matched serialized [image, depth, camera_info] (or [image, camera_info] with
        node.rgb_only)."""
        try:
            messages = [deserialize_message(data, msg_type)
                        for data, (_, msg_type, _) in zip(matched, self.inputs)]
        except Exception as err:  # rclpy raises plain errors for corrupt data
            self.counters.skipped += 1
            self._fail(f"frame skipped: cannot deserialize it ({err})", key="deserialize")
            return False
        image = messages[0]
        header = Header(stamp=image.header.stamp, frame_id=image.header.frame_id)
        try:
            frame = self._frame(image, messages[1] if len(messages) == 3 else None,
                                messages[-1])
            update = self.live.update(frame)
        except SceneMakerError as err:
            self.counters.skipped += 1
            self._fail(f"frame at {convert.stamp_seconds(header.stamp):.3f} s skipped: {err}",
                       key=str(err))
            return False
        except Exception as err:  # a bug must not take the robot's perception down
            self.counters.failed += 1
            self._fail(f"pipeline error, frame skipped: {type(err).__name__}: {err}",
                       key=type(err).__name__)
            self.get_logger().debug(traceback.format_exc())
            return False
        self._publish(update, header)
        self.counters.processed += 1
        return True

    def _frame(self, image: Image, depth: Image | None, camera_info: CameraInfoMsg
               ) -> RGBDFrame:
        roi = camera_info.roi
        key = (camera_info.width, camera_info.height, camera_info.distortion_model,
               tuple(camera_info.k), tuple(camera_info.d), tuple(camera_info.r),
               tuple(camera_info.p), camera_info.binning_x, camera_info.binning_y,
               roi.x_offset, roi.y_offset, roi.width, roi.height)
        if self.camera_cache is None or self.camera_cache[0] != key:
            self.camera_cache = (key, convert.camera_info_from_msg(camera_info).intrinsics())
        frame_id = image.header.frame_id
        if not frame_id:
            raise SceneMakerError("image header has no frame_id: outputs would have no frame")
        stamp, camera = convert.stamp_seconds(image.header.stamp), self.camera_cache[1]
        world = self.cfg.node.world_frame
        if world:
            camera = replace(camera, camera_to_world=self.transforms.lookup(world, frame_id))
            if camera.camera_to_world is None:
                self._fail(f"no transform {world} <- {frame_id} on /tf yet: exports and "
                           "relations use the support plane", key="world_frame")
        if depth is None:  # RGB only: the monocular depth backend
            frame = self.live.pipeline.complete(convert.image_to_rgb(image), camera, stamp)
            frame.frame_id = frame_id
            return frame.validate()
        if depth.header.frame_id and depth.header.frame_id != frame_id:
            self.get_logger().warning(
                f"depth frame '{depth.header.frame_id}' differs from image frame '{frame_id}': "
                "the depth must be registered to the colour image (e.g. aligned_depth_to_color)",
                throttle_duration_sec=10.0)
        return RGBDFrame(rgb=convert.image_to_rgb(image),
                         depth=convert.image_to_depth(depth, self.cfg.node.depth_scale),
                         camera=camera, stamp=stamp, frame_id=frame_id).validate()

    def _publish(self, update: SceneUpdate, header: Header) -> None:
        """Markers and TF first (what latency is measured to), then the graph and files."""
        with update.timer("markers_tf"):
            self.markers_pub.publish(convert.markers_cdr(update, header))
            if self.cfg.node.publish_tf and update.scene.objects:
                self.tf_pub.publish(TFMessage(transforms=convert.transforms(
                    update, header, self.cfg.node.tf_prefix)))
        self.counters.latency.append(
            self.get_clock().now().nanoseconds * 1e-9 - convert.stamp_seconds(header.stamp))
        try:
            self.live.relate(update)
            if self.cfg.node.live_scene:
                self.live.write_live(update)
        except Exception as err:  # the objects are out; the graph goes out without these
            self.counters.failed += 1
            self._fail(f"relations or live files failed: {type(err).__name__}: {err}",
                       key=f"after markers {type(err).__name__}")
        self.graph_pub.publish(convert.scene_graph_msg(update, header))
        if update.sdf is not None:
            self.sdf_pub.publish(String(data=update.sdf))
        for stage, values in update.timer.durations.items():
            self.counters.stages.setdefault(stage, deque(maxlen=LATENCY_WINDOW)).append(
                sum(values))
        for warning in update.warnings:
            self.get_logger().info(warning, throttle_duration_sec=5.0)

    def _fail(self, message: str, key: str | None = None) -> None:
        """Log a problem: at once when it differs from the last one (by ``key``), otherwise at
        most every FAIL_LOG_PERIOD_S, so a stream of bad frames cannot flood the log."""
        self.counters.last_error = message
        now, key = time.monotonic(), key or message
        if key != self.last_fail[0] or now - self.last_fail[1] > FAIL_LOG_PERIOD_S:
            self.get_logger().warning(message)
            self.last_fail = (key, now)

    # -- services -----------------------------------------------------------------------------

    def _on_generate(self, request, response):
        """Blocks its own executor thread until the worker has processed the next frame."""
        timeout = self.cfg.node.generate_timeout_s
        done = threading.Event()
        with self.lock:
            self.generate_requests.append((done, time.monotonic() + timeout))
        self.new_frame.set()
        done.wait(timeout + 1.0)
        outcome = getattr(done, "outcome", None)
        response.success = outcome == "processed"
        if outcome is None:
            topics = ", ".join(self.resolve_topic_name(n) for n, *_ in self.inputs)
            response.message = f"no synchronised frame on {topics} within {timeout:g} s"
        elif outcome == "skipped":
            response.message = f"frame skipped: {self.counters.last_error}"
        else:
            response.message = f"scene with {len(self.live.current.scene.objects)} objects"
        return response

    @staticmethod
    def _answer_generate(requests: list, outcome: str | None) -> None:
        """outcome: "processed", "skipped" (bad input or an error), None (no frame in time)."""
        for done, _ in requests:
            done.outcome = outcome
            done.set()

    def _on_reset(self, request, response):
        header = Header(stamp=self.get_clock().now().to_msg(),
                        frame_id=self.live.current.scene.frame_id if self.live.current else "")
        removed = self.live.reset()
        self.markers_pub.publish(MarkerArray(markers=[Marker(header=header,
                                                             action=Marker.DELETEALL)]))
        self.graph_pub.publish(SceneGraph(header=header))
        response.success, response.message = True, f"scene cleared ({len(removed)} objects)"
        return response

    def _on_export(self, request, response):
        try:
            out = self.live.export(request.path, list(request.formats))
        except SceneMakerError as err:
            response.success, response.message = False, str(err)
            return response
        response.success, response.scene_dir = True, str(out)
        response.message = f"wrote {out}"
        return response

    # -- diagnostics --------------------------------------------------------------------------

    def _publish_diagnostics(self) -> None:
        c = self.counters
        values = {"processed": c.processed, "dropped": c.dropped, "skipped_bad_input": c.skipped,
                  "failed": c.failed, "matched": c.matched, "qos_mismatches": c.qos_mismatches,
                  **{f"received.{k}": v for k, v in c.received.items()},
                  "objects": len(self.live.current.scene.objects) if self.live.current else 0,
                  "mode": self.cfg.node.mode, "last_error": c.last_error}
        if c.latency:
            values["latency_p50_ms"] = f"{1000 * np.percentile(c.latency, 50):.0f}"
            values["latency_p95_ms"] = f"{1000 * np.percentile(c.latency, 95):.0f}"
        for stage, durations in sorted(c.stages.items()):
            values[f"stage.{stage}.p50_ms"] = f"{1000 * np.percentile(durations, 50):.0f}"
        stages = self.cfg.pipeline
        values.update({"backend.segmentation": stages.segmentation.backend,
                       "backend.deocclusion": stages.deocclusion.backend,
                       "backend.geometry": stages.geometry.backend})
        level, message = self._health()
        status = DiagnosticStatus(level=level, name=f"{self.get_name()}: scene pipeline",
                                  message=message, hardware_id=self.get_fully_qualified_name(),
                                  values=[KeyValue(key=k, value=str(v))
                                          for k, v in values.items()])
        self.diagnostics_pub.publish(DiagnosticArray(header=Header(
            stamp=self.get_clock().now().to_msg()), status=[status]))

    def _health(self) -> tuple[bytes, str]:
        """Diagnostic level and message from what happened since the previous report."""
        c, now = self.counters, time.monotonic()
        new = {key: getattr(c, key) - self.reported.get(key, 0)
               for key in ("skipped", "failed", "qos_mismatches")}
        self.reported = {key: getattr(c, key) for key in new}
        if not c.last_received:
            return DiagnosticStatus.WARN, "no input received yet"
        newest = max(c.last_received.values())
        silent = [self.resolve_topic_name(name) for name, *_ in self.inputs
                  if newest - c.last_received.get(name, -np.inf) > INPUT_SILENCE_S]
        if silent and now - newest < INPUT_SILENCE_S:
            message = f"no messages on {', '.join(silent)}: frames cannot be matched"
            self._fail(message, key="silent inputs")
            return DiagnosticStatus.WARN, message
        if new["failed"] or new["qos_mismatches"]:
            return DiagnosticStatus.WARN, c.last_error or "QoS mismatch on an input"
        if new["skipped"]:
            return DiagnosticStatus.WARN, f"{new['skipped']} frames skipped: {c.last_error}"
        return DiagnosticStatus.OK, "running"

    def _spin_services(self) -> None:
        try:
            self.services_executor.spin()
        except ExternalShutdownException:
            pass

    def destroy_node(self) -> None:
        self.stopping = True
        self.new_frame.set()
        if self.worker is not None:
            self.worker.join(timeout=5.0)
        if hasattr(self, "services_node"):
            self.services_executor.shutdown()
            self.services_node.destroy_node()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    """Console script ``scenemaker_node`` (also what ``ros2 run scenemaker_ros scenemaker_node``
    starts): ``scenemaker_node --ros-args --params-file config/scenemaker.yaml``."""
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] %(name)s: %(message)s")
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    rclpy.init(args=args if args is not None else sys.argv)
    try:
        node = SceneMakerNode()
    except SceneMakerError as err:
        print(f"scenemaker_node: error: {err}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    # One thread: rclpy's multi-threaded executor cost the worker a third of its speed in GIL
    # contention under a 30 Hz stream (README "ROS 2 node"); nothing here blocks it.
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
