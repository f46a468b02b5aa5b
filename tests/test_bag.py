"""``scenemaker bag``: the synthetic example bag, and replaying it through the node (in process)
into a bag of the node's outputs, read back with rosbags.

Skipped when ROS is not importable, unless SCENEMAKER_REQUIRE_ROS is set (then failed).
"""

import json
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import small_data_config
from tests.ros_helpers import free_domain_id, require_ros

N_FRAMES = 3
RATE_HZ = 10.0


@pytest.fixture(scope="module")
def bag():
    require_ros()
    from scenemaker_ros.ros import bag

    return bag


@pytest.fixture(scope="module")
def example(bag, tmp_path_factory):
    """A 3-frame 320x240 example bag (MCAP): (bag path, ground-truth folder, sample)."""
    path = tmp_path_factory.mktemp("bags") / "example"
    ground_truth, sample = bag.write_example_bag(path, frames=N_FRAMES, seed=3, rate_hz=RATE_HZ,
                                                 data=small_data_config())
    return path, ground_truth, sample


@pytest.fixture
def ros_env(monkeypatch):
    """This process's ROS context on loopback, on its own domain."""
    monkeypatch.setenv("ROS_DOMAIN_ID", str(free_domain_id()))
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    monkeypatch.setenv("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")


def _messages(bag_module, path: Path) -> dict[str, list]:
    """{topic: [(log time ns, message)]} read with rosbags and the project's typestore."""
    store, messages = bag_module.typestore(), {}
    with closing(bag_module.open_bag(path)) as reader:
        for connection, ns, data in reader.messages():
            msg = store.deserialize_cdr(data, connection.msgtype)
            messages.setdefault(connection.topic, []).append((ns, msg))
    return messages


def _ns(stamp) -> int:
    return stamp.sec * 10**9 + stamp.nanosec


def test_example_bag_is_a_camera_stream_with_ground_truth(bag, example):
    path, ground_truth, sample = example
    topics = bag.CAMERA_TOPICS
    messages = _messages(bag, path)
    assert set(messages) == {topics.image, topics.depth, topics.camera_info}
    images, depths, infos = (messages[t] for t in (topics.image, topics.depth,
                                                   topics.camera_info))
    assert len(images) == len(depths) == len(infos) == N_FRAMES
    period = round(1e9 / RATE_HZ)
    for k, ((ns, image), (_, depth), (_, info)) in enumerate(zip(images, depths, infos)):
        assert ns == bag.EXAMPLE_START_NS + k * period  # log time = header stamp
        for msg in (image, depth, info):
            assert _ns(msg.header.stamp) == ns
            assert msg.header.frame_id == "camera_color_optical_frame"
        assert (image.encoding, image.width, image.height) == ("rgb8", 320, 240)
        assert (depth.encoding, depth.step) == ("16UC1", 2 * 320)
        np.testing.assert_allclose(np.array(info.k).reshape(3, 3), sample.scene.camera.K)
    rgb = [im.data.reshape(240, 320, 3) for _, im in images]
    mm = [d.data.view("<u2").reshape(240, 320) for _, d in depths]
    np.testing.assert_array_equal(rgb[0], sample.rgb)  # a static camera ...
    np.testing.assert_array_equal(rgb[0], rgb[-1])
    assert (mm[0] != mm[1]).mean() > 0.1  # ... with fresh depth noise per frame
    valid = (mm[0] > 0) & (sample.depth > 0)
    assert np.median(np.abs(mm[0][valid] / 1000 - sample.depth[valid])) < 0.01
    scene = json.loads((ground_truth / "scene.json").read_text())
    assert ground_truth == path.with_name("example_ground_truth")
    assert len(scene["objects"]) == len(sample.scene.objects) >= 2


def test_replay_every_frame_records_one_scene_per_frame(bag, example, tmp_path, ros_env):
    """Input MCAP -> output sqlite3 (written from its own thread), read back with rosbags."""
    path, _, sample = example
    out = tmp_path / "outputs"
    summary = bag.replay_bag(path, out, every_frame=True, storage="sqlite3")
    assert (summary.frames_in, summary.matched, summary.processed) == (N_FRAMES,) * 3
    assert summary.dropped == summary.skipped == summary.failed == 0

    messages = _messages(bag, out)
    graphs = messages["/scenemaker/scene_graph"]
    stamps = [bag.EXAMPLE_START_NS + k * round(1e9 / RATE_HZ) for k in range(N_FRAMES)]
    assert [_ns(g.header.stamp) for _, g in graphs] == stamps  # one graph per input frame
    assert [ns for ns, _ in graphs] == stamps  # recorded on the input bag's (simulated) time
    n_true = len(sample.scene.objects)
    counts = [len(g.objects) for _, g in graphs]
    assert summary.objects_per_scene == counts
    assert all(abs(n - n_true) <= 2 for n in counts), (counts, n_true)
    assert abs(np.median(counts) - n_true) <= 1, (counts, n_true)

    tf = {_ns(t.header.stamp): t for _, m in messages["/tf"] for t in m.transforms}
    for _, g in graphs:
        frames = {t.child_frame_id for _, m in messages["/tf"] for t in m.transforms
                  if _ns(t.header.stamp) == _ns(g.header.stamp)}
        assert frames == {f"scenemaker/object_{o.id}" for o in g.objects}
    assert {t.header.frame_id for t in tf.values()} == {"camera_color_optical_frame"}
    markers = messages["/scenemaker/markers"]
    assert len(markers) == N_FRAMES
    assert all(m.markers and m.markers[0].header.frame_id == "camera_color_optical_frame"
               for _, m in markers)

    # ros2 bag identifies types by their hash: the recorded one must be the built message's
    with closing(bag.open_bag(out)) as reader:
        hashes = {c.topic: c.digest for c in reader.connections}
    installed = json.loads((bag._share_dir("scenemaker_msgs") / "msg" / "SceneGraph.json"
                            ).read_text())
    assert hashes["/scenemaker/scene_graph"] == installed["type_hashes"][0]["hash_string"]
    assert (out.with_name("outputs_export") / "live" / "scene.json").is_file()


def test_sqlite3_example_and_clear_errors(bag, tmp_path, capsys):
    from scenemaker_ros.cli import main

    config = tmp_path / "small.yaml"
    config.write_text("data:\n  camera: {width: 160, height: 120, fx_range: [135.0, 165.0]}\n")
    example = tmp_path / "example_sqlite"
    assert main(["bag", "example", "--out", str(example), "--frames", "2", "--storage",
                 "sqlite3", "--config", str(config)]) == 0
    assert (example / "example_sqlite.db3").is_file()
    with closing(bag.open_bag(example)) as reader:
        assert {t: i.msgcount for t, i in reader.topics.items()} == {
            t: 2 for _, t, _ in bag.CAMERA_TOPICS.items()}
    capsys.readouterr()

    def error(*args: str) -> str:
        assert main(["bag", "replay", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "Traceback" not in err
        return err

    missing_topic = error(str(example), "--out", str(tmp_path / "o1"), "--depth-topic",
                          "/camera/depth/image_rect_raw")
    assert "no depth topic /camera/depth/image_rect_raw" in missing_topic
    assert "--depth-topic" in missing_topic
    assert "/camera/aligned_depth_to_color/image_raw (sensor_msgs/msg/Image)" in missing_topic
    assert "no such bag" in error(str(tmp_path / "nope"), "--out", str(tmp_path / "o2"))
    assert "exists already" in error(str(example), "--out", str(example))
    metadata = example / "metadata.yaml"
    metadata.write_text(metadata.read_text().replace("storage_identifier: sqlite3",
                                                     "storage_identifier: zip"))
    assert "unknown bag storage 'zip'" in error(str(example), "--out", str(tmp_path / "o3"))
    assert not any((tmp_path / f"o{k}").exists() for k in (1, 2, 3))


@pytest.mark.parametrize("growing", [False, True])
def test_bench_node_summary(growing):
    """``bench node``'s figures from synthetic records (no ROS): percentiles over the window,
    the node's counters between two diagnostics, queue and memory trends."""
    from scenemaker_ros.bench.node import summarise

    s = 10**9
    stamps = np.arange(5, 75) * s  # one scene per second, 5 s .. 74 s
    latency = np.linspace(0.5, 3.0, len(stamps)) if growing else np.full(len(stamps), 0.5)
    markers = [(int(t + d * s), int(t)) for t, d in zip(stamps, latency)]
    published = [int(k * s / 30) for k in range(80 * 30)]  # 30 Hz for 80 s
    diagnostics = [(int(9.5 * s), {"received.image": "285", "matched": "285",
                                   "processed": "9", "dropped": "276"}),
                   (int(72.5 * s), {"received.image": "2170", "matched": "2170",
                                    "processed": "72", "dropped": "2098",
                                    "latency_p50_ms": "500", "stage.pose.p50_ms": "300"})]
    rss = [(float(t), 500.0 + (3.0 * t if growing else 0.0)) for t in range(80)]
    r = summarise(markers, published, diagnostics, rss, (10 * s, 70 * s), 0)

    in_window = (stamps >= 10 * s) & (stamps <= 70 * s)
    assert r["scenes"] == in_window.sum() == 61
    assert r["published"] == 60 * 30 + 1 and abs(r["published_hz"] - 30) < 0.1
    assert r["latency_p50_s"] == pytest.approx(np.median(latency[in_window]))
    assert r["latency_p95_s"] == pytest.approx(np.percentile(latency[in_window], 95))
    assert r["node"] == {"received.image": 1885, "matched": 1885, "processed": 63,
                         "dropped": 1822, "skipped_bad_input": 0, "failed": 0,
                         "published": 63 * 30}
    assert r["node_reported_ms"] == {"latency_p50_ms": 500.0, "stage.pose.p50_ms": 300.0}
    assert r["queue_growth"] is growing and r["memory_flat"] is not growing
    assert r["target_p50_met"] is not growing
    assert r["rss_slope_mb_per_min"] == pytest.approx(180.0 if growing else 0.0, abs=1e-6)
    assert len(r["series"]["latency"]) == 61 and len(r["series"]["rss_mb"]) == 80
