"""``scenemaker train deocclusion``: a LoRA for the "flux_kontext" backend on de-occlusion triplets.

The paper fine-tunes Flux Kontext on its 10K triplets and gives no hyper-parameters; this trains
a LoRA (peft) on our triplets (``synth/deocclusion_data.py``) the way diffusers' Kontext LoRA
script (examples/dreambooth/train_dreambooth_lora_flux_kontext.py) does, with our defaults
(``deocclusion_train``, README "De-occlusion data and fine-tuning"):

- Frozen FLUX.1 Kontext in ``dtype``; LoRA adapters of ``rank`` / ``alpha`` on the transformer's
  attention projections (``target_modules``), trained in float32, Gaussian-initialised A and
  zero B (so training starts from the base model).
- Prompts are encoded once (CLIP pooled + T5) and the text encoders freed.
- Each example: target and input (square crops, resized to ``resolution``, in [-1, 1]) become
  VAE latents x0, c (the distribution's mode, then (z - shift) * scale). Noise eps and
  sigma ~ U(0, 1) (or sigmoid of N(0, 1), ``timestep_sampling: logit_normal``) give
  x_sigma = (1 - sigma) x0 + sigma eps; the transformer sees the packed x_sigma tokens followed
  by the packed c tokens (position ids of c with first coordinate 1, as the pipeline builds
  them), timestep sigma, guidance ``guidance_scale``, and predicts the velocity eps - x0 on the
  x_sigma tokens: loss = mean squared error (uniform weighting).
- AdamW, linear warm-up then constant learning rate, gradient clipping, ``grad_accumulation``
  micro-batches per step, optional gradient checkpointing.

A run folder gets ``config.yaml`` (the effective config), ``train.csv`` (step, loss, lr) and
``pytorch_lora_weights.safetensors`` in diffusers' LoRA format with its peft config in the
metadata (``pipeline.deocclusion.flux_kontext.lora`` takes the file or the folder);
``step-NNNNNN/`` folders every ``save_every`` steps.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from scenemaker_ros.config import DeocclusionTrainConfig, SceneMakerConfig, save_config
from scenemaker_ros.errors import SceneMakerError
from scenemaker_ros.stages.hub import (
    Runtime,
    free_cuda_memory,
    out_of_memory_hint,
    require,
    resolve_device,
    resolve_dtype,
)
from scenemaker_ros.stages.kontext import LORA_WEIGHTS
from scenemaker_ros.synth.deocclusion_data import TripletDataset

KEY = "deocclusion_train"


# -----------------------------------------------------------------------------
# the flow-matching loss


def to_pixels(images: list[np.ndarray], resolution: int) -> torch.Tensor:
    """(B, 3, R, R) float32 in [-1, 1] from (S, S, 3) uint8 images resized to R = resolution."""
    resized = [np.asarray(Image.fromarray(im).resize((resolution, resolution), Image.BICUBIC))
               for im in images]
    return torch.from_numpy(np.stack(resized)).permute(0, 3, 1, 2).float() / 127.5 - 1


def encode_latents(vae, pixels: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) scaled VAE latents of pixels (B, 3, R, R) in [-1, 1]; h = R / 8 for FLUX."""
    pixels = pixels.to(vae.device, vae.dtype)
    latents = vae.encode(pixels).latent_dist.mode()
    return (latents - vae.config.shift_factor) * vae.config.scaling_factor


def flow_matching_loss(transformer, x0: torch.Tensor, cond: torch.Tensor, prompt_embeds,
                       pooled_embeds, noise: torch.Tensor, sigma: torch.Tensor,
                       guidance_scale: float) -> torch.Tensor:
    """Kontext's velocity loss (module docstring). x0, cond, noise: (B, C, h, w) target latents,
    input latents and noise; prompt_embeds (B, L, D) T5; pooled_embeds (B, P) CLIP; sigma (B,)
    in [0, 1]. Returns the scalar mean squared error, float32."""
    from diffusers import FluxKontextPipeline

    B, C, h, w = x0.shape
    dtype = prompt_embeds.dtype
    pack = FluxKontextPipeline._pack_latents
    noisy = (1 - sigma[:, None, None, None]) * x0 + sigma[:, None, None, None] * noise
    tokens = pack(noisy, B, C, h, w)  # (B, h * w / 4, 4C)
    cond_tokens = pack(cond, B, C, h, w)
    ids = FluxKontextPipeline._prepare_latent_image_ids(B, h // 2, w // 2, x0.device, dtype)
    cond_ids = ids.clone()
    cond_ids[:, 0] = 1  # the input image's tokens: first position coordinate 1
    guidance = None
    if transformer.config.guidance_embeds:
        guidance = torch.full((B,), guidance_scale, device=x0.device, dtype=torch.float32)
    prediction = transformer(
        hidden_states=torch.cat([tokens, cond_tokens], dim=1).to(dtype),  # (B, 2T, 4C)
        timestep=sigma.to(dtype), guidance=guidance, pooled_projections=pooled_embeds,
        encoder_hidden_states=prompt_embeds,
        txt_ids=torch.zeros(prompt_embeds.shape[1], 3, device=x0.device, dtype=dtype),
        img_ids=torch.cat([ids, cond_ids]), return_dict=False)[0][:, :tokens.shape[1]]
    velocity = pack(noise - x0, B, C, h, w)  # packing permutes: the same mean as unpacked
    return torch.mean((prediction.float() - velocity.float()) ** 2)


# -----------------------------------------------------------------------------
# training


def add_lora(transformer, cfg: DeocclusionTrainConfig) -> list[torch.nn.Parameter]:
    """Freeze transformer, add the LoRA adapters (float32) and return their parameters."""
    from peft import LoraConfig

    transformer.requires_grad_(False)
    transformer.add_adapter(LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=0.0,
                                       init_lora_weights="gaussian",
                                       target_modules=list(cfg.target_modules)))
    params = [p for p in transformer.parameters() if p.requires_grad]
    if not params:
        raise SceneMakerError(f"config: {KEY}.target_modules match no layer of the transformer")
    for p in params:
        p.data = p.data.float()
    return params


def save_lora(pipeline_class, transformer, folder: Path) -> Path:
    """The transformer's LoRA as folder/pytorch_lora_weights.safetensors (diffusers' format,
    peft config in the metadata)."""
    from peft.utils import get_peft_model_state_dict

    pipeline_class.save_lora_weights(
        folder, transformer_lora_layers=get_peft_model_state_dict(transformer),
        weight_name=LORA_WEIGHTS, safe_serialization=True,
        transformer_lora_adapter_metadata=transformer.peft_config["default"].to_dict())
    return folder / LORA_WEIGHTS


def encode_prompts(pipe, prompts: list[str], max_sequence_length: int, device: torch.device
                   ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{prompt: (T5 embeddings (1, L, D), CLIP pooled (1, P))} on device."""
    with torch.no_grad():
        return {p: tuple(t.to(device) for t in pipe.encode_prompt(
            prompt=p, prompt_2=None, device=device, max_sequence_length=max_sequence_length)[:2])
            for p in prompts}


def learning_rate(step: int, cfg: DeocclusionTrainConfig) -> float:
    """Linear warm-up over warmup_steps, then constant."""
    return cfg.lr * min(1.0, (step + 1) / max(cfg.warmup_steps, 1))


def train_deocclusion_lora(data: str | Path, model: str, out: str | Path,
                           config: SceneMakerConfig, progress: bool = True) -> dict:
    """Train a LoRA of model (hub id or folder) on the triplets in data (module docstring);
    returns {"lora": its path, "losses": per-step losses, "seconds": wall time}."""
    cfg = config.deocclusion_train
    dataset = TripletDataset(data)
    if dataset.shapes != "procedural":
        raise SceneMakerError(f"{data}: triplets of {dataset.shapes} objects are for evaluation "
                              "only (data policy); make training triplets from procedural shapes")
    if len(dataset) == 0:
        raise SceneMakerError(f"{data}: no triplets")
    diffusers = require("diffusers", "train deocclusion")
    require("peft", "train deocclusion")
    device = resolve_device(cfg.device, f"{KEY}.device", "train deocclusion")
    runtime = Runtime("train deocclusion", KEY, device,
                      resolve_dtype(cfg.dtype, device, f"{KEY}.dtype"), cfg.offline)
    pipe = runtime.load(diffusers.FluxKontextPipeline.from_pretrained, model,
                        hub_id=DeocclusionTrainConfig.model, dtype=runtime.dtype)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config.deocclusion_train.model = model
    save_config(config, out / "config.yaml")
    # prompts once, then the text encoders go
    pipe.text_encoder.to(device)
    pipe.text_encoder_2.to(device)
    prompts = encode_prompts(pipe, sorted({r["prompt"] for r in dataset.records}),
                             cfg.max_sequence_length, device)
    free_cuda_memory(pipe.text_encoder, pipe.text_encoder_2)
    vae, transformer = pipe.vae.to(device).eval(), pipe.transformer.to(device)
    params = add_lora(transformer, cfg)
    if cfg.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    transformer.train()
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    generator = torch.Generator().manual_seed(cfg.seed)
    order: list[int] = []
    losses = []
    start = time.perf_counter()
    bar = tqdm(range(cfg.steps), desc="train deocclusion", unit="step", disable=not progress)
    with out_of_memory_hint(runtime.what, KEY), open(out / "train.csv", "w", newline="") as f:
        log = csv.writer(f)
        log.writerow(["step", "loss", "lr"])
        for step in bar:
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, cfg)
            total = 0.0
            for _ in range(cfg.grad_accumulation):
                indices = []
                while len(indices) < cfg.batch_size:  # epochs in random order
                    if not order:
                        order = torch.randperm(len(dataset), generator=generator).tolist()
                    indices.append(order.pop())
                loss = _example_loss(transformer, vae, dataset, indices, prompts, cfg, generator,
                                     device)
                (loss / cfg.grad_accumulation).backward()
                total += loss.item() / cfg.grad_accumulation
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(total)
            log.writerow([step + 1, f"{total:.6g}", f"{learning_rate(step, cfg):.3g}"])
            bar.set_postfix(loss=f"{total:.4f}")
            if cfg.save_every and (step + 1) % cfg.save_every == 0 and step + 1 < cfg.steps:
                save_lora(type(pipe), transformer, out / f"step-{step + 1:06d}")
    lora = save_lora(type(pipe), transformer, out)
    return {"lora": lora, "losses": losses, "seconds": time.perf_counter() - start}


def _example_loss(transformer, vae, dataset: TripletDataset, indices: list[int],
                  prompts: dict, cfg: DeocclusionTrainConfig, generator: torch.Generator,
                  device: torch.device) -> torch.Tensor:
    """The flow-matching loss of one micro-batch of triplets."""
    triplets = [dataset[i] for i in indices]
    with torch.no_grad():
        x0 = encode_latents(vae, to_pixels([t.target for t in triplets], cfg.resolution))
        cond = encode_latents(vae, to_pixels([t.input for t in triplets], cfg.resolution))
    embeds, pooled = (torch.cat(parts) for parts in zip(*(prompts[t.prompt] for t in triplets)))
    noise = torch.randn(x0.shape, generator=generator).to(device, x0.dtype)
    if cfg.timestep_sampling == "logit_normal":
        sigma = torch.randn(len(indices), generator=generator).sigmoid()
    else:
        sigma = torch.rand(len(indices), generator=generator)
    return flow_matching_loss(transformer, x0, cond, embeds, pooled, noise, sigma.to(device),
                              cfg.guidance_scale)
