"""A tiny, randomly initialised FLUX.1 Kontext pipeline for tests (no download).

The real diffusers / transformers classes, built from small configs: a one-block
``FluxTransformer2DModel`` with guidance embedding (as in Kontext [dev]), a two-level
``AutoencoderKL`` (1 latent channel, 2x down-sampling), a two-layer ``CLIPTextModel`` and
``T5EncoderModel``, and their tokenizers: a character-level CLIP BPE written as vocab.json /
merges.txt, and a character-level T5 Unigram built with the ``tokenizers`` library and saved as
tokenizer.json. Outputs are meaningless; shapes, dtypes and the wiring are the real ones.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch

HIDDEN = 32  # text width of both encoders = the transformer's joint / pooled projection width
CHARACTERS = string.ascii_lowercase + string.digits + ".,:;!?'-()"


def clip_tokenizer(folder: Path):
    """A character-level CLIP BPE (each character, and each as a word end): vocab.json and
    merges.txt written to folder, then loaded."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    tokens = ["<|startoftext|>", "<|endoftext|>"]
    tokens += [c for c in CHARACTERS] + [f"{c}</w>" for c in CHARACTERS]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"),
                         model_max_length=77)


def t5_tokenizer(folder: Path):
    """A character-level T5-style Unigram tokenizer (<pad> 0, </s> 1, <unk> 2) built with the
    tokenizers library, saved as folder/tokenizer.json and loaded."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [(c, -3.0) for c in CHARACTERS] + [(f"\u2581{c}", -3.5) for c in CHARACTERS]
    tokenizer = Tokenizer(models.Unigram(pieces, unk_id=2, byte_fallback=False))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581",
                                                       prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>",
                                                             special_tokens=[("</s>", 1)])
    tokenizer.save(str(folder / "tokenizer.json"))
    return T5TokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), eos_token="</s>",
                           pad_token="<pad>", unk_token="<unk>", extra_ids=0)


def build_tiny_kontext(folder: Path, seed: int = 0):
    """A FluxKontextPipeline of tiny random components; folder receives the tokenizer files."""
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        FluxKontextPipeline,
        FluxTransformer2DModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    tokenizer, tokenizer_2 = clip_tokenizer(folder / "clip"), t5_tokenizer(folder / "t5")
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=HIDDEN, pooled_projection_dim=HIDDEN,
        guidance_embeds=True, axes_dims_rope=(4, 4, 8))
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(4, 8), layers_per_block=1,
        latent_channels=1, norm_num_groups=1, sample_size=32, use_quant_conv=False,
        use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=HIDDEN, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, projection_dim=HIDDEN,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, hidden_act="gelu"))
    text_encoder_2 = T5EncoderModel(T5Config(
        vocab_size=len(tokenizer_2), d_model=HIDDEN, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=32, dropout_rate=0.0,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))
    return FluxKontextPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=text_encoder,
        tokenizer=tokenizer, text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2,
        transformer=transformer)


def save_tiny_kontext(folder: Path, seed: int = 0) -> Path:
    """build_tiny_kontext saved with save_pretrained to folder/"model" (a local model folder as
    the backend and the trainer take it); returns that folder."""
    model = folder / "model"
    build_tiny_kontext(folder / "tokenizers", seed).save_pretrained(model)
    return model
