"""The one lookup every stage's ``build_<stage>(cfg)`` goes through, with its fallback."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from scenemaker_ros.errors import SceneMakerError

log = logging.getLogger(__name__)

Stage = TypeVar("Stage")


def build_backend(backends: dict[str, Callable[..., Stage]], cfg: Any, key: str, *args: Any
                  ) -> Stage:
    """``backends[cfg.backend](cfg, *args)``; an unknown name raises SceneMakerError naming the
    config key (``pipeline.segmentation.backend``) and the valid names.

    When the backend cannot be built (SceneMakerError: missing weights, no CUDA) and the stage
    config names a ``fallback`` backend, a warning is logged and the fallback is built instead.
    """
    fallback = getattr(cfg, "fallback", "")
    fallback_key = key.rsplit(".", 1)[0] + ".fallback"
    for name, name_key in ((cfg.backend, key), (fallback, fallback_key)):
        if name and name not in backends:
            raise SceneMakerError(f"config: {name_key} must be one of {sorted(backends)}, "
                                  f"got {name!r}")
    try:
        return backends[cfg.backend](cfg, *args)
    except SceneMakerError as err:
        if not fallback or fallback == cfg.backend:
            raise
        log.warning("%s %r unavailable (%s); using the fallback %r (%s)", key, cfg.backend, err,
                    fallback, fallback_key)
        return backends[fallback](cfg, *args)
