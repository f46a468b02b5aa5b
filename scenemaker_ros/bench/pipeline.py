"""``scenemaker bench pipeline``: ``scenemaker run``'s pipeline end to end on held-out scenes.

Each scene's RGB, depth (clean, or the sensor-noise depth with ``--sensor-depth``) and
intrinsics go through ``ScenePipeline.run``; nothing else from the ground truth is used. Two
modes: open-set (geometry retrieved from the shape library) and known-object (the scene's true
meshes, in metres, given as the ``--objects`` folder, as a FoundationPose user would have them).
Reported: scene metrics under both protocols, segmentation quality (matched mask IoU, object
precision / recall at IoU 0.5), per-stage latency p50 / p95 and the process's peak memory.
"""

from __future__ import annotations

import resource
import tempfile
from pathlib import Path

import numpy as np
import trimesh
from tqdm import tqdm

from scenemaker_ros.bench import print_table, write_results
from scenemaker_ros.config import load_config
from scenemaker_ros.files import atomic_path
from scenemaker_ros.frames import RGBDFrame
from scenemaker_ros.metrics import PosedMesh, average_metrics, evaluate_both
from scenemaker_ros.pipeline import PipelineResult, ScenePipeline
from scenemaker_ros.stages.scoring import SegmentationScore, score_segmentation
from scenemaker_ros.synth.dataset import SceneDataset
from scenemaker_ros.synth.scenes import SceneSample
from scenemaker_ros.timing import StageTimer

MODES = ("open-set", "known-objects")


def _known_objects(sample: SceneSample, folder: Path) -> None:
    """The scene's true meshes in metres (canonical mesh scaled, its own frame): obj_<id>.ply."""
    for obj in sample.scene.objects:
        vertices, faces = sample.meshes[obj.id]
        trimesh.Trimesh(vertices * obj.scale, faces).export(folder / f"obj_{obj.id:03d}.ply")


def _run_scene(pipeline: ScenePipeline, sample: SceneSample, sensor_depth: bool
               ) -> PipelineResult:
    depth = sample.depth_sensor if sensor_depth else sample.depth
    return pipeline.run(RGBDFrame(sample.rgb, depth, sample.scene.camera))


def run_pipeline_benchmark(data: str | Path, split: str, n: int, out: str | Path,
                           config: str | Path | None = None, sensor_depth: bool = False,
                           chart: str | Path | None = None) -> dict:
    """Both modes on the first n scenes of ``split``; print tables, write JSON (and a chart)."""
    cfg = load_config(config)
    dataset = SceneDataset(data, split)
    count = min(n, len(dataset))
    open_set = ScenePipeline.from_config(cfg)
    rows, latency = [], {}
    for mode in MODES:
        timer, metrics = StageTimer(), {"paper": [], "metric": []}
        segmentation: list[SegmentationScore] = []
        for i in tqdm(range(count), desc=f"bench pipeline {mode}", unit="scene"):
            sample = dataset[i]
            if mode == "open-set":
                result = _run_scene(open_set, sample, sensor_depth)
            else:
                with tempfile.TemporaryDirectory() as folder:
                    _known_objects(sample, Path(folder))
                    known = ScenePipeline.from_config(cfg, folder)
                    result = _run_scene(known, sample, sensor_depth)
            for stage, values in result.timer.durations.items():
                timer.durations[stage].extend(values)
            timer.durations["total"].append(sum(sum(v) for k, v in
                                                result.timer.durations.items() if "." not in k))
            segmentation.append(score_segmentation(result.segmentation.masks, sample.instance))
            pred = [PosedMesh.from_pose(*result.meshes[o.id], o.pose_matrix)
                    for o in result.scene.objects]
            gt = [PosedMesh.from_pose(*sample.meshes[o.id], o.pose_matrix)
                  for o in sample.scene.objects]
            for protocol, m in evaluate_both(pred, gt).items():
                metrics[protocol].append(m)
        paper, metric = (average_metrics(metrics[p]) for p in ("paper", "metric"))
        seg = SegmentationScore.total(segmentation)
        rows.append({"mode": mode, "CD-S": paper["cd_s"], "F-Score-S": paper["fscore_s"],
                     "IoU-B": paper["iou_b"], "CD-O": paper["cd_o"],
                     "F-Score-O": paper["fscore_o"], "CD-S metric": metric["cd_s"],
                     "IoU-B metric": metric["iou_b"], "mask IoU": seg.matched_iou,
                     "precision": seg.precision, "recall": seg.recall,
                     "p50 ms": timer.summary()["total"]["p50_ms"]})
        latency[mode] = [{"stage": stage, **stats} for stage, stats in timer.summary().items()]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    depth = "sensor-noise" if sensor_depth else "clean"
    print(f"\n{Path(data).name}/{split}: {count} scenes, {depth} depth; paper protocol unless "
          f"marked 'metric'; segmentation at IoU 0.5")
    print_table(rows, list(rows[0]))
    for mode in MODES:
        print(f"\nLatency per stage, {mode}")
        print_table(latency[mode], ["stage", "n", "mean_ms", "p50_ms", "p95_ms"])
    print(f"\nPeak resident memory of the process: {peak_mb:.0f} MB")
    results = {"benchmark": "pipeline", "data": str(data), "split": split, "scenes": count,
               "depth": depth, "rows": rows, "latency": latency, "peak_rss_mb": peak_mb}
    if chart is not None:
        _latency_chart(latency, chart)
        print(f"wrote {chart}")
    write_results(out, results)
    return results


def _latency_chart(latency: dict[str, list[dict]], path: str | Path) -> None:
    """Horizontal bars: p50 and p95 per pipeline stage, one panel per mode."""
    from scenemaker_ros.viz import plt

    fig, axes = plt.subplots(1, len(latency), figsize=(5 * len(latency), 3), squeeze=False)
    for ax, (mode, stages) in zip(axes[0], latency.items()):
        stages = [s for s in stages if "." not in s["stage"]]
        names = [s["stage"] for s in stages]
        y = np.arange(len(names))
        ax.barh(y + 0.2, [s["p95_ms"] for s in stages], 0.4, label="p95", color="#f4a261")
        ax.barh(y - 0.2, [s["p50_ms"] for s in stages], 0.4, label="p50", color="#2a9d8f")
        ax.set_yticks(y, names)
        ax.set_xlabel("ms per frame")
        ax.set_title(mode, fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
