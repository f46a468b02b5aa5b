"""One synthetic scene: procedural shapes -> stable layout -> random camera -> RGB-D render + truth.

Our stand-in for the paper's 200K Objaverse/Blender scene set. Ground truth follows the scene
folder contract (``scenemaker_ros.scene``): poses map canonical meshes into the camera optical
frame (REP 103), metres.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scenemaker_ros.config import CameraSamplingConfig, DataConfig
from scenemaker_ros.scene import CameraIntrinsics, Scene, SceneObject
from scenemaker_ros.synth.layout import PlacedObject, layout_scene
from scenemaker_ros.synth.noise import apply_depth_noise
from scenemaker_ros.synth.render import (
    AmodalRender,
    Camera,
    RenderObject,
    SceneRenderer,
    random_appearance,
    random_environment,
)
from scenemaker_ros.synth.shapes import Shape, sample_shape
from scenemaker_ros.timing import StageTimer

CAMERA_FRAME = "camera_color_optical_frame"


@dataclass
class SceneSample:
    """A rendered scene with its ground truth.

    rgb (H, W, 3) uint8; depth (H, W) float32 metres, 0 = invalid (clean z-depth);
    depth_sensor: the same with sensor noise, or None when noise is off; instance (H, W) uint16,
    0 = no object, k + 1 = ``scene.objects[k]``; meshes: canonical (V, 3) float, (F, 3) int by
    object id; symmetries: canonical symmetry rotations (M, 3, 3) by object id; amodal: the
    object rendered alone, by object id (empty when ``render_alone`` is off).
    """

    rgb: np.ndarray
    depth: np.ndarray
    depth_sensor: np.ndarray | None
    instance: np.ndarray
    scene: Scene
    meshes: dict[int, tuple[np.ndarray, np.ndarray]]
    symmetries: dict[int, np.ndarray]
    amodal: dict[int, AmodalRender]


def look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Camera optical frame (x right, y down, z forward) -> world (z up) at ``eye``, 4x4."""
    eye, target = np.asarray(eye, dtype=np.float64), np.asarray(target, dtype=np.float64)
    forward = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    T = np.eye(4)
    T[:3, :3] = np.stack([right, np.cross(forward, right), forward], axis=1)
    T[:3, 3] = eye
    return T


def sample_camera(points: np.ndarray, cfg: CameraSamplingConfig, rng: np.random.Generator
                  ) -> Camera:
    """A pinhole camera on a sphere around the scene whose view holds all ``points`` (N, 3)."""
    fx = rng.uniform(*cfg.fx_range)
    fy = fx * rng.uniform(0.995, 1.005)
    cx = cfg.width / 2 + rng.uniform(-cfg.principal_jitter_px, cfg.principal_jitter_px)
    cy = cfg.height / 2 + rng.uniform(-cfg.principal_jitter_px, cfg.principal_jitter_px)
    K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    lo, hi = points.min(axis=0), points.max(axis=0)
    target = (lo + hi) / 2
    radius = np.linalg.norm(points - target, axis=1).max()
    half_fov = min(np.arctan(cfg.width / 2 / fx), np.arctan(cfg.height / 2 / fy))
    distance = np.clip(radius / np.sin(half_fov) * rng.uniform(*cfg.distance_margin),
                       cfg.min_distance_m, cfg.max_distance_m)
    elevation = np.deg2rad(rng.uniform(*cfg.elevation_deg))
    azimuth = rng.uniform(0.0, 2.0 * np.pi)
    direction = np.array([np.cos(elevation) * np.cos(azimuth),
                          np.cos(elevation) * np.sin(azimuth), np.sin(elevation)])
    return Camera(K=K, width=cfg.width, height=cfg.height,
                  T_world_cam=look_at(target + distance * direction, target))


def generate_scene(cfg: DataConfig, rng: np.random.Generator, shapes: list[Shape] | None = None,
                   timer: StageTimer | None = None) -> SceneSample:
    """Lay out, photograph and annotate one scene; ``shapes`` default to random procedural ones."""
    timer = timer or StageTimer()
    if shapes is None:
        n = int(rng.integers(cfg.scene.min_objects, cfg.scene.max_objects + 1))
        with timer("shapes"):
            shapes = _random_shapes(cfg, n, rng)
    clutter = bool(rng.random() < cfg.scene.clutter_prob)
    with timer("layout"):
        placed = layout_scene(shapes, cfg.scene, rng, clutter=clutter)
    objects = [RenderObject(vertices=p.shape.vertices, faces=p.shape.faces,
                            T_world_obj=p.T_world_obj, appearance=random_appearance(rng))
               for p in placed]
    world_points = np.concatenate(
        [o.vertices @ o.T_world_obj[:3, :3].T + o.T_world_obj[:3, 3] for o in objects])
    camera = sample_camera(world_points, cfg.camera, rng)
    env = random_environment(rng)
    env.ground_size = max(env.ground_size, float(np.abs(world_points[:, :2]).max()) + 0.3)
    env.shadows = env.shadows and cfg.shadows
    with timer("render"):
        renderer = SceneRenderer(objects, env)
        image = renderer.render(camera, rng)
    with timer("render_alone"):
        amodal = ({i: renderer.render_alone(camera, i) for i in range(len(placed))}
                  if cfg.render_alone else {})
    depth_sensor = None
    if cfg.sensor_noise:
        with timer("noise"):
            depth_sensor = apply_depth_noise(image.depth, camera.K, cfg.noise, rng)
    scene = Scene(
        frame_id=CAMERA_FRAME,
        camera=CameraIntrinsics(width=camera.width, height=camera.height, K=camera.K,
                                camera_to_world=camera.T_world_cam),
        objects=[_ground_truth_object(i, p, camera, image.instance, amodal.get(i))
                 for i, p in enumerate(placed)],
        metadata={"clutter": clutter})
    return SceneSample(
        rgb=image.rgb, depth=image.depth, depth_sensor=depth_sensor, instance=image.instance,
        scene=scene, meshes={i: (p.shape.vertices, p.shape.faces) for i, p in enumerate(placed)},
        symmetries={i: p.symmetry_rotations for i, p in enumerate(placed)}, amodal=amodal)


def _random_shapes(cfg: DataConfig, n: int, rng: np.random.Generator) -> list[Shape]:
    """n shapes from the configured source (``data.shapes``)."""
    if cfg.shapes == "random_urdfs":
        from scenemaker_ros.synth.urdf_shapes import USABLE_RANDOM_URDFS, random_urdf_shapes

        indices = rng.choice(USABLE_RANDOM_URDFS, n, replace=False)
        return random_urdf_shapes([int(i) for i in indices])
    families = cfg.scene.families or None
    return [sample_shape(int(rng.integers(2**31)), families) for _ in range(n)]


def _ground_truth_object(index: int, placed: PlacedObject, camera: Camera, instance: np.ndarray,
                         amodal: AmodalRender | None) -> SceneObject:
    visible = int((instance == index + 1).sum())
    attributes = {"family": placed.shape.family, "shape_seed": placed.shape.seed,
                  "symmetry": placed.shape.symmetry, "visible_pixels": visible,
                  "support": -1 if placed.support is None else placed.support}
    if amodal is not None:
        area = int(amodal.mask.sum())
        attributes["amodal_pixels"] = area
        attributes["amodal_bbox"] = [int(v) for v in amodal.bbox]
        attributes["visible_fraction"] = visible / area if area else 0.0
    return SceneObject(id=index, label=placed.shape.family, score=1.0,
                       mesh=f"meshes/object_{index:03d}.ply",
                       pose_matrix=np.linalg.inv(camera.T_world_cam) @ placed.T_world_obj,
                       attributes=attributes)
