"""``scenemaker train pose``: flow-matching training of the pose model on our synthetic scenes.

One process, or data-parallel under ``torchrun`` (gloo on CPU, NCCL on GPUs): every process draws
its own scenes, DistributedDataParallel averages the gradients, rank 0 logs and saves. A run
folder holds ``config.yaml`` (the effective config), ``train.csv`` and ``val.csv`` logs,
``last.pt`` (everything needed to resume: weights, EMA, optimiser, step, random states; loaded
with ``weights_only=True``) and ``model.safetensors`` (the EMA weights, what is shipped).
"""

from __future__ import annotations

import copy
import csv
import math
import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from scenemaker_ros.config import PoseTrainConfig, SceneMakerConfig, save_config
from scenemaker_ros.errors import SceneMakerError
from scenemaker_ros.metrics import pose_errors
from scenemaker_ros.pose.checkpoint import save_checkpoint
from scenemaker_ros.pose.data import TrainingExample, draw_example, load_cache
from scenemaker_ros.pose.flow import flow_matching_loss, sample
from scenemaker_ros.pose.inputs import collate, poses_to_camera
from scenemaker_ros.pose.model import POSE_MODELS, PoseBatch, PoseModel
from scenemaker_ros.synth.dataset import SceneDataset


class FlowLoss(nn.Module):
    """The model behind the loss, so DistributedDataParallel sees one forward per step."""

    def __init__(self, model: PoseModel, times_per_scene: int):
        super().__init__()
        self.model = model
        self.times_per_scene = times_per_scene

    def forward(self, batch: PoseBatch, poses, obj_mask, symmetries, generator):
        return flow_matching_loss(self.model, batch, poses, obj_mask, generator,
                                  symmetries=symmetries, times_per_scene=self.times_per_scene)


def build_model(cfg: PoseTrainConfig) -> PoseModel:
    return POSE_MODELS[cfg.model](local_self_attn=cfg.local_self_attn,
                                  global_self_attn=cfg.global_self_attn,
                                  local_cross_attn=cfg.local_cross_attn,
                                  image_features=cfg.image_features,
                                  image_backbone=cfg.image_backbone)


def learning_rate(step: int, cfg: PoseTrainConfig) -> float:
    """Linear warm-up, then cosine decay to lr * min_lr_ratio at the last step."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


def training_tensors(examples: list[TrainingExample], device) -> tuple:
    """(PoseBatch, poses (B, K, 12), obj_mask (B, K), symmetries (B, K, M, 3, 3)) padded."""
    batch, obj_mask = collate([e.example for e in examples], device)
    B, K = obj_mask.shape
    M = max(len(s) for e in examples for s in e.symmetries)
    poses = torch.zeros(B, K, 12)
    symmetries = torch.eye(3).repeat(B, K, M, 1, 1)  # identity padding
    for b, e in enumerate(examples):
        poses[b, :len(e.poses)] = torch.from_numpy(e.poses)
        for k, s in enumerate(e.symmetries):
            symmetries[b, k, :len(s)] = torch.from_numpy(s)
    return batch, poses.to(device), obj_mask, symmetries.to(device)


def draw_batch(scenes: list, n: int, cfg: PoseTrainConfig, rng: np.random.Generator
               ) -> list[TrainingExample]:
    examples: list[TrainingExample] = []
    while len(examples) < n:
        example = draw_example(scenes[rng.integers(len(scenes))], cfg.inputs, rng,
                               cfg.sensor_depth_prob)
        if example is not None:
            examples.append(example)
    return examples


@torch.no_grad()
def validate(model: PoseModel, examples: list[TrainingExample], device, batch_size: int = 16
             ) -> dict[str, float]:
    """Flow loss (fixed noise) and median pose errors of 8-step samples on fixed val examples."""
    losses, rotation, translation, scale = [], [], [], []
    for i in range(0, len(examples), batch_size):
        chunk = examples[i:i + batch_size]
        batch, poses, obj_mask, symmetries = training_tensors(chunk, device)
        generator = torch.Generator(device).manual_seed(i)
        losses.append(float(flow_matching_loss(model, batch, poses, obj_mask, generator,
                                               symmetries=symmetries)[0]))
        predicted = sample(model, batch, obj_mask, steps=8, generator=generator).cpu()
        for b, e in enumerate(chunk):
            norm = e.example.normalisation
            T_pred = poses_to_camera(predicted[b, :len(e.poses)], norm)
            T_gt = poses_to_camera(e.poses, norm)
            for k in range(len(e.poses)):
                r, t, s = pose_errors(T_pred[k], T_gt[k], e.symmetries[k])
                rotation.append(r)
                translation.append(t)
                scale.append(s)
    return {"val_loss": float(np.mean(losses)), "rot_deg_median": float(np.median(rotation)),
            "trans_mm_median": 1000 * float(np.median(translation)),
            "scale_median": float(np.median(scale))}


class CsvLog:
    """Append rows to a CSV file, writing the header once."""

    def __init__(self, path: Path):
        self.path = path

    def write(self, row: dict) -> None:
        new = not self.path.exists()
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()})


def _distributed() -> tuple[int, int, torch.device]:
    """(rank, world size, device); joins the process group when started by torchrun."""
    if "RANK" not in os.environ:
        return 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    local = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device(f"cuda:{local}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    return dist.get_rank(), dist.get_world_size(), device


def _load_data(root: Path, cfg: PoseTrainConfig, rank: int, workers: int):
    """Training and validation scenes; rank 0 builds the caches while the others wait."""
    def load():
        train = load_cache(root, "train", cfg.inputs, workers, progress=rank == 0)
        if (root / "val").is_dir():
            val = load_cache(root, "val", cfg.inputs, workers, limit=cfg.val_scenes,
                             progress=rank == 0)
        elif len(train) > 2 * cfg.val_scenes:  # no val split: hold out the last scenes
            train, val = train[:-cfg.val_scenes], train[-cfg.val_scenes:]
        else:
            raise SceneMakerError(f"{root}: no 'val' split and too few training scenes to hold "
                                  f"out {cfg.val_scenes}; generate one with --split val")
        return train, val

    if rank == 0:
        data = load()
    if dist.is_initialized():
        dist.barrier()
    if rank != 0:
        data = load()
    return data


def train_pose(data_root: str | Path, run_dir: str | Path, config: SceneMakerConfig,
               workers: int = 1, progress: bool = True) -> Path:
    """Train (or resume) a pose model on ``data_root``'s train split; returns the run folder."""
    cfg = config.train
    root, run_dir = Path(data_root), Path(run_dir)
    if SceneDataset(root, "train").shapes != "procedural":  # also: a clear error if missing
        raise SceneMakerError(f"{root}: its scenes are built from held-out evaluation objects "
                              f"(data.shapes); the pose model trains on procedural shapes only")
    rank, world, device = _distributed()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    train_scenes, val_scenes = _load_data(root, cfg, rank, workers)
    val_rng = np.random.default_rng([cfg.seed, 1])
    val_examples = [e for e in (draw_example(s, cfg.inputs, val_rng, cfg.sensor_depth_prob)
                                for s in val_scenes) if e is not None]

    model = build_model(cfg).to(device)
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    trained = [p for p in model.parameters() if p.requires_grad]  # not a frozen backbone
    decay = [p for p in trained if p.dim() >= 2]
    no_decay = [p for p in trained if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    loss_module = FlowLoss(model, cfg.times_per_scene)
    if world > 1:
        loss_module = nn.parallel.DistributedDataParallel(loss_module)

    step, previous_s, rng = 0, 0.0, np.random.default_rng([cfg.seed, 0, rank])
    generator = torch.Generator(device).manual_seed(cfg.seed * 1000 + rank)
    last = run_dir / "last.pt"
    if last.exists():
        state = torch.load(last, weights_only=True, map_location=device)
        if state["world"] != world:
            raise SceneMakerError(f"{last}: saved by {state['world']} processes, resumed with "
                                  f"{world}; resume with the same number")
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        step, previous_s = int(state["step"]), float(state["elapsed_s"])
        rng.bit_generator.state = state["numpy_rng"][rank]
        generator.set_state(state["torch_rng"][rank])
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir / "config.yaml")
    train_log, val_log = CsvLog(run_dir / "train.csv"), CsvLog(run_dir / "val.csv")

    def save() -> None:
        numpy_states, torch_states = [rng.bit_generator.state], [generator.get_state()]
        if world > 1:
            numpy_states, torch_states = [None] * world, [None] * world
            dist.all_gather_object(numpy_states, rng.bit_generator.state)
            dist.all_gather_object(torch_states, generator.get_state())
        if rank != 0:
            return
        metrics = validate(ema, val_examples, device)
        val_log.write({"step": step, **metrics})
        info = {"train": asdict(cfg), "data": str(root), "scenes": len(train_scenes),
                "step": step, "processes": world, "wall_s": round(previous_s + elapsed, 1),
                "device": str(device), "val": metrics}
        save_checkpoint(run_dir / "model.safetensors", ema, cfg.inputs, info)
        state = {"model": model.state_dict(), "ema": ema.state_dict(), "step": step,
                 "elapsed_s": previous_s + elapsed,
                 "optimizer": optimizer.state_dict(), "world": world,
                 "numpy_rng": numpy_states, "torch_rng": torch_states}
        torch.save(state, run_dir / "last.tmp")
        os.replace(run_dir / "last.tmp", last)
        tqdm.write(f"step {step}: " + "  ".join(f"{k} {v:.4g}" for k, v in metrics.items()))

    start, elapsed = time.perf_counter(), 0.0
    bar = tqdm(total=cfg.steps, initial=step, desc="train pose", unit="step",
               disable=not progress or rank != 0)
    model.train()
    while step < cfg.steps:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, cfg)
        batch = training_tensors(draw_batch(train_scenes, cfg.batch_size, cfg, rng), device)
        loss, parts = loss_module(*batch, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(trained, cfg.grad_clip)
        optimizer.step()
        with torch.no_grad():
            for p_ema, p in zip(ema.parameters(), model.parameters()):
                p_ema.lerp_(p, 1 - cfg.ema_decay)
        step += 1
        elapsed = time.perf_counter() - start
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if rank == 0 and step % cfg.log_every == 0:
            train_log.write({"step": step, "loss": loss.item(),
                             **{k: v.item() for k, v in parts.items()},
                             "grad_norm": float(grad_norm), "lr": learning_rate(step, cfg),
                             "elapsed_s": elapsed})
        out_of_time = 0 < cfg.time_limit_min < elapsed / 60  # minutes of this invocation
        if world > 1:  # every rank stops at the same step
            flag = torch.tensor(float(out_of_time), device=device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            out_of_time = bool(flag.item())
        if step % cfg.checkpoint_every == 0 or step == cfg.steps or out_of_time:
            save()
        if out_of_time:
            break
    bar.close()
    if dist.is_initialized():
        dist.destroy_process_group()
    return run_dir
