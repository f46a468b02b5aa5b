"""The one config schema (``scenemaker_ros.config``) as ROS parameters.

Every key of the sections the node uses is a parameter under its dotted name
(``pipeline.segmentation.backend``, ``node.max_rate_hz``), declared with a descriptor whose
description is the key's comment in config.py. Values are checked by the same code as the CLI's
``--config`` files, so a bad value gives the same one-line error at start-up, and a refused
``ros2 param set`` says why.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing
from functools import cache
from typing import Any

from rcl_interfaces.msg import ParameterDescriptor

from scenemaker_ros.config import SceneMakerConfig, config_to_dict, load_config

NODE_SECTIONS = ("pipeline", "pose", "export", "relations", "node")


def flat_defaults(cfg: SceneMakerConfig | None = None) -> dict[str, Any]:
    """{dotted name: value} of every key in NODE_SECTIONS (lists for tuples)."""
    data = config_to_dict(cfg or load_config())
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, child in value.items():
                walk(f"{prefix}.{key}", child)
        else:
            flat[prefix] = value

    for section in NODE_SECTIONS:
        walk(section, data[section])
    return flat


@cache
def _comments() -> dict[str, str]:
    """{dotted name: the comment after the key in config.py}."""
    comments: dict[str, str] = {}

    def walk(prefix: str, cls: type) -> None:
        source = "\n".join(inspect.getsource(c) for c in cls.__mro__
                            if dataclasses.is_dataclass(c))
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            name = f"{prefix}{f.name}"
            if dataclasses.is_dataclass(hints[f.name]):
                walk(f"{name}.", hints[f.name])
                continue
            match = re.search(rf"^\s+{f.name}: .*?#\s*(.+)$", source, re.MULTILINE)
            comments[name] = match.group(1).strip() if match else ""

    walk("", SceneMakerConfig)
    return comments


def descriptor(name: str, value: Any) -> ParameterDescriptor:
    """Dynamic typing: YAML may write 2 for 2.0; the config schema checks every value."""
    text = _comments().get(name, "")
    return ParameterDescriptor(name=name, dynamic_typing=True,
                               description=f"{text} (default: {value!r})" if text
                               else f"default: {value!r}")


def config_from_parameters(values: dict[str, Any]) -> SceneMakerConfig:
    """The validated config from parameter values ({dotted name: value}; None = not set, the
    default applies); SceneMakerError names the first bad key."""
    return load_config(overrides={k: v for k, v in values.items() if v is not None})
