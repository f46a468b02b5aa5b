"""``scenemaker bench node``: the ROS node under a live RGB-D stream.

Starts ``scenemaker_node`` as its own process (loopback discovery, a random ROS domain), publishes
a ``rate`` Hz RGB-D stream (640x480 by default) of one generated scene with ``objects`` objects,
reliably, and measures over ``duration`` seconds after a warm-up:
  latency      image stamp -> ~/markers received (p50, p95): what a robot waits for a scene;
  throughput   processed scenes per second; the frames published, and received, matched,
               processed and dropped by the node (its /diagnostics) between two diagnostics
               messages (dropped: replaced by a newer frame before the worker took it);
  memory       the node process's resident memory (VmRSS), each second;
  trends       latency and memory, first vs last third of the window: a growing latency means
               frames queue up somewhere, a growing memory a leak.
Prints a table, writes JSON and a plot (latency and memory vs time). The ROS side (camera stream,
output probe) is ``scenemaker_ros.ros.stream``.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from scenemaker_ros.bench import print_table, write_results
from scenemaker_ros.config import load_config
from scenemaker_ros.errors import SceneMakerError

TARGET_P50_S = 0.6  # the node's target: p50 <= 0.6 s with 5 objects on 2 cores
LATENCY_GROWTH = 1.25  # queue growth: last-third p50 above this times the first third's (+ 50 ms)
MEMORY_GROWTH_MB = 50.0  # memory not flat: last third above the first third by this much
STARTUP_TIMEOUT_S = 180.0  # the node loads its models
FIRST_SCENE_TIMEOUT_S = 120.0


# -----------------------------------------------------------------------------
# the node process


class NodeProcess:
    """``scenemaker_node`` in its own process; its output goes to ``log``."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path):
        beside = Path(sys.executable).with_name("scenemaker_node")
        script = str(beside) if beside.exists() else shutil.which("scenemaker_node")
        if script is None:
            raise SceneMakerError("bench node: the scenemaker_node console script is not "
                                  "installed (pip install -e . in the project)")
        self.log = log
        with open(log, "wb") as out:
            self.process = subprocess.Popen([script, *args], env=env, stdout=out,
                                            stderr=subprocess.STDOUT)

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            tail = self.log.read_text(errors="replace").strip().splitlines()[-5:]
            raise SceneMakerError(f"bench node: scenemaker_node exited with status "
                                  f"{self.process.returncode}: {' | '.join(tail)} (log: "
                                  f"{self.log})")

    def rss_mb(self) -> float:
        """Resident memory (VmRSS), MB."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def cpu_seconds(self) -> float:
        """User + system CPU time so far, all threads."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _ros_environment() -> dict[str, str]:
    """Loopback only, a random domain, Fast DDS large-data transports unless set otherwise."""
    return {"ROS_DOMAIN_ID": str(random.randint(1, 100)),
            "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
            "FASTDDS_BUILTIN_TRANSPORTS": os.environ.get("FASTDDS_BUILTIN_TRANSPORTS",
                                                         "LARGE_DATA")}


def _node_args(export_root: Path, params_file: Path | None, config: Path | None,
               workdir: Path) -> list[str]:
    """--ros-args of the benchmarked node: camera topics, reliable inputs, a scratch export
    root, and the user's parameters (a --config file becomes a parameters file)."""
    import yaml

    from scenemaker_ros.ros.bag import CAMERA_TOPICS, config_parameters

    args = ["--ros-args"]
    for name, topic, _ in CAMERA_TOPICS.items():
        args += ["-r", f"{name}:={topic}"]
    if params_file is not None:
        args += ["--params-file", str(params_file)]
    if config is not None:
        path = workdir / "config_params.yaml"
        path.write_text(yaml.safe_dump(
            {"scenemaker": {"ros__parameters": config_parameters(config)}}))
        args += ["--params-file", str(path)]
    for key in ("image_qos", "depth_qos", "camera_info_qos"):
        args += ["-p", f"node.{key}:=reliable"]
    return args + ["-p", f"node.export_root:={export_root}"]


# -----------------------------------------------------------------------------
# measuring


def _wait(condition, timeout: float, node: NodeProcess, what: str) -> None:
    end = time.monotonic() + timeout
    while not condition():
        node.check_alive()
        if time.monotonic() > end:
            raise SceneMakerError(f"bench node: {what} within {timeout:.0f} s (log: {node.log})")
        time.sleep(0.1)


def _stream(camera, probe, node: NodeProcess, warmup: float, duration: float
            ) -> tuple[int, int, list[tuple[float, float]], dict[str, float]]:
    """Run the stream: warm-up (at least until the first scene), then the measured window.
    Returns its start and end (wall ns), RSS samples [(seconds since the stream started, MB)]
    from the whole run, and the CPU use in the window (% of one core) of the node and of this
    process (camera stream and probe)."""
    rss: list[tuple[float, float]] = []
    start = time.monotonic()

    def sample_until(end: float, condition=lambda: False) -> None:
        next_sample = time.monotonic()
        while time.monotonic() < end and not condition():
            node.check_alive()
            if time.monotonic() >= next_sample:
                rss.append((time.monotonic() - start, node.rss_mb()))
                next_sample += 1.0
            time.sleep(0.05)

    camera.start()
    sample_until(start + warmup)
    sample_until(time.monotonic() + FIRST_SCENE_TIMEOUT_S, lambda: bool(probe.markers))
    if not probe.markers:
        raise SceneMakerError(f"bench node: no scene from the node within "
                              f"{FIRST_SCENE_TIMEOUT_S:.0f} s of streaming (log: {node.log})")
    window_start, cpu_start = time.time_ns(), (node.cpu_seconds(), time.process_time())
    sample_until(time.monotonic() + duration)
    window_end, cpu_end = time.time_ns(), (node.cpu_seconds(), time.process_time())
    camera.stop()
    sample_until(time.monotonic() + 3.0)  # the frame in flight; a last diagnostics message
    seconds = (window_end - window_start) * 1e-9
    cpu = {name: 100 * (b - a) / seconds
           for name, a, b in zip(("node", "stream_and_probe"), cpu_start, cpu_end)}
    return window_start, window_end, rss, cpu


def _thirds(t: np.ndarray, values: np.ndarray, statistic) -> tuple[float, float]:
    """statistic(values) over the first and the last third of the time span."""
    if len(t) < 3:
        return float("nan"), float("nan")
    low, high = t.min() + (t.max() - t.min()) / 3, t.max() - (t.max() - t.min()) / 3
    first, last = values[t <= low], values[t >= high]  # (N1,), (N3,)
    return (float(statistic(first)) if len(first) else float("nan"),
            float(statistic(last)) if len(last) else float("nan"))


def _per_minute_slope(t: np.ndarray, values: np.ndarray) -> float:
    return float(np.polyfit(t, values, 1)[0] * 60) if len(t) >= 2 else float("nan")


def _node_counters(diagnostics: list[tuple[int, dict]], published: list[int], start_ns: int
                   ) -> dict[str, int]:
    """The node's counters' increase from the last diagnostics before ``start_ns`` to the last
    one, and the frames published between those two messages."""
    if not diagnostics:
        return {}
    first = ([(t, v) for t, v in diagnostics if t <= start_ns] or [(0, {})])[-1]
    last = diagnostics[-1]
    counters = {k: int(last[1].get(k, 0)) - int(first[1].get(k, 0))
                for k in ("received.image", "matched", "processed", "dropped",
                          "skipped_bad_input", "failed")}
    counters["published"] = sum(first[0] < s <= last[0] for s in published)
    return counters


def summarise(markers: list[tuple[int, int]], published: list[int], diagnostics: list,
              rss: list[tuple[float, float]], window: tuple[int, int], stream_start_ns: int
              ) -> dict:
    """The benchmark's figures from the probe's records (wall ns) and RSS samples."""
    start, end = window
    seconds = (end - start) * 1e-9
    measured = np.array([(recv, stamp) for recv, stamp in markers if start <= stamp <= end]
                        ).reshape(-1, 2)
    latency = (measured[:, 0] - measured[:, 1]) * 1e-9  # (N,) seconds
    t = (measured[:, 1] - stream_start_ns) * 1e-9  # (N,) stamp, seconds since the stream began
    sent = sum(start <= s <= end for s in published)
    counters = _node_counters(diagnostics, published, start)
    reported = {k: float(v) for k, v in (diagnostics[-1][1] if diagnostics else {}).items()
                if k.startswith(("stage.", "latency_"))}
    rss_t = np.array([s for s, _ in rss])
    rss_mb = np.array([m for _, m in rss])
    in_window = (rss_t >= (start - stream_start_ns) * 1e-9) & (rss_t <= (end - stream_start_ns)
                                                                * 1e-9)
    first_p50, last_p50 = _thirds(t, latency, np.median)
    first_rss, last_rss = _thirds(rss_t[in_window], rss_mb[in_window], np.mean)
    percentile = (lambda q: float(np.percentile(latency, q))) if len(latency) else (
        lambda q: float("nan"))
    return {
        "window_s": seconds, "published": sent, "published_hz": sent / seconds,
        "scenes": len(latency), "scenes_per_s": len(latency) / seconds,
        "latency_p50_s": percentile(50), "latency_p95_s": percentile(95),
        "latency_max_s": float(latency.max()) if len(latency) else float("nan"),
        "latency_first_third_p50_s": first_p50, "latency_last_third_p50_s": last_p50,
        "latency_slope_s_per_min": _per_minute_slope(t, latency),
        "node": counters,
        "node_reported_ms": reported,  # the node's own latency and per-stage p50s (last window)
        "dropped_fraction": (counters["dropped"] / counters["matched"]
                             if counters.get("matched") else float("nan")),
        "rss_start_mb": float(rss_mb[in_window][0]) if in_window.any() else float("nan"),
        "rss_end_mb": float(rss_mb[in_window][-1]) if in_window.any() else float("nan"),
        "rss_max_mb": float(rss_mb.max()) if len(rss_mb) else float("nan"),
        "rss_first_third_mb": first_rss, "rss_last_third_mb": last_rss,
        "rss_slope_mb_per_min": _per_minute_slope(rss_t[in_window], rss_mb[in_window]),
        "queue_growth": (None if np.isnan(first_p50) or np.isnan(last_p50) or len(t) < 9
                         else bool(last_p50 > LATENCY_GROWTH * first_p50 + 0.05)),
        "memory_flat": bool(last_rss - first_rss < MEMORY_GROWTH_MB),
        "target_p50_met": bool(percentile(50) <= TARGET_P50_S),
        "series": {"latency": [[round(float(a), 3), round(float(b), 4)]
                               for a, b in zip(t, latency)],
                   "rss_mb": [[round(a, 2), round(b, 1)] for a, b in rss]},
    }


# -----------------------------------------------------------------------------
# the benchmark


def run_node_benchmark(duration: float = 120.0, rate: float = 30.0, objects: int = 5,
                       out: Path | None = None, plot: Path | None = None, seed: int = 0,
                       warmup: float = 10.0, params_file: Path | None = None,
                       config: Path | None = None) -> dict:
    """Run the benchmark (module docstring); returns the results written to ``out``."""
    from scenemaker_ros.ros.bag import example_scene
    from scenemaker_ros.ros.stream import BenchClient

    if duration <= 0 or rate <= 0 or warmup < 0:
        raise SceneMakerError("bench node: --duration and --rate must be > 0, --warmup >= 0")
    if params_file is not None and not Path(params_file).is_file():
        raise SceneMakerError(f"{params_file}: parameters file not found")
    cfg = load_config(config)
    sample = example_scene(seed, cfg.data, objects)
    ros_env = _ros_environment()
    os.environ.update(ros_env)  # this process's ROS context too (read at rclpy.init)
    workdir = Path(tempfile.mkdtemp(prefix="scenemaker-bench-node-"))
    node = NodeProcess(_node_args(workdir / "export", params_file, config, workdir),
                       {**os.environ, **ros_env}, workdir / "node.log")
    client = None
    try:
        client = BenchClient(sample, cfg.data.noise, rate, seed, "/scenemaker/markers")
        camera, probe = client.camera, client.probe
        _wait(lambda: camera.connected() and probe.node_connected(), STARTUP_TIMEOUT_S, node,
              "the node did not come up")
        stream_start = time.time_ns()
        window_start, window_end, rss, cpu = _stream(camera, probe, node, warmup, duration)
        results = summarise(list(probe.markers), list(camera.published),
                            list(probe.diagnostics), rss, (window_start, window_end),
                            stream_start)
        results["cpu_percent_of_one_core"] = cpu
        results["empty_marker_arrays"] = probe.empty_markers
        results["publisher_late_ticks"] = camera.late
    finally:
        if client is not None:
            client.close()
        node.stop()
    h, w = sample.depth.shape
    setup = {"duration_s": duration, "warmup_s": warmup, "rate_hz": rate, "objects": objects,
             "resolution": f"{w}x{h}", "seed": seed, "params_file": str(params_file or ""),
             "config": str(config or ""), "fastdds_transports": ros_env[
                 "FASTDDS_BUILTIN_TRANSPORTS"], "target_p50_s": TARGET_P50_S}
    _print(results, setup)
    if out is not None:
        write_results(out, {"setup": setup, "results": results})
    if plot is not None:
        _plot(results, setup, warmup_end=(window_start - stream_start) * 1e-9, path=plot)
    shutil.rmtree(workdir, ignore_errors=True)
    return results


def _print(r: dict, setup: dict) -> None:
    node = {k: r["node"].get(k, "?") for k in ("published", "received.image", "matched",
                                                "processed", "dropped")}
    target = "met" if r["target_p50_met"] else "not met"
    queue = {None: "too few scenes to tell", True: "GROWS", False: "no queue growth"}[
        r["queue_growth"]]
    memory = "flat" if r["memory_flat"] else "GROWS"
    rows = [
        ("stream", f"{setup['resolution']} RGB-D, {setup['objects']} objects, "
         f"{r['published_hz']:.1f} Hz ({r['published']} frames in {r['window_s']:.0f} s)"),
        ("latency p50 / p95 / max", f"{r['latency_p50_s']:.3f} / {r['latency_p95_s']:.3f} / "
         f"{r['latency_max_s']:.3f} s (target p50 <= {TARGET_P50_S} s: {target})"),
        ("scenes per second", f"{r['scenes_per_s']:.2f} ({r['scenes']} scenes)"),
        ("node: published / received / matched / processed", f"{node['published']} / "
         f"{node['received.image']} / {node['matched']} / {node['processed']}"),
        ("node: dropped", f"{node['dropped']} ({100 * r['dropped_fraction']:.1f}% of matched)"),
        ("latency p50, first / last third", f"{r['latency_first_third_p50_s']:.3f} / "
         f"{r['latency_last_third_p50_s']:.3f} s ({queue})"),
        ("node RSS start / end / max", f"{r['rss_start_mb']:.0f} / {r['rss_end_mb']:.0f} / "
         f"{r['rss_max_mb']:.0f} MB"),
        ("node RSS first / last third", f"{r['rss_first_third_mb']:.0f} / "
         f"{r['rss_last_third_mb']:.0f} MB, {r['rss_slope_mb_per_min']:+.1f} MB/min ({memory})"),
    ]
    cpu = r["cpu_percent_of_one_core"]
    rows.append(("CPU, % of one core", f"node {cpu['node']:.0f}, camera stream + probe "
                 f"{cpu['stream_and_probe']:.0f} ({os.cpu_count()} cores)"))
    print_table([{"metric": k, "value": v} for k, v in rows], ["metric", "value"])


def _plot(r: dict, setup: dict, warmup_end: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    latency = np.array(r["series"]["latency"]).reshape(-1, 2)
    rss = np.array(r["series"]["rss_mb"]).reshape(-1, 2)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    ax1.plot(latency[:, 0], latency[:, 1], ".", label="image stamp -> markers")
    if len(latency) >= 5:
        running = [np.median(latency[max(0, i - 4):i + 1, 1]) for i in range(len(latency))]
        ax1.plot(latency[:, 0], running, "-", label="running median of 5")
    ax1.axhline(TARGET_P50_S, color="gray", ls="--", lw=1, label=f"target p50 {TARGET_P50_S} s")
    ax1.set_ylabel("latency (s)")
    ax1.legend(loc="upper right", fontsize=8)
    ax2.plot(rss[:, 0], rss[:, 1], "-")
    ax2.set_ylabel("node RSS (MB)")
    ax2.set_xlabel("time since the stream started (s)")
    for ax in (ax1, ax2):
        ax.axvspan(0, warmup_end, color="gray", alpha=0.15, lw=0)
        ax.grid(alpha=0.3)
    fig.suptitle(f"scenemaker_node under a {setup['rate_hz']:g} Hz {setup['resolution']} RGB-D "
                 f"stream, {setup['objects']} objects (grey: warm-up)", fontsize=10)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")
