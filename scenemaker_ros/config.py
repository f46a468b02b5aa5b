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

    min_pixels: int = 150  # smaller clusters are dropped
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
    normal_smoothing_px: float = 1.5  # Gaussian sigma of the point image before normals
    seed: int = 0  # RANSAC sampling: the same frame gives the same masks


@dataclass
class SegmentationConfig:
    """Instance segmentation: the backend's name and each backend's parameters."""

    backend: str = "depth_clusters"  # see scenemaker_ros.stages.segmentation.BACKENDS
    depth_clusters: DepthClustersConfig = field(default_factory=DepthClustersConfig)


@dataclass
class DepthOrderConfig:
    """The embedded "depth_order" de-occlusion (CPU, no weights)."""

    boundary_px: int = 4  # objects this close in the image share a boundary
    occlusion_margin: float = 0.005  # the front object is nearer by this fraction of the depth
    crop_margin: float = 0.1  # crop = amodal box grown by this fraction of its size per side
    inpaint_iterations: int = 30  # diffusion steps smoothing the nearest-colour fill
    background: tuple[int, int, int] = (255, 255, 255)  # crop colour off the amodal mask


@dataclass
class DeocclusionConfig:
    """De-occlusion: the backend's name and each backend's parameters."""

    backend: str = "depth_order"  # see scenemaker_ros.stages.deocclusion.BACKENDS
    depth_order: DepthOrderConfig = field(default_factory=DepthOrderConfig)


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
    seed: int = 0  # point subsampling: the same frame gives the same geometry


@dataclass
class GeometryConfig:
    """Object geometry: the backend's name and each backend's parameters."""

    backend: str = "retrieval"  # see scenemaker_ros.stages.geometry.BACKENDS
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)


@dataclass
class PipelineConfig:
    """``scenemaker run`` and the ROS node: one sub-config per stage."""

    segmentation: SegmentationConfig = field(default_factory=SegmentationConfig)
    deocclusion: DeocclusionConfig = field(default_factory=DeocclusionConfig)
    geometry: GeometryConfig = field(default_factory=GeometryConfig)


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
    device: str = "cpu"  # "cpu", "cuda", "cuda:1", ...


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


@dataclass
class SceneMakerConfig:
    data: DataConfig = field(default_factory=DataConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    pose: PoseConfig = field(default_factory=PoseConfig)
    train: PoseTrainConfig = field(default_factory=PoseTrainConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    relations: RelationsConfig = field(default_factory=RelationsConfig)


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
    if min(geo.max_scale_change, geo.known_max_score, geo.known_size_tolerance) < 0:
        raise SceneMakerError(f"{key}max_scale_change, known_max_score and known_size_tolerance "
                              "must be >= 0")


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
    return cfg


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
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = value
    return validate_config(config_from_dict(SceneMakerConfig, data))


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
