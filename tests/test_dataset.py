"""Sharded datasets: deterministic, resumable, atomic, and clear about corrupt files."""

import json

import numpy as np
import pytest

from scenemaker_ros.errors import SceneMakerError
from scenemaker_ros.synth.dataset import (
    SceneDataset,
    ShardReader,
    generate_dataset,
    scene_rng,
    shard_path,
)
from scenemaker_ros.synth.scenes import generate_scene
from tests.helpers import small_data_config


def _cfg():
    cfg = small_data_config()
    cfg.scenes_per_shard = 3
    cfg.scene.max_objects = 3
    return cfg


def _assert_same(a, b):
    np.testing.assert_array_equal(a.rgb, b.rgb)
    np.testing.assert_array_equal(a.depth, b.depth)
    np.testing.assert_array_equal(a.instance, b.instance)
    assert a.scene.to_dict() == b.scene.to_dict()
    for obj_id, (vertices, faces) in a.meshes.items():
        np.testing.assert_allclose(b.meshes[obj_id][0], vertices, atol=1e-6)
        np.testing.assert_array_equal(b.meshes[obj_id][1], faces)


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    generate_dataset(root, n=5, seed=11, cfg=_cfg(), split="train", progress=False)
    return root


def test_layout_on_disk(dataset_dir):
    manifest = json.loads((dataset_dir / "dataset.json").read_text())
    assert manifest["seed"] == 11 and manifest["splits"]["train"] == {"n": 5, "shards": 2}
    assert sorted(p.name for p in (dataset_dir / "train").iterdir()) == [
        "shard-00000.npz", "shard-00001.npz"]
    dataset = SceneDataset(dataset_dir, "train")
    assert len(dataset) == 5 and len(list(dataset)) == 5


def test_stored_scene_equals_regenerated(dataset_dir):
    dataset = SceneDataset(dataset_dir, "train")
    _assert_same(generate_scene(_cfg(), scene_rng(11, "train", 4)), dataset[4])


def test_deterministic_across_workers(dataset_dir, tmp_path):
    generate_dataset(tmp_path, n=5, seed=11, cfg=_cfg(), split="train", workers=2, progress=False)
    a, b = SceneDataset(dataset_dir, "train"), SceneDataset(tmp_path, "train")
    for j in range(5):
        _assert_same(a[j], b[j])


def test_resume_regenerates_only_missing_or_corrupt(dataset_dir, tmp_path):
    import shutil
    root = tmp_path / "copy"
    shutil.copytree(dataset_dir, root)
    kept = shard_path(root, "train", 0)
    kept_mtime = kept.stat().st_mtime_ns
    broken = shard_path(root, "train", 1)
    broken.write_bytes(broken.read_bytes()[:100])  # an interrupted copy, say
    generate_dataset(root, n=5, seed=11, cfg=_cfg(), split="train", progress=False)
    assert kept.stat().st_mtime_ns == kept_mtime
    _assert_same(SceneDataset(dataset_dir, "train")[4], SceneDataset(root, "train")[4])


def test_refuses_mixing_seeds(dataset_dir):
    with pytest.raises(SceneMakerError, match="another seed or config"):
        generate_dataset(dataset_dir, n=5, seed=12, cfg=_cfg(), progress=False)


def test_corrupt_and_missing_files_are_named(tmp_path, dataset_dir):
    bad = tmp_path / "shard-00000.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(SceneMakerError, match="shard-00000.npz: corrupt shard"):
        ShardReader(bad)
    with pytest.raises(SceneMakerError, match="shard not found"):
        ShardReader(tmp_path / "missing.npz")
    with pytest.raises(SceneMakerError, match="not a dataset folder"):
        SceneDataset(tmp_path)
    with pytest.raises(SceneMakerError, match="no split 'val'"):
        SceneDataset(dataset_dir, "val")
