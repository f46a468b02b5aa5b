"""``scenemaker bench pose``: pose estimation with ground-truth meshes and masks (the paper's
pose-only ablation setting) on held-out synthetic splits.

Every method gets the same frame (RGB, clean depth, visible instance masks, canonical meshes) and
must return each object's rotation, translation and scale. Rows:
  model (raw)                  the shipped model, best of ``pose.hypotheses`` samples by fit;
  model + ICP + axis starts    the default: refinement from the model's pose and from the
                               observed principal axes at the model's position and size;
  model + ICP                  refinement from the model's pose only;
  <ablation> (raw)             models retrained without one attention type (``--ablation``);
  classical                    principal axes + scale-aware ICP (``pose/classical.py``);
  upper bound                  the model fed unoccluded object clouds (each object's depth
                               rendered alone), the paper's "+ Full Cloud" row.
Scene metrics come from ``metrics.evaluate_both``; pose errors are medians over objects.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from scenemaker_ros.bench import print_table, write_results
from scenemaker_ros.config import PoseConfig, load_config
from scenemaker_ros.geometry import depth_to_points, sample_surface
from scenemaker_ros.metrics import PosedMesh, average_metrics, evaluate_both, pose_errors
from scenemaker_ros.pose.checkpoint import SHIPPED_CHECKPOINT, load_checkpoint
from scenemaker_ros.pose.classical import ClassicalPoser
from scenemaker_ros.pose.estimator import ObjectPoser, PoseEstimator, PoseResult
from scenemaker_ros.pose.flow import sample as flow_sample
from scenemaker_ros.pose.inputs import collate, make_example, observe
from scenemaker_ros.pose.refine import DepthView
from scenemaker_ros.synth.dataset import SceneDataset
from scenemaker_ros.synth.scenes import SceneSample
from scenemaker_ros.timing import StageTimer

COLUMNS = ["method", "CD-S", "F-Score-S", "IoU-B", "CD-O", "F-Score-O", "CD-S metric",
           "F-Score-S metric", "IoU-B metric", "rot deg", "trans mm", "scale %", "ms/scene",
           "model ms"]


def unoccluded_points(sample: SceneSample) -> list[np.ndarray]:
    """Each object's points from its depth rendered alone (needs a split with objects alone)."""
    H, W = sample.depth.shape
    points = []
    for obj in sample.scene.objects:
        alone = sample.amodal.get(obj.id)
        if alone is None:
            raise ValueError("the upper bound needs objects rendered alone (data.render_alone)")
        depth = np.zeros((H, W), np.float32)
        x0, y0, x1, y1 = alone.bbox
        depth[y0:y1, x0:x1] = alone.depth
        points.append(depth_to_points(depth, sample.scene.camera.K))
    return points


class _Method:
    """One benchmark row: a poser, which poses it scores (raw or refined), its accumulators."""

    def __init__(self, name: str, poser: ObjectPoser, refined: bool, upper_bound: bool = False):
        self.name, self.poser, self.refined, self.upper_bound = name, poser, refined, upper_bound
        self.metrics: dict[str, list] = {"paper": [], "metric": []}
        self.errors: list[tuple[float, float, float]] = []
        self.seconds: list[float] = []
        self.model_seconds: list[float] = []  # the network alone (sampling), per scene

    def score(self, sample: SceneSample, result: PoseResult, gt: list[PosedMesh]) -> None:
        poses = result.poses if self.refined else result.raw_poses
        pred = [PosedMesh.from_pose(*sample.meshes[o.id], T)
                for o, T in zip(sample.scene.objects, poses) if T is not None]
        for protocol, m in evaluate_both(pred, gt).items():
            self.metrics[protocol].append(m)
        for o, T in zip(sample.scene.objects, poses):
            if T is not None:
                self.errors.append(pose_errors(T, o.pose_matrix, sample.symmetries[o.id]))
        stages = result.timer.durations
        self.seconds.append(sum(sum(v) for k, v in stages.items()
                                if self.refined or k != "refine"))
        self.model_seconds.append(sum(stages.get("model", [0.0])))

    def row(self) -> dict:
        paper, metric = (average_metrics(self.metrics[p]) for p in ("paper", "metric"))
        errors = np.array(self.errors) if self.errors else np.full((1, 3), np.nan)
        return {"method": self.name, "CD-S": paper["cd_s"], "F-Score-S": paper["fscore_s"],
                "IoU-B": paper["iou_b"], "CD-O": paper["cd_o"], "F-Score-O": paper["fscore_o"],
                "CD-S metric": metric["cd_s"], "F-Score-S metric": metric["fscore_s"],
                "IoU-B metric": metric["iou_b"],
                "rot deg": float(np.median(errors[:, 0])),
                "trans mm": 1000 * float(np.median(errors[:, 1])),
                "scale %": 100 * float(np.median(errors[:, 2])),
                "ms/scene": 1000 * float(np.median(self.seconds)),
                "model ms": 1000 * float(np.median(self.model_seconds))}


def _row_groups(cfg: PoseConfig, checkpoint: str, ablations: list[str]) -> list[list[_Method]]:
    """Benchmark rows grouped by estimation: the rows of a group score one run (its raw and its
    refined poses). Ablated models are scored raw, the classical baseline refined."""
    model, inputs, _ = load_checkpoint(checkpoint or SHIPPED_CHECKPOINT, cfg.device)
    full = PoseEstimator(model, inputs, cfg)
    model_only = PoseEstimator(model, inputs, dataclasses.replace(cfg, geometric_starts=False))
    no_refine = dataclasses.replace(cfg, refine=False)
    groups = [[_Method("model (raw)", full, False),
               _Method("model + ICP + axis starts (default)", full, True)],
              [_Method("model + ICP", model_only, True)]]
    for path in ablations:
        ablated, ablated_inputs, info = load_checkpoint(path, cfg.device)
        c = ablated.config
        off = [name for name, on in [("global self-attn", c.global_self_attn),
                                     ("local self-attn", c.local_self_attn),
                                     ("local cross-attn", c.local_cross_attn)] if not on]
        name = (f"{info['train']['model']} {info['step']} steps "
                + (f"w/o {', '.join(off)}" if off else "all attention") + " (raw)")
        groups.append([_Method(name, PoseEstimator(ablated, ablated_inputs, no_refine), False)])
    groups.append([_Method("classical (PCA + scale ICP)", ClassicalPoser(inputs, no_refine),
                           True)])
    groups.append([_Method("upper bound: model (raw)", full, False, upper_bound=True),
                   _Method("upper bound: default", full, True, upper_bound=True)])
    return groups


LATENCY_SETTINGS = [(8, 4), (8, 1), (4, 1)]  # (flow steps, hypotheses)


def sampling_latency(estimator: PoseEstimator, sample: SceneSample, repeats: int = 20
                     ) -> list[dict]:
    """Median time of the network alone (encode the conditions once, integrate the flow) for
    one scene, per (steps, hypotheses) setting."""
    K = sample.scene.camera.K
    rng = np.random.default_rng(0)
    masks = np.stack([sample.instance == o.id + 1 for o in sample.scene.objects])
    obs = observe(sample.rgb, sample.depth, K, masks, estimator.inputs, rng)
    geometry = np.stack([sample_surface(*sample.meshes[o.id], estimator.inputs.geometry_points,
                                        rng) for o in sample.scene.objects])
    batch, obj_mask = collate([make_example(obs, geometry, estimator.inputs, rng)],
                              estimator.device)
    rows = []
    for steps, hypotheses in LATENCY_SETTINGS:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            flow_sample(estimator.model, batch, obj_mask, steps=steps, n_hypotheses=hypotheses)
            times.append(time.perf_counter() - start)
        rows.append({"objects": len(masks), "steps": steps, "hypotheses": hypotheses,
                     "threads": torch.get_num_threads(), "p50_ms": 1000 * np.median(times),
                     "p95_ms": 1000 * np.percentile(times, 95)})
    return rows


def run_pose_benchmark(datasets: list[str | Path], split: str, n: int, out: str | Path,
                       checkpoint: str = "", ablations: list[str] | None = None,
                       config: str | Path | None = None, plot: str | Path | None = None,
                       latency_scene: int | None = 5) -> dict:
    """Score every method on the first n scenes of ``split`` of each dataset folder (named by
    the folder); print a table per dataset; time the network alone on the first scene of the
    first dataset with ``latency_scene`` objects (None: skip); write JSON."""
    cfg = load_config(config).pose
    results: dict[str, object] = {"benchmark": "pose", "split": split, "n": n,
                                  "pose": dataclasses.asdict(cfg), "datasets": {}}
    for root in datasets:
        dataset = SceneDataset(root, split)
        name = Path(root).name
        count = min(n, len(dataset))
        groups = _row_groups(cfg, checkpoint, ablations or [])
        shown, objects = [], 0
        for i in tqdm(range(count), desc=f"bench pose {name}", unit="scene"):
            sample = dataset[i]
            objects += len(sample.scene.objects)
            gt = [PosedMesh.from_pose(*sample.meshes[o.id], o.pose_matrix)
                  for o in sample.scene.objects]
            for group in groups:
                result = _estimate(group[0], sample)
                for method in group:
                    method.score(sample, result, gt)
                if group is groups[0] and len(shown) < 4:
                    shown.append((sample, result))
        table = [method.row() for group in groups for method in group]
        print(f"\n{name} ({dataset.shapes} shapes): {count} scenes, {objects} objects, clean "
              f"depth, ground-truth meshes and masks; paper protocol unless marked 'metric'; "
              f"pose errors are medians")
        print_table(table, COLUMNS)
        results["datasets"][name] = {"path": str(root), "shapes": dataset.shapes,
                                     "scenes": count, "objects": objects, "rows": table}
        if plot is not None:
            from scenemaker_ros.viz import save_pose_overlays

            path = Path(plot).with_name(f"{Path(plot).stem}-{name}{Path(plot).suffix}")
            save_pose_overlays(shown, path)
            print(f"wrote {path}")
    dataset = SceneDataset(datasets[0], split)
    sample = next((dataset[i] for i in range(len(dataset))
                   if len(dataset[i].scene.objects) == latency_scene), None)
    if sample is not None:
        model, inputs, _ = load_checkpoint(checkpoint or SHIPPED_CHECKPOINT, cfg.device)
        latency = sampling_latency(PoseEstimator(model, inputs, cfg), sample)
        print(f"\nThe network alone, one scene with {latency_scene} objects (median of 20)")
        print_table(latency, ["objects", "steps", "hypotheses", "threads", "p50_ms", "p95_ms"])
        results["latency"] = latency
    write_results(out, results)
    return results


def _estimate(method: _Method, sample: SceneSample) -> PoseResult:
    K = sample.scene.camera.K
    masks = np.stack([sample.instance == o.id + 1 for o in sample.scene.objects])
    meshes = [sample.meshes[o.id] for o in sample.scene.objects]
    if not method.upper_bound:
        return method.poser.estimate(sample.rgb, sample.depth, K, masks, meshes)
    poser = method.poser
    rng = np.random.default_rng(poser.cfg.seed)
    timer = StageTimer()
    with timer("observe"):
        obs = observe(sample.rgb, sample.depth, K, masks, poser.inputs, rng)
        obs.object_points = unoccluded_points(sample)
    return poser.estimate_observation(obs, meshes, DepthView(sample.depth, K), rng, timer)
