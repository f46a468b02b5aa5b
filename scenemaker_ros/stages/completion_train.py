"""``scenemaker train completion``: the shape-completion net of the "carving" geometry, trained on
our procedural scenes (never on the held-out open-set objects).

Every object of a scene with at least ``min_pixels`` visible pixels becomes one example: the
grid inputs (``completion.grid_inputs``) from the clean or, with ``sensor_depth_prob``, the noisy
depth, the plane fitted to it and the object's true visible mask, exactly as the pipeline builds
them from its segmentation, and the target occupancy of the true mesh at the cell centres. The
examples are cached beside the data (``completion-cache/``, bit-packed). A step draws
``batch_size`` random examples, half of them mirrored across the grid's x axis; the loss is
binary cross-entropy. ``val.csv`` holds the loss and the occupancy IoU at 0.5 over all cells
and over the cells the camera cannot see through; the loop, its schedule and the run folder are
``stages.training``'s.
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
    CarvingConfig,
    CompletionTrainConfig,
    DepthClustersConfig,
    SceneMakerConfig,
)
from scenemaker_ros.errors import SceneMakerError
from scenemaker_ros.files import atomic_path
from scenemaker_ros.frames import RGBDFrame
from scenemaker_ros.geometry import depth_to_points, transform_points
from scenemaker_ros.parallel import map_with_progress
from scenemaker_ros.stages.carving import support_floors
from scenemaker_ros.stages.completion import (
    COMPLETION_MODELS,
    GRID,
    INPUT_CHANNELS,
    grid_inputs,
    object_grid,
    save_completion_checkpoint,
    training_target,
)
from scenemaker_ros.stages.segmentation import candidate_pixels
from scenemaker_ros.stages.training import procedural_roots, train_loop
from scenemaker_ros.synth.dataset import SceneDataset

CACHE_VERSION = 1  # bump when scene_examples changes
SEEN_THROUGH = 0  # input channel of the signed ray distance (> 0: the camera sees through)
CELLS = GRID ** 3


@dataclass
class CompletionExamples:
    """A scene's examples: inputs (N, C, G, G, G) float16, target (N, G, G, G) bool."""

    inputs: np.ndarray
    target: np.ndarray


def scene_examples(sample, clusters: DepthClustersConfig, carving: CarvingConfig, sensor: bool,
                   min_pixels: int) -> CompletionExamples | None:
    """The examples of one SceneSample (module docstring); None when it has none."""
    depth = sample.depth_sensor if sensor and sample.depth_sensor is not None else sample.depth
    frame = RGBDFrame(sample.rgb, depth, sample.scene.camera)
    plane, _ = candidate_pixels(frame, clusters)
    if plane is None:
        return None
    K = np.asarray(frame.camera.K, np.float64)
    ids = [k for k in range(len(sample.scene.objects))
           if (sample.instance == k + 1).sum() >= min_pixels]
    masks = [sample.instance == k + 1 for k in ids]
    points = [depth_to_points(depth, K, m) for m in masks]
    usable = [i for i, p in enumerate(points) if len(p) >= carving.min_points]
    floors = support_floors(points, plane, carving)
    everything = sample.instance > 0
    inputs, targets = [], []
    for i in usable:
        obj = sample.scene.objects[ids[i]]
        vertices, faces = sample.meshes[obj.id]
        grid = object_grid(points[i], plane.normal, floors[i], plane.offset)
        inputs.append(grid_inputs(grid, depth, K, masks[i], everything & ~masks[i]))
        targets.append(training_target(grid, transform_points(obj.pose_matrix, vertices), faces))
    if not inputs:
        return None
    return CompletionExamples(np.stack(inputs).astype(np.float16), np.stack(targets))


def _cache_task(task: tuple) -> dict[str, np.ndarray] | None:
    root, split, index, clusters, carving, sensor_prob, seed, min_pixels = task
    sensor = np.random.default_rng([seed, index]).random() < sensor_prob
    examples = scene_examples(SceneDataset(root, split)[index], DepthClustersConfig(**clusters),
                              CarvingConfig(**carving), sensor, min_pixels)
    if examples is None:
        return None
    return {"inputs": examples.inputs, "target": np.packbits(examples.target.reshape(-1, CELLS),
                                                             axis=1)}


def load_examples(root: Path, clusters: DepthClustersConfig, carving: CarvingConfig,
                  cfg: CompletionTrainConfig, workers: int = 1, progress: bool = True
                  ) -> CompletionExamples:
    """The examples of the first ``cfg.scenes`` train scenes of root, built on first use (in
    ``workers`` processes) and cached in ``root/completion-cache/`` under a hash of the settings
    that shape them."""
    n = len(SceneDataset(root, "train"))
    n = min(n, cfg.scenes) if cfg.scenes else n
    key = json.dumps({"version": CACHE_VERSION, "clusters": asdict(clusters),
                      "floors": [carving.min_points, carving.stack_tolerance_m],
                      "sensor_depth_prob": cfg.sensor_depth_prob,
                      "seed": cfg.seed, "min_pixels": cfg.min_pixels, "scenes": n},
                     sort_keys=True)
    path = root / "completion-cache" / f"train-{hashlib.sha1(key.encode()).hexdigest()[:10]}.npz"
    if not path.exists():
        tasks = [(str(root), "train", i, asdict(clusters), asdict(carving),
                  cfg.sensor_depth_prob, cfg.seed, cfg.min_pixels) for i in range(n)]
        arrays = [a for a in map_with_progress(_cache_task, tasks, workers,
                                               f"completion cache {root.name}",
                                               progress=progress) if a is not None]
        if not arrays:
            raise SceneMakerError(f"{root}: no object with {cfg.min_pixels} visible pixels")
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, inputs=np.concatenate([a["inputs"] for a in arrays]),
                     target=np.concatenate([a["target"] for a in arrays]))
    with np.load(path) as cached:
        target = np.unpackbits(cached["target"], axis=1)[:, :CELLS].astype(bool)
        return CompletionExamples(cached["inputs"], target.reshape(-1, GRID, GRID, GRID))


def random_batch(examples: CompletionExamples, n: int, rng: np.random.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """n random examples, half mirrored across the grid's x axis: inputs (n, C, G, G, G) and
    target (n, 1, G, G, G) float32."""
    index = rng.integers(len(examples.target), size=n)
    inputs = examples.inputs[index].astype(np.float32)
    target = examples.target[index, None].astype(np.float32)
    flip = rng.random(n) < 0.5
    inputs[flip], target[flip] = inputs[flip, :, ::-1], target[flip, :, ::-1]
    return torch.from_numpy(inputs), torch.from_numpy(target)


@torch.no_grad()
def validate(model, examples: CompletionExamples, batch: int = 32) -> dict[str, float]:
    """Loss and occupancy IoU at probability 0.5, over all cells and over the hidden cells (the
    camera cannot see through them)."""
    model.eval()
    losses, counts = [], np.zeros((2, 2))  # [all, hidden] x [intersection, union]
    for start in range(0, len(examples.target), batch):
        inputs = torch.from_numpy(examples.inputs[start:start + batch].astype(np.float32))
        target = torch.from_numpy(examples.target[start:start + batch, None].astype(np.float32))
        logits = model(inputs)
        losses.append(float(F.binary_cross_entropy_with_logits(logits, target)) * len(target))
        predicted, truth = (logits > 0).numpy(), target.numpy() > 0.5
        hidden = inputs[:, SEEN_THROUGH:SEEN_THROUGH + 1].numpy() <= 0
        for row, region in enumerate((np.ones_like(hidden), hidden)):
            counts[row] += [(predicted & truth & region).sum(),
                            ((predicted | truth) & region).sum()]
    model.train()
    return {"val_loss": sum(losses) / len(examples.target),
            "iou": counts[0, 0] / max(counts[0, 1], 1), "hidden_iou": counts[1, 0] /
            max(counts[1, 1], 1)}


def train_completion(data_roots: list[str | Path], run_dir: str | Path, config: SceneMakerConfig,
                     workers: int = 1, progress: bool = True) -> Path:
    """Train (or resume) a completion net on the train splits of data_roots (procedural
    datasets); returns the run folder."""
    cfg = config.completion_train
    clusters = config.pipeline.segmentation.depth_clusters
    carving = config.pipeline.geometry.carving
    roots, run_dir = procedural_roots(data_roots, "the completion net"), Path(run_dir)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    parts = [load_examples(root, clusters, carving, cfg, workers, progress) for root in roots]
    everything = CompletionExamples(np.concatenate([p.inputs for p in parts]),
                                    np.concatenate([p.target for p in parts]))
    if len(everything.target) <= cfg.val_objects:
        raise SceneMakerError(f"{len(everything.target)} training objects; need more than the "
                              f"{cfg.val_objects} held out for validation")
    cut = len(everything.target) - cfg.val_objects
    train = CompletionExamples(everything.inputs[:cut], everything.target[:cut])
    val = CompletionExamples(everything.inputs[cut:], everything.target[cut:])
    model = COMPLETION_MODELS[cfg.model]()
    assert model.config.in_channels == INPUT_CHANNELS

    def batch_loss(rng: np.random.Generator) -> torch.Tensor:
        inputs, target = random_batch(train, cfg.batch_size, rng)
        return F.binary_cross_entropy_with_logits(model(inputs), target)

    return train_loop(model, cfg, config, run_dir, batch_loss, lambda: validate(model, val),
                      lambda path, info: save_completion_checkpoint(path, model, info),
                      {"data": [str(r) for r in roots], "objects": len(train.target)},
                      "train completion", progress)
