"""The "image_to_3d" geometry on a tiny random Shap-E pipeline from a local folder (no weights, no
network: the meshes are meaningless, the code path and the pipeline wiring are real)."""

import numpy as np
import pytest
import torch
import transformers

from scenemaker_ros.config import GeometryConfig, load_config
from scenemaker_ros.errors import SceneMakerError
from scenemaker_ros.frames import RGBDFrame
from scenemaker_ros.geometry import depth_to_points
from scenemaker_ros.pipeline import ScenePipeline
from scenemaker_ros.stages import build_deoccluder, build_geometry, build_segmenter
from scenemaker_ros.stages.image_to_3d import ImageTo3DGeometry, ShapEAdapter, square_on_white
from scenemaker_ros.synth.scenes import generate_scene
from tests.helpers import small_data_config


def marching_cubes_tables() -> tuple[torch.Tensor, torch.Tensor]:
    """Lookup tables (cases (256, 5, 3) local edge ids, masks (256, 5) bool) in the layout of
    diffusers' MeshDecoder, which a real Shap-E checkpoint ships: case bit x + 2y + 4z per
    positive corner; edges 0-3 along x, 4-7 along y, 8-11 along z. Each cube face pairs its cut
    edges (around the positive corners when all four are cut); the pairs close into loops,
    fanned into triangles."""
    def corner(x, y, z):
        return x + 2 * y + 4 * z

    edges = ([(corner(0, y, z), corner(1, y, z)) for z in (0, 1) for y in (0, 1)]
             + [(corner(x, 0, z), corner(x, 1, z)) for z in (0, 1) for x in (0, 1)]
             + [(corner(x, y, 0), corner(x, y, 1)) for y in (0, 1) for x in (0, 1)])
    edge_of = {frozenset(e): i for i, e in enumerate(edges)}
    faces = []
    for axis in range(3):
        for side in (0, 1):
            ring = [[u, v] for u, v in ((0, 0), (1, 0), (1, 1), (0, 1))]
            faces.append([corner(*(r[:axis] + [side] + r[axis:])) for r in ring])
    cases, masks = torch.zeros(256, 5, 3, dtype=torch.long), torch.zeros(256, 5, dtype=torch.bool)
    for case in range(256):
        inside = [(case >> k) & 1 for k in range(8)]
        link: dict[int, list[int]] = {}
        for ring in faces:
            ring_edges = [edge_of[frozenset((ring[i], ring[(i + 1) % 4]))] for i in range(4)]
            cut = [i for i in range(4) if inside[ring[i]] != inside[ring[(i + 1) % 4]]]
            pairs = [cut] if len(cut) == 2 else [((i - 1) % 4, i) for i in range(4)
                                                 if cut and inside[ring[i]]]
            for a, b in pairs:
                link.setdefault(ring_edges[a], []).append(ring_edges[b])
                link.setdefault(ring_edges[b], []).append(ring_edges[a])
        triangles, seen = [], set()
        for start in link:
            if start in seen:
                continue
            loop, previous = [start], None
            while (step := [n for n in link[loop[-1]] if n != previous][0]) != start:
                previous = loop[-1]
                loop.append(step)
            seen.update(loop)
            triangles += [(loop[0], loop[i], loop[i + 1]) for i in range(1, len(loop) - 1)]
        for t, triangle in enumerate(triangles):
            cases[case, t], masks[case, t] = torch.tensor(triangle), True
    return cases, masks


def save_tiny_shap_e(folder):
    """ShapEImg2ImgPipeline with a tiny CLIP encoder, prior and renderer; the renderer's SDF
    output is scaled up so that a random latent has a surface."""
    from diffusers import HeunDiscreteScheduler, PriorTransformer, ShapEImg2ImgPipeline
    from diffusers.pipelines.shap_e import ShapERenderer

    torch.manual_seed(0)
    encoder = transformers.CLIPVisionModel(transformers.CLIPVisionConfig(
        hidden_size=32, image_size=32, projection_dim=32, intermediate_size=37,
        num_attention_heads=4, num_hidden_layers=2, patch_size=4))
    images = transformers.CLIPImageProcessor(
        crop_size=32, size=32, resample=3, image_mean=[0.4815, 0.4578, 0.4082],
        image_std=[0.2686, 0.2613, 0.2758])
    prior = PriorTransformer(num_attention_heads=2, attention_head_dim=16, embedding_dim=32,
                             num_embeddings=32, embedding_proj_dim=32, time_embed_dim=128,
                             num_layers=1, clip_embed_dim=64, additional_embeddings=0,
                             time_embed_act_fn="gelu", norm_in_type="layer",
                             embedding_proj_norm_type="layer", encoder_hid_proj_type=None,
                             added_emb_type=None)
    renderer = ShapERenderer(param_shapes=((8, 93), (8, 8), (8, 8), (8, 8)), d_latent=32,
                             d_hidden=8, n_output=12, background=(0.1, 0.1, 0.1))
    cases, masks = marching_cubes_tables()
    renderer.mesh_decoder.cases.copy_(cases)
    renderer.mesh_decoder.masks.copy_(masks)
    with torch.no_grad():
        renderer.mlp.mlp[-1].weight[0] *= 50  # output 0 is the SDF (tanh)
        renderer.mlp.mlp[-1].bias[0] = 0.0
    scheduler = HeunDiscreteScheduler(beta_schedule="exp", num_train_timesteps=1024,
                                      prediction_type="sample", use_karras_sigmas=True,
                                      clip_sample=True, clip_sample_range=1.0)
    ShapEImg2ImgPipeline(prior=prior, image_encoder=encoder, image_processor=images,
                         shap_e_renderer=renderer, scheduler=scheduler).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_tiny_shap_e(tmp_path_factory.mktemp("image_to_3d") / "shap-e")


def image_to_3d_config(folder, **options) -> GeometryConfig:
    cfg = GeometryConfig(backend="image_to_3d")
    cfg.image_to_3d.model, cfg.image_to_3d.device = folder, "cpu"
    cfg.image_to_3d.steps, cfg.image_to_3d.mesh_resolution = 2, 16
    for name, value in options.items():
        setattr(cfg.image_to_3d, name, value)
    return cfg


@pytest.fixture(scope="module")
def scene():
    """A synthetic frame, its segmentation and de-occluded crops (the embedded backends)."""
    sample = generate_scene(small_data_config(), np.random.default_rng(5))
    frame = RGBDFrame(sample.rgb, sample.depth, sample.scene.camera).validate()
    stages = load_config().pipeline
    segmentation = build_segmenter(stages.segmentation).segment(frame)
    crops = build_deoccluder(stages.deocclusion).deocclude(frame, segmentation)
    return frame, segmentation, crops


def test_shap_e_adapter_generates_a_mesh(folder):
    backend = build_geometry(image_to_3d_config(folder))
    assert isinstance(backend, ImageTo3DGeometry) and isinstance(backend.adapter, ShapEAdapter)
    rgb = np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    vertices, faces = backend.adapter.generate(rgb, np.ones((40, 30), bool))
    assert vertices.ndim == 2 and vertices.shape[1] == 3 and vertices.dtype == np.float64
    assert faces.shape[1] == 3 and faces.dtype == np.int64 and len(faces) > 0
    assert faces.min() >= 0 and faces.max() < len(vertices)
    assert np.all(np.abs(vertices) <= 1.0 + 1e-6)  # Shap-E's [-1, 1]^3 volume
    again, _ = backend.adapter.generate(rgb, np.ones((40, 30), bool))
    assert np.array_equal(vertices, again)  # seeded


def test_geometry_from_crops_in_the_canonical_frame(folder, scene):
    frame, segmentation, crops = scene
    backend = build_geometry(image_to_3d_config(folder))
    points = [depth_to_points(frame.depth, frame.camera.K, m) for m in segmentation.masks]
    assert len(points) >= 2
    points[0] = points[0][:5]  # too few depth points: no geometry
    geometries = backend.geometry(frame, points, segmentation.masks, crops=crops)
    assert len(geometries) == len(points) and geometries[0] is None
    for g in geometries[1:]:
        assert g is not None and g.source == "image_to_3d:shap_e" and not g.metric
        lo, hi = g.vertices.min(0), g.vertices.max(0)
        assert np.allclose((lo + hi) / 2, 0, atol=1e-9) and np.isclose((hi - lo).max(), 1.0)
        assert g.T_cam_obj.shape == (4, 4) and np.all(np.isfinite(g.T_cam_obj))
    with pytest.raises(SceneMakerError, match="de-occluded crop"):
        backend.geometry(frame, points, segmentation.masks)


def test_retrieval_ignores_the_crops(scene):
    frame, segmentation, crops = scene
    backend = build_geometry(load_config().pipeline.geometry)
    points = [depth_to_points(frame.depth, frame.camera.K, m) for m in segmentation.masks[:1]]
    with_crops = backend.geometry(frame, points, segmentation.masks[:1], crops=crops[:1])
    without = backend.geometry(frame, points, segmentation.masks[:1])
    assert np.array_equal(with_crops[0].vertices, without[0].vertices)


def test_square_on_white():
    rgb = np.zeros((2, 4, 3), np.uint8)
    mask = np.array([[True, False, True, True], [True, True, True, True]])
    out = square_on_white(rgb, mask)
    assert out.shape == (4, 4, 3) and out[0].min() == 255 and out[3].min() == 255
    assert out[1, 1].tolist() == [255] * 3 and out[1, 0].tolist() == [0] * 3


def test_bad_adapter_and_missing_weights(folder, tmp_path):
    with pytest.raises(SceneMakerError, match="adapter must be one of"):
        build_geometry(image_to_3d_config(folder, adapter="trellis"))
    missing = str(tmp_path / "shap-e-img2img")
    with pytest.raises(SceneMakerError) as err:
        build_geometry(image_to_3d_config(folder, model=missing))
    text = str(err.value)
    assert missing in text and "hf download openai/shap-e-img2img" in text and "\n" not in text
    assert "pipeline.geometry.image_to_3d.model" in text


def test_pipeline_passes_the_crops_to_image_to_3d(folder, scene):
    frame, segmentation, _ = scene
    cfg = load_config()
    cfg.pipeline.geometry = image_to_3d_config(folder)
    result = ScenePipeline.from_config(cfg).run(frame)
    sources = {o.attributes["geometry"] for o in result.scene.objects}
    assert result.scene.objects and sources == {"image_to_3d:shap_e"}
    for obj in result.scene.objects:
        vertices, _ = result.meshes[obj.id]
        assert np.isclose(np.ptp(vertices, axis=0).max(), 1.0)  # canonical, posed by the model
        assert np.all(np.isfinite(obj.pose_matrix))
