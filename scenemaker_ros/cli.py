"""``scenemaker <command>``: the one command-line entry point.

Commands: ``run`` (one frame -> a scene), ``data`` (generate / preview / export / frame /
shapes / deocclusion), ``train`` (pose, segmentation, deocclusion), ``eval``, ``export``,
``relations``, ``bench`` (data, pose, pipeline, stages, deocclusion, node), ``bag`` (example,
replay), ``config`` (show). User errors print one line and exit with status 2; they never end in a
traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scenemaker_ros.errors import SceneMakerError


def _add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None,
                        help="YAML config (see config/scenemaker.yaml); defaults otherwise")


def _data_generate(args: argparse.Namespace) -> None:
    from scenemaker_ros.config import load_config, save_config
    from scenemaker_ros.synth.dataset import generate_dataset

    overrides = {"data.sensor_noise": True} if args.noise else {}
    cfg = load_config(args.config, overrides)
    if args.workers < 1:
        raise SceneMakerError("data generate: --workers must be >= 1")
    root = generate_dataset(args.out, n=args.n, seed=args.seed, cfg=cfg.data, split=args.split,
                            workers=args.workers)
    save_config(cfg, root / "config.yaml")
    print(f"wrote {args.n} '{args.split}' scenes to {root}")


def _data_preview(args: argparse.Namespace) -> None:
    from scenemaker_ros.synth.dataset import SceneDataset
    from scenemaker_ros.viz import save_dataset_preview

    dataset = SceneDataset(args.dataset, args.split)
    indices = [i for i in args.indices if i < len(dataset)] or [0]
    out = args.out or Path(args.dataset) / f"preview-{args.split}.png"
    save_dataset_preview([dataset[i] for i in indices], out)
    print(f"wrote {out}")


def _data_export(args: argparse.Namespace) -> None:
    from scenemaker_ros.scene import save_scene
    from scenemaker_ros.synth.dataset import SceneDataset

    dataset = SceneDataset(args.dataset, args.split)
    if not 0 <= args.index < len(dataset):
        raise SceneMakerError(f"data export: --index must be in 0..{len(dataset) - 1}")
    sample = dataset[args.index]
    save_scene(sample.scene, args.out, sample.meshes)
    print(f"wrote ground-truth scene {args.index} ({len(sample.scene.objects)} objects) "
          f"to {args.out}")


def _data_frame(args: argparse.Namespace) -> None:
    import numpy as np
    from PIL import Image

    from scenemaker_ros.config import load_config
    from scenemaker_ros.frames import CameraInfo, save_camera_info_yaml
    from scenemaker_ros.scene import save_scene
    from scenemaker_ros.synth.scenes import generate_scene

    cfg = load_config(args.config).data
    sample = generate_scene(cfg, np.random.default_rng(args.seed))
    depth = sample.depth_sensor if args.noise else sample.depth
    if args.noise and depth is None:
        from scenemaker_ros.synth.noise import apply_depth_noise

        depth = apply_depth_noise(sample.depth, sample.scene.camera.K, cfg.noise,
                                  np.random.default_rng(args.seed))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sample.rgb).save(out / "rgb.png")
    Image.fromarray(np.round(depth * 1000).astype(np.uint16)).save(out / "depth.png")
    save_camera_info_yaml(CameraInfo.from_intrinsics(sample.scene.camera), out / "camera_info.yaml")
    save_scene(sample.scene, out / "ground_truth", sample.meshes)
    print(f"wrote {out}/rgb.png, depth.png (uint16 mm), camera_info.yaml and ground_truth/ "
          f"({len(sample.scene.objects)} objects)")


def _run(args: argparse.Namespace) -> None:
    import logging

    from scenemaker_ros.config import load_config, save_config
    from scenemaker_ros.export import export_scene
    from scenemaker_ros.frames import load_camera_info, load_frame, load_rgb
    from scenemaker_ros.pipeline import ScenePipeline
    from scenemaker_ros.scene import save_scene
    from scenemaker_ros.viz import save_scene_overlay

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = load_config(args.config)
    if args.depth is None and cfg.pipeline.depth.backend == "none":  # before loading any model
        raise SceneMakerError("run: no --depth and no monocular depth backend configured; give "
                              "--depth (a registered depth image) or set pipeline.depth.backend "
                              "(README \"Heavy GPU backends\")")
    if args.depth is not None and args.camera_info is None:
        raise SceneMakerError("run: --depth needs --camera-info (the depth camera's intrinsics)")
    pipeline = ScenePipeline.from_config(cfg, args.objects)
    if args.depth is None:  # RGB only: monocular depth, intrinsics estimated when not given
        camera = None if args.camera_info is None else load_camera_info(args.camera_info)
        frame = pipeline.complete(load_rgb(args.rgb), camera and camera.intrinsics())
    else:  # RGB-D: the sensor depth always wins
        frame = load_frame(args.rgb, args.depth, args.camera_info, depth_scale=args.depth_scale)
    result = pipeline.run(frame)
    out = Path(args.out)
    save_scene(result.scene, out, result.meshes)
    save_config(cfg, out / "config.yaml")
    if result.scene.objects:
        export_scene(out, "glb", out)
    save_scene_overlay(frame.rgb, result.scene, result.meshes, out / "overlay.png")
    stages = {k: 1000 * sum(v) for k, v in result.timer.durations.items() if "." not in k}
    print(f"wrote {out}: {len(result.scene.objects)} objects ("
          + ", ".join(f"{o.id}:{o.label}" for o in result.scene.objects) + "); "
          + ", ".join(f"{k} {v:.0f} ms" for k, v in stages.items()))


def _evaluate(args: argparse.Namespace) -> None:
    import json

    from scenemaker_ros.config import load_config
    from scenemaker_ros.files import write_json_atomic
    from scenemaker_ros.metrics import PosedMesh, evaluate_both
    from scenemaker_ros.scene import load_scene, posed_vertices

    cfg = load_config(args.config).metrics
    pred, gt = ([PosedMesh(v, f) for v, f in posed_vertices(d, load_scene(d))]
                for d in (args.pred, args.gt))
    if not gt:
        raise SceneMakerError(f"{args.gt}: the ground-truth scene has no objects")
    results = evaluate_both(pred, gt, n_scene_samples=cfg.n_scene_samples,
                            n_object_samples=cfg.n_object_samples, tau=cfg.tau, seed=cfg.seed)
    report = {name: m.as_dict() for name, m in results.items()}
    for name, m in results.items():
        print(f"{name:6s}  CD-S {m.cd_s:.4f}  F-Score-S {m.fscore_s:.4f}  IoU-B {m.iou_b:.4f}  "
              f"CD-O {m.cd_o:.4f}  F-Score-O {m.fscore_o:.4f}  matched {len(m.matches)}/{m.n_gt}")
    if args.out:
        write_json_atomic(args.out, json.loads(json.dumps(report, default=float)))


def _export(args: argparse.Namespace) -> None:
    from scenemaker_ros.config import load_config
    from scenemaker_ros.export import export_scene

    overrides = {"export.static": True} if args.static else {}
    if args.density is not None:
        overrides["export.density_kg_m3"] = args.density
    cfg = load_config(args.config, overrides).export
    path = export_scene(args.scene, args.format, args.out, cfg)
    print(f"wrote {path}")


def _relations(args: argparse.Namespace) -> None:
    from collections import Counter

    from scenemaker_ros.config import load_config
    from scenemaker_ros.relations import write_relations

    relations = write_relations(args.scene, load_config(args.config).relations)
    counts = Counter(r.predicate for r in relations)
    summary = ", ".join(f"{n} {predicate}" for predicate, n in sorted(counts.items()))
    print(f"wrote {len(relations)} relations to {args.scene / 'scene.json'} ({summary or 'none'})")


def _data_shapes(args: argparse.Namespace) -> None:
    from scenemaker_ros.synth.shapes import FAMILIES, make_shape, save_shape_grid

    families = sorted(FAMILIES)
    shapes = [make_shape(families[i % len(families)], args.seed + i) for i in range(args.n)]
    save_shape_grid(shapes, args.out)
    print(f"wrote {args.out} ({args.n} shapes from {len(families)} families)")


def _bench_data(args: argparse.Namespace) -> None:
    from scenemaker_ros.bench.data import run_data_benchmark

    run_data_benchmark(n=args.n, workers=args.workers, out=args.out, config=args.config)


def _overrides(pairs: list[str]) -> dict:
    """``--set KEY=VALUE`` pairs -> {dotted key: YAML-parsed value}."""
    import yaml

    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SceneMakerError(f"--set expects KEY=VALUE (e.g. train.steps=500), got {pair!r}")
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


def _train_pose(args: argparse.Namespace) -> None:
    from scenemaker_ros.config import load_config
    from scenemaker_ros.pose.train import train_pose

    cfg = load_config(args.config, _overrides(args.set))
    run = train_pose(args.data, args.out, cfg, workers=args.workers)
    print(f"trained pose model: {run / 'model.safetensors'}")


def _train_segmentation(args: argparse.Namespace) -> None:
    from scenemaker_ros.config import load_config
    from scenemaker_ros.stages.boundary_train import train_boundary

    cfg = load_config(args.config, _overrides(args.set))
    run = train_boundary(args.data, args.out, cfg, workers=args.workers)
    print(f"trained boundary net: {run / 'model.safetensors'}")


def _train_completion(args: argparse.Namespace) -> None:
    from scenemaker_ros.config import load_config
    from scenemaker_ros.stages.completion_train import train_completion

    cfg = load_config(args.config, _overrides(args.set))
    run = train_completion(args.data, args.out, cfg, workers=args.workers)
    print(f"trained completion net: {run / 'model.safetensors'}")


def _add_training_arguments(parser: argparse.ArgumentParser, data_help: str, example: str,
                            several: bool = False) -> None:
    """--data (one folder, or several), --out, --workers, --set and --config of a ``train``
    subcommand."""
    parser.add_argument("--data", type=Path, required=True, nargs="+" if several else None,
                        help=data_help)
    parser.add_argument("--out", type=Path, required=True, help="run folder")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes building the first-use data cache")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override a config key, e.g. {example} (repeatable)")
    _add_config_argument(parser)


def _bench_pose(args: argparse.Namespace) -> None:
    from scenemaker_ros.bench.pose import run_pose_benchmark

    run_pose_benchmark(args.data, args.split, args.n, args.out, checkpoint=args.checkpoint,
                       ablations=args.ablation, config=args.config, plot=args.plot)


def _bench_pipeline(args: argparse.Namespace) -> None:
    from scenemaker_ros.bench.pipeline import run_pipeline_benchmark

    run_pipeline_benchmark(args.data, args.split, args.n, args.out, config=args.config,
                           sensor_depth=args.sensor_depth, chart=args.chart)


def _bench_stages(args: argparse.Namespace) -> None:
    from scenemaker_ros.bench.stages import run_stages_benchmark

    run_stages_benchmark(args.n, args.out, config=args.config)


def _bench_node(args: argparse.Namespace) -> None:
    from scenemaker_ros.bench.node import run_node_benchmark

    run_node_benchmark(args.duration, args.rate, args.objects, args.out, plot=args.plot,
                       seed=args.seed, warmup=args.warmup, params_file=args.params_file,
                       config=args.config)


def _config_show(args: argparse.Namespace) -> None:
    import yaml

    from scenemaker_ros.config import config_to_dict, load_config

    data = config_to_dict(load_config(args.config))
    if args.ros:
        data = {"/**": {"ros__parameters": data}}
    print(yaml.safe_dump(data, sort_keys=False, default_flow_style=None), end="")


def _data_deocclusion(args: argparse.Namespace) -> None:
    from scenemaker_ros.config import load_config, save_config
    from scenemaker_ros.synth.deocclusion_data import (
        TripletDataset,
        generate_triplets,
        save_triplet_preview,
    )

    cfg = load_config(args.config)
    info = generate_triplets(args.out, n=args.n, seed=args.seed, data=cfg.data,
                             cfg=cfg.deocclusion_data, workers=args.workers)
    save_config(cfg, args.out / "config.yaml")
    print(f"wrote {info['triplets']} triplets from {info['scenes']} scenes to {args.out}"
          + (f" ({info['made']} made in {info['seconds']:.1f} s: "
             f"{info['triplets_per_s']:.2f} triplets/s)" if info["made"] else ""))
    if args.preview:
        dataset = TripletDataset(args.out)
        save_triplet_preview([dataset[i] for i in range(min(12, len(dataset)))],
                             args.out / "preview.png")
        print(f"wrote {args.out / 'preview.png'}")


def _train_deocclusion(args: argparse.Namespace) -> None:
    from scenemaker_ros.config import load_config
    from scenemaker_ros.stages.kontext_train import train_deocclusion_lora

    cfg = load_config(args.config, _overrides(args.set))
    result = train_deocclusion_lora(args.data, args.model or cfg.deocclusion_train.model,
                                    args.out, cfg)
    print(f"trained the de-occlusion LoRA in {result['seconds']:.0f} s (last loss "
          f"{result['losses'][-1]:.4f}): {result['lora']}; use it with "
          f"pipeline.deocclusion.flux_kontext.lora: {result['lora']}")


def _bench_deocclusion(args: argparse.Namespace) -> None:
    from scenemaker_ros.bench.deocclusion import run_deocclusion_benchmark

    run_deocclusion_benchmark(args.data, args.backend, args.n, args.out, config=args.config)


# rosbag2 tooling: ROS is imported inside the commands only
def _bag_example(args: argparse.Namespace) -> None:
    from scenemaker_ros.config import load_config
    from scenemaker_ros.ros.bag import CAMERA_TOPICS, write_example_bag

    ground_truth, sample = write_example_bag(
        args.out, frames=args.frames, seed=args.seed, rate_hz=args.rate, storage=args.storage,
        data=load_config(args.config).data, objects=args.objects)
    h, w = sample.depth.shape
    print(f"wrote {args.out} ({args.storage}): {args.frames} frames {w}x{h} at {args.rate:g} Hz "
          f"on {', '.join(topic for _, topic, _ in CAMERA_TOPICS.items())}; ground truth "
          f"({len(sample.scene.objects)} objects) in {ground_truth}")


def _bag_replay(args: argparse.Namespace) -> None:
    import numpy as np

    from scenemaker_ros.ros.bag import CameraTopics, replay_bag

    topics = CameraTopics(**{name: getattr(args, f"{name}_topic") for name in
                             ("image", "depth", "camera_info") if getattr(args, f"{name}_topic")})
    s = replay_bag(args.bag, args.out, topics, rate=args.rate, every_frame=args.every_frame,
                   params_file=args.params_file, config=args.config, storage=args.storage)
    objects = (f"objects per scene: min {min(s.objects_per_scene)}, median "
               f"{np.median(s.objects_per_scene):g}, max {max(s.objects_per_scene)}"
               if s.objects_per_scene else "no scenes")
    print(f"replayed {s.frames_in} frames ({s.matched} synchronised, {s.processed} processed, "
          f"{s.dropped} dropped, {s.skipped + s.failed} skipped) -> "
          f"{len(s.objects_per_scene)} scenes in {s.out} ({objects}); recorded "
          + ", ".join(f"{topic} {n}" for topic, n in s.recorded.items()))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scenemaker", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = commands.add_parser("data", help="synthetic scene datasets").add_subparsers(
        dest="data_command", required=True, metavar="SUBCOMMAND")
    gen = data.add_parser("generate", help="render N scenes into shards (resumable)")
    gen.add_argument("--n", type=int, required=True, help="number of scenes")
    gen.add_argument("--out", type=Path, required=True, help="dataset folder")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--split", default="train", help="split name (train, val, test, ...)")
    gen.add_argument("--workers", type=int, default=1, help="parallel processes")
    gen.add_argument("--noise", action="store_true", help="also store sensor-noise depth")
    _add_config_argument(gen)
    gen.set_defaults(func=_data_generate)

    preview = data.add_parser("preview", help="RGB / depth / masks / poses of a few scenes")
    preview.add_argument("dataset", type=Path)
    preview.add_argument("--split", default="train")
    preview.add_argument("--indices", type=int, nargs="+", default=[0, 1, 2])
    preview.add_argument("--out", type=Path, default=None, help="PNG (default: in the dataset)")
    preview.set_defaults(func=_data_preview)

    export = data.add_parser("export", help="write one scene's ground truth as a scene folder")
    export.add_argument("dataset", type=Path)
    export.add_argument("--split", default="train")
    export.add_argument("--index", type=int, default=0)
    export.add_argument("--out", type=Path, required=True, help="scene folder to write")
    export.set_defaults(func=_data_export)

    frame = data.add_parser("frame", help="one synthetic RGB-D frame as files (rgb.png, depth.png "
                            "in mm, camera_info.yaml) with its ground truth")
    frame.add_argument("--out", type=Path, required=True)
    frame.add_argument("--seed", type=int, default=0)
    frame.add_argument("--noise", action="store_true", help="sensor-noise depth")
    _add_config_argument(frame)
    frame.set_defaults(func=_data_frame)

    shapes = data.add_parser("shapes", help="preview grid of procedural shapes")
    shapes.add_argument("--out", type=Path, default=Path("docs/shapes.png"))
    shapes.add_argument("--n", type=int, default=24)
    shapes.add_argument("--seed", type=int, default=0)
    shapes.set_defaults(func=_data_shapes)

    deocclusion = data.add_parser(
        "deocclusion", help="de-occlusion triplets (occluded input, prompt, target) from "
        "rendered scenes (resumable)")
    deocclusion.add_argument("--n", type=int, required=True, help="number of triplets")
    deocclusion.add_argument("--out", type=Path, required=True, help="triplet folder")
    deocclusion.add_argument("--seed", type=int, default=0)
    deocclusion.add_argument("--workers", type=int, default=1, help="parallel processes")
    deocclusion.add_argument("--preview", action="store_true",
                             help="also write OUT/preview.png (input | target pairs)")
    _add_config_argument(deocclusion)
    deocclusion.set_defaults(func=_data_deocclusion)

    run = commands.add_parser("run", help="one RGB-D frame -> a scene folder of posed meshes "
                              "(scene.json, meshes, scene.glb, overlay.png)")
    run.add_argument("--rgb", type=Path, required=True, help="PNG or JPG")
    run.add_argument("--depth", type=Path, default=None,
                     help="registered depth: uint16 PNG (millimetres, see --depth-scale) or "
                     "float .npy / .tiff in metres; without it pipeline.depth.backend estimates "
                     "the depth from the RGB")
    run.add_argument("--camera-info", type=Path, default=None,
                     help="ROS camera_calibration YAML or CameraInfo-like JSON (required with "
                     "--depth; RGB only: else estimated by the depth backend or "
                     "pipeline.depth.fov_deg)")
    run.add_argument("--out", type=Path, required=True, help="scene folder to write")
    run.add_argument("--objects", type=Path, default=None,
                     help="known-object mode: a folder of meshes in metres (file name = label)")
    run.add_argument("--depth-scale", type=float, default=0.001,
                     help="metres per unit of an integer depth image")
    _add_config_argument(run)
    run.set_defaults(func=_run)

    evaluate = commands.add_parser("eval", help="scene metrics of a predicted scene folder "
                                   "against a ground-truth one (both protocols)")
    evaluate.add_argument("--pred", type=Path, required=True, help="predicted scene folder")
    evaluate.add_argument("--gt", type=Path, required=True, help="ground-truth scene folder")
    evaluate.add_argument("--out", type=Path, default=None, help="also write the metrics as JSON")
    _add_config_argument(evaluate)
    evaluate.set_defaults(func=_evaluate)

    export_cmd = commands.add_parser("export", help="write a scene folder as a simulator / "
                                     "planner world (SDF, USD, URDF or GLB)")
    export_cmd.add_argument("scene", type=Path, help="scene folder (scene.json + meshes)")
    export_cmd.add_argument("--format", required=True, choices=["sdf", "usd", "urdf", "glb"])
    export_cmd.add_argument("--out", type=Path, required=True, help="output folder")
    export_cmd.add_argument("--static", action="store_true", help="objects never move")
    export_cmd.add_argument("--density", type=float, default=None, metavar="KG_M3",
                            help="density for masses (default: export.density_kg_m3)")
    _add_config_argument(export_cmd)
    export_cmd.set_defaults(func=_export)

    relations = commands.add_parser("relations", help="compute scene-graph relations and write "
                                    "them into SCENE/scene.json")
    relations.add_argument("scene", type=Path, help="scene folder (scene.json + meshes)")
    _add_config_argument(relations)
    relations.set_defaults(func=_relations)

    train = commands.add_parser("train", help="training").add_subparsers(
        dest="train_command", required=True, metavar="SUBCOMMAND")
    train_pose = train.add_parser(
        "pose", help="train the pose model (resumes from OUT/last.pt; torchrun for several "
        "processes)")
    _add_training_arguments(train_pose, "dataset folder (train split; val split if present)",
                            "train.steps=500")
    train_pose.set_defaults(func=_train_pose)

    train_segmentation = train.add_parser(
        "segmentation", help="train the boundary net of the 'boundary_net' segmentation "
        "(resumes from OUT/last.pt)")
    _add_training_arguments(train_segmentation, "procedural dataset folders (their train "
                            "splits; the last boundary_train.val_scenes scenes are held out)",
                            "boundary_train.steps=500", several=True)
    train_segmentation.set_defaults(func=_train_segmentation)

    train_completion = train.add_parser(
        "completion", help="train the shape-completion net of the 'carving' geometry (resumes "
        "from OUT/last.pt)")
    _add_training_arguments(train_completion, "procedural dataset folders (the first "
                            "completion_train.scenes of their train splits; the last "
                            "completion_train.val_objects objects are held out)",
                            "completion_train.steps=500", several=True)
    train_completion.set_defaults(func=_train_completion)

    train_deocclusion = train.add_parser(
        "deocclusion", help="LoRA fine-tuning of FLUX.1 Kontext on de-occlusion triplets (GPU)")
    train_deocclusion.add_argument("--data", type=Path, required=True,
                                   help="triplet folder (scenemaker data deocclusion)")
    train_deocclusion.add_argument("--model", default=None, help="Kontext hub id or local "
                                   "folder (default: deocclusion_train.model)")
    train_deocclusion.add_argument("--out", type=Path, required=True, help="run folder")
    train_deocclusion.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                                   help="override a config key, e.g. deocclusion_train.steps=500")
    _add_config_argument(train_deocclusion)
    train_deocclusion.set_defaults(func=_train_deocclusion)

    bench = commands.add_parser("bench", help="benchmarks (print a table, write JSON)"
                                ).add_subparsers(dest="bench_command", required=True,
                                                 metavar="SUBCOMMAND")
    bench_data = bench.add_parser("data", help="scene generation + rendering throughput")
    bench_data.add_argument("--n", type=int, default=40, help="scenes per run")
    bench_data.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    bench_data.add_argument("--out", type=Path, default=Path("out/bench/data.json"))
    _add_config_argument(bench_data)
    bench_data.set_defaults(func=_bench_data)

    bench_pose = bench.add_parser("pose", help="pose estimation with ground-truth meshes: full "
                                  "model, ablations, classical baseline, upper bound")
    bench_pose.add_argument("--data", type=Path, nargs="+", required=True,
                            help="dataset folders (e.g. a procedural and an open-set one)")
    bench_pose.add_argument("--split", default="test")
    bench_pose.add_argument("--n", type=int, default=100, help="scenes per dataset")
    bench_pose.add_argument("--checkpoint", default="", help="default: the shipped model")
    bench_pose.add_argument("--ablation", action="append", default=[], metavar="CHECKPOINT",
                            help="a retrained (ablated) model to add as a row (repeatable)")
    bench_pose.add_argument("--out", type=Path, default=Path("out/bench/pose.json"))
    bench_pose.add_argument("--plot", type=Path, default=None,
                            help="PNG of a few scenes per dataset (its name is appended)")
    _add_config_argument(bench_pose)
    bench_pose.set_defaults(func=_bench_pose)

    bench_pipeline = bench.add_parser("pipeline", help="scenemaker run end to end, open-set and "
                                      "known-object modes")
    bench_pipeline.add_argument("--data", type=Path, required=True, help="dataset folder")
    bench_pipeline.add_argument("--split", default="test")
    bench_pipeline.add_argument("--n", type=int, default=20, help="scenes")
    bench_pipeline.add_argument("--sensor-depth", action="store_true",
                                help="the sensor-noise depth instead of the clean one")
    bench_pipeline.add_argument("--out", type=Path, default=Path("out/bench/pipeline.json"))
    bench_pipeline.add_argument("--chart", type=Path, default=None, help="latency chart PNG")
    _add_config_argument(bench_pipeline)
    bench_pipeline.set_defaults(func=_bench_pipeline)

    bench_stages = bench.add_parser("stages", help="segmentation and de-occlusion quality and "
                                    "latency on generated scenes")
    bench_stages.add_argument("--n", type=int, default=20, help="scenes")
    bench_stages.add_argument("--out", type=Path, default=Path("out/bench/stages.json"))
    _add_config_argument(bench_stages)
    bench_stages.set_defaults(func=_bench_stages)

    bench_deocclusion = bench.add_parser(
        "deocclusion", help="a de-occlusion backend on de-occlusion triplets: amodal mask IoU, "
        "PSNR on the hidden pixels")
    bench_deocclusion.add_argument("--data", type=Path, required=True, help="triplet folder")
    bench_deocclusion.add_argument("--backend", default="depth_order",
                                   help="pipeline.deocclusion backend (depth_order, flux_kontext)")
    bench_deocclusion.add_argument("--n", type=int, default=200, help="triplets")
    bench_deocclusion.add_argument("--out", type=Path, default=Path("out/bench/deocclusion.json"))
    _add_config_argument(bench_deocclusion)
    bench_deocclusion.set_defaults(func=_bench_deocclusion)

    bench_node = bench.add_parser(
        "node", help="the ROS node (its own process) under a live RGB-D stream: latency image "
        "-> markers, scenes/s, dropped frames, memory over time")
    bench_node.add_argument("--duration", type=float, default=120.0, help="measured seconds")
    bench_node.add_argument("--warmup", type=float, default=10.0,
                            help="seconds streamed before measuring (at least until a scene)")
    bench_node.add_argument("--rate", type=float, default=30.0, help="camera rate, Hz")
    bench_node.add_argument("--objects", type=int, default=5, help="objects in the scene")
    bench_node.add_argument("--seed", type=int, default=0, help="scene seed")
    bench_node.add_argument("--params-file", type=Path, default=None,
                            help="ROS parameters file for the node")
    bench_node.add_argument("--out", type=Path, default=Path("docs/bench/node.json"))
    bench_node.add_argument("--plot", type=Path, default=Path("docs/bench/node.png"),
                            help="latency and memory vs time (PNG)")
    _add_config_argument(bench_node)
    bench_node.set_defaults(func=_bench_node)

    bag = commands.add_parser("bag", help="rosbag2 (MCAP or sqlite3): a synthetic example bag; "
                              "offline replay through the node").add_subparsers(
        dest="bag_command", required=True, metavar="SUBCOMMAND")
    bag_example = bag.add_parser(
        "example", help="a synthetic RGB-D bag of one generated scene seen by a static camera "
        "(fresh sensor noise per frame); ground truth in OUT_ground_truth/")
    bag_example.add_argument("--out", type=Path, required=True, help="bag folder to create")
    bag_example.add_argument("--frames", type=int, default=20)
    bag_example.add_argument("--rate", type=float, default=10.0, help="frames per second")
    bag_example.add_argument("--seed", type=int, default=0)
    bag_example.add_argument("--objects", type=int, default=None,
                             help="objects in the scene (default: the generator's random count)")
    bag_example.add_argument("--storage", choices=["mcap", "sqlite3"], default="mcap")
    _add_config_argument(bag_example)
    bag_example.set_defaults(func=_bag_example)

    bag_replay = bag.add_parser(
        "replay", help="play a bag's image, depth and camera_info through the node (in this "
        "process, on simulated time) and record its outputs into a new bag")
    bag_replay.add_argument("bag", type=Path, help="input bag folder")
    bag_replay.add_argument("--out", type=Path, required=True,
                            help="output bag folder to create (live scene in OUT_export/live)")
    bag_replay.add_argument("--rate", type=float, default=1.0, help="playback speed factor")
    bag_replay.add_argument("--every-frame", action="store_true",
                            help="publish each frame only when the node has finished the last "
                            "one: every frame processed, deterministic")
    bag_replay.add_argument("--storage", choices=["mcap", "sqlite3"], default="mcap",
                            help="output bag storage")
    node_params = bag_replay.add_mutually_exclusive_group()
    node_params.add_argument("--params-file", type=Path, default=None,
                             help="ROS parameters file for the node")
    node_params.add_argument("--config", type=Path, default=None,
                             help="YAML config (see config/scenemaker.yaml); defaults otherwise")
    for name, example in [("image", "/camera/color/image_raw"),
                          ("depth", "/camera/aligned_depth_to_color/image_raw"),
                          ("camera-info", "/camera/color/camera_info")]:
        bag_replay.add_argument(f"--{name}-topic", default=None,
                                help=f"default: {example} (as in the example bag)")
    bag_replay.set_defaults(func=_bag_replay)

    config = commands.add_parser("config", help="configuration").add_subparsers(
        dest="config_command", required=True, metavar="SUBCOMMAND")
    show = config.add_parser("show", help="print the effective configuration as YAML")
    show.add_argument("--ros", action="store_true", help="as a ROS 2 parameters file (for "
                      "scenemaker_node --ros-args --params-file; --config reads both forms)")
    _add_config_argument(show)
    show.set_defaults(func=_config_show)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except SceneMakerError as err:
        print(f"scenemaker: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("scenemaker: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
