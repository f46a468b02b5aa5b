"""``scenemaker bench stages``: quality and latency of the segmentation and de-occlusion stages.

Scenes come from the data config (640x480 by default) with sensor noise and objects rendered
alone. Segmentation is scored on the clean and on the sensor-noise depth. De-occlusion is scored
on the ground-truth visible masks (so segmentation errors do not blur its own score) with the
support plane the segmenter found; see scenemaker_ros.stages.scoring for the definitions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from scenemaker_ros.bench import print_table, write_results
from scenemaker_ros.config import load_config
from scenemaker_ros.frames import RGBDFrame
from scenemaker_ros.stages import Segmentation, build_deoccluder, build_segmenter
from scenemaker_ros.stages.scoring import (
    SegmentationScore,
    score_deocclusion,
    score_segmentation,
    summarise_deocclusion,
)
from scenemaker_ros.synth.dataset import scene_rng
from scenemaker_ros.synth.scenes import generate_scene
from scenemaker_ros.timing import StageTimer


def run_stages_benchmark(n: int, out: str | Path, config: str | Path | None = None,
                         seed: int = 0) -> dict:
    """Score and time both stages on n generated scenes; print tables and write JSON to out."""
    cfg = load_config(config)
    cfg.data.sensor_noise, cfg.data.render_alone = True, True
    segmenter = build_segmenter(cfg.pipeline.segmentation)
    deoccluder = build_deoccluder(cfg.pipeline.deocclusion)
    background = cfg.pipeline.deocclusion.depth_order.background
    min_pixels = cfg.pipeline.segmentation.depth_clusters.min_pixels
    timer = StageTimer()
    segmentation_scores: dict[str, list[SegmentationScore]] = {"clean": [], "sensor": []}
    deocclusion_scores: dict[str, list] = {"clean": [], "sensor": []}
    for j in tqdm(range(n), desc="scenes", unit="scene"):
        sample = generate_scene(cfg.data, scene_rng(seed, "bench", j))
        for name, depth in (("clean", sample.depth), ("sensor", sample.depth_sensor)):
            frame = RGBDFrame(sample.rgb, depth, sample.scene.camera).validate()
            with timer(f"segmentation ({name} depth)"):
                predicted = segmenter.segment(frame)
            segmentation_scores[name].append(
                score_segmentation(predicted.masks, sample.instance, min_pixels))
            truth = Segmentation.from_instance_image(sample.instance, predicted.plane)
            with timer(f"de-occlusion ({name} depth, true masks)"):
                objects = deoccluder.deocclude(frame, truth)
            ids = np.unique(sample.instance[sample.instance > 0]) - 1  # object of each mask
            deocclusion_scores[name] += [
                score_deocclusion(obj, sample.rgb, sample.amodal[int(k)], background)
                for obj, k in zip(objects, ids)]
    size = f"{cfg.data.camera.width}x{cfg.data.camera.height}"
    segmentation = [{"depth": name, **SegmentationScore.total(scores).as_dict()}
                    for name, scores in segmentation_scores.items()]
    print(f"\nSegmentation, {n} scenes at {size} (ground truth under {min_pixels} px ignored)")
    print_table(segmentation, ["depth", "matched_iou", "precision", "recall", "n_pred", "n_gt"])
    deocclusion = [{"depth": name, **summarise_deocclusion(scores)}
                   for name, scores in deocclusion_scores.items()]
    print("\nDe-occlusion on the true visible masks (occluded: >= 50 px hidden)")
    print_table(deocclusion, ["depth", "objects", "occluded", "occluded_amodal_iou",
                              "occluded_visible_iou", "psnr", "visible_psnr", "amodal_iou",
                              "visible_iou"])
    latency = [{"stage": stage, **stats} for stage, stats in timer.summary().items()]
    print(f"\nLatency per {size} frame (one process)")
    print_table(latency, ["stage", "n", "mean_ms", "p50_ms", "p95_ms"])
    results = {"benchmark": "stages", "scenes": n, "seed": seed, "segmentation": segmentation,
               "deocclusion": deocclusion, "latency": latency}
    write_results(out, results)
    return results
