"""The "grounded_sam" segmentation backend: open-vocabulary masks from text prompts (GPU).

Grounded-SAM as SceneMaker uses it, through ``transformers``:

1. Boxes: GroundingDINO (``GroundingDinoForObjectDetection``) scores every query box against the
   prompts, joined into one text ("cup. red bowl."). A prompt's score for a box is the mean
   sigmoid score of its tokens; the box takes the best prompt's phrase as its label. Boxes are
   kept when their best token scores above ``box_threshold`` and their phrase above
   ``text_threshold``; the ``max_objects`` best remain.
2. Masks: SAM (``SamModel``) segments each box (one mask per box, all boxes in one call on one
   image embedding). SAM 2 checkpoints need torchvision for their image processor and are not
   wired here.
3. Disjoint masks: in decreasing box score each mask keeps the pixels no better mask took; a
   mask left with less than half its pixels (a duplicate box) or fewer than ``min_pixels`` is
   dropped. Masks are returned largest first, scores being the box scores.
4. Support plane: from the depth, with the "depth_clusters" plane fit and its parameters
   (``pipeline.segmentation.depth_clusters``), for the stages after segmentation.

Weights, device, dtype and memory options: ``stages/hub.py``; the config section is
``pipeline.segmentation.grounded_sam``.
"""

from __future__ import annotations

import numpy as np
import torch

from scenemaker_ros.config import DepthClustersConfig, GroundedSamConfig, SegmentationConfig
from scenemaker_ros.errors import SceneMakerError
from scenemaker_ros.frames import RGBDFrame
from scenemaker_ros.stages.hub import Runtime, require
from scenemaker_ros.stages.segmentation import Segmentation, fit_support_plane

KEY = "pipeline.segmentation.grounded_sam"
DUPLICATE_FRACTION = 0.5  # a mask keeping less than this share of its pixels is a duplicate


class GroundedSamSegmenter:
    """GroundingDINO boxes from text prompts, SAM masks in them (module docstring)."""

    def __init__(self, cfg: GroundedSamConfig, plane_cfg: DepthClustersConfig, detector,
                 detector_processor, sam, sam_processor, runtime: Runtime):
        self.cfg, self.plane_cfg, self.runtime = cfg, plane_cfg, runtime
        self.detector, self.detector_processor = runtime.place(detector), detector_processor
        self.sam, self.sam_processor = runtime.place(sam), sam_processor
        self.prompts = [p.strip().lower() for p in cfg.prompts]

    def segment(self, frame: RGBDFrame) -> Segmentation:
        boxes, scores, labels = self.detect(frame.rgb)
        masks = self.box_masks(frame.rgb, boxes)
        masks, scores, labels = disjoint_masks(masks, scores, labels, self.cfg.min_pixels)
        plane = fit_support_plane(frame.depth, frame.camera.K, self.plane_cfg,
                                  np.random.default_rng(self.plane_cfg.seed))
        return Segmentation(masks, scores, labels, plane)

    def detect(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Step 1 on rgb (H, W, 3) uint8 -> boxes (N, 4) float64 XYXY pixels, scores (N,)
        float32 decreasing, labels: N prompts."""
        inputs = self.detector_processor(images=rgb, text=self.prompts, return_tensors="pt")
        spans = prompt_spans(inputs["input_ids"][0], self.detector_processor.tokenizer)
        if len(spans) != len(self.prompts):
            raise SceneMakerError(f"grounded_sam: the prompts do not fit GroundingDINO's text "
                                  f"length; shorten {KEY}.prompts")
        device, dtype = self.runtime.device, self.runtime.dtype
        with self.runtime.call(self.detector):
            inputs = {k: v.to(device, dtype) if v.is_floating_point() else v.to(device)
                      for k, v in inputs.items()}
            out = self.detector(**inputs)
            probs = out.logits[0].float().sigmoid().cpu()  # (Q, max_text_len)
            centre_boxes = out.pred_boxes[0].float().cpu()  # (Q, 4) cx, cy, w, h in [0, 1]
        phrase = torch.stack([probs[:, s].mean(dim=1) for s in spans], dim=1)  # (Q, P)
        box_score = probs[:, torch.cat(spans)].max(dim=1).values  # (Q,)
        phrase_score, prompt = phrase.max(dim=1)
        keep = (box_score > self.cfg.box_threshold) & (phrase_score > self.cfg.text_threshold)
        order = torch.argsort(box_score[keep], descending=True)[:self.cfg.max_objects]
        index = torch.nonzero(keep).flatten()[order]
        height, width = rgb.shape[:2]
        cx, cy, w, h = centre_boxes[index].double().unbind(dim=1)
        boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=1)
        boxes = (boxes * torch.tensor([width, height, width, height])).numpy()
        boxes = np.clip(boxes, 0, [width, height, width, height])
        return (boxes, box_score[index].numpy().astype(np.float32),
                [self.prompts[int(i)] for i in prompt[index]])

    def box_masks(self, rgb: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Step 2: one SAM mask (N, H, W) bool per box (N, 4) XYXY pixels of rgb."""
        if not len(boxes):
            return np.zeros((0, *rgb.shape[:2]), bool)
        inputs = self.sam_processor(images=rgb, input_boxes=[boxes.tolist()], return_tensors="pt")
        with self.runtime.call(self.sam):
            out = self.sam(pixel_values=inputs["pixel_values"].to(self.runtime.device,
                                                                  self.runtime.dtype),
                           input_boxes=inputs["input_boxes"].to(self.runtime.device,
                                                                self.runtime.dtype),
                           multimask_output=False)
            logits = out.pred_masks.float().cpu()  # (1, N, 1, h, w)
        masks = self.sam_processor.post_process_masks(logits, inputs["original_sizes"],
                                                      inputs["reshaped_input_sizes"])[0]
        return masks[:, 0].numpy().astype(bool)  # (N, H, W)


def prompt_spans(input_ids: torch.Tensor, tokenizer) -> list[torch.Tensor]:
    """Token positions of each prompt in GroundingDINO's joined text: the runs of tokens between
    [CLS], the "." separators and [SEP], in order."""
    breaks = {tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id,
              tokenizer.convert_tokens_to_ids(".")}
    spans, run = [], []
    for i, token in enumerate(input_ids.tolist()):
        if token in breaks:
            if run:
                spans.append(torch.tensor(run))
            run = []
        else:
            run.append(i)
    return spans + ([torch.tensor(run)] if run else [])


def disjoint_masks(masks: np.ndarray, scores: np.ndarray, labels: list[str], min_pixels: int
                   ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Step 3: masks (N, H, W) bool in decreasing score -> disjoint masks (M, H, W), largest
    first, with their scores (M,) float32 and labels."""
    taken = np.zeros(masks.shape[1:], bool)
    kept = []
    for k, mask in enumerate(masks):
        own = mask & ~taken
        if own.sum() >= max(min_pixels, DUPLICATE_FRACTION * mask.sum(), 1):
            kept.append((k, own))
            taken |= own
    kept.sort(key=lambda item: -int(item[1].sum()))
    index = [k for k, _ in kept]
    out = np.stack([own for _, own in kept]) if kept else np.zeros((0, *masks.shape[1:]), bool)
    return out, scores[index].astype(np.float32), [labels[k] for k in index]


def build_grounded_sam(cfg: SegmentationConfig) -> GroundedSamSegmenter:
    """The "grounded_sam" backend of cfg.grounded_sam; SceneMakerError for bad prompts or
    missing weights."""
    gs, what = cfg.grounded_sam, "grounded_sam"
    prompts = [p.strip() for p in gs.prompts]
    if not prompts or not all(prompts):
        raise SceneMakerError(f"config: {KEY}.prompts must name at least one object, e.g. "
                              "[cup, bowl, box]; got " + repr(gs.prompts))
    if any("." in p for p in prompts):
        raise SceneMakerError(f"config: {KEY}.prompts must not contain '.' (GroundingDINO's "
                              f"separator); got {gs.prompts!r}")
    transformers = require("transformers", what)
    runtime = Runtime.from_config(gs, KEY, what)
    detector = runtime.load(transformers.GroundingDinoForObjectDetection.from_pretrained,
                            gs.detector, "detector", GroundedSamConfig.detector)
    detector_processor = runtime.load(transformers.AutoProcessor.from_pretrained, gs.detector,
                                      "detector", GroundedSamConfig.detector)
    sam = runtime.load(transformers.SamModel.from_pretrained, gs.sam, "sam", GroundedSamConfig.sam)
    sam_processor = runtime.load(transformers.SamProcessor.from_pretrained, gs.sam, "sam",
                                 GroundedSamConfig.sam)
    return GroundedSamSegmenter(gs, cfg.depth_clusters, detector, detector_processor, sam,
                                sam_processor, runtime)
