"""The "flux_kontext" de-occlusion backend: FLUX.1 Kontext [dev] redraws occluded objects whole.

From the paper: the de-occlusion model is Flux Kontext, fine-tuned on object-level triplets
(``scenemaker train deocclusion`` trains a LoRA on ours; ``lora`` loads it); it runs 28
denoising steps on the object's crop with its occluders painted white, guided by a text prompt.
Our choices (the summary gives none of them): guidance 2.5 (Kontext's recommended value), the
prompt template (``config.DEOCCLUSION_PROMPT``, {object} = the segmenter's label), painting the
background white too (a background-free cutout, like the training inputs), the square crop and
its resolution, generating only for objects that something hides (``only_occluded``), and how
the whole mask is read back from the generated image.

Per frame:

1. Occlusion reasoning is the "depth_order" backend's (``DepthOrderDeoccluder``): who hides whom,
   its amodal estimate (here only the crop's extent) and its result for objects nobody hides.
2. Input: the square crop (``deocclusion_data.square_box``, as the triplets are cut) around that
   estimate grown by ``crop_margin``; every pixel but the object's visible mask white, outside
   the image too; resized to ``resolution`` x ``resolution``.
3. Kontext: ``steps`` steps, ``guidance_scale``, a generator seeded by ``seed`` and the object's
   index; the LoRA weighted by ``lora_scale``.
4. Read-back: the generated image resized to the crop. Its non-background pixels (some channel
   more than ``background_threshold`` below white) that lie behind the object's occluders (a
   hidden pixel can only be where an occluder is) are united with the visible mask: the amodal
   mask. The crop keeps the frame's visible pixels, takes the generated colours on the hidden
   ones and the depth_order background elsewhere.

Weights, device, dtype and memory options: ``stages/hub.py``; the config section is
``pipeline.deocclusion.flux_kontext``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from scenemaker_ros.config import DeocclusionConfig, FluxKontextConfig
from scenemaker_ros.errors import SceneMakerError
from scenemaker_ros.frames import RGBDFrame
from scenemaker_ros.stages.deocclusion import DeoccludedObject, DepthOrderDeoccluder
from scenemaker_ros.stages.hub import Runtime, require
from scenemaker_ros.stages.segmentation import Segmentation, mask_box
from scenemaker_ros.synth.deocclusion_data import WHITE, padded_crop, square_box

KEY = "pipeline.deocclusion.flux_kontext"
LORA_WEIGHTS = "pytorch_lora_weights.safetensors"  # diffusers' name in a LoRA folder


class KontextDeoccluder:
    """depth_order's occlusion reasoning, Kontext's completion (module docstring)."""

    def __init__(self, cfg: FluxKontextConfig, occlusion: DepthOrderDeoccluder, pipe,
                 runtime: Runtime):
        self.cfg, self.occlusion, self.pipe, self.runtime = cfg, occlusion, pipe, runtime
        self.modules = [pipe.transformer, pipe.vae, pipe.text_encoder, pipe.text_encoder_2]

    def deocclude(self, frame: RGBDFrame, segmentation: Segmentation) -> list[DeoccludedObject]:
        # 1. who hides whom (and the results for objects nobody hides)
        objects = self.occlusion.deocclude(frame, segmentation)
        for i, obj in enumerate(objects):
            if obj.occluders or not self.cfg.only_occluded:
                behind = segmentation.masks[obj.occluders].any(axis=0)
                objects[i] = self.complete(frame.rgb, obj, behind, segmentation.labels[i])
        return objects

    def complete(self, rgb: np.ndarray, obj: DeoccludedObject, behind: np.ndarray, label: str
                 ) -> DeoccludedObject:
        """obj redrawn by Kontext (steps 2-4); rgb (H, W, 3) uint8 the frame, behind (H, W) bool
        the pixels of its occluders, label the segmenter's class name."""
        cfg, size = self.cfg, self.cfg.resolution
        # 2. the background-free cutout of the visible part, in the square crop
        box = square_box(mask_box(obj.amodal), cfg.crop_margin)
        cutout = padded_crop(np.where(obj.visible[..., None], rgb, WHITE), box, WHITE)
        side = cutout.shape[0]
        # 3. Kontext
        generator = torch.Generator().manual_seed(cfg.seed + obj.index)
        lora = {"scale": cfg.lora_scale} if cfg.lora else None
        with self.runtime.call(*self.modules):
            out = self.pipe(image=Image.fromarray(cutout).resize((size, size), Image.BICUBIC),
                            prompt=cfg.prompt.format(object=label), height=size, width=size,
                            max_area=size * size, _auto_resize=False,
                            num_inference_steps=cfg.steps, guidance_scale=cfg.guidance_scale,
                            max_sequence_length=cfg.max_sequence_length, generator=generator,
                            joint_attention_kwargs=lora, output_type="np")
        generated = np.clip(np.rint(out.images[0] * 255), 0, 255).astype(np.uint8)  # (R, R, 3)
        generated = np.asarray(Image.fromarray(generated).resize((side, side), Image.BICUBIC))
        # 4. the whole mask and the crop, in the frame
        height, width = obj.visible.shape
        bx0, by0, bx1, by1 = box
        x0, y0, x1, y1 = max(bx0, 0), max(by0, 0), min(bx1, width), min(by1, height)  # in view
        inside = np.s_[y0 - by0:y1 - by0, x0 - bx0:x1 - bx0]  # the same pixels in the crop
        window = np.s_[y0:y1, x0:x1]
        below_white = (255 - generated[inside].astype(np.int16)).max(axis=-1)  # (y1-y0, x1-x0)
        drawn = np.zeros((height, width), bool)
        drawn[window] = below_white > cfg.background_threshold
        amodal = obj.visible | (drawn & behind)
        visible, hidden = obj.visible[window], (amodal & ~obj.visible)[window]
        crop = np.empty((y1 - y0, x1 - x0, 3), np.uint8)
        crop[:] = self.occlusion.cfg.background
        crop[visible] = rgb[window][visible]
        crop[hidden] = generated[inside][hidden]
        return DeoccludedObject(index=obj.index, visible=obj.visible, amodal=amodal,
                                occluders=obj.occluders, box=(x0, y0, x1, y1), rgb=crop,
                                mask=visible.copy())


def load_kontext_pipeline(cfg: FluxKontextConfig, runtime: Runtime):
    """The FluxKontextPipeline of cfg.model with cfg.lora loaded, placed as the runtime says:
    on the device, under diffusers' model CPU offload, or on the CPU until each call
    (free_after_use)."""
    diffusers = require("diffusers", runtime.what)
    pipe = runtime.load(diffusers.FluxKontextPipeline.from_pretrained, cfg.model,
                        hub_id=FluxKontextConfig.model, dtype=runtime.dtype)
    if cfg.lora:
        require("peft", runtime.what)
        load_lora(pipe, cfg.lora, f"{runtime.key}.lora")
    pipe.set_progress_bar_config(disable=True)
    if runtime.device.type == "cuda" and runtime.cpu_offload:
        pipe.enable_model_cpu_offload(device=runtime.device)
    elif runtime.device.type != "cuda" or not runtime.free_after_use:
        pipe.to(runtime.device)
    return pipe


def load_lora(pipe, path: str, key: str) -> None:
    """Load a LoRA into pipe's transformer: a safetensors file, or a folder holding
    pytorch_lora_weights.safetensors (``scenemaker train deocclusion`` writes both forms)."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / LORA_WEIGHTS
    if not path.is_file():
        raise SceneMakerError(f"config: {key}: no LoRA weights at {path}; train them with "
                              "scenemaker train deocclusion or set it to ''")
    try:
        pipe.load_lora_weights(str(path.parent), weight_name=path.name)
    except (ValueError, KeyError, RuntimeError, OSError) as err:
        raise SceneMakerError(f"config: {key}: {path} is not a FLUX LoRA for this model "
                              f"({' '.join(str(err).split())[:200]})") from err


def build_flux_kontext(cfg: DeocclusionConfig) -> KontextDeoccluder:
    """The "flux_kontext" backend of cfg.flux_kontext; SceneMakerError for missing weights or
    an unavailable device."""
    runtime = Runtime.from_config(cfg.flux_kontext, KEY, "flux_kontext de-occlusion")
    pipe = load_kontext_pipeline(cfg.flux_kontext, runtime)
    return KontextDeoccluder(cfg.flux_kontext, DepthOrderDeoccluder(cfg.depth_order), pipe,
                             runtime)
