"""Scores of the segmentation and de-occlusion stages against synthetic ground truth.

Segmentation (per frame, pooled over frames by ``SegmentationScore.total``): predicted masks are
matched to the ground-truth visible masks by the Hungarian algorithm on mask IoU. Ground-truth
objects with fewer than ``min_gt_pixels`` visible pixels are ignored, and so are the predictions
lying mostly (>= half their pixels) on them. matched IoU = sum of matched IoUs / n_gt (a missed
object counts 0); precision and recall count matches with IoU >= ``iou_threshold`` (0.5).

De-occlusion (per object): the amodal IoU of the estimated whole mask against the object
rendered alone, next to the IoU of the visible mask alone (the baseline: no de-occlusion); and,
over the object's truly hidden pixels (rendered alone, not visible), the PSNR of the completed
crop against the rendering alone, next to the PSNR of the visible-only crop (background where
hidden).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy.optimize import linear_sum_assignment

from scenemaker_ros.stages.deocclusion import DeoccludedObject

if TYPE_CHECKING:  # the renderer pulls in open3d, which scoring itself never needs
    from scenemaker_ros.synth.render import AmodalRender

# -----------------------------------------------------------------------------
# segmentation


def mask_iou_matrix(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Pairwise IoU (P, G) float64 of masks pred (P, H, W) and gt (G, H, W) bool; 0 for two
    empty masks."""
    pixels = int(np.prod(pred.shape[1:]))
    a = pred.reshape(len(pred), pixels).astype(np.float32)
    b = gt.reshape(len(gt), pixels).astype(np.float32)
    inter = (a @ b.T).astype(np.float64)
    union = a.sum(1)[:, None] + b.sum(1)[None] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


@dataclass
class SegmentationScore:
    """Sums over one or more frames; the rates are properties (module docstring)."""

    iou_sum: float  # sum of the Hungarian-matched IoUs
    true_positives: int  # matches with IoU >= the threshold
    n_pred: int  # predictions, not counting those on ignored objects
    n_gt: int  # ground-truth objects with at least min_gt_pixels visible pixels

    @property
    def matched_iou(self) -> float:
        return self.iou_sum / self.n_gt if self.n_gt else float("nan")

    @property
    def precision(self) -> float:
        return self.true_positives / self.n_pred if self.n_pred else float("nan")

    @property
    def recall(self) -> float:
        return self.true_positives / self.n_gt if self.n_gt else float("nan")

    @classmethod
    def total(cls, scores: Sequence[SegmentationScore]) -> SegmentationScore:
        return cls(sum(s.iou_sum for s in scores), sum(s.true_positives for s in scores),
                   sum(s.n_pred for s in scores), sum(s.n_gt for s in scores))

    def as_dict(self) -> dict[str, float]:
        return {"matched_iou": self.matched_iou, "precision": self.precision,
                "recall": self.recall, "n_pred": self.n_pred, "n_gt": self.n_gt}


def score_segmentation(pred: np.ndarray, gt_instance: np.ndarray, min_gt_pixels: int = 150,
                       iou_threshold: float = 0.5) -> SegmentationScore:
    """Score predicted masks (P, H, W) bool against a ground-truth instance image (H, W) int,
    0 = none, one id per object (module docstring)."""
    ids = np.unique(gt_instance[gt_instance > 0])
    gt = gt_instance[None] == ids[:, None, None]  # (G, H, W)
    counted = gt.sum(axis=(1, 2)) >= min_gt_pixels
    ignored = gt[~counted].any(axis=0)
    area = pred.sum(axis=(1, 2))
    pred = pred[(pred & ignored).sum(axis=(1, 2)) * 2 < np.maximum(area, 1)]
    iou = mask_iou_matrix(pred, gt[counted])
    rows, cols = linear_sum_assignment(-iou)
    matched = iou[rows, cols]
    return SegmentationScore(float(matched.sum()), int((matched >= iou_threshold).sum()),
                             len(pred), int(counted.sum()))


# -----------------------------------------------------------------------------
# de-occlusion


@dataclass
class DeocclusionScore:
    """One object's de-occlusion against its rendering alone (module docstring)."""

    amodal_iou: float  # estimated amodal mask vs the true one
    visible_iou: float  # the visible mask alone vs the true amodal mask (baseline)
    hidden_pixels: int  # true amodal pixels outside the visible mask
    psnr: float  # dB over the hidden pixels, completed crop; NaN without hidden pixels
    visible_psnr: float  # dB over the hidden pixels, visible-only crop (baseline)

    def as_dict(self) -> dict[str, float]:
        return dict(vars(self))


def score_deocclusion(obj: DeoccludedObject, frame_rgb: np.ndarray, truth: AmodalRender,
                      background: tuple[int, int, int]) -> DeocclusionScore:
    """Score one DeoccludedObject against the object rendered alone; frame_rgb (H, W, 3) uint8
    is the frame it came from, background the colour its crop uses off the amodal mask."""
    shape = obj.visible.shape
    true_amodal = _paste(truth.mask, truth.bbox, np.zeros(shape, bool))
    true_rgb = _paste(truth.rgb, truth.bbox, np.zeros((*shape, 3), np.uint8))
    hidden = true_amodal & ~obj.visible
    completed = _paste(obj.rgb, obj.box, np.broadcast_to(np.uint8(background), (*shape, 3)))
    visible_only = np.where(obj.visible[..., None], frame_rgb, np.uint8(background))
    return DeocclusionScore(
        amodal_iou=_iou(obj.amodal, true_amodal), visible_iou=_iou(obj.visible, true_amodal),
        hidden_pixels=int(hidden.sum()), psnr=_psnr(completed[hidden], true_rgb[hidden]),
        visible_psnr=_psnr(visible_only[hidden], true_rgb[hidden]))


def _paste(crop: np.ndarray, box: tuple[int, int, int, int], canvas: np.ndarray) -> np.ndarray:
    """A copy of canvas (H, W, ...) with crop (y1 - y0, x1 - x0, ...) at box (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    out = canvas.copy()
    out[y0:y1, x0:x1] = crop
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else float("nan")


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of uint8 colours a, b (N, 3); NaN for N = 0, capped at 100 dB when equal."""
    if not len(a):
        return float("nan")
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 100.0 if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def summarise_deocclusion(scores: Sequence[DeocclusionScore], min_hidden_pixels: int = 50
                          ) -> dict[str, float]:
    """Means over all objects and over the occluded ones (at least min_hidden_pixels hidden):
    amodal and visible-only IoU, completed and visible-only PSNR (occluded objects only)."""
    occluded = [s for s in scores if s.hidden_pixels >= min_hidden_pixels]

    def mean(values: list[float]) -> float:
        values = [v for v in values if np.isfinite(v)]
        return float(np.mean(values)) if values else float("nan")

    return {"objects": len(scores), "occluded": len(occluded),
            "amodal_iou": mean([s.amodal_iou for s in scores]),
            "visible_iou": mean([s.visible_iou for s in scores]),
            "occluded_amodal_iou": mean([s.amodal_iou for s in occluded]),
            "occluded_visible_iou": mean([s.visible_iou for s in occluded]),
            "psnr": mean([s.psnr for s in occluded]),
            "visible_psnr": mean([s.visible_psnr for s in occluded])}
