"""``scenemaker bench deocclusion``: a de-occlusion backend scored on de-occlusion triplets.

Each triplet (``synth/deocclusion_data.py``) keeps its crop of the scene as an RGB-D frame. The
backend gets that frame with the true visible masks (the object's part left in the input, the
other objects, the virtual occluder of the masking strategy) and the true support plane, so
segmentation errors do not blur its score. Its result for the object is scored against the
object rendered alone, as ``bench stages`` does (``stages/scoring.py``): amodal-mask IoU, and
PSNR over the truly hidden pixels (whole mask, not visible in the input), next to the
visible-only baselines (no de-occlusion). Means over all triplets and per masking strategy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from scenemaker_ros.bench import print_table, write_results
from scenemaker_ros.config import load_config
from scenemaker_ros.errors import SceneMakerError
from scenemaker_ros.frames import RGBDFrame
from scenemaker_ros.scene import CameraIntrinsics
from scenemaker_ros.stages import Segmentation, SupportPlane, build_deoccluder
from scenemaker_ros.stages.scoring import DeocclusionScore, score_deocclusion, summarise_deocclusion
from scenemaker_ros.synth.deocclusion_data import STRATEGIES, Triplet, TripletDataset
from scenemaker_ros.synth.render import AmodalRender
from scenemaker_ros.timing import StageTimer


def triplet_frame(triplet: Triplet) -> tuple[RGBDFrame, Segmentation]:
    """The triplet's crop as a frame and its true segmentation (mask 0: the object)."""
    size = triplet.rgb.shape[0]
    frame = RGBDFrame(triplet.rgb, triplet.depth, CameraIntrinsics(size, size, triplet.K))
    plane = SupportPlane(normal=triplet.plane_normal, offset=triplet.plane_offset, noise=0.0,
                         inlier_fraction=1.0)
    return frame.validate(), Segmentation.from_instance_image(triplet.instance, plane)


def score_triplet(deoccluder, triplet: Triplet, background: tuple[int, int, int]
                  ) -> DeocclusionScore:
    """Run deoccluder on the triplet's frame and score its object against the target."""
    frame, segmentation = triplet_frame(triplet)
    obj = deoccluder.deocclude(frame, segmentation)[0]
    size = triplet.rgb.shape[0]
    truth = AmodalRender(bbox=(0, 0, size, size), mask=triplet.amodal, rgb=triplet.target,
                         depth=np.zeros((size, size), np.float32))
    return score_deocclusion(obj, triplet.rgb, truth, background)


def run_deocclusion_benchmark(data: str | Path, backend: str, n: int, out: str | Path,
                              config: str | Path | None = None) -> dict:
    """Score the de-occlusion backend on the first n triplets of data; print tables and write
    JSON to out."""
    cfg = load_config(config, {"pipeline.deocclusion.backend": backend})
    dataset = TripletDataset(data)
    if n < 1:
        raise SceneMakerError("bench deocclusion: --n must be >= 1")
    deoccluder = build_deoccluder(cfg.pipeline.deocclusion)
    background = cfg.pipeline.deocclusion.depth_order.background
    timer = StageTimer()
    scores: dict[str, list[DeocclusionScore]] = {name: [] for name in STRATEGIES}
    count = min(n, len(dataset))
    for i in tqdm(range(count), desc=f"de-occlusion ({backend})", unit="triplet"):
        triplet = dataset[i]
        with timer("deocclusion"):
            score = score_triplet(deoccluder, triplet, background)
        scores[triplet.meta["strategy"]].append(score)
    rows = [{"strategy": "all", **summarise_deocclusion(sum(scores.values(), []))}]
    rows += [{"strategy": name, **summarise_deocclusion(s)} for name, s in scores.items() if s]
    latency = timer.summary()["deocclusion"]
    print(f"\nDe-occlusion backend {backend!r} on {count} triplets of {data} "
          f"({dataset.shapes} objects; visible_*: the visible part alone, no de-occlusion)")
    print_table(rows, ["strategy", "objects", "amodal_iou", "visible_iou", "psnr",
                       "visible_psnr"])
    print(f"latency per triplet: mean {latency['mean_ms']:.0f} ms, p50 {latency['p50_ms']:.0f} "
          "ms (one process)")
    results = {"benchmark": "deocclusion", "backend": backend, "data": str(data),
               "shapes": dataset.shapes, "triplets": count, "scores": rows, "latency": latency}
    write_results(out, results)
    return results
