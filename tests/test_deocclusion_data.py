"""De-occlusion triplets: alignment, masking strategies, storage, resume, and the benchmark."""

import json

import numpy as np
import pytest

from scenemaker_ros.bench.deocclusion import run_deocclusion_benchmark, triplet_frame
from scenemaker_ros.cli import main
from scenemaker_ros.config import load_config
from scenemaker_ros.errors import SceneMakerError
from scenemaker_ros.geometry import depth_to_points
from scenemaker_ros.synth.deocclusion_data import (
    GENERIC_NOUN,
    VISIBLE,
    TripletDataset,
    generate_triplets,
    object_noun,
    scene_triplets,
)
from scenemaker_ros.synth.scenes import generate_scene
from tests.helpers import small_data_config

SMALL = """data:
  camera: {width: 320, height: 240, fx_range: [270.0, 330.0]}
  scene: {max_objects: 5}
deocclusion_data: {min_amodal_pixels: 300, scenes_per_chunk: 2}
"""


def _triplet_cfg(**overrides):
    cfg = load_config().deocclusion_data
    cfg.min_amodal_pixels, cfg.objects_per_scene = 300, 5
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


@pytest.fixture(scope="module")
def scene():
    return generate_scene(small_data_config(), np.random.default_rng(5))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """4 triplets written by the CLI (with the preview)."""
    root = tmp_path_factory.mktemp("triplets")
    (root / "small.yaml").write_text(SMALL)
    assert main(["data", "deocclusion", "--n", "4", "--out", str(root / "t"), "--seed", "3",
                 "--preview", "--config", str(root / "small.yaml")]) == 0
    return root


def test_triplet_is_aligned_with_its_scene(scene):
    triplets = scene_triplets(scene, _triplet_cfg(), np.random.default_rng(0))
    assert triplets
    full_K = scene.scene.camera.K
    for t in triplets:
        size = t.meta["size"]
        x0, y0, x1, y1 = t.meta["box"]
        assert (x1 - x0, y1 - y0) == (size, size) and t.target.shape == (size, size, 3)
        assert t.rgb.shape == (size, size, 3) and t.depth.shape == t.instance.shape == (size, size)
        # the input is the visible part of the object on white; the target is white off it
        visible, amodal = t.visible, t.amodal
        assert visible.any() and not (visible & ~amodal).any()
        assert np.all(t.input[~visible] == 255) and np.all(t.target[~amodal] == 255)
        hidden = 1 - visible.sum() / amodal.sum()
        assert hidden == pytest.approx(t.meta["hidden_fraction"], abs=1e-4)
        assert 0.1 <= hidden <= 0.6
        # same camera, same crop: the visible pixels match the object rendered alone up to pixel
        # noise and shadows cast by other objects
        difference = np.abs(t.input[visible].astype(int) - t.target[visible].astype(int))
        assert np.median(difference) < 12
        # the crop's intrinsics: the same 3D points as the full frame's
        crop_points = depth_to_points(t.depth, t.K, visible)
        full_depth = np.zeros_like(scene.depth)
        rows, cols = np.nonzero(visible)
        full_depth[rows + y0, cols + x0] = scene.depth[rows + y0, cols + x0]
        full_visible = full_depth > 0
        np.testing.assert_allclose(np.sort(crop_points, axis=0),
                                   np.sort(depth_to_points(full_depth, full_K, full_visible),
                                           axis=0), atol=1e-9)
        # the ground lies on the stored support plane
        ground = (t.instance == 0) & (t.depth > 0)
        heights = depth_to_points(t.depth, t.K, ground) @ t.plane_normal + t.plane_offset
        assert np.abs(heights).max() < 2e-3
        # the virtual occluder, last label, stands in front of the object
        if t.meta["hidden_fraction"] > t.meta["real_hidden_fraction"]:
            occluder = t.instance == t.instance.max()
            assert t.depth[occluder].max() < t.depth[visible].min()
            assert np.all(t.rgb[occluder] == 255)


@pytest.mark.parametrize("strategy", ["cutout", "rectangle", "brush"])
def test_each_masking_strategy(scene, strategy):
    weights = tuple(float(s == strategy) for s in ("cutout", "rectangle", "brush"))
    triplets = scene_triplets(scene, _triplet_cfg(strategy_weights=weights),
                              np.random.default_rng(1))
    assert triplets and {t.meta["strategy"] for t in triplets} == {strategy}
    for t in triplets:
        virtual = t.instance == t.instance.max()
        if strategy == "rectangle":  # a band reaching an edge of the crop
            rows, cols = np.nonzero(virtual)
            assert {0, t.meta["size"] - 1} & {rows.min(), rows.max(), cols.min(), cols.max()}
        assert (virtual & t.amodal).any()


def test_prompts_name_the_family():
    assert object_noun("mug") == "mug" and object_noun("l_block") == "L-shaped block"
    assert object_noun("mug", generic=True) == object_noun("urdf_007") == GENERIC_NOUN
    cfg = _triplet_cfg(generic_prompt_prob=0.0)
    scene = generate_scene(small_data_config(), np.random.default_rng(8))
    for t in scene_triplets(scene, cfg, np.random.default_rng(0)):
        assert t.prompt == cfg.prompt.format(object=object_noun(t.meta["family"]))


def test_folder_round_trip_preview_and_resume(folder, capsys):
    root = folder / "t"
    dataset = TripletDataset(root)
    assert len(dataset) == 4 and dataset.shapes == "procedural"
    assert (root / "preview.png").stat().st_size > 10_000 and (root / "config.yaml").exists()
    t = dataset[2]
    assert t.input.shape == t.target.shape and t.instance[t.visible].min() == VISIBLE
    stored = [json.loads(line) for line in (root / "triplets.jsonl").read_text().splitlines()]
    assert [r["key"] for r in stored] == [r["key"] for r in dataset.records]
    # resume: nothing made again; fewer triplets: the same first ones
    cfg = load_config(folder / "small.yaml")
    info = generate_triplets(root, n=4, seed=3, data=cfg.data, cfg=cfg.deocclusion_data,
                             progress=False)
    assert info["made"] == 0
    fresh = folder / "fresh"
    generate_triplets(fresh, n=2, seed=3, data=cfg.data, cfg=cfg.deocclusion_data,
                      progress=False)
    again = TripletDataset(fresh)
    assert again.records == dataset.records[:2]
    np.testing.assert_array_equal(again[1].input, dataset[1].input)
    np.testing.assert_array_equal(again[1].depth, dataset[1].depth)
    with pytest.raises(SceneMakerError, match="another seed or config"):
        generate_triplets(root, n=4, seed=4, data=cfg.data, cfg=cfg.deocclusion_data,
                          progress=False)


def test_missing_files_are_one_line(folder, tmp_path):
    with pytest.raises(SceneMakerError, match="not a de-occlusion triplet folder"):
        TripletDataset(tmp_path)
    dataset = TripletDataset(folder / "t")
    dataset.records[0] = {**dataset.records[0], "key": "nope"}
    with pytest.raises(SceneMakerError, match="missing or corrupt"):
        dataset[0]


def test_bench_depth_order_on_triplets(folder, tmp_path, capsys):
    dataset = TripletDataset(folder / "t")
    frame, segmentation = triplet_frame(dataset[0])
    assert np.array_equal(segmentation.masks[0], dataset[0].visible)
    results = run_deocclusion_benchmark(folder / "t", "depth_order", 10, tmp_path / "d.json")
    overall = results["scores"][0]
    assert overall["strategy"] == "all" and overall["objects"] == 4
    assert 0 < overall["visible_iou"] < overall["amodal_iou"] <= 1
    assert overall["psnr"] > overall["visible_psnr"]
    assert json.loads((tmp_path / "d.json").read_text())["triplets"] == 4
    with pytest.raises(SceneMakerError, match="pipeline.deocclusion.backend"):
        run_deocclusion_benchmark(folder / "t", "nope", 10, tmp_path / "e.json")
