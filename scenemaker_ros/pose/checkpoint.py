"""Pose-model checkpoints: safetensors weights, the model and input configs in the metadata.

Loading reads tensors and JSON strings only: nothing is unpickled. The model config is rebuilt
from the metadata (as nanoGPT keeps ``model_args``); unknown keys, missing or extra tensors and
shape mismatches are refused with one clear message.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from scenemaker_ros.config import PoseInputConfig, config_from_dict
from scenemaker_ros.errors import SceneMakerError
from scenemaker_ros.files import atomic_path
from scenemaker_ros.pose.model import PoseModel, PoseModelConfig

FORMAT = "scenemaker-pose-1"
SHIPPED_CHECKPOINT = Path(__file__).parent / "weights" / "pose-S.safetensors"


def save_checkpoint(path: str | Path, model: PoseModel, inputs: PoseInputConfig,
                    info: dict[str, Any]) -> None:
    """Write model's weights (float32) with its config, the input config and ``info`` (JSON)."""
    state = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {"format": FORMAT, "model_config": json.dumps(dataclasses.asdict(model.config)),
                "inputs": json.dumps(dataclasses.asdict(inputs)), "info": json.dumps(info)}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The checkpoint's metadata, JSON values decoded."""
    path = Path(path)
    if not path.is_file():
        raise SceneMakerError(f"{path}: pose checkpoint not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except (SafetensorError, OSError) as err:
        raise SceneMakerError(f"{path}: not a safetensors file ({err})") from None
    if raw.get("format") != FORMAT:
        raise SceneMakerError(f"{path}: not a scenemaker pose checkpoint (format "
                              f"{raw.get('format')!r}, expected {FORMAT!r})")
    return {k: json.loads(v) if k != "format" else v for k, v in raw.items()}


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu"
                    ) -> tuple[PoseModel, PoseInputConfig, dict[str, Any]]:
    """(model in eval mode on device, its input config, info) from a checkpoint file."""
    metadata = read_metadata(path)
    config = config_from_dict(PoseModelConfig, metadata["model_config"], "model_config.")
    inputs = config_from_dict(PoseInputConfig, metadata["inputs"], "inputs.")
    model = PoseModel(config)
    state = load_file(str(path), device="cpu")
    expected = model.state_dict()
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or extra or wrong:
        problem = (f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}" if extra
                   else f"shape of {wrong[:3]}")
        raise SceneMakerError(f"{path}: weights do not match the model config in its metadata "
                              f"({problem})")
    model.load_state_dict(state)
    return model.to(device).eval(), inputs, metadata["info"]
