"""scenemaker run: one RGB-D frame -> a scene folder, end to end on the embedded CPU backends."""

import json

import numpy as np
import pytest
import yaml
from PIL import Image

from scenemaker_ros.cli import main
from scenemaker_ros.config import load_config
from scenemaker_ros.frames import RGBDFrame
from scenemaker_ros.metrics import PosedMesh, evaluate_scene
from scenemaker_ros.pipeline import ScenePipeline
from scenemaker_ros.scene import load_scene, posed_vertices
from scenemaker_ros.synth.scenes import generate_scene
from tests.helpers import small_data_config


@pytest.fixture(scope="module")
def pipeline():
    return ScenePipeline.from_config(load_config())


@pytest.fixture(scope="module")
def frame_files(tmp_path_factory):
    out = tmp_path_factory.mktemp("frame")
    assert main(["data", "frame", "--out", str(out), "--seed", "3"]) == 0
    return out


@pytest.mark.parametrize("backend, max_cd, min_iou", [
    ("carving", 0.006, 0.6),  # measured 0.0023 / 0.72 (seed 3)
    ("retrieval", 0.025, 0.4),  # library shapes placed by the pose model: 0.020 / 0.51
])
def test_run_writes_a_scene_close_to_the_truth(frame_files, tmp_path, backend, max_cd, min_iou):
    out = tmp_path / "scene"
    config = tmp_path / "config.yaml"
    config.write_text(f"pipeline:\n  geometry:\n    backend: {backend}\n")
    assert main(["run", "--rgb", str(frame_files / "rgb.png"), "--depth",
                 str(frame_files / "depth.png"), "--camera-info",
                 str(frame_files / "camera_info.yaml"), "--out", str(out),
                 "--config", str(config)]) == 0
    for name in ("scene.json", "scene.glb", "overlay.png", "config.yaml"):
        assert (out / name).is_file()
    pred = [PosedMesh(v, f) for v, f in posed_vertices(out, load_scene(out))]
    truth_dir = frame_files / "ground_truth"
    truth = [PosedMesh(v, f) for v, f in posed_vertices(truth_dir, load_scene(truth_dir))]
    metrics = evaluate_scene(pred, truth, protocol="paper", n_scene_samples=5000,
                             n_object_samples=1000)
    assert len(metrics.matches) >= len(truth) - 1
    assert metrics.cd_s < max_cd and metrics.iou_b > min_iou
    objects = json.loads((out / "scene.json").read_text())["objects"]
    source = "carved" if backend == "carving" else "library:"
    assert all(o["attributes"]["geometry"].startswith(source) for o in objects)


def test_known_objects_keep_their_meshes_and_size(tmp_path):
    sample = generate_scene(small_data_config(), np.random.default_rng(19))
    known = tmp_path / "known"
    known.mkdir()
    big = max(sample.scene.objects, key=lambda o: (sample.instance == o.id + 1).sum())
    vertices, faces = sample.meshes[big.id]
    import trimesh

    trimesh.Trimesh(vertices * big.scale, faces).export(known / "my_part.ply")
    frame = RGBDFrame(sample.rgb, sample.depth, sample.scene.camera)
    result = ScenePipeline.from_config(load_config(), known).run(frame)
    named = [o for o in result.scene.objects if o.label == "my_part"]
    assert len(named) == 1 and named[0].attributes["metric_mesh"]
    np.testing.assert_allclose(named[0].scale, 1.0, atol=1e-6)  # the mesh is metric as given
    assert np.linalg.norm(named[0].translation - big.translation) < 0.01


def test_empty_frame_gives_an_empty_scene_with_a_warning(pipeline):
    """The ground of a rendered scene with its objects' pixels removed (no depth there)."""
    sample = generate_scene(small_data_config(), np.random.default_rng(15))
    depth = np.where(sample.instance == 0, sample.depth, 0).astype(np.float32)
    result = pipeline.run(RGBDFrame(sample.rgb, depth, sample.scene.camera))
    assert result.scene.objects == [] and "no object" in result.warnings[0]


@pytest.mark.parametrize("problem, message", [
    ("no_depth", "no monocular depth backend"),
    ("missing_rgb", "not found"),
    ("size", "but depth is"),
    ("zero_depth", "no valid pixel"),
    ("focal", "focal length"),
])
def test_bad_input_is_one_line(frame_files, tmp_path, capsys, problem, message):
    rgb, depth, info = (frame_files / n for n in ("rgb.png", "depth.png", "camera_info.yaml"))
    if problem == "missing_rgb":
        rgb = tmp_path / "none.png"
    elif problem == "size":
        Image.open(rgb).resize((100, 80)).save(tmp_path / "small.png")
        rgb = tmp_path / "small.png"
    elif problem == "zero_depth":
        width, height = Image.open(rgb).size
        Image.fromarray(np.zeros((height, width), np.uint16)).save(tmp_path / "zero.png")
        depth = tmp_path / "zero.png"
    elif problem == "focal":
        calibration = yaml.safe_load(info.read_text())
        calibration["camera_matrix"]["data"][0] = 0.0
        calibration["projection_matrix"]["data"][0] = 0.0
        info = tmp_path / "bad.yaml"
        info.write_text(yaml.safe_dump(calibration))
    args = ["run", "--rgb", str(rgb), "--camera-info", str(info), "--out", str(tmp_path / "o")]
    if problem != "no_depth":
        args += ["--depth", str(depth)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_pipeline_benchmark_on_a_tiny_dataset(tmp_path):
    from scenemaker_ros.bench.pipeline import run_pipeline_benchmark
    from scenemaker_ros.synth.dataset import generate_dataset

    cfg = small_data_config()
    cfg.render_alone = False
    generate_dataset(tmp_path / "data", n=1, seed=19, cfg=cfg, split="test", progress=False)
    results = run_pipeline_benchmark(tmp_path / "data", "test", 1, tmp_path / "p.json",
                                     chart=tmp_path / "p.png")
    assert [row["mode"] for row in results["rows"]] == ["open-set", "known-objects"]
    assert all(row["F-Score-S"] > 0.3 and row["recall"] > 0 for row in results["rows"])
    assert (tmp_path / "p.json").is_file() and (tmp_path / "p.png").is_file()
