"""scenemaker train pose: a few steps on a tiny dataset, resume, checkpoints, torchrun (gloo)."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, safe_open, save_file

from scenemaker_ros.config import PoseInputConfig, load_config
from scenemaker_ros.errors import SceneMakerError
from scenemaker_ros.pose.checkpoint import load_checkpoint, read_metadata, save_checkpoint
from scenemaker_ros.pose.data import draw_example, load_cache
from scenemaker_ros.pose.model import POSE_MODELS, rotation_6d_to_matrix
from scenemaker_ros.pose.train import learning_rate, train_pose
from scenemaker_ros.synth.dataset import generate_dataset
from tests.helpers import small_data_config

TINY = {"train.model": "pose-XS", "train.batch_size": 2, "train.times_per_scene": 2,
        "train.warmup_steps": 1, "train.checkpoint_every": 2, "train.log_every": 1,
        "train.val_scenes": 2, "train.inputs.geometry_points": 32,
        "train.inputs.object_points": 32, "train.inputs.scene_points": 64,
        "train.inputs.crop_size": 16}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    cfg = small_data_config()
    cfg.sensor_noise, cfg.render_alone, cfg.scenes_per_shard = True, False, 4
    generate_dataset(root, n=6, seed=0, cfg=cfg, split="train", progress=False)
    generate_dataset(root, n=2, seed=0, cfg=cfg, split="val", progress=False)
    return root


def test_cache_and_draws(tiny_data):
    cfg = PoseInputConfig(geometry_points=32, object_points=32, scene_points=64, crop_size=16)
    scenes = load_cache(tiny_data, "train", cfg, progress=False)
    assert len(scenes) == 6 and "sensor.points" in scenes[0]
    assert load_cache(tiny_data, "train", cfg, progress=False)[0]["poses"].shape[1:] == (4, 4)
    example = draw_example(scenes[0], cfg, np.random.default_rng(0))
    rot = rotation_6d_to_matrix(torch.from_numpy(example.poses[:, :6]))
    assert torch.allclose(rot @ rot.transpose(1, 2), torch.eye(3).expand_as(rot), atol=1e-5)
    assert example.example.geometry.shape[1:] == (32, 3)
    assert all(len(s) >= 1 and np.allclose(s[0], np.eye(3)) for s in example.symmetries)


def test_learning_rate_schedule():
    cfg = load_config(None, {"train.steps": 100, "train.warmup_steps": 10}).train
    assert learning_rate(0, cfg) == pytest.approx(cfg.lr / 10)
    assert learning_rate(9, cfg) == pytest.approx(cfg.lr)
    assert learning_rate(100, cfg) == pytest.approx(cfg.lr * cfg.min_lr_ratio)


def test_train_resume_and_checkpoint(tiny_data, tmp_path):
    run = tmp_path / "run"
    train_pose(tiny_data, run, load_config(None, {**TINY, "train.steps": 4}), progress=False)
    rows = list(csv.DictReader((run / "train.csv").open()))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert all(np.isfinite(float(r["loss"])) for r in rows)
    assert [int(r["step"]) for r in csv.DictReader((run / "val.csv").open())] == [2, 4]
    model, inputs, info = load_checkpoint(run / "model.safetensors")
    assert info["step"] == 4 and inputs.crop_size == 16 and model.config.width == 64
    # resume: continues at step 5, never repeats a step
    train_pose(tiny_data, run, load_config(None, {**TINY, "train.steps": 6}), progress=False)
    rows = list(csv.DictReader((run / "train.csv").open()))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]


def raw_metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as f:
        return f.metadata()


def test_checkpoint_refuses_bad_files(tmp_path):
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, POSE_MODELS["pose-XS"](), PoseInputConfig(), {"note": "test"})
    assert read_metadata(path)["info"] == {"note": "test"}
    with pytest.raises(SceneMakerError, match="not found"):
        load_checkpoint(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(SceneMakerError, match="not a safetensors"):
        load_checkpoint(tmp_path / "junk.safetensors")
    save_file(load_file(path), tmp_path / "foreign.safetensors", metadata={"format": "other"})
    with pytest.raises(SceneMakerError, match="not a scenemaker pose checkpoint"):
        load_checkpoint(tmp_path / "foreign.safetensors")


@pytest.mark.parametrize("change", ["missing", "shape", "config"])
def test_mismatched_checkpoint_is_refused(tmp_path, change):
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, POSE_MODELS["pose-XS"](), PoseInputConfig(), {})
    state, metadata = load_file(path), raw_metadata(path)
    if change == "missing":
        state.pop("final_layer.rot_head.bias")
    elif change == "shape":
        state["final_layer.rot_head.weight"] = torch.zeros(6, 3)
    else:
        metadata["model_config"] = metadata["model_config"].replace('"depth"', '"layers"')
    save_file(state, path, metadata=metadata)
    with pytest.raises(SceneMakerError, match="do not match|unknown key"):
        load_checkpoint(path)


def test_torchrun_two_cpu_processes(tiny_data, tmp_path):
    run = tmp_path / "ddp"
    overrides = [f"--set={k}={v}" for k, v in {**TINY, "train.steps": 2}.items()]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = Path(sys.executable).with_name("torchrun")
    subprocess.run([str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "scenemaker_ros.cli",
                    "train", "pose", "--data", str(tiny_data), "--out", str(run), *overrides],
                   check=True, env=env, timeout=240, capture_output=True)
    _, _, info = load_checkpoint(run / "model.safetensors")
    assert info["processes"] == 2 and info["step"] == 2


def test_cli_refuses_missing_data_and_held_out_objects(tmp_path, capsys):
    from scenemaker_ros.cli import main

    assert main(["train", "pose", "--data", str(tmp_path / "none"), "--out", str(tmp_path)]) == 2
    assert "not a dataset folder" in capsys.readouterr().err
    cfg = small_data_config()
    cfg.shapes, cfg.render_alone = "random_urdfs", False
    generate_dataset(tmp_path / "openset", n=1, seed=0, cfg=cfg, progress=False)
    with pytest.raises(SceneMakerError, match="procedural shapes only"):
        train_pose(tmp_path / "openset", tmp_path / "run", load_config(None, TINY))
    assert main(["train", "pose", "--data", str(tmp_path), "--out", str(tmp_path),
                 "--set", "train.steps"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
