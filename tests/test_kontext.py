"""The "flux_kontext" de-occlusion and its LoRA training, on a tiny random FLUX.1 Kontext saved
to a local folder (tests/tiny_kontext.py): no weights, no network; the outputs are meaningless,
the code paths and the wiring are the real ones."""

import csv
import json
import shutil

import numpy as np
import pytest
import torch
from safetensors import safe_open

from scenemaker_ros.cli import main
from scenemaker_ros.config import load_config
from scenemaker_ros.errors import SceneMakerError
from scenemaker_ros.frames import RGBDFrame
from scenemaker_ros.stages import Segmentation, build_deoccluder
from scenemaker_ros.stages.deocclusion import DepthOrderDeoccluder
from scenemaker_ros.stages.kontext import KontextDeoccluder, load_lora
from scenemaker_ros.stages.kontext_train import (
    encode_latents,
    encode_prompts,
    flow_matching_loss,
    to_pixels,
    train_deocclusion_lora,
)
from scenemaker_ros.synth.deocclusion_data import TripletDataset, generate_triplets
from scenemaker_ros.synth.scenes import generate_scene
from tests.helpers import small_data_config
from tests.tiny_kontext import save_tiny_kontext

TRAIN = ["deocclusion_train.resolution=32", "deocclusion_train.steps=16",
         "deocclusion_train.batch_size=2", "deocclusion_train.grad_accumulation=1",
         "deocclusion_train.lr=0.003", "deocclusion_train.warmup_steps=1",
         "deocclusion_train.max_sequence_length=32", "deocclusion_train.device=cpu",
         "deocclusion_train.save_every=8"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return save_tiny_kontext(tmp_path_factory.mktemp("kontext"))


@pytest.fixture(scope="module")
def triplets(tmp_path_factory):
    """Two procedural triplets: one repeated batch."""
    cfg = load_config()
    data, triplet_cfg = small_data_config(), cfg.deocclusion_data
    triplet_cfg.min_amodal_pixels, triplet_cfg.scenes_per_chunk = 300, 1
    root = tmp_path_factory.mktemp("triplets")
    generate_triplets(root, n=2, seed=0, data=data, cfg=triplet_cfg, progress=False)
    return root


@pytest.fixture(scope="module")
def run(model, triplets, tmp_path_factory):
    """The LoRA trained through the CLI."""
    out = tmp_path_factory.mktemp("run")
    args = ["train", "deocclusion", "--data", str(triplets), "--model", str(model),
            "--out", str(out)]
    assert main(args + sum((["--set", s] for s in TRAIN), [])) == 0
    return out


def kontext_config(model, **options):
    cfg = load_config().pipeline.deocclusion
    cfg.backend = "flux_kontext"
    k = cfg.flux_kontext
    k.model, k.resolution, k.steps, k.device, k.max_sequence_length = str(model), 32, 2, "cpu", 32
    for key, value in options.items():
        setattr(k, key, value)
    return cfg


def fixed_loss(pipe, triplets, seed: int = 0) -> float:
    """The flow-matching loss of the two triplets at fixed noise and times."""
    dataset = TripletDataset(triplets)
    batch = [dataset[i] for i in range(len(dataset))]
    prompts = encode_prompts(pipe, [t.prompt for t in batch], 32, torch.device("cpu"))
    embeds, pooled = (torch.cat(p) for p in zip(*(prompts[t.prompt] for t in batch)))
    with torch.no_grad():
        x0 = encode_latents(pipe.vae, to_pixels([t.target for t in batch], 32))
        cond = encode_latents(pipe.vae, to_pixels([t.input for t in batch], 32))
        g = torch.Generator().manual_seed(seed)
        noise, sigma = torch.randn(x0.shape, generator=g), torch.rand(len(batch), generator=g)
        return flow_matching_loss(pipe.transformer, x0, cond, embeds, pooled, noise, sigma,
                                  2.5).item()


def test_lora_training_end_to_end(model, triplets, run):
    with open(run / "train.csv") as f:
        losses = [float(row["loss"]) for row in csv.DictReader(f)]
    assert len(losses) == 16 and np.all(np.isfinite(losses))
    assert np.mean(losses[-4:]) < np.mean(losses[:4])
    assert (run / "config.yaml").exists() and (run / "step-000008").is_dir()
    lora = run / "pytorch_lora_weights.safetensors"
    with safe_open(lora, "pt") as f:
        keys, metadata = list(f.keys()), f.metadata()
    assert keys and all(k.startswith("transformer.") and "lora_" in k for k in keys)
    assert {"attn.to_q", "attn.add_k_proj", "attn.to_add_out"} <= {
        ".".join(k.split(".")[-4:-2]) for k in keys}
    assert json.loads(metadata["lora_adapter_metadata"])["transformer.r"] == 16
    # the LoRA, reloaded into the base model, lowers the loss on the batch it saw
    deoccluder = build_deoccluder(kontext_config(model))
    before = fixed_loss(deoccluder.pipe, triplets)
    load_lora(deoccluder.pipe, str(run), "lora")
    assert fixed_loss(deoccluder.pipe, triplets) < before


@pytest.fixture(scope="module")
def frame():
    sample = generate_scene(small_data_config(), np.random.default_rng(3))
    rgbd = RGBDFrame(sample.rgb, sample.depth, sample.scene.camera).validate()
    return rgbd, Segmentation.from_instance_image(sample.instance)


def test_backend_on_a_frame(model, run, frame):
    rgbd, segmentation = frame
    cfg = kontext_config(model, lora=str(run / "pytorch_lora_weights.safetensors"))
    deoccluder = build_deoccluder(cfg)
    assert isinstance(deoccluder, KontextDeoccluder)
    assert deoccluder.pipe.transformer.dtype == torch.float32
    objects = deoccluder.deocclude(rgbd, segmentation)
    baseline = DepthOrderDeoccluder(cfg.depth_order).deocclude(rgbd, segmentation)
    height, width = rgbd.depth.shape
    assert len(objects) == len(segmentation) and any(o.occluders for o in objects)
    for obj, base, visible in zip(objects, baseline, segmentation.masks):
        assert obj.occluders == base.occluders and np.array_equal(obj.visible, visible)
        x0, y0, x1, y1 = obj.box
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        assert obj.rgb.shape == (y1 - y0, x1 - x0, 3) and obj.rgb.dtype == np.uint8
        assert np.array_equal(obj.mask, visible[y0:y1, x0:x1])
        assert np.array_equal(obj.rgb[obj.mask], rgbd.rgb[y0:y1, x0:x1][obj.mask])
        behind = segmentation.masks[obj.occluders].any(axis=0)
        assert not (obj.amodal & ~(visible | behind)).any() and not (visible & ~obj.amodal).any()
        if not obj.occluders:  # only_occluded: depth_order's result unchanged
            assert obj.box == base.box and np.array_equal(obj.rgb, base.rgb)
    # the LoRA changes what the model draws
    plain = build_deoccluder(kontext_config(model))
    obj = next(o for o in baseline if o.occluders)
    behind = segmentation.masks[obj.occluders].any(axis=0)
    with_lora = deoccluder.complete(rgbd.rgb, obj, behind, "object").rgb
    without = plain.complete(rgbd.rgb, obj, behind, "object").rgb
    assert with_lora.shape == without.shape and not np.array_equal(with_lora, without)
    # half precision: weights in bfloat16, the crop still uint8
    half = build_deoccluder(kontext_config(model, dtype="bfloat16"))
    assert half.pipe.transformer.dtype == torch.bfloat16
    crop = half.complete(rgbd.rgb, obj, behind, "object").rgb
    assert crop.shape == without.shape and crop.dtype == np.uint8


def test_missing_weights_and_bad_settings(model, tmp_path):
    with pytest.raises(SceneMakerError, match="not found.*hf download"):
        build_deoccluder(kontext_config(tmp_path / "nowhere"))
    with pytest.raises(SceneMakerError, match="flux_kontext.model"):
        build_deoccluder(kontext_config("black-forest-labs/FLUX.1-Kontext-dev"))
    with pytest.raises(SceneMakerError, match="no LoRA weights"):
        build_deoccluder(kontext_config(model, lora=str(tmp_path)))
    if not torch.cuda.is_available():
        with pytest.raises(SceneMakerError, match="CUDA"):
            build_deoccluder(kontext_config(model, device="cuda"))
    cfg = kontext_config(tmp_path / "nowhere")
    cfg.fallback = "depth_order"  # the configured fallback stands in
    assert isinstance(build_deoccluder(cfg), DepthOrderDeoccluder)
    with pytest.raises(SceneMakerError, match="multiple of 16"):
        load_config(overrides={"pipeline.deocclusion.flux_kontext.resolution": 40})


def test_training_refuses_open_set_triplets(model, triplets, tmp_path):
    openset = tmp_path / "openset"
    shutil.copytree(triplets, openset)
    manifest = json.loads((openset / "deocclusion.json").read_text())
    (openset / "deocclusion.json").write_text(json.dumps({**manifest, "shapes": "random_urdfs"}))
    with pytest.raises(SceneMakerError, match="evaluation only"):
        train_deocclusion_lora(openset, str(model), tmp_path / "run", load_config())
