"""The ROS node in its own process, driven by this one: synthetic RGB-D frames from our generator
in; MarkerArray, SceneGraph and TF checked against the ground truth; bad input, bursts, QoS
mismatches, services and parameters.

Each node process is started from the console script with a parameters file, as users do.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from scenemaker_ros.config import load_config
from scenemaker_ros.frames import CameraInfo
from scenemaker_ros.geometry import transform_points
from scenemaker_ros.synth.scenes import generate_scene
from tests.ros_helpers import free_domain_id, require_ros, ros_env, spin_until

pytestmark = pytest.mark.timeout(600)
NODE = Path(sys.executable).parent / "scenemaker_node"
FRAME_ID = "camera_color_optical_frame"
PIPELINE_TIMEOUT_S = 90  # one frame through the pipeline on a busy 2-core machine, with margin


class NodeProcess:
    """``scenemaker_node --ros-args --params-file FILE`` with its log in a file."""

    def __init__(self, tmp: Path, domain: int, params: dict, name: str):
        self.params_file, self.log_file = tmp / f"{name}.yaml", tmp / f"{name}.log"
        self.params_file.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}))
        self.log = open(self.log_file, "w")
        self.process = subprocess.Popen(
            [str(NODE), "--ros-args", "--params-file", str(self.params_file)],
            stdout=self.log, stderr=subprocess.STDOUT, env=ros_env(domain))

    def text(self) -> str:
        return self.log_file.read_text()

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        self.process.send_signal(2)  # SIGINT: the node shuts down cleanly
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


class Harness:
    """The other process's side: publishers of the three inputs and subscribers of every output
    of node ``/scenemaker``."""

    def __init__(self, domain: int, image_reliable: bool = True):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from scenemaker_msgs.msg import SceneGraph
        from sensor_msgs.msg import CameraInfo as CameraInfoMsg
        from sensor_msgs.msg import Image
        from tf2_msgs.msg import TFMessage
        from visualization_msgs.msg import MarkerArray

        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain)
        self.node = rclpy.create_node("harness", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        image_qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE if image_reliable
                               else ReliabilityPolicy.BEST_EFFORT)
        self.image_pub = self.node.create_publisher(Image, "image", image_qos)
        self.depth_pub = self.node.create_publisher(Image, "depth", 10)
        self.info_pub = self.node.create_publisher(CameraInfoMsg, "camera_info", 10)
        self.graphs, self.markers, self.tf, self.diagnostics = [], [], [], []
        self.latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.node.create_subscription(SceneGraph, "/scenemaker/scene_graph", self.graphs.append,
                                      self.latched)
        self.node.create_subscription(MarkerArray, "/scenemaker/markers", self.markers.append, 10)
        self.node.create_subscription(TFMessage, "/tf", self.tf.append, 100)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append,
                                      10)

    def publish(self, sample, stamp=None, image=None, depth=None, info=None) -> None:
        """One frame of ``sample``; image/depth/info replace the good messages (bad input)."""
        from std_msgs.msg import Header

        from scenemaker_ros.ros import convert

        header = Header(stamp=stamp or self.node.get_clock().now().to_msg(), frame_id=FRAME_ID)
        camera = CameraInfo.from_intrinsics(sample.scene.camera)
        for pub, msg in ((self.image_pub, image or convert.rgb_to_image(sample.rgb, header)),
                         (self.depth_pub, depth or convert.depth_to_image(sample.depth, header)),
                         (self.info_pub, info or convert.camera_info_msg(camera, header))):
            msg.header = header
            pub.publish(msg)

    def publish_burst(self, sample, count: int) -> int:
        """``count`` frames of ``sample`` at 30 Hz, serialized once and each sent raw with a
        fresh header stamp, so publishing keeps the camera's pace. Returns the last stamp (ns)."""
        from rclpy.serialization import serialize_message
        from std_msgs.msg import Header

        from scenemaker_ros.ros import convert

        header = Header(stamp=self.node.get_clock().now().to_msg(), frame_id=FRAME_ID)
        camera = CameraInfo.from_intrinsics(sample.scene.camera)
        serialized = [(pub, bytearray(serialize_message(msg))) for pub, msg in (
            (self.image_pub, convert.rgb_to_image(sample.rgb, header)),
            (self.depth_pub, convert.depth_to_image(sample.depth, header)),
            (self.info_pub, convert.camera_info_msg(camera, header)))]
        for _ in range(count):
            stamp_ns = time.time_ns()
            for pub, data in serialized:
                convert.CDR_STAMP_LE.pack_into(data, 4, stamp_ns // 10**9, stamp_ns % 10**9)
                pub.publish(bytes(data))
            time.sleep(1 / 30)
        return stamp_ns

    def publish_camera_pose(self, camera_to_world: np.ndarray) -> None:
        """world -> FRAME_ID on /tf_static, as a robot's TF tree would give it."""
        from geometry_msgs.msg import TransformStamped
        from rclpy.qos import DurabilityPolicy, QoSProfile
        from scipy.spatial.transform import Rotation
        from tf2_msgs.msg import TFMessage

        self.static_pub = self.node.create_publisher(TFMessage, "/tf_static", QoSProfile(
            depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL))
        t = TransformStamped(child_frame_id=FRAME_ID)
        t.header.frame_id = "world"
        (t.transform.translation.x, t.transform.translation.y,
         t.transform.translation.z) = (float(v) for v in camera_to_world[:3, 3])
        (t.transform.rotation.x, t.transform.rotation.y, t.transform.rotation.z,
         t.transform.rotation.w) = (float(v) for v in Rotation.from_matrix(
             camera_to_world[:3, :3]).as_quat())
        self.static_pub.publish(TFMessage(transforms=[t]))

    def spin_until(self, condition, timeout: float) -> bool:
        return spin_until(self.executor, condition, timeout)

    def wait_for_node(self, timeout: float = 60.0) -> bool:
        """Until the node's inputs are subscribed (its first diagnostics came)."""
        return self.spin_until(lambda: self.diagnostics, timeout)

    def counter(self, key: str) -> int:
        values = {v.key: v.value for v in self.diagnostics[-1].status[0].values}
        return int(values[key])

    def call(self, srv_type, name: str, request, timeout: float = PIPELINE_TIMEOUT_S):
        client = self.node.create_client(srv_type, name)
        assert client.wait_for_service(timeout_sec=30), f"{name} not offered"
        future = client.call_async(request)
        assert self.spin_until(future.done, timeout), f"{name} did not answer"
        return future.result()

    def close(self) -> None:
        self.node.destroy_node()
        self.context.shutdown()


@pytest.fixture(scope="module")
def sample():
    cfg = load_config(overrides={"data.scene.min_objects": 3, "data.scene.max_objects": 4})
    return generate_scene(cfg.data, np.random.default_rng(1))


@pytest.fixture(scope="module")
def running(tmp_path_factory, sample):
    """A continuous-mode node and the harness, on a domain of their own."""
    require_ros()
    tmp = tmp_path_factory.mktemp("node")
    domain = free_domain_id()
    node = NodeProcess(tmp, domain, {"node": {"export_root": str(tmp / "exports"),
                                              "max_rate_hz": 0.0, "publish_sdf": True,
                                              "world_frame": "world",
                                              "diagnostics_period_s": 0.5}}, "continuous")
    harness = Harness(domain)
    harness.publish_camera_pose(sample.scene.camera.camera_to_world)
    assert harness.wait_for_node(), f"node did not start:\n{node.text()}"
    yield node, harness, tmp
    harness.close()
    node.stop()


def _stream_until(harness, sample, condition, timeout=PIPELINE_TIMEOUT_S, period=0.2) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        harness.publish(sample)
        if harness.spin_until(condition, period):
            return True
    return False


def _centres(sample) -> np.ndarray:
    """Ground-truth box centres (N, 3), camera frame."""
    centres = []
    for obj in sample.scene.objects:
        vertices = sample.meshes[obj.id][0]
        middle = (vertices.min(axis=0) + vertices.max(axis=0)) / 2
        centres.append(transform_points(obj.pose_matrix, middle[None])[0])
    return np.array(centres)


def test_outputs_match_the_ground_truth(running, sample):
    node, harness, tmp = running
    assert _stream_until(harness, sample, lambda: len(harness.graphs) >= 2), node.text()
    graph = harness.graphs[-1]
    assert graph.header.frame_id == FRAME_ID
    truth = _centres(sample)
    assert abs(len(graph.objects) - len(truth)) <= 1
    found = np.array([[o.bbox_center.position.x, o.bbox_center.position.y,
                       o.bbox_center.position.z] for o in graph.objects])
    nearest = np.linalg.norm(truth[:, None] - found[None], axis=2).min(axis=1)
    assert (nearest < 0.05).sum() >= len(truth) - 1, nearest
    # ids stay the same while the scene does not change
    assert [o.id for o in harness.graphs[-2].objects] == [o.id for o in graph.objects]
    for obj in graph.objects:
        assert obj.mesh_uri.startswith("file://") and Path(obj.mesh_uri[7:]).is_file()
        assert 0 <= obj.score <= 1 and min(obj.bbox_size.x, obj.bbox_size.y,
                                           obj.bbox_size.z) > 0
    assert any(r.predicate == "on" for r in graph.relations)
    # the world frame from /tf_static is the scene's gravity frame
    live = json.loads((tmp / "exports" / "live" / "scene.json").read_text())
    np.testing.assert_allclose(live["camera"]["camera_to_world"],
                               sample.scene.camera.camera_to_world, atol=1e-6)
    # markers: a triangle list and a label per object; TF: one frame per object, same pose
    markers = [m for m in harness.markers[-1].markers if m.ns == "objects"]
    assert sorted(m.id for m in markers) == sorted(o.id for o in graph.objects)
    assert all(len(m.points) > 0 and len(m.points) % 3 == 0 for m in markers)
    def frames():
        return {t.child_frame_id: t for msg in harness.tf for t in msg.transforms
                if t.header.stamp == graph.header.stamp}

    assert harness.spin_until(lambda: len(frames()) >= len(graph.objects), 10.0)
    frames = frames()
    for obj in graph.objects:
        t = frames[f"scenemaker/object_{obj.id}"].transform.translation
        assert (t.x, t.y, t.z) == pytest.approx(
            (obj.pose.position.x, obj.pose.position.y, obj.pose.position.z))


def test_late_subscriber_gets_the_last_graph_and_sdf(running, sample):
    from scenemaker_msgs.msg import SceneGraph
    from std_msgs.msg import String

    _, harness, _ = running
    assert _stream_until(harness, sample, lambda: harness.graphs)
    late, sdf = [], []
    harness.node.create_subscription(SceneGraph, "/scenemaker/scene_graph", late.append,
                                     harness.latched)
    harness.node.create_subscription(String, "/scenemaker/world_sdf", sdf.append,
                                     harness.latched)
    assert harness.spin_until(lambda: late and sdf, 10.0)
    assert late[0].objects and "<sdf" in sdf[0].data and "<model" in sdf[0].data


def test_bad_input_is_logged_counted_and_skipped(running, sample):
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from scenemaker_ros.ros import convert

    node, harness, _ = running
    harness.spin_until(lambda: False, 1.0)
    skipped = harness.counter("skipped_bad_input")
    header = Header()
    nan_depth = convert.depth_to_image(np.full(sample.depth.shape, np.nan, np.float32), header,
                                       encoding="32FC1")
    small_depth = convert.depth_to_image(sample.depth[::2, ::2], header)
    zero_info = convert.camera_info_msg(CameraInfo.from_intrinsics(sample.scene.camera), header)
    zero_info.k = [0.0] * 9
    yuv = Image(height=2, width=2, encoding="yuv422", step=4, data=bytes(8))
    bad = [{"image": yuv}, {"depth": small_depth}, {"depth": nan_depth}, {"info": zero_info}]
    for k, kwargs in enumerate(bad):
        before = harness.counter("skipped_bad_input")
        harness.publish(sample, **kwargs)
        assert harness.spin_until(lambda n=before: harness.counter("skipped_bad_input") > n,
                                  PIPELINE_TIMEOUT_S), f"bad input {k} not counted"
    assert harness.counter("skipped_bad_input") == skipped + len(bad)
    assert node.alive()
    log = node.text()
    for message in ("encoding 'yuv422' is not supported", "registered to the colour image",
                    "no valid pixel", "focal length must be positive"):
        assert message in log
    processed = harness.counter("processed")
    assert _stream_until(harness, sample, lambda: harness.counter("processed") > processed)
    # camera_info missing: nothing can be matched, and the diagnostics say which input is silent
    from scenemaker_ros.ros import convert as ros_convert

    def without_camera_info():
        header = Header(stamp=harness.node.get_clock().now().to_msg(), frame_id=FRAME_ID)
        harness.image_pub.publish(ros_convert.rgb_to_image(sample.rgb, header))
        harness.depth_pub.publish(ros_convert.depth_to_image(sample.depth, header))
        return "no messages on /camera_info" in harness.diagnostics[-1].status[0].message

    end = time.monotonic() + 20.0
    while not without_camera_info() and time.monotonic() < end:
        harness.spin_until(lambda: False, 0.2)
    assert without_camera_info() and "no messages on /camera_info" in node.text()


def _settled_count(harness, quiet_s: float = 10.0) -> int:
    """The node's processed count once it has not changed for quiet_s (no input is sent)."""
    since, last = time.monotonic(), harness.counter("processed")
    end = since + 2 * PIPELINE_TIMEOUT_S
    while time.monotonic() - since < quiet_s and time.monotonic() < end:
        harness.spin_until(lambda: False, 0.5)
        if harness.counter("processed") != last:
            since, last = time.monotonic(), harness.counter("processed")
    return last


def test_a_burst_drops_old_frames_instead_of_queueing_them(running, sample):
    node, harness, _ = running
    processed = _settled_count(harness)
    dropped, matched = harness.counter("dropped"), harness.counter("matched")
    last_stamp_ns = harness.publish_burst(sample, 30)
    # once the input stops, the node finishes the frame it was running and then takes the
    # newest one: nothing was queued, every other matched frame was dropped
    new_processed = _settled_count(harness) - processed
    new_matched = harness.counter("matched") - matched
    new_dropped = harness.counter("dropped") - dropped
    counts = f"processed +{new_processed}, matched +{new_matched}, dropped +{new_dropped}"
    assert new_matched >= 10, counts
    assert new_processed + new_dropped == new_matched, counts
    assert 1 <= new_processed <= new_matched // 3, counts
    stamp = harness.graphs[-1].header.stamp
    assert stamp.sec * 10**9 + stamp.nanosec == last_stamp_ns, "the last scene is not the newest"
    assert node.alive()


def test_export_and_reset_services(running, sample):
    from scenemaker_msgs.srv import ExportScene
    from std_srvs.srv import Trigger
    from visualization_msgs.msg import Marker

    _, harness, tmp = running
    assert _stream_until(harness, sample, lambda: harness.graphs)
    refused = harness.call(ExportScene, "/scenemaker/export",
                           ExportScene.Request(path="../../outside"))
    assert not refused.success and "leaves the export root" in refused.message
    done = harness.call(ExportScene, "/scenemaker/export",
                        ExportScene.Request(path="snap", formats=["sdf"]))
    assert done.success, done.message
    out = Path(done.scene_dir)
    assert out == tmp / "exports" / "snap"
    assert {"scene.json", "scene.glb", "world.sdf"} <= {p.name for p in out.iterdir()}
    graphs = len(harness.graphs)
    reset = harness.call(Trigger, "/scenemaker/reset", Trigger.Request())
    assert reset.success
    assert harness.spin_until(lambda: len(harness.graphs) > graphs and any(
        m.action == Marker.DELETEALL for m in harness.markers[-1].markers), 10.0)


def test_parameters_are_declared_described_and_validated(running):
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import DescribeParameters, GetParameters, SetParameters

    _, harness, _ = running
    got = harness.call(GetParameters, "/scenemaker/get_parameters",
                       GetParameters.Request(names=["node.max_rate_hz", "pose.steps"]), 10)
    assert [v.double_value for v in got.values[:1]] == [0.0]
    assert got.values[1].integer_value == 8
    described = harness.call(DescribeParameters, "/scenemaker/describe_parameters",
                             DescribeParameters.Request(names=["pose.steps"]), 10)
    assert "Euler steps" in described.descriptors[0].description
    bad = Parameter(name="pose.steps", value=ParameterValue(
        type=ParameterType.PARAMETER_STRING, string_value="many"))
    result = harness.call(SetParameters, "/scenemaker/set_parameters",
                          SetParameters.Request(parameters=[bad]), 10).results[0]
    assert not result.successful and "pose.steps" in result.reason
    good = Parameter(name="node.max_rate_hz", value=ParameterValue(
        type=ParameterType.PARAMETER_DOUBLE, double_value=5.0))
    assert harness.call(SetParameters, "/scenemaker/set_parameters",
                        SetParameters.Request(parameters=[good]), 10).results[0].successful


def test_on_demand_mode_and_a_qos_mismatch(tmp_path, sample):
    """A reliable-only image input meets a best-effort publisher: the node warns and no frame
    arrives, so ~/generate fails with a reason; with a reliable publisher it succeeds."""
    require_ros()
    from std_srvs.srv import Trigger

    domain = free_domain_id()
    node = NodeProcess(tmp_path, domain, {"node": {
        "mode": "on_demand", "image_qos": "reliable", "generate_timeout_s": 3.0,
        "export_root": str(tmp_path / "exports"), "diagnostics_period_s": 0.5}}, "on_demand")
    best_effort = Harness(domain, image_reliable=False)
    try:
        assert best_effort.wait_for_node(), node.text()
        best_effort.publish(sample)
        failed = best_effort.call(Trigger, "/scenemaker/generate", Trigger.Request())
        assert not failed.success and "no synchronised frame" in failed.message
        assert "QoS mismatch" in node.text()
        best_effort.close()
        harness = Harness(domain)
        harness.wait_for_node()
        for _ in range(5):
            harness.publish(sample)
            harness.spin_until(lambda: False, 0.2)
        assert harness.counter("processed") == 0  # on demand: nothing without a request
        harness.publish(sample)
        done = harness.call(Trigger, "/scenemaker/generate", Trigger.Request())
        assert done.success and "objects" in done.message, done.message
        assert harness.spin_until(lambda: harness.graphs, 10.0)
        harness.close()
    finally:
        node.stop()


def test_invalid_parameters_stop_the_node_with_one_line(tmp_path):
    require_ros()
    node = NodeProcess(tmp_path, free_domain_id(), {"node": {"mode": "sometimes"}}, "invalid")
    assert node.process.wait(timeout=120) == 2
    node.log.close()
    lines = [line for line in node.text().splitlines() if line.strip()]
    assert lines == ["scenemaker_node: error: config: 'node.mode' must be one of "
                     "['continuous', 'on_demand'], got 'sometimes'"]


def test_rgb_only_input_through_a_monocular_depth_backend(tmp_path, sample):
    """node.rgb_only: image + camera_info in, depth from a (tiny, random) Depth Anything."""
    require_ros()
    from std_msgs.msg import Header

    from scenemaker_ros.ros import convert
    from tests.test_mono_depth import save_tiny_depth_anything

    model = save_tiny_depth_anything(tmp_path / "depth-anything")
    domain = free_domain_id()
    node = NodeProcess(tmp_path, domain, {
        "node": {"rgb_only": True, "export_root": str(tmp_path / "exports"),
                 "diagnostics_period_s": 0.5},
        "pipeline": {"depth": {"backend": "depth_anything",
                               "depth_anything": {"model": str(model), "device": "cpu"}}}},
        "rgb_only")
    harness = Harness(domain)
    try:
        assert harness.wait_for_node(), node.text()
        assert "received.depth" not in {v.key for v in harness.diagnostics[-1].status[0].values}
        camera = CameraInfo.from_intrinsics(sample.scene.camera)

        def publish_rgb():
            header = Header(stamp=harness.node.get_clock().now().to_msg(), frame_id=FRAME_ID)
            harness.image_pub.publish(convert.rgb_to_image(sample.rgb, header))
            harness.info_pub.publish(convert.camera_info_msg(camera, header))

        end = time.monotonic() + PIPELINE_TIMEOUT_S
        while not harness.graphs and time.monotonic() < end:
            publish_rgb()
            harness.spin_until(lambda: harness.graphs, 0.3)
        assert harness.graphs, node.text()
        assert harness.graphs[-1].header.frame_id == FRAME_ID
        assert harness.counter("skipped_bad_input") == 0 and harness.counter("failed") == 0
    finally:
        harness.close()
        node.stop()
