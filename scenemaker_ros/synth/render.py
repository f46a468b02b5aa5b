"""Synthetic RGB-D renderer: textured objects on a finite support plane, raycast with open3d.

Our stand-in for the paper's Blender renders. One ``RaycastingScene`` holds the objects and the
ground; a render casts one ray per pixel, shades hits with Lambert + ambient + a Blinn-Phong
highlight, optionally casts hard shadows with a second raycast towards the light, and fills
missed rays with a procedural background.

Conventions: poses are (4, 4) float64; ``T_a_b`` maps points in frame b to frame a. The camera
frame is the ROS optical frame (REP 103: x right, y down, z forward). World: z up, support plane
z = 0, a square of half-extent ``Environment.ground_size`` centred on the world origin. K follows
the OpenCV convention: pixel (u, v) is centred on the integer coordinates (u, v).
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import product
from typing import Literal

import numpy as np
import open3d as o3d

from scenemaker_ros.geometry import project_points, transform_points

Pattern = Literal["plain", "checker", "stripes", "noise"]
PATTERNS: tuple[Pattern, ...] = ("plain", "checker", "stripes", "noise")
AMODAL_BACKGROUND = np.array([255, 255, 255], np.uint8)  # colour around an object rendered alone

_GROUND, _NOTHING = -1, -2  # owners of ground hits and of misses; objects own their index

_SHADOW_OFFSET_M = 1e-3  # shadow rays start this far off the surface, along its normal
_SHININESS = 32.0  # Blinn-Phong exponent of the specular highlight
_BACKGROUND_NOISE_CELL_PX = 96.0  # feature size of the "noise" background, pixels


def _rgb(color) -> np.ndarray:
    return np.asarray(color, np.float64).reshape(3)


@dataclass
class Camera:
    """A pinhole camera.

    K: (3, 3) float64 intrinsics, pixels (OpenCV convention). width, height: image size, pixels.
    T_world_cam: (4, 4) float64 pose, camera optical frame -> world.
    """

    K: np.ndarray
    width: int
    height: int
    T_world_cam: np.ndarray

    def __post_init__(self):
        self.K = np.asarray(self.K, np.float64)
        self.T_world_cam = np.asarray(self.T_world_cam, np.float64)


@dataclass
class Appearance:
    """Material of one object; textures live in the object's canonical frame.

    color, color2: (3,) float RGB in [0, 1], the base and the pattern colour.
    pattern: "checker" (3D cells), "stripes" (bands along canonical z), "noise" (smooth blotches).
    pattern_scale: pattern cycles per canonical object size (the largest side of its bounding box).
    specular: highlight strength in [0, 1]. seed: seed of the "noise" pattern.
    """

    color: np.ndarray = field(default_factory=lambda: np.array([0.6, 0.6, 0.6]))
    color2: np.ndarray = field(default_factory=lambda: np.array([0.3, 0.3, 0.3]))
    pattern: Pattern = "plain"
    pattern_scale: float = 3.0
    specular: float = 0.0
    seed: int = 0

    def __post_init__(self):
        self.color, self.color2 = _rgb(self.color), _rgb(self.color2)


@dataclass
class RenderObject:
    """A triangle mesh placed in the world.

    vertices: (V, 3) float, canonical object frame. faces: (F, 3) int vertex indices.
    T_world_obj: (4, 4) float64, canonical -> world, may include scale (world = T @ [v, 1]).
    """

    vertices: np.ndarray
    faces: np.ndarray
    T_world_obj: np.ndarray
    appearance: Appearance = field(default_factory=Appearance)


@dataclass
class Environment:
    """The randomised look of a scene: ground, background and lighting.

    ground_color, ground_color2: (3,) float RGB in [0, 1]; ground_pattern_scale: size of one
    pattern cell (checker square, stripe, noise feature) in metres; ground_size: half-extent of
    the square support plane, metres. background: look of rays that hit nothing ("gradient" runs
    from background_color at the top row to background_color2 at the bottom).
    light_direction: (3,) unit vector, world frame, from the scene towards the (directional)
    light. ambient, light_intensity: shading weights, a lit up-facing white surface gets their sum.
    pixel_noise_std: std of Gaussian RGB noise in [0, 1] units, added when render() gets an rng.
    seed: seed of the ground and background noise patterns.
    """

    ground_color: np.ndarray = field(default_factory=lambda: np.array([0.55, 0.5, 0.45]))
    ground_color2: np.ndarray = field(default_factory=lambda: np.array([0.4, 0.36, 0.32]))
    ground_pattern: Pattern = "plain"
    ground_pattern_scale: float = 0.1
    ground_size: float = 1.0
    background: Literal["gradient", "noise", "solid"] = "gradient"
    background_color: np.ndarray = field(default_factory=lambda: np.array([0.75, 0.8, 0.85]))
    background_color2: np.ndarray = field(default_factory=lambda: np.array([0.45, 0.45, 0.5]))
    light_direction: np.ndarray = field(default_factory=lambda: np.array([0.3, 0.2, 0.93]))
    ambient: float = 0.35
    light_intensity: float = 0.7
    shadows: bool = True
    pixel_noise_std: float = 0.0
    seed: int = 0

    def __post_init__(self):
        for name in ("ground_color", "ground_color2", "background_color", "background_color2"):
            setattr(self, name, _rgb(getattr(self, name)))
        light = _rgb(self.light_direction)
        self.light_direction = light / np.linalg.norm(light)


@dataclass
class RenderOutput:
    """One RGB-D frame.

    rgb: (H, W, 3) uint8. depth: (H, W) float32 z-depth in metres, 0 where no surface.
    instance: (H, W) uint16, 0 = ground or background, k + 1 = object k.
    normals: (H, W, 3) float32 unit surface normals in the camera frame, facing the camera,
    0 where no surface.
    """

    rgb: np.ndarray
    depth: np.ndarray
    instance: np.ndarray
    normals: np.ndarray


@dataclass
class AmodalRender:
    """One object rendered alone, unoccluded: the de-occlusion target.

    bbox: (x0, y0, x1, y1) int half-open pixel box of the amodal mask in the full image,
    (0, 0, 0, 0) when the object is not in view. mask: (y1 - y0, x1 - x0) bool amodal mask.
    rgb: (y1 - y0, x1 - x0, 3) uint8, the object lit as in the scene (self-shadowed, no shadows
    from other objects, no pixel noise) over the neutral AMODAL_BACKGROUND. depth: (y1 - y0,
    x1 - x0) float32 z-depth in metres of the object alone, 0 off the object.
    """

    bbox: tuple[int, int, int, int]
    mask: np.ndarray
    rgb: np.ndarray
    depth: np.ndarray


def random_appearance(rng: np.random.Generator) -> Appearance:
    """A random material: any hue, a related or contrasting second colour, a random pattern."""
    hue, sat, val = rng.random(), rng.uniform(0.25, 0.9), rng.uniform(0.35, 0.95)
    if rng.random() < 0.5:
        hue2, sat2, val2 = (hue + rng.uniform(0.3, 0.7)) % 1.0, sat, val
    else:
        hue2, sat2, val2 = hue, sat * rng.uniform(0.5, 1.0), val * rng.uniform(0.4, 0.8)
    return Appearance(
        color=np.array(colorsys.hsv_to_rgb(hue, sat, val)),
        color2=np.array(colorsys.hsv_to_rgb(hue2, sat2, val2)),
        pattern=PATTERNS[rng.choice(len(PATTERNS), p=[0.4, 0.2, 0.2, 0.2])],
        pattern_scale=rng.uniform(1.5, 5.0),
        specular=rng.uniform(0.0, 0.4),
        seed=int(rng.integers(2**31)),
    )


def random_environment(rng: np.random.Generator) -> Environment:
    """A random table-top look: wood-ish or muted ground, varied background, light from above."""
    if rng.random() < 0.6:  # wood tones
        hue, sat, val = rng.uniform(0.04, 0.12), rng.uniform(0.2, 0.6), rng.uniform(0.35, 0.85)
    else:  # any muted colour
        hue, sat, val = rng.random(), rng.uniform(0.0, 0.3), rng.uniform(0.3, 0.9)
    elevation, azimuth = np.deg2rad(rng.uniform(35.0, 80.0)), rng.uniform(0.0, 2 * np.pi)
    muted = [colorsys.hsv_to_rgb(rng.random(), rng.uniform(0, 0.4), rng.uniform(0.2, 0.95))
             for _ in range(2)]
    return Environment(
        ground_color=np.array(colorsys.hsv_to_rgb(hue, sat, val)),
        ground_color2=np.array(colorsys.hsv_to_rgb(hue, sat, val * rng.uniform(0.6, 0.9))),
        ground_pattern=PATTERNS[rng.choice(len(PATTERNS), p=[0.25, 0.2, 0.2, 0.35])],
        ground_pattern_scale=rng.uniform(0.03, 0.15),
        ground_size=rng.uniform(0.6, 1.5),
        background=("gradient", "noise", "solid")[rng.integers(3)],
        background_color=np.array(muted[0]),
        background_color2=np.array(muted[1]),
        light_direction=np.array([np.cos(elevation) * np.cos(azimuth),
                                  np.cos(elevation) * np.sin(azimuth), np.sin(elevation)]),
        ambient=rng.uniform(0.3, 0.5),
        light_intensity=rng.uniform(0.55, 0.85),
        shadows=bool(rng.random() < 0.85),
        pixel_noise_std=rng.uniform(0.0, 0.02),
        seed=int(rng.integers(2**31)),
    )


class SceneRenderer:
    """Renders RenderObjects standing on the Environment's ground, from any Camera."""

    def __init__(self, objects: Sequence[RenderObject], env: Environment):
        if len(objects) >= np.iinfo(np.uint16).max:
            raise ValueError(f"at most {np.iinfo(np.uint16).max - 1} objects, got {len(objects)}")
        self.objects, self.env = list(objects), env
        self._meshes = [(transform_points(o.T_world_obj, o.vertices).astype(np.float32),
                         np.asarray(o.faces, np.uint32)) for o in objects]
        self._obj_from_world = [np.linalg.inv(o.T_world_obj) for o in objects]
        self._cells_per_unit = [
            2.0 * o.appearance.pattern_scale / _canonical_size(o.vertices) for o in objects]
        s = env.ground_size
        ground = (np.array([[-s, -s, 0], [s, -s, 0], [s, s, 0], [-s, s, 0]], np.float32),
                  np.array([[0, 1, 2], [0, 2, 3]], np.uint32))
        self._raycaster = _Raycaster([*self._meshes, ground], [*range(len(objects)), _GROUND])
        self._alone_raycasters: dict[int, _Raycaster] = {}

    def render(self, camera: Camera, rng: np.random.Generator | None = None) -> RenderOutput:
        """Render the full frame; rng adds Gaussian pixel noise (none when rng is None)."""
        rays = _camera_rays(camera, (0, 0, camera.width, camera.height))
        depth, owner, normals = self._raycaster.cast(rays)
        rgb = self._shade(self._raycaster, rays, depth, owner, normals)
        missed = np.flatnonzero(owner == _NOTHING)
        rgb[missed] = _background(self.env, missed, camera.width, camera.height)
        shape = (camera.height, camera.width)
        return RenderOutput(
            rgb=_to_uint8(rgb, self.env.pixel_noise_std, rng).reshape(*shape, 3),
            depth=depth.reshape(shape),
            instance=np.maximum(owner + 1, 0).astype(np.uint16).reshape(shape),
            normals=(normals @ camera.T_world_cam[:3, :3].astype(np.float32)).reshape(*shape, 3),
        )

    def render_alone(self, camera: Camera, index: int) -> AmodalRender:
        """Render object `index` alone, casting only the rays inside its projected vertices' box."""
        x0, y0, x1, y1 = _projected_box(camera, self._meshes[index][0])
        if x1 <= x0 or y1 <= y0:
            return _empty_amodal()
        if index not in self._alone_raycasters:
            self._alone_raycasters[index] = _Raycaster([self._meshes[index]], [index])
        raycaster = self._alone_raycasters[index]
        rays = _camera_rays(camera, (x0, y0, x1, y1))
        depth, owner, normals = raycaster.cast(rays)
        rgb = self._shade(raycaster, rays, depth, owner, normals)
        hit = owner != _NOTHING
        rgb[~hit] = AMODAL_BACKGROUND / 255.0
        mask = hit.reshape(y1 - y0, x1 - x0)
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if len(rows) == 0:
            return _empty_amodal()
        crop = np.s_[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        return AmodalRender(
            bbox=(x0 + int(cols[0]), y0 + int(rows[0]), x0 + int(cols[-1]) + 1,
                  y0 + int(rows[-1]) + 1),
            mask=mask[crop],
            rgb=_to_uint8(rgb, 0.0, None).reshape(*mask.shape, 3)[crop],
            depth=depth.reshape(mask.shape)[crop],
        )

    def _shade(self, raycaster: _Raycaster, rays, depth, owner, normals) -> np.ndarray:
        """(N, 3) float colours of N rays from _Raycaster.cast, arbitrary where they missed."""
        dirs = rays[:, 3:]
        points = rays[:, :3] + depth[:, None] * dirs
        albedo = self._ground_albedo(points)  # everywhere, objects paint over it
        specular = np.zeros(len(rays), np.float32)
        for k in raycaster.objects:
            sel = owner == k
            albedo[sel] = self._object_albedo(k, points[sel])
            specular[sel] = self.objects[k].appearance.specular
        return _lighting(albedo, specular, points, normals, dirs, self.env, raycaster.scene)

    def _object_albedo(self, index: int, points: np.ndarray) -> np.ndarray:
        """(N, 3) or (3,) albedo of object `index` at world points (N, 3), textured in its
        canonical frame."""
        app = self.objects[index].appearance
        if app.pattern == "plain":
            return app.color
        cells = transform_points(self._obj_from_world[index], points) * self._cells_per_unit[index]
        return _mix(app.color, app.color2, _pattern_weight(app.pattern, cells, app.seed))

    def _ground_albedo(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) float32 albedo of the ground at world points (N, 3), textured in world metres."""
        env = self.env
        if env.ground_pattern == "plain":
            return np.tile(env.ground_color.astype(np.float32), (len(points), 1))
        weight = _pattern_weight(env.ground_pattern, points[:, :2] / env.ground_pattern_scale,
                                 env.seed)
        return _mix(env.ground_color, env.ground_color2, weight)


class _Raycaster:
    """A RaycastingScene of meshes and the owner of each: an object index or _GROUND."""

    def __init__(self, meshes: Sequence[tuple[np.ndarray, np.ndarray]], owners: Sequence[int]):
        self.scene = o3d.t.geometry.RaycastingScene()
        for vertices, faces in meshes:  # (V, 3) float32 world vertices, (F, 3) uint32 faces
            self.scene.add_triangles(vertices, faces)
        self.owners = np.array([*owners, _NOTHING])  # a miss's id, INVALID_ID, clips to the last
        self.objects = [k for k in owners if k >= 0]

    def cast(self, rays: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Cast (N, 6) world rays. Returns t_hit (N,) float32 (0 on a miss; z-depth for camera
        rays), owner (N,) int (_NOTHING on a miss) and unit world normals (N, 3) float32 facing
        the ray origin (0 on a miss)."""
        hits = self.scene.cast_rays(rays)
        owner = self.owners[np.minimum(hits["geometry_ids"].numpy(), len(self.owners) - 1)]
        t_hit = np.where(owner == _NOTHING, np.float32(0), hits["t_hit"].numpy())
        normals = hits["primitive_normals"].numpy()
        normals *= np.where(_dot(normals, rays[:, 3:]) > 0, np.float32(-1), np.float32(1))[:, None]
        return t_hit, owner, normals


def _canonical_size(vertices: np.ndarray) -> float:
    """The largest side of the (V, 3) vertices' axis-aligned box, 1 for a degenerate mesh."""
    size = float(np.ptp(vertices, axis=0).max()) if len(vertices) else 0.0
    return size if size > 0 else 1.0


def _camera_rays(camera: Camera, box: tuple[int, int, int, int]) -> np.ndarray:
    """World rays (h * w, 6) float32 [origin, direction] through the pixels of box (x0, y0, x1, y1).

    direction = R K^-1 [u, v, 1] has unit z in the camera frame, so a hit's t is its z-depth.
    Element-wise arithmetic per absolute pixel makes a box's rays equal the full image's, bit for
    bit, so render_alone's masks agree exactly with render's.
    """
    x0, y0, x1, y1 = box
    M = camera.T_world_cam[:3, :3] @ np.linalg.inv(camera.K)
    column_terms = np.arange(x0, x1, dtype=np.float64)[:, None] * M[:, 0]  # (w, 3)
    row_terms = np.arange(y0, y1, dtype=np.float64)[:, None] * M[:, 1] + M[:, 2]  # (h, 3)
    rays = np.empty((y1 - y0, x1 - x0, 6), np.float32)
    rays[..., :3] = camera.T_world_cam[:3, 3]
    np.add(column_terms[None], row_terms[:, None], out=rays[..., 3:], casting="same_kind")
    return rays.reshape(-1, 6)


def _projected_box(camera: Camera, points: np.ndarray) -> tuple[int, int, int, int]:
    """Half-open pixel box (x0, y0, x1, y1), clipped to the image, holding the projections of
    world points (N, 3) with a one-pixel margin; the whole image if any point is behind the camera.
    """
    p = transform_points(np.linalg.inv(camera.T_world_cam), points)
    if np.any(p[:, 2] <= 1e-6):
        return 0, 0, camera.width, camera.height
    uv = project_points(camera.K, p)
    lo, hi = np.floor(uv.min(axis=0)), np.ceil(uv.max(axis=0)) + 1
    size = np.array([camera.width, camera.height])
    x0, y0 = np.clip(lo, 0, size).astype(int)
    x1, y1 = np.clip(hi, 0, size).astype(int)
    return int(x0), int(y0), int(x1), int(y1)


def _lighting(albedo, specular, points, normals, dirs, env: Environment, scene) -> np.ndarray:
    """Lambert + sky-weighted ambient + Blinn-Phong shading of N hits, (N, 3) float.

    albedo: (N, 3); specular: (N,); points, normals, dirs: (N, 3) world hit points, camera-facing
    unit normals and ray directions. With env.shadows, points that see `scene` towards the light
    get ambient light only.
    """
    light = env.light_direction.astype(np.float32)
    n_dot_l = normals @ light
    lit = n_dot_l > 0
    if env.shadows:  # casting from every point beats gathering the lit ones first
        shadow_rays = np.empty((len(points), 6), np.float32)
        shadow_rays[:, :3] = points + _SHADOW_OFFSET_M * normals
        shadow_rays[:, 3:] = light
        lit &= ~scene.test_occlusions(shadow_rays).numpy()
    ambient = env.ambient * (0.75 + 0.25 * normals[:, 2])  # up-facing surfaces see more sky
    light_gain = ambient + env.light_intensity * np.where(lit, n_dot_l, 0)
    color = albedo * light_gain[:, None]
    shiny = lit & (specular > 0)
    half = light - dirs[shiny] / np.sqrt(_dot(dirs[shiny], dirs[shiny]))[:, None]
    n_dot_h = _dot(normals[shiny], half) / np.sqrt(_dot(half, half))
    highlight = env.light_intensity * specular[shiny] * np.clip(n_dot_h, 0, None) ** _SHININESS
    color[shiny] += highlight[:, None]
    return color


def _background(env: Environment, pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """(M, 3) float colours of rays that hit nothing, at (M,) flat pixel indices of a W x H image.
    """
    v, u = np.divmod(pixels, width)
    if env.background == "solid":
        weight = np.zeros(len(pixels))
    elif env.background == "gradient":
        weight = v / max(height - 1, 1)
    elif env.background == "noise":
        weight = _fractal_noise(np.stack([u, v], axis=1) / _BACKGROUND_NOISE_CELL_PX, env.seed)
    else:
        raise ValueError(f"unknown background {env.background!r}")
    return _mix(env.background_color, env.background_color2, weight)


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N,) row-wise dot products of (N, 3) arrays."""
    return np.einsum("ij,ij->i", a, b)


def _mix(color: np.ndarray, color2: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """(N, 3) float32 blend of two (3,) colours with weights (N,) of color2."""
    color, color2 = color.astype(np.float32), color2.astype(np.float32)
    return color + (color2 - color) * weight.astype(np.float32)[:, None]


def _pattern_weight(pattern: Literal["checker", "stripes", "noise"], cells: np.ndarray,
                    seed: int) -> np.ndarray:
    """(N,) weight in [0, 1] of the second colour at points (N, d) in units of pattern cells."""
    if pattern == "checker":  # the 0.25 offset keeps cell borders off faces at round coordinates
        return np.floor(cells + 0.25).sum(axis=1) % 2
    if pattern == "stripes":  # bands across the last axis (canonical z; world y on the ground)
        return np.floor(cells[:, -1] + 0.25) % 2
    if pattern == "noise":
        return _fractal_noise(cells, seed)
    raise ValueError(f"unknown pattern {pattern!r}")


def _fractal_noise(points: np.ndarray, seed: int) -> np.ndarray:
    """(N,) two-octave value noise in [0, 1] at points (N, d), features about one unit wide."""
    value = 0.65 * _value_noise(points, seed) + 0.35 * _value_noise(2.03 * points, seed + 1)
    return np.clip(2.0 * (value - 0.5) + 0.5, 0.0, 1.0)  # stretch contrast away from grey


def _value_noise(points: np.ndarray, seed: int) -> np.ndarray:
    """(N,) smooth value noise in [0, 1] at points (N, d): smoothstep-blended hashed lattice values.
    """
    cell = np.floor(points)
    frac = points - cell
    smooth = frac * frac * (3.0 - 2.0 * frac)
    weights = (1.0 - smooth, smooth)  # per-axis weights of the lower and upper lattice corner
    # Lattice key, linear in the cell coordinates so a corner's key is base + offset (mod 2**64).
    dims = points.shape[1]
    primes = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9][:dims],
                      np.uint64)
    base = cell.astype(np.int64).view(np.uint64) @ primes + np.uint64(seed) * np.uint64(0x27D4EB2F)
    value = np.zeros(len(points))
    for corner in product((0, 1), repeat=dims):
        weight = weights[corner[0]][:, 0]
        for axis in range(1, dims):
            weight = weight * weights[corner[axis]][:, axis]
        value += weight * _hash01(base + np.array(corner, np.uint64) @ primes)
    return value


def _hash01(keys: np.ndarray) -> np.ndarray:
    """(N,) uniform floats in [0, 1) from (N,) uint64 keys (the murmur3 64-bit finaliser)."""
    h = keys ^ (keys >> np.uint64(33))
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    h ^= h >> np.uint64(33)
    return (h >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _to_uint8(rgb: np.ndarray, noise_std: float, rng: np.random.Generator | None) -> np.ndarray:
    """Float colours in [0, 1] -> uint8, plus Gaussian noise of std `noise_std` if rng is given."""
    if rng is not None and noise_std > 0:
        rgb = rgb + noise_std * rng.standard_normal(rgb.shape, dtype=np.float32)
    return (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _empty_amodal() -> AmodalRender:
    return AmodalRender((0, 0, 0, 0), np.zeros((0, 0), bool), np.zeros((0, 0, 3), np.uint8),
                        np.zeros((0, 0), np.float32))
