"""rosbag2 tooling (``scenemaker bag``): a synthetic example bag, and offline replay through the
node.

``write_example_bag``: one generated scene seen by a static camera, fresh depth-sensor noise per
frame, as a RealSense-like bag (``CAMERA_TOPICS``: rgb8 colour, 16UC1 millimetre depth aligned to
colour, CameraInfo; frame ``camera_color_optical_frame``), plus its ground-truth scene folder
beside the bag (``<bag>_ground_truth``).

``replay_bag``: publishes a bag's image, depth and camera_info (raw CDR bytes, at the recorded
pace times ``rate``, with ``/clock``; the node runs on simulated time) into a ``SceneMakerNode``
in this process, and records the node's outputs into a new bag whose message times are the
input bag's times; the node's live scene folder goes to ``<out>_export/live``. ``every_frame``
publishes the next frame only when the node has finished the previous one: every frame is
processed (deterministic offline processing). Like ``ros2 bag play``, replay runs on the current
ROS_DOMAIN_ID: choose a free one to keep it apart from a live system.

Bags are read and written with the ``rosbags`` library (MCAP or sqlite3, Kilted type hashes);
scenemaker_msgs types are registered from their installed ``.msg`` definitions.
"""

from __future__ import annotations

import copy
import importlib
import queue
import threading
import time
from dataclasses import dataclass, field
from functools import cache, partial
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
import yaml
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import MultiThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message, serialize_message
from rclpy.signals import SignalHandlerOptions
from rosbags.interfaces import (
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.rosbag2.errors import ReaderError
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore
from rosgraph_msgs.msg import Clock
from scenemaker_msgs.msg import SceneGraph
from sensor_msgs.msg import CameraInfo as CameraInfoMsg
from sensor_msgs.msg import Image
from std_msgs.msg import Header, String
from tf2_msgs.msg import TFMessage
from tqdm import tqdm
from visualization_msgs.msg import MarkerArray

from scenemaker_ros.config import DataConfig, load_config
from scenemaker_ros.errors import SceneMakerError
from scenemaker_ros.frames import CAMERA_FRAME, CameraInfo
from scenemaker_ros.ros import convert
from scenemaker_ros.ros.params import flat_defaults
from scenemaker_ros.scene import save_scene
from scenemaker_ros.synth.noise import apply_depth_noise
from scenemaker_ros.synth.scenes import SceneSample, generate_scene

STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
EXAMPLE_START_NS = 1_750_000_000 * 10**9  # example bags start here: same seed, same bag
DELIVERY_TIMEOUT_S = 5.0  # --every-frame: a published message must reach the node by then
FRAME_TIMEOUT_S = 300.0  # --every-frame: the node must finish a frame by then
MATCH_TIMEOUT_S = 1.0  # --every-frame: a frame's messages are matched (or not) by then
DISCOVERY_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class CameraTopics:
    """The three camera topics of a bag, in the node's input order (image, depth, camera_info)."""

    image: str = "/camera/color/image_raw"
    depth: str = "/camera/aligned_depth_to_color/image_raw"
    camera_info: str = "/camera/color/camera_info"

    def items(self) -> list[tuple[str, str, type]]:
        """[(node input name, topic, message type)]."""
        return [("image", self.image, Image), ("depth", self.depth, Image),
                ("camera_info", self.camera_info, CameraInfoMsg)]


CAMERA_TOPICS = CameraTopics()


# -----------------------------------------------------------------------------
# types and QoS


def type_name(msg_type: type) -> str:
    """rosbag2 type name of a message class: sensor_msgs.msg.Image -> 'sensor_msgs/msg/Image'."""
    return f"{msg_type.__module__.split('.')[0]}/msg/{msg_type.__name__}"


def _share_dir(package: str) -> Path:
    """The package's share folder: from the ament index when a ROS environment is sourced, else
    beside the Python package (the pip-only set-up installs into the venv's share/)."""
    from ament_index_python.packages import get_package_share_directory

    try:
        return Path(get_package_share_directory(package))
    except (LookupError, OSError):  # not indexed, or AMENT_PREFIX_PATH unset
        module = importlib.import_module(package)
        return Path(module.__file__).resolve().parents[4] / "share" / package


@cache
def typestore() -> Typestore:
    """The ROS 2 Kilted types plus scenemaker_msgs (from its installed .msg files)."""
    store = get_typestore(Stores.ROS2_KILTED)
    msg_dir = _share_dir("scenemaker_msgs") / "msg"
    definitions = sorted(msg_dir.glob("*.msg"))
    if not definitions:
        raise SceneMakerError(f"no scenemaker_msgs .msg files in {msg_dir}: build the messages "
                              "with `bash scripts/build_msgs.sh`")
    types = {}
    for path in definitions:
        types.update(get_types_from_msg(path.read_text(), f"scenemaker_msgs/msg/{path.stem}"))
    store.register(types)
    return store


def _bag_qos(depth: int, transient_local: bool = False) -> Qos:
    """A reliable publisher's QoS as stored in a bag's offered_qos_profiles."""
    never = QosTime(0, 0)
    durability = QosDurability.TRANSIENT_LOCAL if transient_local else QosDurability.VOLATILE
    return Qos(QosHistory.KEEP_LAST, depth, QosReliability.RELIABLE, durability, never, never,
               QosLiveliness.AUTOMATIC, never, False)


def _check_new_bag(out: Path, storage: str) -> None:
    if storage not in STORAGES:
        raise SceneMakerError(f"unknown bag storage '{storage}' (one of {', '.join(STORAGES)})")
    if out.exists():
        raise SceneMakerError(f"{out} exists already: choose a new bag path or remove it")


def _open_writer(out: Path, storage: str) -> Writer:
    _check_new_bag(out, storage)
    writer = Writer(out, version=Writer.VERSION_LATEST, storage_plugin=STORAGES[storage])
    writer.open()
    return writer


class _BagWriter:
    """A bag written by its own thread (an sqlite3 bag may only be used by the thread that
    opened it); ``put`` from any thread. topics: [(topic, message type, transient local)]."""

    def __init__(self, out: Path, storage: str, topics: list[tuple[str, type, bool]]):
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.error: BaseException | None = None
        opened = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(out, storage, topics, opened),
                                       name="bag-writer", daemon=True)
        self.thread.start()
        opened.wait()
        if self.error is not None:
            raise self.error

    def _run(self, out: Path, storage: str, topics: list, opened: threading.Event) -> None:
        try:
            writer = _open_writer(out, storage)
            connections = {topic: writer.add_connection(
                topic, type_name(msg_type), typestore=typestore(),
                offered_qos_profiles=[_bag_qos(1 if latched else 10, latched)])
                for topic, msg_type, latched in topics}
        except BaseException as err:  # raised again by __init__
            self.error = err
            return
        finally:
            opened.set()
        try:
            while (item := self.queue.get()) is not None:
                topic, ns, data = item
                writer.write(connections[topic], ns, data)
        except Exception as err:  # raised again by close
            self.error = err
        finally:
            writer.close()

    def put(self, topic: str, ns: int, data: bytes) -> None:
        self.queue.put((topic, ns, data))

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()
        if self.error is not None:
            raise SceneMakerError(f"bag replay: writing the output bag failed: {self.error}")


def open_bag(path: str | Path) -> Reader:
    """An open rosbags Reader of a rosbag2 folder (or of the .mcap / .db3 file inside one)."""
    path = Path(path)
    if path.is_file() and (path.parent / "metadata.yaml").is_file():
        path = path.parent
    if not path.exists():
        raise SceneMakerError(f"{path}: no such bag")
    if not (path / "metadata.yaml").is_file():
        raise SceneMakerError(f"{path}: not a rosbag2 bag (a folder with metadata.yaml and .mcap "
                              "or .db3 files)")
    metadata = yaml.safe_load((path / "metadata.yaml").read_text()) or {}
    storage = metadata.get("rosbag2_bagfile_information", {}).get("storage_identifier")
    if storage not in STORAGES:
        raise SceneMakerError(f"{path}: unknown bag storage '{storage}' (rosbags reads "
                              f"{' and '.join(STORAGES)}; convert it with `ros2 bag convert`)")
    reader = Reader(path)
    try:
        reader.open()
    except ReaderError as err:
        raise SceneMakerError(f"{path}: cannot read the bag: {err}") from None
    return reader


# -----------------------------------------------------------------------------
# the example bag


def _stamp(ns: int) -> Time:
    return Time(sec=ns // 10**9, nanosec=ns % 10**9)


def camera_messages(rgb: np.ndarray, depth: np.ndarray, info: CameraInfo, header: Header
                    ) -> list:
    """[rgb8 Image, 16UC1 millimetre Image, CameraInfo] of one frame, in CameraTopics order.

    rgb: (H, W, 3) uint8; depth: (H, W) float metres, 0 = invalid."""
    return [convert.rgb_to_image(rgb, header), convert.depth_to_image(depth, header),
            convert.camera_info_msg(info, header)]


def example_scene(seed: int, data: DataConfig | None = None, objects: int | None = None
                  ) -> SceneSample:
    """One generated scene (clean depth; no renders of objects alone) with ``objects`` objects,
    or the generator's random count."""
    cfg = copy.deepcopy(data or load_config().data)
    cfg.render_alone, cfg.sensor_noise = False, False
    if objects is not None:
        if objects < 1:
            raise SceneMakerError(f"--objects must be >= 1, got {objects}")
        cfg.scene.min_objects = cfg.scene.max_objects = objects
    return generate_scene(cfg, np.random.default_rng(seed))


def write_example_bag(out: str | Path, frames: int = 20, seed: int = 0, rate_hz: float = 10.0,
                      storage: str = "mcap", data: DataConfig | None = None,
                      objects: int | None = None) -> tuple[Path, SceneSample]:
    """Write the example bag at ``out`` and its ground truth at ``<out>_ground_truth``; returns
    the ground-truth folder and the scene."""
    if frames < 1 or rate_hz <= 0:
        raise SceneMakerError("bag example: --frames must be >= 1 and --rate > 0")
    out = Path(out)
    data = data or load_config().data
    sample = example_scene(seed, data, objects)
    info = CameraInfo.from_intrinsics(sample.scene.camera)
    noise_rng = np.random.default_rng([seed, 1])
    store = typestore()
    writer = _open_writer(out, storage)
    try:
        connections = [writer.add_connection(topic, type_name(msg_type), typestore=store,
                                             offered_qos_profiles=[_bag_qos(10)])
                       for _, topic, msg_type in CAMERA_TOPICS.items()]
        for k in tqdm(range(frames), desc="bag example", unit="frame"):
            ns = EXAMPLE_START_NS + round(k * 1e9 / rate_hz)
            depth = apply_depth_noise(sample.depth, info.K, data.noise, noise_rng)
            header = Header(stamp=_stamp(ns), frame_id=CAMERA_FRAME)
            for connection, msg in zip(connections, camera_messages(sample.rgb, depth, info,
                                                                    header)):
                writer.write(connection, ns, serialize_message(msg))
    finally:
        writer.close()
    sample.scene.stamp = EXAMPLE_START_NS * 1e-9
    ground_truth = save_scene(sample.scene, out.with_name(f"{out.name}_ground_truth"),
                              sample.meshes)
    return ground_truth, sample


# -----------------------------------------------------------------------------
# replay


@dataclass
class ReplaySummary:
    """What a replay did: input frames (image messages), the node's counters, recorded scenes
    (objects per SceneGraph) and message counts per recorded topic."""

    out: Path
    frames_in: int
    matched: int
    processed: int
    dropped: int
    skipped: int
    failed: int
    objects_per_scene: list[int] = field(default_factory=list)
    recorded: dict[str, int] = field(default_factory=dict)


class _Recorder(Node):
    """Raw subscriptions to the node's outputs, into a bag at the simulated time."""

    def __init__(self, bag: _BagWriter, topics: list[tuple[str, type, bool]], **kwargs):
        super().__init__("scenemaker_bag_recorder", **kwargs)
        self.bag, self.lock = bag, threading.Lock()
        self.counts = {topic: 0 for topic, *_ in topics}
        self.objects_per_scene: list[int] = []
        group = MutuallyExclusiveCallbackGroup()
        for topic, msg_type, latched in topics:
            qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL if latched
                             else DurabilityPolicy.VOLATILE)
            self.create_subscription(msg_type, topic, partial(self._on, topic, msg_type), qos,
                                     callback_group=group, raw=True)

    def _on(self, topic: str, msg_type: type, data: bytes) -> None:
        self.bag.put(topic, self.get_clock().now().nanoseconds, data)
        with self.lock:
            self.counts[topic] += 1
            if msg_type is SceneGraph:
                self.objects_per_scene.append(len(deserialize_message(data, SceneGraph).objects))


def config_parameters(config: Path) -> dict[str, Any]:
    """The node parameters a config file sets: its values that differ from the defaults."""
    defaults = flat_defaults()
    return {k: v for k, v in flat_defaults(load_config(config)).items() if v != defaults[k]}


def _node_overrides(config: Path | None, export_root: Path, every_frame: bool) -> list[Parameter]:
    """Parameters of the replayed node: a --config file's values, then what replay needs:
    simulated time, continuous mode, reliable inputs, its export root and, for --every-frame, no
    rate limit."""
    values = config_parameters(config) if config is not None else {}
    values.update({"node.mode": "continuous", "node.export_root": str(export_root),
                   "node.image_qos": "reliable", "node.depth_qos": "reliable",
                   "node.camera_info_qos": "reliable"})
    if every_frame:
        values["node.max_rate_hz"] = 0.0
    return [Parameter("use_sim_time", value=True),
            *(Parameter(k, value=v) for k, v in values.items())]


def _check_topics(reader: Reader, bag: Path, topics: CameraTopics) -> None:
    have = {topic: info.msgtype for topic, info in reader.topics.items()}
    listing = ", ".join(f"{t} ({m})" for t, m in sorted(have.items())) or "none"
    for name, topic, msg_type in topics.items():
        flag = f"--{name.replace('_', '-')}-topic"
        if topic not in have:
            raise SceneMakerError(f"{bag} has no {name} topic {topic} (choose one with {flag}); "
                                  f"its topics: {listing}")
        if have[topic] != type_name(msg_type):
            raise SceneMakerError(f"{bag}: {topic} is {have[topic]}, the {name} input needs "
                                  f"{type_name(msg_type)} (choose another with {flag})")


def _wait_for(condition, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            return False
        time.sleep(0.002)
    return True


def _wait(condition, timeout: float, what: str) -> None:
    if not _wait_for(condition, timeout):
        raise SceneMakerError(f"bag replay: {what} within {timeout:.0f} s")


class _Player:
    """Publishes the bag's camera messages as raw CDR and ``/clock`` (simulated time)."""

    def __init__(self, node: Node, topics: CameraTopics):
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.publishers = {topic: (name, node.create_publisher(msg_type, topic, reliable))
                           for name, topic, msg_type in topics.items()}
        self.clock = node.create_publisher(Clock, "/clock", reliable)

    def set_time(self, ns: int) -> None:
        self.clock.publish(Clock(clock=_stamp(ns)))

    def publish(self, topic: str, data: bytes) -> str:
        name, publisher = self.publishers[topic]
        publisher.publish(data)
        return name

    def connected(self) -> bool:
        return all(p.get_subscription_count() > 0 for _, p in self.publishers.values())


def replay_bag(bag: str | Path, out: str | Path, topics: CameraTopics = CAMERA_TOPICS,
               rate: float = 1.0, every_frame: bool = False, params_file: Path | None = None,
               config: Path | None = None, storage: str = "mcap") -> ReplaySummary:
    """Replay ``bag`` through the node and record its outputs into the new bag ``out``; the
    node's live scene folder goes to ``<out>_export/live``."""
    if rate <= 0:
        raise SceneMakerError(f"bag replay: --rate must be > 0, got {rate}")
    bag, out = Path(bag), Path(out)
    if params_file is not None and not Path(params_file).is_file():
        raise SceneMakerError(f"{params_file}: parameters file not found")
    reader = open_bag(bag)
    try:
        _check_topics(reader, bag, topics)
        _check_new_bag(out, storage)
        overrides = _node_overrides(config, out.with_name(f"{out.name}_export"), every_frame)
        return _replay(reader, out, storage, topics, rate, every_frame, params_file,
                       overrides)
    finally:
        reader.close()


def _replay(reader: Reader, out: Path, storage: str, topics: CameraTopics, rate: float,
            every_frame: bool, params_file: Path | None, overrides: list[Parameter]
            ) -> ReplaySummary:
    from scenemaker_ros.ros.node import SceneMakerNode  # the pipeline: only when replaying

    context = rclpy.Context()
    rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
    cli_args = ["--ros-args", *(f for name, topic, _ in topics.items()
                                for f in ("-r", f"{name}:={topic}"))]
    if params_file is not None:
        cli_args += ["--params-file", str(params_file)]
    nodes, executor, spinner, bag = [], None, None, None
    try:
        try:
            node = SceneMakerNode(context=context, cli_args=cli_args, parameter_overrides=overrides)
        except rclpy_implementation.RCLInvalidROSArgsError as err:
            raise SceneMakerError(f"{params_file}: not a valid ROS parameters file ("
                                  f"{str(err).splitlines()[0]})") from None
        nodes.append(node)
        outputs = [(node.resolve_topic_name("~/markers"), MarkerArray, False),
                   (node.resolve_topic_name("~/scene_graph"), SceneGraph, True),
                   ("/tf", TFMessage, False), ("/diagnostics", DiagnosticArray, False)]
        if node.cfg.node.publish_sdf:
            outputs.append((node.resolve_topic_name("~/world_sdf"), String, True))
        bag = _BagWriter(out, storage, outputs)
        recorder = _Recorder(bag, outputs, context=context,
                             parameter_overrides=[Parameter("use_sim_time", value=True)])
        player_node = Node("scenemaker_bag_player", context=context)
        nodes += [recorder, player_node]
        player = _Player(player_node, topics)
        executor = MultiThreadedExecutor(num_threads=4, context=context)
        for n in nodes:
            executor.add_node(n)
        spinner = threading.Thread(target=executor.spin, daemon=True)
        spinner.start()
        _wait(lambda: player.connected() and all(
            recorder.count_publishers(t) > 0 for t, *_ in outputs[:2]), DISCOVERY_TIMEOUT_S,
            "the node's inputs and outputs were not connected")
        frames_in = _play(reader, topics, player, node, recorder, rate, every_frame)
        c = node.counters
        _wait(lambda: c.processed + c.skipped + c.failed + c.dropped >= c.matched,
              FRAME_TIMEOUT_S, "the node did not finish the last frame")
        _wait(lambda: len(recorder.objects_per_scene) >= c.processed, DELIVERY_TIMEOUT_S,
              "the last scene graph was not recorded")
        time.sleep(0.2)  # markers, TF and diagnostics published with the last graph
        with recorder.lock:
            return ReplaySummary(out, frames_in, c.matched, c.processed, c.dropped, c.skipped,
                                 c.failed, list(recorder.objects_per_scene),
                                 dict(recorder.counts))
    finally:
        if executor is not None:
            executor.shutdown(timeout_sec=2.0)
        for n in reversed(nodes):
            n.destroy_node()
        if spinner is not None:
            spinner.join(timeout=2.0)
        rclpy.try_shutdown(context=context)
        if bag is not None:
            bag.close()


def _play(reader: Reader, topics: CameraTopics, player: _Player, node, recorder: _Recorder,
          rate: float, every_frame: bool) -> int:
    """Publish the bag's camera messages; returns the number of images published."""
    connections = [c for c in reader.connections if c.topic in player.publishers]
    n_images = sum(c.msgcount for c in connections if c.topic == topics.image)
    frames, since_frame = 0, set()  # inputs published since the last synchronised frame
    start_ns, start_wall = None, time.monotonic()
    with tqdm(total=n_images, desc="bag replay", unit="frame") as progress:
        for connection, ns, data in reader.messages(connections=connections):
            if start_ns is None:
                start_ns = ns
            if not every_frame:  # the recorded pace, with the clock running meanwhile
                while (wait := (ns - start_ns) * 1e-9 / rate - (time.monotonic() - start_wall)
                       ) > 0:
                    player.set_time(start_ns + round((time.monotonic() - start_wall) * rate
                                                     * 1e9))
                    time.sleep(min(wait, 0.01))
            player.set_time(ns)
            received, matched = node.counters.received.copy(), node.counters.matched
            name = player.publish(connection.topic, bytes(data))
            if connection.topic == topics.image:
                frames += 1
                progress.update()
            if every_frame:
                since_frame.add(name)
                _delivered(node, name, received[name], connection.topic)
                if len(since_frame) == len(player.publishers):
                    since_frame.clear()
                    _finish_frame(node, recorder, matched)
    return frames


def _delivered(node, name: str, received: int, topic: str) -> None:
    """--every-frame: wait until the node has received the message just published."""
    _wait(lambda: node.counters.received[name] > received, DELIVERY_TIMEOUT_S,
          f"a message on {topic} did not reach the node")


def _finish_frame(node, recorder: _Recorder, matched: int) -> None:
    """--every-frame, each input published since the last frame: when the node matched them into
    a frame, wait until it is processed (or skipped) and its scene graph recorded."""
    c = node.counters
    if not _wait_for(lambda: c.matched > matched, MATCH_TIMEOUT_S):
        return  # stamps too far apart to match: no frame
    _wait(lambda: c.processed + c.skipped + c.failed + c.dropped >= c.matched, FRAME_TIMEOUT_S,
          "the node did not finish a frame")
    _wait(lambda: len(recorder.objects_per_scene) >= c.processed, DELIVERY_TIMEOUT_S,
          "a scene graph was not recorded")
