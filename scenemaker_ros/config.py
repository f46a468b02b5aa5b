"""One configuration schema (dataclasses + YAML) for the CLI, the benchmarks and the ROS node.

Each stage has its own sub-config nested in ``SceneMakerConfig``. ``load_config`` rejects unknown
keys and wrong types and names the offending dotted key (``data.scene.max_objects``); the ROS node
declares its parameters under the same dotted names.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from scenemaker_ros.errors import SceneMakerError
from scenemaker_ros.files import write_text_atomic
from scenemaker_ros.synth.noise import DepthNoise


# ---------------------------------------------------------------------------
# Synthetic data
# ---------------------------------------------------------------------------
@dataclass
class SceneLayoutConfig:
    """How objects are chosen, sized and placed on the support plane (world z up, metres)."""

    min_objects: int = 2
    max_objects: int = 8
    families: list[str] = field(default_factory=list)  # empty: all procedural families
    min_size_m: float = 0.04  # longest side of an object, sampled log-uniformly
    max_size_m: float = 0.30
    anisotropy: float = 0.15  # max relative per-axis scale change (symmetries kept where possible)
    upright_prob: float = 0.5  # canonical upright pose, else a random stable resting pose
    touching_prob: float = 0.25  # slide the new object until it touches an existing one
    stacking_prob: float = 0.15  # drop the new object onto an existing one
    clutter_prob: float = 0.25  # a scene placed in a tighter area (heavy occlusion)
    spread: float = 1.2  # free placement disc radius / (mean object size * sqrt(count))
    clutter_spread: float = 0.6  # the same for cluttered scenes
    max_attempts: int = 20  # per object, before it is left out


@dataclass
class CameraSamplingConfig:
    """Random pinhole camera looking at the scene (REP 103 optical frame)."""

    width: int = 640
    height: int = 480
    fx_range: tuple[float, float] = (540.0, 660.0)
    principal_jitter_px: float = 8.0
    elevation_deg: tuple[float, float] = (20.0, 70.0)
    distance_margin: tuple[float, float] = (1.05, 1.6)  # distance / distance that just fits
    min_distance_m: float = 0.35
    max_distance_m: float = 2.5


@dataclass
class DataConfig:
    """``scenemaker data generate``: scenes per shard, rendering and sensor options."""

    scene: SceneLayoutConfig = field(default_factory=SceneLayoutConfig)
    camera: CameraSamplingConfig = field(default_factory=CameraSamplingConfig)
    sensor_noise: bool = False  # also store a RealSense-like noisy depth (``depth_sensor``)
    noise: DepthNoise = field(default_factory=DepthNoise)
    shadows: bool = True  # hard shadows in most scenes (randomised); False: never
    render_alone: bool = True  # each object alone: unoccluded RGB + amodal mask
    scenes_per_shard: int = 50


# ---------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------
@dataclass
class MetricsConfig:
    """Scene metrics (see README "Metrics"); both protocols are always reported."""

    n_scene_samples: int = 20000
    n_object_samples: int = 4000
    tau: float = 0.1
    seed: int = 0


@dataclass
class SceneMakerConfig:
    data: DataConfig = field(default_factory=DataConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)


# ---------------------------------------------------------------------------
# Loading and saving
# ---------------------------------------------------------------------------
def config_from_dict(cls: type, data: Any, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from nested dicts; unknown keys and wrong types raise."""
    if not isinstance(data, dict):
        raise SceneMakerError(f"config: '{prefix or '<root>'}' must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        key = f"{prefix}{unknown[0]}"
        valid = ", ".join(sorted(names))
        raise SceneMakerError(f"config: unknown key '{key}' (valid here: {valid})")
    kwargs = {name: _coerce(hints[name], value, f"{prefix}{name}") for name, value in data.items()}
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return config_from_dict(hint, value, f"{key}.")
    if origin is Literal:
        if value not in typing.get_args(hint):
            raise SceneMakerError(f"config: '{key}' must be one of {list(typing.get_args(hint))}, "
                                  f"got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return None if value is None else _coerce(args[0], value, key)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise SceneMakerError(f"config: '{key}' must be a list, got {value!r}")
        args = typing.get_args(hint)
        if origin is tuple and len(args) != len(value):
            raise SceneMakerError(f"config: '{key}' must have {len(args)} values, got {value!r}")
        items = [_coerce(args[min(i, len(args) - 1)], v, key) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise SceneMakerError(f"config: '{key}' must be {hint.__name__}, got {value!r}")
    return value


def validate_config(cfg: SceneMakerConfig) -> SceneMakerConfig:
    """Cross-field rules that types alone cannot express."""
    scene, camera = cfg.data.scene, cfg.data.camera
    if not 1 <= scene.min_objects <= scene.max_objects:
        raise SceneMakerError("config: need 1 <= data.scene.min_objects <= data.scene.max_objects")
    if not 0 < scene.min_size_m <= scene.max_size_m:
        raise SceneMakerError("config: need 0 < data.scene.min_size_m <= data.scene.max_size_m")
    if camera.fx_range[0] <= 0 or camera.fx_range[0] > camera.fx_range[1]:
        raise SceneMakerError("config: data.camera.fx_range must be increasing and positive")
    if cfg.data.scenes_per_shard < 1:
        raise SceneMakerError("config: data.scenes_per_shard must be >= 1")
    return cfg


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None
                ) -> SceneMakerConfig:
    """Defaults, then the YAML file (if any), then dotted overrides ({"data.shadows": False})."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise SceneMakerError(f"{path}: config file not found") from None
        except yaml.YAMLError as err:
            raise SceneMakerError(f"{path}: invalid YAML ({err})") from None
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = value
    return validate_config(config_from_dict(SceneMakerConfig, data))


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (tuples as lists) suitable for YAML/JSON."""
    def plain(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value
    return plain(dataclasses.asdict(cfg))


def save_config(cfg: SceneMakerConfig, path: str | Path) -> None:
    """Write the effective config next to the outputs it produced."""
    write_text_atomic(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
