"""One configuration schema (dataclasses + YAML) for the CLI, the benchmarks and the ROS node.

Each stage has its own sub-config nested in ``SceneMakerConfig``. ``load_config`` rejects unknown
keys and wrong types and names the offending dotted key (``data.scene.max_objects``); the ROS node
declares its parameters under the same dotted names.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from scenemaker_ros.errors import SceneMakerError
from scenemaker_ros.files import write_text_atomic
from scenemaker_ros.synth.noise import DepthNoise


# ---------------------------------------------------------------------------
# Synthetic data
# ---------------------------------------------------------------------------
@dataclass
class SceneLayoutConfig:
    """How objects are chosen, sized and placed on the support plane (world z up, metres)."""

    min_objects: int = 2
    max_objects: int = 8
    families: list[str] = field(default_factory=list)  # empty: all procedural families
    min_size_m: float = 0.04  # longest side of an object, sampled log-uniformly
    max_size_m: float = 0.30
    anisotropy: float = 0.15  # max relative per-axis scale change (symmetries kept where possible)
    upright_prob: float = 0.5  # canonical upright pose, else a random stable resting pose
    touching_prob: float = 0.25  # slide the new object until it touches an existing one
    stacking_prob: float = 0.15  # drop the new object onto an existing one
    clutter_prob: float = 0.25  # a scene placed in a tighter area (heavy occlusion)
    spread: float = 1.2  # free placement disc radius / (mean object size * sqrt(count))
    clutter_spread: float = 0.6  # the same for cluttered scenes
    max_attempts: int = 20  # per object, before it is left out


@dataclass
class CameraSamplingConfig:
    """Random pinhole camera looking at the scene (REP 103 optical frame)."""

    width: int = 640
    height: int = 480
    fx_range: tuple[float, float] = (540.0, 660.0)
    principal_jitter_px: float = 8.0
    elevation_deg: tuple[float, float] = (20.0, 70.0)
    distance_margin: tuple[float, float] = (1.05, 1.6)  # distance / distance that just fits
    min_distance_m: float = 0.35
    max_distance_m: float = 2.5


@dataclass
class DataConfig:
    """``scenemaker data generate``: scenes per shard, rendering and sensor options."""

    scene: SceneLayoutConfig = field(default_factory=SceneLayoutConfig)
    camera: CameraSamplingConfig = field(default_factory=CameraSamplingConfig)
    # procedural: our shape families (training); random_urdfs: pybullet_data random_urdfs
    # 000-499, the held-out open-set objects (evaluation only, never trained on)
    shapes: Literal["procedural", "random_urdfs"] = "procedural"
    sensor_noise: bool = False  # also store a RealSense-like noisy depth (``depth_sensor``)
    noise: DepthNoise = field(default_factory=DepthNoise)
    shadows: bool = True  # hard shadows in most scenes (randomised); False: never
    render_alone: bool = True  # each object alone: unoccluded RGB + amodal mask
    scenes_per_shard: int = 50


# ---------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------
@dataclass
class MetricsConfig:
    """Scene metrics (see README "Metrics"); both protocols are always reported."""

    n_scene_samples: int = 20000
    n_object_samples: int = 4000
    tau: float = 0.1
    seed: int = 0


# ---------------------------------------------------------------------------
# Scene pipeline stages (``scenemaker_ros/stages/``)
# ---------------------------------------------------------------------------
@dataclass
class DepthClustersConfig:
    """The embedded "depth_clusters" segmentation (CPU, no weights); lengths at 640 x 480."""

    min_pixels: int = 60  # smaller clusters are dropped
    max_hole_pixels: int = 400  # enclosed holes up to this size join the object around them
    plane_iterations: int = 256  # RANSAC hypotheses for the support plane
    plane_samples: int = 3000  # valid depth points RANSAC scores each hypothesis on
    plane_threshold_m: float = 0.01  # RANSAC inlier distance at 1 m, grows with depth^2
    plane_min_fraction: float = 0.1  # smaller planes are not support planes (no plane: warn)
    plane_band_m: float = 0.002  # points within max(this, plane_band_sigmas * noise) are plane
    plane_band_sigmas: float = 2.0  # of the depth noise measured on the plane's inliers
    depth_jump: float = 0.02  # neighbour depths differing by more than this fraction: cut
    color_edge: float = 30.0  # RGB distance (0-255) between neighbours that makes a colour edge
    crease: float = 0.1  # colour edges this concave (normal change, see stages) stay cut
    crease_offset_px: int = 3  # normals compared this far either side of an edge
    same_color: float = 0.03  # neighbouring regions whose mean chromaticity differs by less
    # than this are one object, across colour edges and depth jumps alike (0: off)
    normal_smoothing_px: float = 1.5  # Gaussian sigma of the point image before normals
    seed: int = 0  # RANSAC sampling: the same frame gives the same masks


@dataclass
class GpuBackendConfig:
    """The fields every heavy GPU backend shares (``stages/hub.py``, README "Heavy GPU
    backends")."""

    device: str = "auto"  # "auto" (CUDA when available, else CPU with a warning), "cpu", "cuda:N"
    dtype: str = "auto"  # "auto" (half precision on CUDA, float32 on CPU), float32/16, bfloat16
    offline: bool = True  # local folder or Hugging Face cache only, never download
    cpu_offload: bool = False  # keep weights in CPU RAM, move each part to the GPU when used
    free_after_use: bool = False  # release GPU memory after each call (8-16 GB GPUs)


@dataclass
class GroundedSamConfig(GpuBackendConfig):
    """The "grounded_sam" open-vocabulary segmentation (GPU): GroundingDINO boxes from text
    prompts, SAM or SAM 2 masks in those boxes; the support plane still comes from the depth."""

    detector: str = "IDEA-Research/grounding-dino-tiny"  # GroundingDINO hub id or local folder
    sam: str = "facebook/sam-vit-base"  # SAM (or SAM 2, e.g. facebook/sam2.1-hiera-tiny)
    prompts: list[str] = field(default_factory=lambda: ["object"])  # what to find, one phrase each
    box_threshold: float = 0.3  # GroundingDINO box confidence
    text_threshold: float = 0.25  # a box's phrase: prompt tokens scoring above this
    max_objects: int = 20  # the highest-scoring boxes kept
    min_pixels: int = 150  # masks smaller than this (after making them disjoint) are dropped


@dataclass
class BoundaryNetConfig:
    """The "boundary_net" segmentation (CPU, shipped weights): the depth_clusters plane and
    candidates, boundaries between objects from a small U-Net, seeds grown by a watershed."""

    checkpoint: str = ""  # a boundary-net safetensors file; empty: the shipped boundary-S
    device: str = "cpu"  # "cpu", "cuda[:N]" or "auto"
    threshold: float = 0.5  # pixels below this boundary probability seed objects
    min_seed_pixels: int = 8  # smaller seeds are left to the watershed
    threads: int = 1  # torch threads of the net (0: torch's own); 1 avoids spin-wait contention


@dataclass
class SegmentationConfig:
    """Instance segmentation: the backend's name and each backend's parameters."""

    backend: str = "boundary_net"  # see scenemaker_ros.stages.segmentation.BACKENDS
    fallback: str = ""  # built instead when backend cannot be (missing weights, no CUDA)
    depth_clusters: DepthClustersConfig = field(default_factory=DepthClustersConfig)
    boundary_net: BoundaryNetConfig = field(default_factory=BoundaryNetConfig)
    grounded_sam: GroundedSamConfig = field(default_factory=GroundedSamConfig)


@dataclass
class DepthOrderConfig:
    """The embedded "depth_order" de-occlusion (CPU, no weights)."""

    boundary_px: int = 4  # objects this close in the image share a boundary
    occlusion_margin: float = 0.005  # the front object is nearer by this fraction of the depth
    crop_margin: float = 0.1  # crop = amodal box grown by this fraction of its size per side
    inpaint_iterations: int = 30  # diffusion steps smoothing the nearest-colour fill
    background: tuple[int, int, int] = (255, 255, 255)  # crop colour off the amodal mask


# De-occlusion with FLUX.1 Kontext (README "De-occlusion data and fine-tuning").
# Our prompt template (the paper publishes none): {object} is the shape family's noun in the
# training triplets and the segmenter's label at inference.
DEOCCLUSION_PROMPT = ("Complete the occluded {object}: fill in the parts hidden by the white "
                      "occluders so that the whole {object} is visible, on a plain white "
                      "background")


@dataclass
class FluxKontextConfig(GpuBackendConfig):
    """The "flux_kontext" de-occlusion (GPU): FLUX.1 Kontext [dev] through diffusers redraws each
    occluded object's crop whole; who hides whom and the crop come from depth_order's reasoning."""

    model: str = "black-forest-labs/FLUX.1-Kontext-dev"  # hub id or local folder
    lora: str = ""  # LoRA safetensors file or folder (scenemaker train deocclusion); "": none
    lora_scale: float = 1.0
    steps: int = 28  # denoising steps (the paper's setting)
    guidance_scale: float = 2.5  # Kontext's distilled guidance
    resolution: int = 512  # crops are resized to this square, pixels (a multiple of 16)
    crop_margin: float = 0.2  # square crop side = longer side of the amodal box * (1 + 2 * this)
    prompt: str = DEOCCLUSION_PROMPT
    max_sequence_length: int = 512  # T5 prompt tokens
    background_threshold: int = 24  # generated pixels this close to white (0-255) are background
    only_occluded: bool = True  # objects nobody hides keep depth_order's crop (no generation)
    seed: int = 0  # the same frame gives the same crops


@dataclass
class DeocclusionConfig:
    """De-occlusion: the backend's name and each backend's parameters."""

    backend: str = "depth_order"  # see scenemaker_ros.stages.deocclusion.BACKENDS
    fallback: str = ""  # built instead when backend cannot be (missing weights, no CUDA)
    depth_order: DepthOrderConfig = field(default_factory=DepthOrderConfig)
    flux_kontext: FluxKontextConfig = field(default_factory=FluxKontextConfig)


@dataclass
class RetrievalConfig:
    """The embedded "retrieval" object geometry (CPU, no weights): shape library + known meshes."""

    seeds_per_family: int = 3  # library: make_shape(family, seed) for every family, seed < this
    surface_points: int = 2048  # surface samples per library or known mesh
    views: int = 32  # view directions per mesh for the partial-view descriptor
    object_points: int = 300  # observed points fitted per object (voxel-thinned, then random)
    shortlist: int = 5  # candidates fitted per object, nearest by descriptor
    views_per_candidate: int = 2  # best-matching views of a candidate that seed a fit
    refine_starts: int = 3  # best-scoring starts refined by scale-aware ICP
    refine_iterations: int = 20
    max_scale_change: float = 0.5  # ICP may change a library shape's size by this fraction
    min_points: int = 10  # objects with fewer valid depth points get no geometry
    known_max_score: float = 0.025  # a known mesh is accepted below this fit score / its size
    known_effort: int = 3  # known meshes: this many times the views and refined starts
    known_size_tolerance: float = 0.15  # observed extent may exceed the known mesh's by this
    known_explain_m: float = 0.01  # carving: points this close to a matched known mesh are its
    known_fragment_share: float = 0.8  # carving: an object with this share of them is a fragment
    seed: int = 0  # point subsampling: the same frame gives the same geometry


@dataclass
class CarvingConfig:
    """The embedded "carving" object geometry (CPU, no weights): each object filled down from its
    seen surface to its support, minus what the camera sees through; known meshes are matched as
    by "retrieval" (its known_* settings)."""

    resolution: int = 48  # voxels along an object's longest side
    min_voxel_m: float = 0.002  # the voxel size is clamped to this range
    max_voxel_m: float = 0.02
    free_space_margin_m: float = 0.01  # a column stops where the camera sees this far past it
    closing_iterations: int = 1  # morphological closing of the voxels (gaps between columns)
    mesh_step: int = 2  # marching-cubes step in voxels (2: a quarter of the faces of 1)
    snap_voxels: float = 2.0  # seen vertices this close to the measured depth move onto it
    stack_tolerance_m: float = 0.01  # an object stands on another whose top is this close below
    min_points: int = 10  # objects with fewer valid depth points get no geometry
    seed: int = 0  # point subsampling of the known-mesh fits
    completion: bool = True  # the learned completion of what the view hides (stages/completion)
    completion_checkpoint: str = ""  # a completion-net safetensors file; empty: the shipped one
    completion_add: float = 0.5  # hidden space of at least this occupancy probability is added
    completion_remove: float = 0.1  # carved space below this occupancy probability is removed
    completion_threads: int = 1  # torch threads of the completion net (0: torch's own)


@dataclass
class ImageTo3DConfig(GpuBackendConfig):
    """The "image_to_3d" object geometry (GPU): a generator turns each de-occluded crop into a
    mesh in a canonical frame (centred, z up, longest side 1) that the pose model places."""

    adapter: str = "shap_e"  # see scenemaker_ros.stages.image_to_3d.ADAPTERS
    model: str = "openai/shap-e-img2img"  # hub id or local folder
    steps: int = 64  # denoising steps
    guidance_scale: float = 3.0
    mesh_resolution: int = 128  # shap_e: SDF grid cells per side for marching cubes
    seed: int = 0  # the same crop gives the same mesh
    min_points: int = 10  # objects with fewer valid depth points get no geometry


@dataclass
class GeometryConfig:
    """Object geometry: the backend's name and each backend's parameters."""

    backend: str = "carving"  # see scenemaker_ros.stages.geometry.BACKENDS
    fallback: str = ""  # built instead when backend cannot be (missing weights, no CUDA)
    carving: CarvingConfig = field(default_factory=CarvingConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    image_to_3d: ImageTo3DConfig = field(default_factory=ImageTo3DConfig)


@dataclass
class DepthAnythingConfig(GpuBackendConfig):
    """The "depth_anything" monocular depth (GPU): a metric Depth Anything V2 checkpoint; the
    intrinsics come from the user or depth.fov_deg."""

    model: str = "depth-anything/Depth-Anything-V2-Metric-Indoor-Small-hf"


@dataclass
class DepthProConfig(GpuBackendConfig):
    """The "depth_pro" monocular depth (GPU): metric depth plus a focal-length estimate."""

    model: str = "apple/DepthPro-hf"


@dataclass
class DepthConfig:
    """Monocular depth for RGB-only input; RGB-D input keeps its sensor depth."""

    backend: str = "none"  # none: RGB-only input is refused; see stages.depth.BACKENDS
    fallback: str = ""  # built instead when backend cannot be (missing weights, no CUDA)
    fov_deg: float = 0.0  # horizontal field of view when no camera info is given and the
    # backend estimates no focal length; 0: camera info required
    depth_anything: DepthAnythingConfig = field(default_factory=DepthAnythingConfig)
    depth_pro: DepthProConfig = field(default_factory=DepthProConfig)


@dataclass
class PipelineConfig:
    """``scenemaker run`` and the ROS node: one sub-config per stage."""

    segmentation: SegmentationConfig = field(default_factory=SegmentationConfig)
    deocclusion: DeocclusionConfig = field(default_factory=DeocclusionConfig)
    geometry: GeometryConfig = field(default_factory=GeometryConfig)
    depth: DepthConfig = field(default_factory=DepthConfig)


# ---------------------------------------------------------------------------
# Pose model
# ---------------------------------------------------------------------------
@dataclass
class PoseInputConfig:
    """How an observation becomes pose-model inputs (``pose/inputs.py``); checkpoints carry it."""

    geometry_points: int = 128  # surface samples of each canonical mesh
    object_points: int = 128  # observed points per object (random subset)
    scene_points: int = 512  # observed points of the whole scene near the objects
    scene_box: float = 1.5  # scene points kept within this half-size box (normalised units)
    crop_size: int = 32  # object crops are crop_size x crop_size, RGB + visible mask
    crop_margin: float = 0.15  # crop box = visible-mask box grown by this fraction per side
    scene_image_size: tuple[int, int] = (96, 128)  # (height, width) of the downscaled image
    min_object_points: int = 10  # objects seen by fewer valid depth points are not posed


@dataclass
class PoseConfig:
    """Pose estimation at inference (``pose/estimator.py``)."""

    checkpoint: str = ""  # safetensors file; empty: the checkpoint shipped in the package
    steps: int = 8  # Euler steps of the flow
    hypotheses: int = 4  # samples per scene; each object keeps the one that fits its points best
    refine: bool = True  # scale-aware ICP of each posed mesh to its observed points
    geometric_starts: bool = True  # refinement also starts from the observed points' principal
    # axes at the model's position and size; the best fit wins (see README "The pose model")
    refine_iterations: int = 30
    refine_max_scale_change: float = 0.25  # refinement may change the size by at most this
    fit_points: int = 1000  # observed points per object that score and refine poses
    seed: int = 0  # noise seed: the same frame gives the same poses
    device: str = "cpu"  # "cpu", "cuda", "cuda:1", "auto" (CUDA when available)


@dataclass
class PoseTrainConfig:
    """``scenemaker train pose``; recorded in every checkpoint's metadata."""

    model: Literal["pose-S", "pose-XS"] = "pose-S"
    inputs: PoseInputConfig = field(default_factory=PoseInputConfig)
    image_features: Literal["cnn", "dinov2"] = "cnn"  # dinov2: frozen, through transformers
    image_backbone: str = "facebook/dinov2-small"  # dinov2: model id or local folder
    local_self_attn: bool = True  # ablation switches (README "Pose model")
    global_self_attn: bool = True
    local_cross_attn: bool = True
    steps: int = 1800
    batch_size: int = 16  # scenes per step and process
    times_per_scene: int = 4  # flow times drawn per scene; the conditions are encoded once
    lr: float = 3e-4
    warmup_steps: int = 200
    min_lr_ratio: float = 0.1  # cosine decay to lr * this
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    ema_decay: float = 0.998  # exponential moving average of the weights (what is shipped)
    sensor_depth_prob: float = 0.5  # chance a scene uses its noisy sensor depth, when stored
    seed: int = 0
    log_every: int = 25
    checkpoint_every: int = 250
    val_scenes: int = 64  # validation scenes scored at each checkpoint
    time_limit_min: float = 0.0  # stop (and save) after this many minutes; 0: no limit
    threads: int = 0  # torch CPU threads per process; 0: torch's default


@dataclass
class BoundaryTrainConfig:
    """``scenemaker train segmentation``: the "boundary_net" U-Net on procedural scenes; the
    plane and candidates follow pipeline.segmentation.depth_clusters."""

    model: Literal["boundary-S", "boundary-XS"] = "boundary-S"
    steps: int = 12000
    batch_size: int = 12  # crops per step
    crop_px: int = 192  # square training crops, a multiple of 16
    lr: float = 2e-3
    warmup_steps: int = 100
    min_lr_ratio: float = 0.05  # cosine decay to lr * this
    weight_decay: float = 1e-4
    positive_weight: float = 3.0  # loss weight of boundary pixels (about 1 in 10 candidates)
    sensor_depth_prob: float = 0.5  # chance a scene is cached with its noisy sensor depth
    val_scenes: int = 64  # the last cached scenes, held out for validation
    seed: int = 0
    log_every: int = 25
    checkpoint_every: int = 1000
    threads: int = 0  # torch CPU threads; 0: torch's default


@dataclass
class CompletionTrainConfig:
    """``scenemaker train completion``: the 3D U-Net of the carving geometry's completion on
    procedural scenes; the plane follows pipeline.segmentation.depth_clusters."""

    model: Literal["completion-S", "completion-XS"] = "completion-S"
    steps: int = 12000
    batch_size: int = 16  # objects per step
    lr: float = 2e-3
    warmup_steps: int = 100
    min_lr_ratio: float = 0.05  # cosine decay to lr * this
    weight_decay: float = 1e-4
    min_pixels: int = 100  # objects with fewer visible pixels make no example
    scenes: int = 2000  # scenes of each dataset's train split used (0: all)
    sensor_depth_prob: float = 0.5  # chance a scene is cached with its noisy sensor depth
    val_objects: int = 256  # the last cached objects, held out for validation
    seed: int = 0
    log_every: int = 25
    checkpoint_every: int = 500
    threads: int = 0  # torch CPU threads; 0: torch's default


# ---------------------------------------------------------------------------
# De-occlusion data and fine-tuning
# ---------------------------------------------------------------------------
@dataclass
class DeocclusionDataConfig:
    """``scenemaker data deocclusion``: triplets from scenes built with the ``data`` section
    (``synth/deocclusion_data.py``)."""

    objects_per_scene: int = 3  # at most this many triplets per rendered scene
    min_amodal_pixels: int = 1500  # smaller objects (whole mask) are skipped
    hidden_fraction: tuple[float, float] = (0.1, 0.6)  # share of the whole mask hidden in the input
    strategy_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)  # cutout, rectangle, brush
    crop_margin: tuple[float, float] = (0.1, 0.3)  # square crop side = box side * (1 + 2 * margin)
    generic_prompt_prob: float = 0.2  # share of prompts that say "object", not the family
    prompt: str = DEOCCLUSION_PROMPT
    scenes_per_chunk: int = 20  # scenes per resumable unit of work


@dataclass
class DeocclusionTrainConfig:
    """``scenemaker train deocclusion``: a LoRA on FLUX.1 Kontext's attention projections. The
    paper gives no hyper-parameters: these are ours, diffusers' Kontext LoRA script's where it
    has one."""

    model: str = "black-forest-labs/FLUX.1-Kontext-dev"  # hub id or local folder (--model)
    rank: int = 16
    alpha: float = 16.0  # LoRA scale = alpha / rank
    target_modules: list[str] = field(default_factory=lambda: [
        "attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0",
        "attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj", "attn.to_add_out"])
    resolution: int = 512  # square training images, pixels (a multiple of 16)
    steps: int = 2500  # optimizer steps (one pass over 10K triplets at 4 per step)
    batch_size: int = 1
    grad_accumulation: int = 4
    lr: float = 1e-4
    warmup_steps: int = 100  # linear warm-up, then constant
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    guidance_scale: float = 2.5  # the guidance input during training = the backend's default
    timestep_sampling: Literal["uniform", "logit_normal"] = "uniform"
    gradient_checkpointing: bool = True
    max_sequence_length: int = 512  # T5 prompt tokens
    save_every: int = 500  # also write the LoRA every this many steps; 0: only at the end
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"  # of the frozen weights; the LoRA weights train in float32
    offline: bool = True


# ---------------------------------------------------------------------------
# Export and scene-graph relations
# ---------------------------------------------------------------------------
@dataclass
class ExportConfig:
    """``scenemaker export``: SDF / USD / URDF / GLB (README "Export for simulators")."""

    static: bool = False  # objects never move: SDF <static>, URDF fixed joints, no USD rigid body
    density_kg_m3: float = 500.0  # mass = density * volume (of the convex hull if not watertight)
    collision: Literal["convex_hull", "mesh"] = "convex_hull"  # "mesh": the triangle mesh itself
    ground_plane: bool = True  # a static support plane under the objects (not in GLB)
    ground_size_m: float = 4.0  # side of the square support plane
    min_thickness_m: float = 0.002  # flat meshes are thickened to this for collision and mass
    absolute_uris: bool = False  # file:// mesh URIs instead of paths relative to the scene file
    world_name: str = "scenemaker"  # SDF world / URDF robot name


@dataclass
class RelationsConfig:
    """Scene-graph relations from posed meshes (README "Scene-graph relations")."""

    contact_tolerance_m: float = 0.01  # surfaces this close are in contact
    near_distance_m: float = 0.10  # closer than this (and not in contact): near
    inside_fraction: float = 0.9  # share of an object's surface inside another's convex hull
    min_confidence: float = 0.3  # weaker relations are left out
    samples_per_object: int = 2000  # surface samples per object (plus its vertices)
    seed: int = 0


# ---------------------------------------------------------------------------
# ROS node (``scenemaker_ros/ros/``)
# ---------------------------------------------------------------------------
QosChoice = Literal["auto", "sensor_data", "reliable", "best_effort"]


@dataclass
class NodeConfig:
    """The ROS node (README "ROS 2 node"); its parameters are ``node.*``, like every key here."""

    mode: Literal["continuous", "on_demand"] = "continuous"  # on_demand: only on ~/generate
    max_rate_hz: float = 2.0  # continuous mode: at most this many scenes per second; 0: no limit
    fresh_frame_wait_s: float = 0.1  # continuous mode: a frame that waited while the pipeline
    # was busy is replaced by the next one if that comes within this (lower latency); 0: take it
    sync_slop_s: float = 0.05  # image, depth and camera_info stamps may differ by this much
    sync_queue_size: int = 10  # messages kept per input while waiting for their partners
    # Input QoS per topic. auto: the sensor-data profile (keep last, volatile) with the
    # publisher's reliability (reliable when it is, best effort otherwise), re-checked each second.
    image_qos: QosChoice = "auto"
    depth_qos: QosChoice = "auto"
    camera_info_qos: QosChoice = "auto"
    depth_scale: float = 0.001  # metres per unit of a 16UC1 depth image (millimetres)
    rgb_only: bool = False  # no depth topic: pipeline.depth.backend estimates depth (at start)
    publish_tf: bool = True  # one frame per object, child of the image's frame
    world_frame: str = ""  # a z-up frame on /tf (REP 105: map, odom, base_link) that exports
    # and relations take as the gravity frame; "": the support plane seen in the depth
    tf_prefix: str = "scenemaker/object_"  # child frame = tf_prefix + object id
    track_max_distance_m: float = 0.1  # a detection this close to a previous object keeps its id
    objects_dir: str = ""  # known-object mode: a folder of meshes in metres (file name = label)
    export_root: str = "~/.ros/scenemaker"  # ~/export and streaming write only under this folder
    live_scene: bool = True  # rewrite export_root/live (scene.json, meshes) after each scene;
    # SceneGraph mesh URIs point there (empty when off)
    stream_formats: list[str] = field(default_factory=list)  # also refresh these (sdf, usd,
    # urdf, glb) in export_root/live after each scene, atomically
    publish_sdf: bool = False  # publish the scene as SDF text on ~/world_sdf (transient local)
    diagnostics_period_s: float = 1.0
    generate_timeout_s: float = 30.0  # ~/generate fails when no frame arrives within this


@dataclass
class SceneMakerConfig:
    data: DataConfig = field(default_factory=DataConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    pose: PoseConfig = field(default_factory=PoseConfig)
    train: PoseTrainConfig = field(default_factory=PoseTrainConfig)
    boundary_train: BoundaryTrainConfig = field(default_factory=BoundaryTrainConfig)
    completion_train: CompletionTrainConfig = field(default_factory=CompletionTrainConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    relations: RelationsConfig = field(default_factory=RelationsConfig)
    node: NodeConfig = field(default_factory=NodeConfig)
    deocclusion_data: DeocclusionDataConfig = field(default_factory=DeocclusionDataConfig)
    deocclusion_train: DeocclusionTrainConfig = field(default_factory=DeocclusionTrainConfig)


# ---------------------------------------------------------------------------
# Loading and saving
# ---------------------------------------------------------------------------
def config_from_dict(cls: type, data: Any, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from nested dicts; unknown keys and wrong types raise."""
    if not isinstance(data, dict):
        raise SceneMakerError(f"config: '{prefix or '<root>'}' must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        key = f"{prefix}{unknown[0]}"
        valid = ", ".join(sorted(names))
        raise SceneMakerError(f"config: unknown key '{key}' (valid here: {valid})")
    kwargs = {name: _coerce(hints[name], value, f"{prefix}{name}") for name, value in data.items()}
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return config_from_dict(hint, value, f"{key}.")
    if origin is Literal:
        if value not in typing.get_args(hint):
            raise SceneMakerError(f"config: '{key}' must be one of {list(typing.get_args(hint))}, "
                                  f"got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return None if value is None else _coerce(args[0], value, key)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise SceneMakerError(f"config: '{key}' must be a list, got {value!r}")
        args = typing.get_args(hint)
        if origin is tuple and len(args) != len(value):
            raise SceneMakerError(f"config: '{key}' must have {len(args)} values, got {value!r}")
        items = [_coerce(args[min(i, len(args) - 1)], v, key) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise SceneMakerError(f"config: '{key}' must be {hint.__name__}, got {value!r}")
    return value


def _validate_pipeline(cfg: PipelineConfig) -> None:
    seg, deo = cfg.segmentation.depth_clusters, cfg.deocclusion.depth_order
    key = "config: pipeline.segmentation.depth_clusters."
    if min(seg.min_pixels, seg.plane_iterations, seg.crease_offset_px) < 1:
        raise SceneMakerError(f"{key}min_pixels, plane_iterations and crease_offset_px must be "
                              ">= 1")
    if seg.plane_samples < 3 or seg.max_hole_pixels < 0:
        raise SceneMakerError(f"{key}plane_samples must be >= 3 and max_hole_pixels >= 0")
    if min(seg.plane_threshold_m, seg.plane_band_sigmas, seg.depth_jump, seg.color_edge,
           seg.normal_smoothing_px) <= 0 or seg.plane_band_m < 0:
        raise SceneMakerError(f"{key}thresholds, plane_band_sigmas and normal_smoothing_px must "
                              "be > 0")
    if not 0 < seg.plane_min_fraction <= 1:
        raise SceneMakerError(f"{key}plane_min_fraction must be in (0, 1]")
    net = cfg.segmentation.boundary_net
    if not 0 < net.threshold < 1 or net.min_seed_pixels < 1 or net.threads < 0:
        raise SceneMakerError("config: pipeline.segmentation.boundary_net.threshold must be in "
                              "(0, 1), min_seed_pixels >= 1 and threads >= 0")
    key = "config: pipeline.deocclusion.depth_order."
    if deo.boundary_px < 1 or min(deo.occlusion_margin, deo.crop_margin,
                                  deo.inpaint_iterations) < 0:
        raise SceneMakerError(f"{key}boundary_px must be >= 1, occlusion_margin, crop_margin "
                              "and inpaint_iterations >= 0")
    if not all(0 <= c <= 255 for c in deo.background):
        raise SceneMakerError(f"{key}background must be 3 values in 0..255")
    geo, key = cfg.geometry.retrieval, "config: pipeline.geometry.retrieval."
    if min(geo.seeds_per_family, geo.views, geo.shortlist, geo.views_per_candidate,
           geo.refine_starts, geo.known_effort) < 1 or min(geo.surface_points,
                                                           geo.object_points, geo.min_points) < 3:
        raise SceneMakerError(f"{key}counts must be >= 1 (points >= 3)")
    if min(geo.max_scale_change, geo.known_max_score, geo.known_size_tolerance,
           geo.known_explain_m) < 0:
        raise SceneMakerError(f"{key}max_scale_change, known_max_score, known_size_tolerance "
                              "and known_explain_m must be >= 0")
    if not 0 < geo.known_fragment_share <= 1:
        raise SceneMakerError(f"{key}known_fragment_share must be in (0, 1]")
    carve, key = cfg.geometry.carving, "config: pipeline.geometry.carving."
    if (carve.resolution < 4 or carve.min_points < 3 or carve.closing_iterations < 0
            or carve.mesh_step < 1):
        raise SceneMakerError(f"{key}resolution must be >= 4, min_points >= 3, "
                              "closing_iterations >= 0, mesh_step >= 1")
    if not 0 < carve.min_voxel_m <= carve.max_voxel_m or min(
            carve.free_space_margin_m, carve.stack_tolerance_m, carve.snap_voxels) < 0:
        raise SceneMakerError(f"{key}0 < min_voxel_m <= max_voxel_m, free_space_margin_m, "
                              "stack_tolerance_m and snap_voxels >= 0")
    if not 0 <= carve.completion_remove <= carve.completion_add <= 1 or \
            carve.completion_threads < 0:
        raise SceneMakerError(f"{key}need 0 <= completion_remove <= completion_add <= 1 and "
                              "completion_threads >= 0")
    gs, key = cfg.segmentation.grounded_sam, "config: pipeline.segmentation.grounded_sam."
    if not (0 <= gs.box_threshold <= 1 and 0 <= gs.text_threshold <= 1):
        raise SceneMakerError(f"{key}box_threshold and text_threshold must be in [0, 1]")
    if min(gs.max_objects, gs.min_pixels) < 1:
        raise SceneMakerError(f"{key}max_objects and min_pixels must be >= 1")
    i3d, key = cfg.geometry.image_to_3d, "config: pipeline.geometry.image_to_3d."
    if i3d.steps < 1 or i3d.mesh_resolution < 8 or i3d.min_points < 3 or i3d.guidance_scale < 0:
        raise SceneMakerError(f"{key}steps must be >= 1, mesh_resolution >= 8, min_points >= 3 "
                              "and guidance_scale >= 0")
    if not 0 <= cfg.depth.fov_deg < 180:
        raise SceneMakerError("config: pipeline.depth.fov_deg must be in [0, 180) degrees "
                              "(0: camera info required)")


def validate_config(cfg: SceneMakerConfig) -> SceneMakerConfig:
    """Cross-field rules that types alone cannot express."""
    _validate_pipeline(cfg.pipeline)
    scene, camera = cfg.data.scene, cfg.data.camera
    if not 1 <= scene.min_objects <= scene.max_objects:
        raise SceneMakerError("config: need 1 <= data.scene.min_objects <= data.scene.max_objects")
    if not 0 < scene.min_size_m <= scene.max_size_m:
        raise SceneMakerError("config: need 0 < data.scene.min_size_m <= data.scene.max_size_m")
    if camera.fx_range[0] <= 0 or camera.fx_range[0] > camera.fx_range[1]:
        raise SceneMakerError("config: data.camera.fx_range must be increasing and positive")
    if cfg.data.scenes_per_shard < 1:
        raise SceneMakerError("config: data.scenes_per_shard must be >= 1")
    export, relations = cfg.export, cfg.relations
    if min(export.density_kg_m3, export.ground_size_m, export.min_thickness_m) <= 0:
        raise SceneMakerError("config: export.density_kg_m3, ground_size_m and min_thickness_m "
                              "must be > 0")
    if not 0 < relations.contact_tolerance_m < relations.near_distance_m:
        raise SceneMakerError("config: need 0 < relations.contact_tolerance_m < "
                              "relations.near_distance_m")
    if relations.samples_per_object < 1:
        raise SceneMakerError("config: relations.samples_per_object must be >= 1")
    bt = cfg.boundary_train
    if min(bt.steps, bt.batch_size, bt.val_scenes, bt.log_every, bt.checkpoint_every) < 1 or \
            bt.crop_px < 16 or bt.crop_px % 16:
        raise SceneMakerError("config: boundary_train counts must be >= 1 and crop_px a "
                              "multiple of 16")
    if min(bt.lr, bt.positive_weight) <= 0 or not 0 <= bt.sensor_depth_prob <= 1:
        raise SceneMakerError("config: boundary_train.lr and positive_weight must be > 0, "
                              "sensor_depth_prob in [0, 1]")
    ct = cfg.completion_train
    if min(ct.steps, ct.batch_size, ct.val_objects, ct.log_every, ct.checkpoint_every,
           ct.min_pixels) < 1 or ct.scenes < 0:
        raise SceneMakerError("config: completion_train counts must be >= 1 (scenes >= 0)")
    if ct.lr <= 0 or not 0 <= ct.sensor_depth_prob <= 1:
        raise SceneMakerError("config: completion_train.lr must be > 0, sensor_depth_prob in "
                              "[0, 1]")
    _validate_node(cfg.node)
    _validate_deocclusion(cfg)
    return cfg


def _validate_deocclusion(cfg: SceneMakerConfig) -> None:
    """pipeline.deocclusion.flux_kontext, deocclusion_data, deocclusion_train."""
    kontext, data, train = cfg.pipeline.deocclusion.flux_kontext, cfg.deocclusion_data, \
        cfg.deocclusion_train
    for key, resolution in (("pipeline.deocclusion.flux_kontext", kontext.resolution),
                            ("deocclusion_train", train.resolution)):
        if resolution < 16 or resolution % 16:
            raise SceneMakerError(f"config: {key}.resolution must be a positive multiple of 16")
    if min(kontext.steps, kontext.max_sequence_length) < 1 or kontext.crop_margin < 0 \
            or not 0 <= kontext.background_threshold <= 255:
        raise SceneMakerError("config: pipeline.deocclusion.flux_kontext: steps and "
                              "max_sequence_length must be >= 1, crop_margin >= 0, "
                              "background_threshold in 0..255")
    low, high = data.hidden_fraction
    if not 0 <= low < high < 1 or not 0 <= data.crop_margin[0] <= data.crop_margin[1]:
        raise SceneMakerError("config: deocclusion_data.hidden_fraction must be increasing in "
                              "[0, 1), crop_margin increasing and >= 0")
    if min(data.strategy_weights) < 0 or sum(data.strategy_weights) <= 0:
        raise SceneMakerError("config: deocclusion_data.strategy_weights must be >= 0, not all 0")
    if min(data.objects_per_scene, data.scenes_per_chunk) < 1 \
            or not 0 <= data.generic_prompt_prob <= 1:
        raise SceneMakerError("config: deocclusion_data.objects_per_scene and scenes_per_chunk "
                              "must be >= 1, generic_prompt_prob in [0, 1]")
    if min(train.rank, train.steps, train.batch_size, train.grad_accumulation) < 1 \
            or not train.lr > 0 or not train.target_modules:
        raise SceneMakerError("config: deocclusion_train: rank, steps, batch_size and "
                              "grad_accumulation must be >= 1, lr > 0, target_modules not empty")


def _validate_node(node: NodeConfig) -> None:
    if min(node.max_rate_hz, node.sync_slop_s, node.track_max_distance_m,
           node.fresh_frame_wait_s) < 0:
        raise SceneMakerError("config: node.max_rate_hz, sync_slop_s, track_max_distance_m and "
                              "fresh_frame_wait_s must be >= 0")
    if node.sync_queue_size < 1 or not node.depth_scale > 0 or not node.diagnostics_period_s > 0 \
            or not node.generate_timeout_s > 0:
        raise SceneMakerError("config: node.sync_queue_size must be >= 1, depth_scale, "
                              "diagnostics_period_s and generate_timeout_s > 0")
    if (node.stream_formats or node.publish_sdf) and not node.live_scene:
        raise SceneMakerError("config: node.stream_formats and node.publish_sdf need "
                              "node.live_scene: true (they are made from the live scene folder)")
    unknown = sorted(set(node.stream_formats) - {"sdf", "usd", "urdf", "glb"})
    if unknown:
        raise SceneMakerError(f"config: node.stream_formats: unknown format {unknown[0]!r} "
                              "(sdf, usd, urdf, glb)")


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None
                ) -> SceneMakerConfig:
    """Defaults, then the YAML file (if any), then dotted overrides ({"data.shadows": False})."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise SceneMakerError(f"{path}: config file not found") from None
        except yaml.YAMLError as err:
            raise SceneMakerError(f"{path}: invalid YAML ({err})") from None
    data = _unwrap_ros_parameters(data, str(path))
    for dotted, value in (overrides or {}).items():
        _set_dotted(data, dotted, value)
    return validate_config(config_from_dict(SceneMakerConfig, data))


def _unwrap_ros_parameters(data: Any, source: str) -> Any:
    """A ROS 2 parameters file (``<node>: {ros__parameters: {...}}``, the node name or ``/**``)
    -> its parameters, dotted keys (``pose.steps: 4``) expanded; any other mapping as it is."""
    if not isinstance(data, dict):
        return data
    blocks = [v["ros__parameters"] for v in data.values()
              if isinstance(v, dict) and "ros__parameters" in v]
    if not blocks:
        return data
    if len(blocks) > 1 or len(blocks) != len(data):
        raise SceneMakerError(f"{source}: give one node's ros__parameters (e.g. '/**'), found "
                              f"{sorted(data)}")
    expanded: dict[str, Any] = {}
    for key, value in (blocks[0] or {}).items():
        _set_dotted(expanded, str(key), value)
    return expanded


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """data["a"]["b"] = value for dotted "a.b", creating the mappings on the way."""
    *parents, leaf = dotted.split(".")
    for name in parents:
        data = data.setdefault(name, {})
    data[leaf] = value


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (tuples as lists) suitable for YAML/JSON."""
    def plain(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value
    return plain(dataclasses.asdict(cfg))


def save_config(cfg: SceneMakerConfig, path: str | Path) -> None:
    """Write the effective config next to the outputs it produced."""
    write_text_atomic(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
