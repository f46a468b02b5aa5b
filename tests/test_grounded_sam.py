"""The "grounded_sam" segmentation on tiny random GroundingDINO and SAM models from local folders
(no weights, no network: the masks are meaningless, the code path and the wiring are real)."""

import numpy as np
import pytest
import torch
import transformers

from scenemaker_ros.config import SegmentationConfig, load_config
from scenemaker_ros.errors import SceneMakerError
from scenemaker_ros.frames import RGBDFrame
from scenemaker_ros.pipeline import ScenePipeline
from scenemaker_ros.stages import build_segmenter
from scenemaker_ros.stages.grounded_sam import (
    GroundedSamSegmenter,
    disjoint_masks,
    prompt_spans,
)
from scenemaker_ros.synth.scenes import generate_scene
from tests.helpers import small_data_config

PROMPTS = ["red cup", "box"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "red", "cup", "box", "bowl"]


def save_tiny_grounding_dino(folder):
    """GroundingDINO (Swin + BERT) and its processor, with a WordPiece vocab of VOCAB."""
    torch.manual_seed(0)
    swin = transformers.SwinConfig(window_size=7, embed_dim=8, depths=[1, 1, 1, 1],
                                   num_heads=[1, 1, 1, 1], image_size=98,
                                   out_features=["stage2", "stage3", "stage4"],
                                   out_indices=[2, 3, 4])
    config = transformers.GroundingDinoConfig(
        d_model=32, encoder_layers=1, decoder_layers=2, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=16, decoder_ffn_dim=16, num_queries=12,
        num_feature_levels=4, encoder_n_points=2, decoder_n_points=2, use_timm_backbone=False,
        backbone_config=swin, max_text_len=16,
        text_config={"model_type": "bert", "hidden_size": 8, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "intermediate_size": 8,
                     "max_position_embeddings": 16})
    transformers.GroundingDinoForObjectDetection(config).save_pretrained(folder)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(VOCAB) + "\n")
    tokenizer = transformers.BertTokenizer(vocab=str(vocab))
    images = transformers.GroundingDinoImageProcessor(size={"shortest_edge": 64,
                                                            "longest_edge": 96})
    transformers.GroundingDinoProcessor(images, tokenizer).save_pretrained(folder)
    return folder


def save_tiny_sam(folder):
    """SAM (ViT, 64 px input) and its processor."""
    torch.manual_seed(0)
    width = 16
    config = transformers.SamConfig(
        vision_config={"hidden_size": 16, "output_channels": width, "num_hidden_layers": 2,
                       "num_attention_heads": 2, "image_size": 64, "patch_size": 8,
                       "window_size": 4, "global_attn_indexes": [1], "num_pos_feats": width // 2,
                       "mlp_dim": 32},
        prompt_encoder_config={"hidden_size": width, "image_size": 64, "patch_size": 8,
                               "mask_input_channels": 4},
        mask_decoder_config={"hidden_size": width, "mlp_dim": 32, "num_hidden_layers": 1,
                             "num_attention_heads": 2, "iou_head_hidden_dim": 16})
    transformers.SamModel(config).save_pretrained(folder)
    images = transformers.SamImageProcessor(size={"longest_edge": 64},
                                            pad_size={"height": 64, "width": 64})
    transformers.SamProcessor(images).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("grounded_sam")
    return (str(save_tiny_grounding_dino(root / "grounding-dino")),
            str(save_tiny_sam(root / "sam")))


def grounded_sam_config(folders, **options) -> SegmentationConfig:
    cfg = load_config().pipeline.segmentation
    cfg.backend = "grounded_sam"
    gs = cfg.grounded_sam
    gs.detector, gs.sam = folders
    gs.prompts, gs.device, gs.box_threshold, gs.text_threshold, gs.min_pixels = (
        list(PROMPTS), "cpu", 0.0, 0.0, 20)
    for name, value in options.items():
        setattr(gs, name, value)
    return cfg


@pytest.fixture(scope="module")
def frame():
    sample = generate_scene(small_data_config(), np.random.default_rng(3))
    return RGBDFrame(sample.rgb, sample.depth, sample.scene.camera).validate()


def test_segment_a_frame(folders, frame):
    segmenter = build_segmenter(grounded_sam_config(folders))
    assert isinstance(segmenter, GroundedSamSegmenter)
    result = segmenter.segment(frame)
    m = len(result)
    assert m >= 1 and result.masks.shape == (m, *frame.depth.shape)
    assert result.masks.dtype == bool and result.masks.sum(axis=0).max() == 1  # disjoint
    sizes = result.masks.sum(axis=(1, 2))
    assert np.all(sizes >= 20) and np.all(np.diff(sizes) <= 0)  # largest first
    assert result.scores.dtype == np.float32 and result.scores.shape == (m,)
    assert np.all((result.scores >= 0) & (result.scores <= 1))
    assert set(result.labels) <= {"red cup", "box"}
    assert result.plane is not None and result.plane.normal.shape == (3,)  # from the depth


def test_detections_respect_thresholds_and_max_objects(folders, frame):
    boxes, scores, labels = build_segmenter(
        grounded_sam_config(folders, max_objects=3)).detect(frame.rgb)
    assert boxes.shape == (3, 4) and len(labels) == 3 and np.all(np.diff(scores) <= 0)
    height, width = frame.depth.shape
    assert np.all(boxes >= 0) and np.all(boxes[:, [0, 2]] <= width)
    assert np.all(boxes[:, [1, 3]] <= height) and np.all(boxes[:, 2:] >= boxes[:, :2])
    empty = build_segmenter(grounded_sam_config(folders, box_threshold=1.0)).segment(frame)
    assert len(empty) == 0 and empty.masks.shape == (0, *frame.depth.shape)


def test_prompt_spans_follow_the_joined_text(folders):
    processor = transformers.AutoProcessor.from_pretrained(folders[0], local_files_only=True)
    ids = processor(text=["red cup", "box"], return_tensors="pt")["input_ids"][0]
    spans = prompt_spans(ids, processor.tokenizer)  # [CLS] red cup . box . [SEP]
    assert [s.tolist() for s in spans] == [[1, 2], [4]]


def test_disjoint_masks_drop_duplicates_and_sort_by_size():
    masks = np.zeros((4, 10, 10), bool)
    masks[0, :4] = True  # 40 px, best score
    masks[1, :5] = True  # duplicate of 0: keeps 10 of 50 px
    masks[2, 5:] = True  # 50 px
    masks[3, 9, :3] = True  # 3 px
    out, scores, labels = disjoint_masks(masks, np.array([0.9, 0.8, 0.7, 0.6]),
                                         list("abcd"), min_pixels=5)
    assert labels == ["c", "a"] and np.allclose(scores, [0.7, 0.9])
    assert out.sum(axis=(1, 2)).tolist() == [50, 40] and out.sum(axis=0).max() == 1


@pytest.mark.parametrize("prompts, message", [([], "at least one object"),
                                              (["  "], "at least one object"),
                                              (["cup. bowl"], "must not contain '.'")])
def test_bad_prompts_fail_at_build(folders, prompts, message):
    with pytest.raises(SceneMakerError, match=message):
        build_segmenter(grounded_sam_config(folders, prompts=prompts))


def test_missing_weights_name_the_model_and_key(folders, tmp_path):
    missing = str(tmp_path / "grounding-dino-tiny")
    with pytest.raises(SceneMakerError) as err:
        build_segmenter(grounded_sam_config(folders, detector=missing))
    text = str(err.value)
    assert missing in text and "grounded_sam" in text and "\n" not in text
    assert "hf download IDEA-Research/grounding-dino-tiny" in text
    assert "pipeline.segmentation.grounded_sam.detector" in text


def test_pipeline_runs_with_the_grounded_sam_segmenter(folders, frame):
    cfg = load_config()
    cfg.pipeline.segmentation = grounded_sam_config(folders)
    pipeline = ScenePipeline.from_config(cfg)
    assert isinstance(pipeline.segmenter, GroundedSamSegmenter)
    result = pipeline.run(frame)
    assert len(result.segmentation) >= 1 and result.timer.durations["segmentation"]
    for obj in result.scene.objects:
        assert obj.pose_matrix.shape == (4, 4) and np.all(np.isfinite(obj.pose_matrix))
        assert obj.label in PROMPTS  # the detected class, not the library shape's family
    assert len(result.scene.objects) + len(result.warnings) >= 1
