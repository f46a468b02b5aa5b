from pathlib import Path

import pytest
import yaml

from scenemaker_ros.config import SceneMakerConfig, config_to_dict, load_config, save_config
from scenemaker_ros.errors import SceneMakerError

REPO = Path(__file__).resolve().parents[1]


def test_defaults_validate():
    cfg = load_config()
    assert isinstance(cfg, SceneMakerConfig)
    assert cfg.data.camera.width == 640 and cfg.data.camera.height == 480


def test_shipped_yaml_matches_defaults():
    """config/scenemaker.yaml, a ROS 2 parameters file, documents every key with its default."""
    shipped = yaml.safe_load((REPO / "config" / "scenemaker.yaml").read_text())
    assert shipped == {"/**": {"ros__parameters": config_to_dict(load_config())}}


def test_ros_parameters_files_are_read_with_dotted_keys(tmp_path):
    path = tmp_path / "node.yaml"
    path.write_text("scenemaker:\n  ros__parameters:\n    pose.steps: 4\n"
                    "    node: {mode: on_demand}\n")
    cfg = load_config(path)
    assert cfg.pose.steps == 4 and cfg.node.mode == "on_demand"
    path.write_text("a: {ros__parameters: {}}\nb: {ros__parameters: {}}\n")
    with pytest.raises(SceneMakerError, match="one node's ros__parameters"):
        load_config(path)


def test_unknown_key_is_named(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  scene:\n    max_object: 3\n")
    with pytest.raises(SceneMakerError, match="data.scene.max_object"):
        load_config(path)


@pytest.mark.parametrize("text, key", [
    ("data:\n  shadows: 3\n", "data.shadows"),
    ("data:\n  scene:\n    min_objects: 2.5\n", "data.scene.min_objects"),
    ("data:\n  camera:\n    fx_range: [1, 2, 3]\n", "data.camera.fx_range"),
    ("data:\n  camera: {width: '640'}\n", "data.camera.width"),
    ("data: 7\n", "data"),
])
def test_wrong_types_are_named(tmp_path, text, key):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(SceneMakerError, match=key.replace(".", r"\.")):
        load_config(path)


def test_cross_field_rule():
    with pytest.raises(SceneMakerError, match="min_objects"):
        load_config(overrides={"data.scene.min_objects": 5, "data.scene.max_objects": 3})


def test_overrides_and_round_trip(tmp_path):
    cfg = load_config(overrides={"data.shadows": False, "data.camera.fx_range": [500, 600]})
    assert cfg.data.shadows is False and cfg.data.camera.fx_range == (500.0, 600.0)
    save_config(cfg, tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml") == cfg


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(SceneMakerError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(SceneMakerError, match="invalid YAML"):
        load_config(bad)


def test_literal_and_optional_fields():
    from dataclasses import dataclass
    from typing import Literal

    from scenemaker_ros.config import config_from_dict

    @dataclass
    class Backend:
        name: Literal["classical", "learned"] = "classical"
        checkpoint: str | None = None

    assert config_from_dict(Backend, {"name": "learned", "checkpoint": None}).name == "learned"
    with pytest.raises(SceneMakerError, match=r"'stage.name' must be one of \['classical'"):
        config_from_dict(Backend, {"name": "magic"}, prefix="stage.")
