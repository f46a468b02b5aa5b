"""The learned completion of the "carving" geometry: grid, inputs, targets, the 3D U-Net, its
checkpoints, training, and what the shipped weights do to carved objects."""

import numpy as np
import pytest
import torch
import trimesh

from scenemaker_ros.config import CarvingConfig, load_config
from scenemaker_ros.errors import SceneMakerError
from scenemaker_ros.stages.completion import (
    COMPLETION_MODELS,
    FLOOR_CELLS,
    GRID,
    SHIPPED_CHECKPOINT,
    grid_inputs,
    load_completion_checkpoint,
    object_grid,
    save_completion_checkpoint,
    training_target,
)
from scenemaker_ros.stages.completion_train import (
    load_examples,
    random_batch,
    scene_examples,
    train_completion,
)
from scenemaker_ros.stages.geometry import build_geometry, evaluate_geometry
from scenemaker_ros.synth.dataset import generate_dataset, scene_rng
from scenemaker_ros.synth.scenes import generate_scene
from tests.helpers import small_data_config
from tests.test_carving import SEEDS
from tests.test_geometry_stage import _data_config

K = np.array([[300.0, 0, 159.5], [0, 300.0, 119.5], [0, 0, 1]])
NORMAL = np.array([0.0, -np.sqrt(0.5), -np.sqrt(0.5)])  # a camera 45 degrees above a table
OFFSET = 0.7  # metres from the camera to the plane


def _box_on_plane(size=(0.1, 0.06, 0.08)):
    """A box standing on the plane 0.9 m ahead of the camera (camera frame vertices, faces)."""
    y = np.cross(NORMAL, [1.0, 0.0, 0.0])
    x = np.cross(y, NORMAL)
    box = trimesh.creation.box(extents=size)
    R = np.stack([x, -y if y[2] < 0 else y, NORMAL], axis=1)
    foot = np.array([0.0, 0.0, 0.9])
    foot = foot - (foot @ NORMAL + OFFSET) * NORMAL  # onto the plane
    vertices = box.vertices @ R.T + foot + NORMAL * size[2] / 2
    return vertices, box.faces


def test_the_grid_stands_on_the_floor_and_looks_along_the_view():
    vertices, _ = _box_on_plane()
    seen = vertices[vertices[:, 2] < np.median(vertices[:, 2])]  # the near half
    grid = object_grid(seen, NORMAL, 0.0, OFFSET)
    R = grid.T_cam_grid[:3, :3]
    np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-12)
    assert np.linalg.det(R) > 0 and np.allclose(R[:, 2], NORMAL)
    assert R[:, 1] @ seen.mean(axis=0) > 0  # y points away from the camera
    origin_height = grid.T_cam_grid[:3, 3] @ NORMAL + OFFSET
    assert origin_height == pytest.approx(-FLOOR_CELLS * grid.cell)
    cells = grid.to_cells(seen)
    assert cells.min() > 0 and cells.max() < GRID - 1  # the seen points lie well inside
    centre = grid.to_cells(grid.centres().reshape(-1, 3)[:1])
    np.testing.assert_allclose(centre, [[0, 0, 0]], atol=1e-9)


def test_inputs_say_what_the_camera_sees_through_and_the_target_fills_the_box():
    vertices, faces = _box_on_plane()
    grid = object_grid(vertices, NORMAL, 0.0, OFFSET)
    target = training_target(grid, vertices, faces)
    volume = 0.1 * 0.06 * 0.08
    assert target.sum() * grid.cell ** 3 == pytest.approx(volume, rel=0.25)
    depth = np.full((240, 320), 0.5, np.float32)  # a wall in front of everything
    own = np.zeros((240, 320), bool)
    own[:, :160] = True
    inputs = grid_inputs(grid, depth, K, own, ~own)
    assert inputs.shape == (5, GRID, GRID, GRID) and inputs.dtype == np.float32
    assert (inputs[0] <= 0).all()  # every cell lies behind the wall: nothing is seen through
    assert inputs[1].any() and inputs[2].any() and not (inputs[1] * inputs[2]).any()
    np.testing.assert_allclose(inputs[4][0, 0, FLOOR_CELLS], 0.5 / 16)  # height in extents
    far = np.full((240, 320), 5.0, np.float32)
    assert (grid_inputs(grid, far, K, own, ~own)[0] > 0).all()  # all seen through


def test_net_shapes_and_checkpoint_round_trip(tmp_path):
    model = COMPLETION_MODELS["completion-XS"]().eval()
    x = torch.randn(2, 5, GRID, GRID, GRID)
    with torch.no_grad():
        assert model(x).shape == (2, 1, GRID, GRID, GRID)
    save_completion_checkpoint(tmp_path / "c.safetensors", model, {"step": 2})
    loaded, info = load_completion_checkpoint(tmp_path / "c.safetensors")
    assert info == {"step": 2} and loaded.config == model.config
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    with pytest.raises(SceneMakerError, match="completion checkpoint not found"):
        load_completion_checkpoint(tmp_path / "missing.safetensors")
    from scenemaker_ros.stages.boundary_net import BOUNDARY_MODELS, save_boundary_checkpoint

    save_boundary_checkpoint(tmp_path / "b.safetensors", BOUNDARY_MODELS["boundary-XS"](), {})
    with pytest.raises(SceneMakerError, match="not a scenemaker completion checkpoint"):
        load_completion_checkpoint(tmp_path / "b.safetensors")
    cfg = load_config().pipeline.geometry
    cfg.carving.completion_checkpoint = str(tmp_path / "missing.safetensors")
    with pytest.raises(SceneMakerError, match="completion_checkpoint"):
        build_geometry(cfg)


def test_examples_hold_each_visible_object_and_mirror_in_batches():
    sample = generate_scene(_data_config(), scene_rng(0, "test", 0))
    cfg = load_config()
    examples = scene_examples(sample, cfg.pipeline.segmentation.depth_clusters, CarvingConfig(),
                              sensor=False, min_pixels=100)
    visible = sum((sample.instance == k + 1).sum() >= 100
                  for k in range(len(sample.scene.objects)))
    assert len(examples.target) == visible > 0
    assert examples.target.any(axis=(1, 2, 3)).all()
    assert not examples.target[:, :, :, :FLOOR_CELLS].any()  # nothing below the floor
    inputs, target = random_batch(examples, 8, np.random.default_rng(0))
    assert inputs.shape == (8, 5, GRID, GRID, GRID) and target.shape == (8, 1, GRID, GRID, GRID)
    flipped = [torch.equal(target[b, 0], torch.from_numpy(examples.target[k, ::-1].copy()).float())
               for b in range(8) for k in range(len(examples.target))]
    assert any(flipped)


def test_training_writes_a_loadable_checkpoint_and_resumes(tmp_path):
    cfg = load_config()
    cfg.data = small_data_config()
    cfg.data.render_alone = False
    root = tmp_path / "data"
    generate_dataset(root, n=3, seed=0, cfg=cfg.data, split="train", progress=False)
    ct = cfg.completion_train
    ct.model, ct.steps, ct.batch_size, ct.val_objects = "completion-XS", 2, 2, 2
    ct.checkpoint_every, ct.log_every, ct.sensor_depth_prob = 2, 1, 0.0
    run = train_completion([root], tmp_path / "run", cfg, progress=False)
    model, info = load_completion_checkpoint(run / "model.safetensors")
    assert info["step"] == 2 and 0 <= info["val"]["hidden_iou"] <= 1
    assert (root / "completion-cache").is_dir()
    examples = load_examples(root, cfg.pipeline.segmentation.depth_clusters,
                             cfg.pipeline.geometry.carving, ct, progress=False)
    assert examples.inputs.dtype == np.float16 and examples.target.dtype == bool
    ct.steps = 4
    train_completion([root], tmp_path / "run", cfg, progress=False)  # resumes at step 2
    assert load_completion_checkpoint(run / "model.safetensors")[1]["step"] == 4
    assert len((run / "train.csv").read_text().splitlines()) == 5  # header + 4 steps


def test_training_refuses_held_out_objects(tmp_path):
    cfg = load_config()
    cfg.data = small_data_config()
    cfg.data.shapes = "random_urdfs"
    pytest.importorskip("pybullet_data")
    generate_dataset(tmp_path / "d", n=1, seed=0, cfg=cfg.data, split="train", progress=False)
    with pytest.raises(SceneMakerError, match="procedural shapes only"):
        train_completion([tmp_path / "d"], tmp_path / "run", cfg, progress=False)


def test_shipped_completion_makes_carving_nearer():
    """The scenes test_carving rates carving on, with and without the shipped completion."""
    assert SHIPPED_CHECKPOINT.is_file()
    _, info = load_completion_checkpoint(SHIPPED_CHECKPOINT)
    assert info["step"] > 0 and info["val"]["hidden_iou"] > 0.5
    samples = [generate_scene(_data_config(), np.random.default_rng(seed)) for seed in SEEDS]
    chamfer = {}
    for completion in (True, False):
        cfg = load_config().pipeline.geometry
        cfg.carving.completion = completion
        backend = build_geometry(cfg)
        chamfer[completion] = np.mean([s.chamfer_m for sample in samples
                                       for s in evaluate_geometry(backend, sample)])
    assert chamfer[True] < chamfer[False]


def test_completion_drops_improbable_samples_and_adds_hidden_probable_space():
    from scenemaker_ros.stages.completion import Completer, ObjectGrid

    grid = ObjectGrid(np.eye(4), 0.01)
    probability = np.zeros((GRID, GRID, GRID), np.float32)
    probability[10:14, 10:14, 10:14] = 1.0  # a 4 cm cube, cells 10-13
    seeds = np.array([[0.5, 0.5, 0.5]])  # far outside, but seen: always kept
    inside, outside = np.array([[0.12, 0.12, 0.12]]), np.array([[0.2, 0.2, 0.2]])
    samples = np.concatenate([inside, outside])
    completer = Completer()
    everywhere = completer.complete(grid, probability, seeds, samples, 0.005, 0.5, 0.1,
                                    lambda p: np.ones(len(p), bool))
    np.testing.assert_array_equal(everywhere[:2], [seeds[0], inside[0]])
    added = everywhere[2:]
    # two points per cell side; the cube's 8 outermost corner points interpolate to 0.75^3 < 0.5
    assert len(added) == 4 ** 3 * 2 ** 3 - 8
    assert added.min() > 0.1 and added.max() < 0.14  # inside the cube
    nowhere = completer.complete(grid, probability, seeds, samples, 0.005, 0.5, 0.1,
                                 lambda p: np.zeros(len(p), bool))  # all seen through
    np.testing.assert_array_equal(nowhere, [seeds[0], inside[0]])
