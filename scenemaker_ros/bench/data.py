"""``scenemaker bench data``: scenes per second for generation + rendering at 640x480."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from tqdm import tqdm

from scenemaker_ros.bench import print_table, write_results
from scenemaker_ros.config import load_config
from scenemaker_ros.synth.dataset import generate_dataset, scene_rng
from scenemaker_ros.synth.scenes import generate_scene
from scenemaker_ros.timing import StageTimer


def run_data_benchmark(n: int, workers: list[int], out: str | Path,
                       config: str | Path | None = None) -> dict:
    """Per-stage latency in one process, then end-to-end throughput (shards written) per worker
    count. Scenes come from the default config (2-8 objects, shadows, objects alone)."""
    cfg = load_config(config).data
    timer = StageTimer()
    objects = 0
    for j in tqdm(range(n), desc="stages", unit="scene"):
        with timer("total"):
            sample = generate_scene(cfg, scene_rng(0, "bench", j), timer=timer)
        objects += len(sample.scene.objects)
    stages = [{"stage": stage, **stats} for stage, stats in timer.summary().items()]
    print(f"\nPer-stage latency, {n} scenes, {objects / n:.1f} objects per scene on average")
    print_table(stages, ["stage", "n", "mean_ms", "p50_ms", "p95_ms"])

    cfg.scenes_per_shard = max(1, n // (4 * max(workers)))  # enough shards to keep workers busy
    throughput = []
    for count in workers:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            generate_dataset(tmp, n=n, seed=0, cfg=cfg, split="bench", workers=count)
            seconds = time.perf_counter() - start
            size_mb = sum(p.stat().st_size for p in Path(tmp).rglob("*.npz")) / 1e6
        throughput.append({"workers": count, "scenes": n, "seconds": seconds,
                           "scenes_per_s": n / seconds, "mb_per_scene": size_mb / n})
    size = f"{cfg.camera.width}x{cfg.camera.height}"
    print(f"\nEnd to end (generate + render + write shards), {size}")
    print_table(throughput, ["workers", "scenes", "seconds", "scenes_per_s", "mb_per_scene"])
    results = {"benchmark": "data", "objects_per_scene": objects / n, "stages": stages,
               "throughput": throughput}
    write_results(out, results)
    return results
