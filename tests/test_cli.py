"""The ``scenemaker`` command line: help everywhere, one-line errors, data commands."""

import subprocess
import sys

import pytest

from scenemaker_ros.cli import build_parser, main


def _subcommands(parser):
    for action in parser._subparsers._group_actions if parser._subparsers else []:
        for name, sub in action.choices.items():
            yield name, sub
            yield from _subcommands(sub)


def test_help_everywhere(capsys):
    parser = build_parser()
    names = [name for name, _ in _subcommands(parser)]
    assert {"data", "generate", "preview", "shapes", "bench", "config"} <= set(names)
    for _, sub in _subcommands(parser):
        assert sub.format_help()
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0


def test_generate_and_preview(tmp_path, capsys):
    config = tmp_path / "small.yaml"
    config.write_text("data:\n  camera:\n    width: 160\n    height: 120\n"
                      "    fx_range: [130, 170]\n  scenes_per_shard: 2\n")
    out = tmp_path / "data"
    assert main(["data", "generate", "--n", "3", "--out", str(out), "--seed", "1",
                 "--config", str(config), "--noise"]) == 0
    assert (out / "config.yaml").exists() and (out / "train" / "shard-00001.npz").exists()
    assert main(["data", "preview", str(out), "--indices", "0", "2"]) == 0
    assert (out / "preview-train.png").stat().st_size > 10_000


def test_user_errors_are_one_line():
    result = subprocess.run([sys.executable, "-m", "scenemaker_ros.cli", "data", "preview",
                             "/nonexistent/dataset"], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "not a dataset folder" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_config_key_is_one_line(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("data:\n  shadow: true\n")
    result = subprocess.run([sys.executable, "-m", "scenemaker_ros.cli", "config", "show",
                             "--config", str(config)], capture_output=True, text=True)
    assert result.returncode == 2 and "unknown key 'data.shadow'" in result.stderr


def test_export_ground_truth_and_evaluate(tmp_path, capsys):
    import json
    import shutil

    import numpy as np

    from scenemaker_ros.scene import load_scene

    config = tmp_path / "small.yaml"
    config.write_text("data:\n  camera:\n    width: 160\n    height: 120\n"
                      "    fx_range: [130, 170]\n  scene:\n    min_objects: 3\n")
    data = tmp_path / "data"
    assert main(["data", "generate", "--n", "1", "--out", str(data), "--config", str(config)]) == 0
    gt = tmp_path / "gt"
    assert main(["data", "export", str(data), "--index", "0", "--out", str(gt)]) == 0
    scene = load_scene(gt)
    assert len(scene.objects) >= 2 and all((gt / o.mesh).exists() for o in scene.objects)

    metrics_json = str(tmp_path / "m.json")
    assert main(["eval", "--pred", str(gt), "--gt", str(gt), "--out", metrics_json]) == 0
    same = json.loads((tmp_path / "m.json").read_text())
    assert same["metric"]["iou_b"] > 0.99 and same["paper"]["fscore_s"] > 0.99

    moved = tmp_path / "moved"
    shutil.copytree(gt, moved)
    data_json = json.loads((moved / "scene.json").read_text())
    for obj in data_json["objects"]:  # every object 5 cm to the right
        obj["translation"][0] += 0.05
        obj["pose_matrix"][0][3] += 0.05
    (moved / "scene.json").write_text(json.dumps(data_json))
    assert main(["eval", "--pred", str(moved), "--gt", str(gt), "--out",
                 str(tmp_path / "m2.json")]) == 0
    shifted = json.loads((tmp_path / "m2.json").read_text())
    assert shifted["metric"]["cd_s"] > 3 * same["metric"]["cd_s"]
    assert np.isclose(shifted["paper"]["cd_s"], same["paper"]["cd_s"], rtol=1.0)  # ICP forgives

    assert main(["data", "export", str(data), "--index", "5", "--out", str(tmp_path / "x")]) == 2
    assert "--index must be in 0..0" in capsys.readouterr().err
