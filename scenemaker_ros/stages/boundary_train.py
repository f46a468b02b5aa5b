"""``scenemaker train segmentation``: the boundary net of the "boundary_net" segmentation, trained
on our procedural scenes (never on the held-out open-set objects).

Each scene becomes one example, cached beside the data (``boundary-cache/``): the network inputs
of its candidates' box (``boundary_inputs``, from the clean or, with ``sensor_depth_prob``, the
noisy depth and the plane fitted to it, exactly as at run time), the boundary targets and the
pixels the loss counts (candidates on an object). A step draws ``batch_size`` random
``crop_px`` crops; the loss is binary cross-entropy weighted ``positive_weight`` on boundary
pixels. ``val.csv`` holds the loss and boundary precision / recall / F1 at 0.5 on held-out
scenes; the loop, its schedule and the run folder are ``stages.training``'s.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from scenemaker_ros.config import (
    BoundaryTrainConfig,
    DepthClustersConfig,
    SceneMakerConfig,
)
from scenemaker_ros.errors import SceneMakerError
from scenemaker_ros.files import atomic_path
from scenemaker_ros.frames import RGBDFrame
from scenemaker_ros.parallel import map_with_progress
from scenemaker_ros.stages.boundary_net import (
    BOUNDARY_MODELS,
    STRIDE,
    boundary_targets,
    network_inputs,
    save_boundary_checkpoint,
)
from scenemaker_ros.stages.segmentation import candidate_pixels
from scenemaker_ros.stages.training import procedural_roots, train_loop
from scenemaker_ros.synth.dataset import SceneDataset

CACHE_VERSION = 1  # bump when scene_example changes
NORMAL_X = 3  # the input channel of the normal's x component (boundary_inputs)


@dataclass
class BoundaryExample:
    """One scene's crop: inputs (C, h, w) float16, target and counted (h, w) bool."""

    inputs: np.ndarray
    target: np.ndarray
    counted: np.ndarray


def scene_example(sample, clusters: DepthClustersConfig, sensor: bool) -> BoundaryExample | None:
    """The example of one SceneSample (module docstring); None when nothing stands on a plane."""
    depth = sample.depth_sensor if sensor and sample.depth_sensor is not None else sample.depth
    frame = RGBDFrame(sample.rgb, depth, sample.scene.camera)
    plane, candidate = candidate_pixels(frame, clusters)
    if plane is None or not candidate.any():
        return None
    box, _, inputs = network_inputs(frame, plane, candidate, clusters)
    crop = candidate[box]
    instance = sample.instance[box].astype(np.int64)
    return BoundaryExample(inputs.astype(np.float16), boundary_targets(instance) & crop,
                           crop & (instance > 0))


def _cache_task(task: tuple[str, str, int, dict, float, int]) -> dict[str, np.ndarray] | None:
    root, split, index, clusters, sensor_prob, seed = task
    sensor = np.random.default_rng([seed, index]).random() < sensor_prob
    example = scene_example(SceneDataset(root, split)[index], DepthClustersConfig(**clusters),
                            sensor)
    return None if example is None else asdict(example)


def load_examples(root: Path, split: str, clusters: DepthClustersConfig, cfg: BoundaryTrainConfig,
                  workers: int = 1, progress: bool = True) -> list[BoundaryExample]:
    """The split's examples, built on first use (in ``workers`` processes) and cached in
    ``root/boundary-cache/`` under a hash of the settings that shape them."""
    key = json.dumps({"version": CACHE_VERSION, "clusters": asdict(clusters),
                      "sensor_depth_prob": cfg.sensor_depth_prob, "seed": cfg.seed},
                     sort_keys=True)
    path = root / "boundary-cache" / f"{split}-{hashlib.sha1(key.encode()).hexdigest()[:10]}.pt"
    n = len(SceneDataset(root, split))
    if path.exists():
        cached = torch.load(path, weights_only=True)
        if int(cached["scenes"]) == n:
            return [BoundaryExample(*(t.numpy() for t in e)) for e in cached["examples"]]
    tasks = [(str(root), split, i, asdict(clusters), cfg.sensor_depth_prob, cfg.seed)
             for i in range(n)]
    arrays = map_with_progress(_cache_task, tasks, workers, f"boundary cache {split}",
                               progress=progress)
    examples = [BoundaryExample(**a) for a in arrays if a is not None]
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save({"scenes": n, "examples": [
            tuple(torch.from_numpy(v) for v in (e.inputs, e.target, e.counted))
            for e in examples]}, tmp)
    return examples


def random_crops(examples: list[BoundaryExample], n: int, size: int, rng: np.random.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n random size x size crops (zero-padded where an example is smaller), half of them
    mirrored left to right: inputs
    (n, C, size, size) float32, target and counted (n, 1, size, size) float32."""
    channels = examples[0].inputs.shape[0]
    inputs = np.zeros((n, channels, size, size), np.float32)
    target = np.zeros((n, 1, size, size), np.float32)
    counted = np.zeros((n, 1, size, size), np.float32)
    for b in range(n):
        e = examples[rng.integers(len(examples))]
        h, w = e.target.shape
        y, x = rng.integers(max(h - size, 0) + 1), rng.integers(max(w - size, 0) + 1)
        ch, cw = min(size, h), min(size, w)
        inputs[b, :, :ch, :cw] = e.inputs[:, y:y + ch, x:x + cw]
        target[b, 0, :ch, :cw] = e.target[y:y + ch, x:x + cw]
        counted[b, 0, :ch, :cw] = e.counted[y:y + ch, x:x + cw]
        if rng.random() < 0.5:  # a mirrored view: columns reversed, the normal's x negated
            inputs[b], target[b], counted[b] = (a[..., ::-1] for a in (inputs[b], target[b],
                                                                       counted[b]))
            inputs[b, NORMAL_X] *= -1
    return torch.from_numpy(inputs), torch.from_numpy(target), torch.from_numpy(counted)


def boundary_loss(logits: torch.Tensor, target: torch.Tensor, counted: torch.Tensor,
                  positive_weight: float) -> torch.Tensor:
    """Weighted binary cross-entropy over the counted pixels (all (B, 1, H, W))."""
    weight = counted * (1.0 + (positive_weight - 1.0) * target)
    loss = F.binary_cross_entropy_with_logits(logits, target, weight=weight, reduction="sum")
    return loss / counted.sum().clamp(min=1.0)


@torch.no_grad()
def validate(model, examples: list[BoundaryExample], positive_weight: float) -> dict[str, float]:
    """Loss and boundary precision / recall / F1 at probability 0.5 over whole validation crops."""
    model.eval()
    losses, tp, fp, fn = [], 0.0, 0.0, 0.0
    for e in examples:
        h, w = e.target.shape
        x = F.pad(torch.from_numpy(e.inputs.astype(np.float32))[None],
                  (0, -w % STRIDE, 0, -h % STRIDE))
        logits = model(x)[..., :h, :w]
        target = torch.from_numpy(e.target)[None, None].float()
        counted = torch.from_numpy(e.counted)[None, None].float()
        losses.append(float(boundary_loss(logits, target, counted, positive_weight)))
        predicted = (logits > 0).float() * counted
        tp += float((predicted * target).sum())
        fp += float((predicted * (1 - target)).sum())
        fn += float(((1 - predicted) * target * counted).sum())
    model.train()
    precision, recall = tp / max(tp + fp, 1.0), tp / max(tp + fn, 1.0)
    return {"val_loss": float(np.mean(losses)), "precision": precision, "recall": recall,
            "f1": 2 * precision * recall / max(precision + recall, 1e-9)}


def train_boundary(data_roots: list[str | Path], run_dir: str | Path, config: SceneMakerConfig,
                   workers: int = 1, progress: bool = True) -> Path:
    """Train (or resume) a boundary net on the train splits of data_roots (procedural datasets);
    returns the run folder."""
    cfg, clusters = config.boundary_train, config.pipeline.segmentation.depth_clusters
    roots, run_dir = procedural_roots(data_roots, "the boundary net"), Path(run_dir)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    examples = [e for root in roots
                for e in load_examples(root, "train", clusters, cfg, workers, progress=progress)]
    if len(examples) <= cfg.val_scenes:
        raise SceneMakerError(f"{len(examples)} usable training scenes; need more than the "
                              f"{cfg.val_scenes} held out for validation")
    train, val = examples[:-cfg.val_scenes], examples[-cfg.val_scenes:]
    model = BOUNDARY_MODELS[cfg.model]()

    def batch_loss(rng: np.random.Generator) -> torch.Tensor:
        inputs, target, counted = random_crops(train, cfg.batch_size, cfg.crop_px, rng)
        return boundary_loss(model(inputs), target, counted, cfg.positive_weight)

    return train_loop(model, cfg, config, run_dir, batch_loss,
                      lambda: validate(model, val, cfg.positive_weight),
                      lambda path, info: save_boundary_checkpoint(path, model, info),
                      {"data": [str(r) for r in roots], "scenes": len(train)},
                      "train segmentation", progress)
