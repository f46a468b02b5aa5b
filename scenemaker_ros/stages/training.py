"""The training loop of the stages' small networks (the boundary net, the completion net).

AdamW with linear warm-up and cosine decay (``learning_rate``), one batch per step drawn from a
numpy generator seeded ``[seed, 0]``; every ``checkpoint_every`` steps (and at the end) the
validation scores go to ``val.csv``, the weights with their training record to
``model.safetensors`` and the full state to ``last.pt``, from which a rerun resumes (loaded with
``weights_only=True``). The run folder also holds ``config.yaml`` and ``train.csv`` (loss, lr).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from scenemaker_ros.config import SceneMakerConfig, save_config
from scenemaker_ros.errors import SceneMakerError
from scenemaker_ros.pose.train import CsvLog
from scenemaker_ros.synth.dataset import SceneDataset


def procedural_roots(data_roots: list[str | Path], what: str) -> list[Path]:
    """data_roots as paths, each the folder of a procedural dataset with a train split; a
    SceneMakerError naming what ("the boundary net") for one built from held-out objects."""
    roots = [Path(r) for r in data_roots]
    for root in roots:
        if SceneDataset(root, "train").shapes != "procedural":  # also: a clear error if missing
            raise SceneMakerError(f"{root}: its scenes are built from held-out evaluation "
                                  f"objects (data.shapes); {what} trains on procedural shapes "
                                  f"only")
    return roots


def learning_rate(step: int, cfg: Any) -> float:
    """Linear warm-up, then cosine decay to lr * min_lr_ratio at the last step (cfg: a training
    config with lr, warmup_steps, min_lr_ratio and steps)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min((step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps), 1.0)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(
        math.pi * progress)))


def train_loop(model: nn.Module, cfg: Any, config: SceneMakerConfig, run_dir: Path,
               batch_loss: Callable[[np.random.Generator], torch.Tensor],
               validate: Callable[[], dict[str, float]],
               save_weights: Callable[[Path, dict[str, Any]], None], record: dict[str, Any],
               desc: str, progress: bool = True) -> Path:
    """Train model (or resume it from run_dir/last.pt) for cfg.steps steps of
    batch_loss(rng), the loss of one batch drawn with rng; validate() scores it and
    save_weights(path, info) writes its checkpoint with info: record plus the settings, step,
    wall time and scores. Returns run_dir."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    step, previous_s, rng = 0, 0.0, np.random.default_rng([cfg.seed, 0])
    last = run_dir / "last.pt"
    if last.exists():
        state = torch.load(last, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, previous_s = int(state["step"]), float(state["elapsed_s"])
        rng.bit_generator.state = state["numpy_rng"]
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / "config.yaml")
    train_log, val_log = CsvLog(run_dir / "train.csv"), CsvLog(run_dir / "val.csv")

    def save() -> None:
        metrics = validate()
        val_log.write({"step": step, **metrics})
        info = {"train": asdict(cfg), **record, "step": step,
                "wall_s": round(previous_s + elapsed, 1), "val": metrics}
        save_weights(run_dir / "model.safetensors", info)
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                 "elapsed_s": previous_s + elapsed, "numpy_rng": rng.bit_generator.state}
        torch.save(state, run_dir / "last.tmp")
        os.replace(run_dir / "last.tmp", last)
        tqdm.write(f"step {step}: " + "  ".join(f"{k} {v:.4g}" for k, v in metrics.items()))

    start, elapsed = time.perf_counter(), 0.0
    bar = tqdm(total=cfg.steps, initial=step, desc=desc, unit="step", disable=not progress)
    model.train()
    while step < cfg.steps:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, cfg)
        loss = batch_loss(rng)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        elapsed = time.perf_counter() - start
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if step % cfg.log_every == 0:
            train_log.write({"step": step, "loss": loss.item(), "lr": learning_rate(step, cfg),
                             "elapsed_s": elapsed})
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            save()
    bar.close()
    return run_dir
