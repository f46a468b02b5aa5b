"""The one lookup every stage's ``build_<stage>(cfg)`` goes through."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from scenemaker_ros.errors import SceneMakerError

Stage = TypeVar("Stage")


def build_backend(backends: dict[str, Callable[..., Stage]], cfg: Any, key: str, *args: Any
                  ) -> Stage:
    """``backends[cfg.backend](cfg, *args)``; an unknown name raises SceneMakerError naming the
    config key (``pipeline.segmentation.backend``) and the valid names."""
    if cfg.backend not in backends:
        raise SceneMakerError(f"config: {key} must be one of {sorted(backends)}, "
                              f"got {cfg.backend!r}")
    return backends[cfg.backend](cfg, *args)
