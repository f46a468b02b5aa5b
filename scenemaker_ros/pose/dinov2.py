"""DINOv2 image features for the pose model (the ``ImageFeatures`` contract of ``pose/model.py``).

``Dinov2Features`` runs a (by default frozen) DINOv2 ViT from ``transformers`` on the RGB
channels and projects its patch tokens to the pose model's width with a trainable linear layer;
the visible-mask channel of object crops (C == 4) is average-pooled per patch and added through a
small trainable linear embedding. The CLS token is dropped: the pose model cross-attends over
tokens that each carry an image position (DINOv2's position embeddings), and after the last
layer every patch token already holds global context.

``transformers`` is imported only when a ``Dinov2Features`` is built, so the default CNN path
never imports it. Weights come from a model id or local folder via
``Dinov2Model.from_pretrained``; without network (``offline=True``, the default) only the local
Hugging Face cache or a local folder is read. Tests build a tiny random model from a
``Dinov2Config`` instead.

``build_image_features`` is the one switch between the from-scratch CNN and DINOv2.
"""

import torch
import torch.nn.functional as F
from torch import nn

from scenemaker_ros.errors import SceneMakerError

DEFAULT_MODEL = "facebook/dinov2-small"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TRANSFORMERS_PIN = "transformers==5.23.0"


def _transformers():
    """The ``transformers`` module, or a SceneMakerError saying how to install it."""
    try:
        import transformers
    except ImportError as err:
        raise SceneMakerError(
            f"image_features 'dinov2' needs the transformers package: run "
            f"`.venv/bin/pip install {TRANSFORMERS_PIN}` (pinned in requirements.txt)") from err
    return transformers


def load_dinov2(model, offline: bool = True) -> nn.Module:
    """A ``transformers.Dinov2Model``: randomly initialised from a ``Dinov2Config``, or the
    pretrained weights of a model id / local folder (str). ``offline`` reads no network.

    Raises SceneMakerError naming the model and how to get its weights when they are missing.
    """
    transformers = _transformers()
    if isinstance(model, transformers.Dinov2Config):
        return transformers.Dinov2Model(model)
    try:
        return transformers.Dinov2Model.from_pretrained(str(model), local_files_only=offline)
    except OSError as err:
        raise SceneMakerError(
            f"DINOv2 weights {str(model)!r} not found{' offline' if offline else ''}: on a "
            f"machine with network run `hf download {DEFAULT_MODEL} --local-dir dinov2-small` "
            "(`huggingface-cli download ...` with older huggingface-hub), copy that folder here "
            f"and point the pose config's DINOv2 model at it ({' '.join(str(err).split())})"
        ) from err


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


class Dinov2Features(nn.Module):
    """DINOv2 patch tokens -> (B, T, out_dim), T = (H' / p) * (W' / p).

    image (B, C, H, W) float in [0, 1], C == in_channels (3: RGB; 4: RGB + visible mask). The RGB
    is resized (bilinear, antialiased) to ``image_size`` = (H', W') pixels, multiples of the patch
    size p (14 for DINOv2), and ImageNet-normalised; T does not depend on H, W.

    model: model id / local folder (pretrained weights) or a ``Dinov2Config`` (random weights).
    freeze: the backbone gets no gradients and stays in eval mode (dropout off) even when the
        module is put in training mode; only the projection and the mask embedding train.
    device, dtype: where the backbone runs and its parameter dtype (torch.float16 / bfloat16 on
        a GPU); the trainable layers stay float32 and the output is float32.
    """

    def __init__(self, in_channels: int, out_dim: int, model=DEFAULT_MODEL,
                 image_size: int | tuple[int, int] = 224, freeze: bool = True,
                 offline: bool = True, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None):
        super().__init__()
        if in_channels not in (3, 4):
            raise ValueError(f"in_channels must be 3 (RGB) or 4 (RGB + mask), got {in_channels}")
        self.in_channels, self.out_dim, self.freeze = in_channels, out_dim, freeze
        self.backbone = load_dinov2(model, offline)
        self.image_size = _pair(image_size)
        self.grid = self._patch_grid(self.image_size, self.backbone.config.patch_size)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), False)
        self.proj = nn.Linear(self.backbone.config.hidden_size, out_dim)
        self.mask_embed = nn.Linear(1, out_dim) if in_channels == 4 else None
        self.backbone.requires_grad_(not freeze)
        self.to(device=device)
        self.backbone.to(dtype=dtype)
        self.train(self.training)

    @staticmethod
    def _patch_grid(image_size: tuple[int, int], patch: int) -> tuple[int, int]:
        """(h, w) patches of an image_size input; SceneMakerError unless both divide evenly."""
        if any(s <= 0 or s % patch for s in image_size):
            raise SceneMakerError(
                f"DINOv2 image_size {image_size} must be positive multiples of the patch size "
                f"{patch} (e.g. {16 * patch})")
        return image_size[0] // patch, image_size[1] // patch

    def train(self, mode: bool = True) -> "Dinov2Features":
        """Set training mode; a frozen backbone stays in eval mode."""
        super().train(mode)
        if self.freeze:
            self.backbone.eval()
        return self

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image (B, C, H, W) float in [0, 1] -> tokens (B, T, out_dim) float32, row-major
        over the (h, w) patch grid."""
        if image.dim() != 4 or image.shape[1] != self.in_channels:
            raise ValueError(f"expected an image (B, {self.in_channels}, H, W), got "
                             f"{tuple(image.shape)}")
        tokens = self.proj(self._patch_tokens(image[:, :3]).to(self.proj.weight.dtype))
        if self.mask_embed is None:
            return tokens  # (B, T, out_dim)
        visible = F.adaptive_avg_pool2d(image[:, 3:4].to(tokens.dtype), self.grid)  # (B, 1, h, w)
        return tokens + self.mask_embed(visible.flatten(2).transpose(1, 2))  # (B, T, out_dim)

    def _patch_tokens(self, rgb: torch.Tensor) -> torch.Tensor:
        """rgb (B, 3, H, W) in [0, 1] -> DINOv2 patch tokens (B, T, hidden), CLS dropped."""
        rgb = F.interpolate(rgb.float(), size=self.image_size, mode="bilinear",
                            align_corners=False, antialias=True)  # (B, 3, H', W')
        pixels = ((rgb - self.mean) / self.std).to(self.backbone.dtype)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            hidden = self.backbone(pixel_values=pixels).last_hidden_state  # (B, 1 + T, hidden)
        return hidden[:, 1:]


def build_image_features(kind: str, in_channels: int, out_dim: int, **options) -> nn.Module:
    """The pose model's image backbone: "cnn" (``ImageEncoder``, no options) or "dinov2"
    (``Dinov2Features``, ``options`` are its keyword arguments)."""
    if kind == "dinov2":
        return Dinov2Features(in_channels, out_dim, **options)
    if kind != "cnn":
        raise SceneMakerError(f"unknown image_features {kind!r}; valid: 'cnn', 'dinov2'")
    if options:
        raise SceneMakerError(f"image_features 'cnn' takes no options, got {sorted(options)}")
    from scenemaker_ros.pose.model import ImageEncoder  # here: model.py may import this module

    return ImageEncoder(in_channels, out_dim)
