"""Our own small networks' checkpoints (safetensors, no pickle) and CPU threads.

A checkpoint holds the weights, and in its metadata a format tag, the model's config (a
dataclass, as JSON) and the training info; loading checks all three and turns any problem into
one SceneMakerError line naming the setting that points at the file.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from scenemaker_ros.config import config_from_dict
from scenemaker_ros.errors import SceneMakerError

Model = TypeVar("Model", bound=nn.Module)


def save_checkpoint(path: str | Path, model: nn.Module, format_tag: str,
                    info: dict[str, Any]) -> None:
    """model's float32 weights, its ``config`` dataclass and info, written atomically."""
    from safetensors.torch import save_file

    from scenemaker_ros.files import atomic_path

    state = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {"format": format_tag, "model_config": json.dumps(dataclasses.asdict(model.config)),
                "info": json.dumps(info)}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)


def load_checkpoint(path: str | Path, format_tag: str, config_type: type,
                    build: Callable[[Any], Model], what: str, setting: str
                    ) -> tuple[Model, dict[str, Any]]:
    """(build(config) with the weights, in eval mode on the CPU; training info) of a checkpoint
    written by save_checkpoint with format_tag; errors name what ("boundary") and the config
    key setting that points at the file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    path = Path(path)
    if not path.is_file():
        raise SceneMakerError(f"{path}: {what} checkpoint not found ({setting})")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise SceneMakerError(f"{path}: not a safetensors file ({err})") from None
    if metadata.get("format") != format_tag:
        raise SceneMakerError(f"{path}: not a scenemaker {what} checkpoint (format "
                              f"{metadata.get('format')!r}, expected {format_tag!r})")
    config = config_from_dict(config_type, json.loads(metadata["model_config"]), "model_config.")
    model = build(config)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise SceneMakerError(f"{path}: weights do not match the model config in its metadata "
                              f"({str(err).splitlines()[0]})") from None
    return model.eval(), json.loads(metadata["info"])


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op thread count set to n (0: left as it is) for the block, then restored."""
    previous = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
