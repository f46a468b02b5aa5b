"""Sharded synthetic datasets: ``ROOT/dataset.json`` + ``ROOT/<split>/shard-NNNNN.npz``.

Scene ``j`` of a split is generated from its own random stream ``(seed, split, j)``, so the
content does not depend on the number of workers or on interruptions. Each shard is written
atomically; a rerun skips the shards that are complete (resume) and refuses to mix seeds or
configs in one folder.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from scenemaker_ros.config import DataConfig, config_from_dict, config_to_dict
from scenemaker_ros.errors import SceneMakerError
from scenemaker_ros.files import atomic_path, write_json_atomic
from scenemaker_ros.scene import scene_from_dict
from scenemaker_ros.synth.render import AmodalRender
from scenemaker_ros.synth.scenes import SceneSample, generate_scene

MANIFEST = "dataset.json"
FORMAT_VERSION = 1


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random stream of scene ``index`` of ``split``: independent of sharding and workers."""
    return np.random.default_rng([seed, zlib.crc32(split.encode()), index])


def shard_path(root: Path, split: str, shard: int) -> Path:
    return root / split / f"shard-{shard:05d}.npz"


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------
def _sample_arrays(key: str, sample: SceneSample) -> dict[str, np.ndarray]:
    arrays = {f"{key}.rgb": sample.rgb, f"{key}.depth": sample.depth,
              f"{key}.instance": sample.instance,
              f"{key}.scene_json": np.frombuffer(json.dumps(sample.scene.to_dict()).encode(),
                                                 dtype=np.uint8)}
    if sample.depth_sensor is not None:
        arrays[f"{key}.depth_sensor"] = sample.depth_sensor
    for obj_id, (vertices, faces) in sample.meshes.items():
        prefix = f"{key}.o{obj_id:03d}"
        arrays[f"{prefix}.vertices"] = vertices.astype(np.float32)
        arrays[f"{prefix}.faces"] = faces.astype(np.int32)
        arrays[f"{prefix}.symmetries"] = sample.symmetries[obj_id].astype(np.float32)
        if obj_id in sample.amodal:
            alone = sample.amodal[obj_id]
            arrays[f"{prefix}.amodal_bbox"] = np.asarray(alone.bbox, dtype=np.int32)
            arrays[f"{prefix}.amodal_mask"] = alone.mask
            arrays[f"{prefix}.amodal_rgb"] = alone.rgb
            arrays[f"{prefix}.amodal_depth"] = alone.depth
    return arrays


def write_shard(path: Path, samples: list[SceneSample]) -> None:
    """Write scenes to one compressed ``.npz`` shard, atomically."""
    arrays: dict[str, np.ndarray] = {"count": np.array(len(samples))}
    for i, sample in enumerate(samples):
        arrays.update(_sample_arrays(f"s{i:04d}", sample))
    with atomic_path(path) as tmp:
        np.savez_compressed(tmp, **arrays)


def _generate_shard(task: tuple[str, str, int, int, dict, list[int]]) -> int:
    root, split, seed, shard, cfg_dict, indices = task
    cfg = config_from_dict(DataConfig, cfg_dict)
    samples = [generate_scene(cfg, scene_rng(seed, split, j)) for j in indices]
    write_shard(shard_path(Path(root), split, shard), samples)
    return len(indices)


def _check_manifest(root: Path, seed: int, cfg: DataConfig) -> dict:
    path = root / MANIFEST
    manifest = {"version": FORMAT_VERSION, "seed": seed, "data": config_to_dict(cfg), "splits": {}}
    if path.exists():
        try:
            existing = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise SceneMakerError(f"{path}: not valid JSON ({err})") from None
        if existing.get("seed") != seed or existing.get("data") != manifest["data"]:
            raise SceneMakerError(
                f"{path}: folder holds a dataset made with another seed or config "
                f"(seed {existing.get('seed')}); use a new --out or the same seed and config")
        manifest = existing
    else:
        write_json_atomic(path, manifest)
    return manifest


def generate_dataset(root: str | Path, n: int, seed: int, cfg: DataConfig, split: str = "train",
                     workers: int = 1, progress: bool = True) -> Path:
    """Generate ``n`` scenes of ``split`` under ``root``; complete shards are kept (resume)."""
    if n < 1:
        raise SceneMakerError("data generate: --n must be >= 1")
    root = Path(root)
    manifest = _check_manifest(root, seed, cfg)
    per_shard = cfg.scenes_per_shard
    tasks = []
    done = 0
    for shard, start in enumerate(range(0, n, per_shard)):
        indices = list(range(start, min(start + per_shard, n)))
        if _shard_is_complete(shard_path(root, split, shard), len(indices)):
            done += len(indices)
        else:
            tasks.append((str(root), split, seed, shard, config_to_dict(cfg), indices))
    bar = tqdm(total=n, initial=done, unit="scene", desc=f"generate {split}", disable=not progress)
    if workers > 1 and len(tasks) > 1:
        with mp.get_context("spawn").Pool(workers) as pool:
            for count in pool.imap_unordered(_generate_shard, tasks):
                bar.update(count)
    else:
        for task in tasks:
            bar.update(_generate_shard(task))
    bar.close()
    manifest["splits"][split] = {"n": n, "shards": -(-n // per_shard)}
    write_json_atomic(root / MANIFEST, manifest)
    return root


def _shard_is_complete(path: Path, expected: int) -> bool:
    if not path.exists():
        return False
    try:
        with np.load(path) as shard:
            return int(shard["count"]) == expected
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return False  # corrupt or truncated: regenerate it


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------
@dataclass
class ShardReader:
    """Random access to the scenes of one shard. Corrupt files raise SceneMakerError."""

    path: Path

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        try:
            self._npz = np.load(self.path)
            self._count = int(self._npz["count"])
        except FileNotFoundError:
            raise SceneMakerError(f"{self.path}: shard not found") from None
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
            raise SceneMakerError(f"{self.path}: corrupt shard ({err})") from None

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, i: int) -> SceneSample:
        if not 0 <= i < self._count:
            raise IndexError(f"{self.path}: scene {i} out of range 0..{self._count - 1}")
        key = f"s{i:04d}"
        try:
            return self._read(key)
        except (KeyError, ValueError, zipfile.BadZipFile, zlib.error, EOFError) as err:
            raise SceneMakerError(f"{self.path}: corrupt scene {i} ({err})") from None

    def _read(self, key: str) -> SceneSample:
        npz = self._npz
        scene = scene_from_dict(json.loads(npz[f"{key}.scene_json"].tobytes()),
                                f"{self.path}:{key}")
        meshes, symmetries, amodal = {}, {}, {}
        for obj in scene.objects:
            prefix = f"{key}.o{obj.id:03d}"
            meshes[obj.id] = (npz[f"{prefix}.vertices"].astype(np.float64),
                              npz[f"{prefix}.faces"].astype(np.int64))
            symmetries[obj.id] = npz[f"{prefix}.symmetries"].astype(np.float64)
            if f"{prefix}.amodal_mask" in npz.files:
                bbox = tuple(int(v) for v in npz[f"{prefix}.amodal_bbox"])
                amodal[obj.id] = AmodalRender(bbox=bbox, mask=npz[f"{prefix}.amodal_mask"],
                                              rgb=npz[f"{prefix}.amodal_rgb"],
                                              depth=npz[f"{prefix}.amodal_depth"])
        sensor_key = f"{key}.depth_sensor"
        return SceneSample(
            rgb=npz[f"{key}.rgb"], depth=npz[f"{key}.depth"],
            depth_sensor=npz[sensor_key] if sensor_key in npz.files else None,
            instance=npz[f"{key}.instance"], scene=scene, meshes=meshes,
            symmetries=symmetries, amodal=amodal)

    def close(self) -> None:
        self._npz.close()


class SceneDataset:
    """All scenes of one split, indexed globally: ``dataset[j]`` is scene ``j``."""

    def __init__(self, root: str | Path, split: str = "train") -> None:
        self.root = Path(root)
        manifest_path = self.root / MANIFEST
        if not manifest_path.exists():
            raise SceneMakerError(f"{manifest_path}: not a dataset folder (no {MANIFEST})")
        manifest = json.loads(manifest_path.read_text())
        if split not in manifest["splits"]:
            raise SceneMakerError(f"{self.root}: no split '{split}' "
                                  f"(have: {', '.join(manifest['splits']) or 'none'})")
        self.split = split
        self.n = manifest["splits"][split]["n"]
        self.per_shard = manifest["data"]["scenes_per_shard"]
        self.shapes = manifest["data"].get("shapes", "procedural")  # where its objects come from
        self._readers: dict[int, ShardReader] = {}

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, j: int) -> SceneSample:
        if not 0 <= j < self.n:
            raise IndexError(f"scene {j} out of range 0..{self.n - 1}")
        shard = j // self.per_shard
        if shard not in self._readers:
            self._readers[shard] = ShardReader(shard_path(self.root, self.split, shard))
        return self._readers[shard][j % self.per_shard]

    def __iter__(self) -> Iterator[SceneSample]:
        for j in range(self.n):
            yield self[j]
