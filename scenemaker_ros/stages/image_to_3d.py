"""The "image_to_3d" geometry backend: each de-occluded crop -> a generated mesh (GPU).

SceneMaker's geometry comes from an image-to-3D generator fed the de-occluded object. Here a
generator is wrapped by an adapter (the ImageTo3DAdapter protocol):

    generate(rgb (h, w, 3) uint8, mask (h, w) bool) -> vertices (V, 3) float, faces (F, 3) int

rgb is the de-occlusion crop (hidden parts completed), mask the object's amodal mask in it;
the vertices are in the generator's own units, +z up. The backend maps them to the canonical
frame of our library shapes (bounding-box centred, longest side 1, ``canonical_frame``); the
pose model then places and scales the mesh from the observed depth, so the generator's scale
and position never matter, only its up axis. Objects with fewer than ``min_points`` depth
points, or whose mesh comes out empty, get no geometry. Known meshes (``--objects``) are
ignored by this backend (a warning); the "retrieval" backend uses them.

Adapters (``ADAPTERS``, chosen by ``pipeline.geometry.image_to_3d.adapter``):

- "shap_e": diffusers ``ShapEImg2ImgPipeline`` (openai/shap-e-img2img): latents from the
  crop, decoded by its renderer as an SDF on a ``mesh_resolution``^3 grid through marching
  cubes (z up). The crop is composited on white outside the mask and padded to a square, as
  Shap-E's training renders were.

Other generators plug in as one adapter class each plus an ``ADAPTERS`` entry, with no change
elsewhere: Hunyuan3D-2 (tencent/Hunyuan3D-2, the ``hy3dgen`` shape pipeline), TRELLIS
(microsoft/TRELLIS-image-large) and Step1X-3D (stepfun-ai/Step1X-3D) each take one object
image (RGB, or RGBA with the mask as alpha for a removed background) and return a triangle
mesh. The adapter builds that input from (rgb, mask), runs the pipeline inside
``Runtime.call`` and returns the mesh's vertices turned to +z up (their GLB exports are y up:
(x, y, z) -> (x, -z, y)) and its faces. They are not shipped here: their packages are not
on PyPI with pinned versions and their weights need 6-24 GB of GPU memory.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch

from scenemaker_ros.config import GeometryConfig, ImageTo3DConfig
from scenemaker_ros.errors import SceneMakerError
from scenemaker_ros.frames import RGBDFrame
from scenemaker_ros.geometry import compose_pose, transform_points
from scenemaker_ros.pose.estimator import canonical_frame
from scenemaker_ros.stages.deocclusion import DeoccludedObject
from scenemaker_ros.stages.geometry import KnownObject, ObjectGeometry, describe
from scenemaker_ros.stages.hub import Runtime, require
from scenemaker_ros.stages.segmentation import SupportPlane

log = logging.getLogger(__name__)

KEY = "pipeline.geometry.image_to_3d"
LABEL = "object"  # generated meshes carry no class name


class ImageTo3DAdapter(Protocol):
    def generate(self, rgb: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """rgb (h, w, 3) uint8 crop, mask (h, w) bool the object in it -> vertices (V, 3)
        float64 (+z up, any scale), faces (F, 3) int64; empty arrays when nothing came out."""
        ...


# -----------------------------------------------------------------------------
# the geometry backend


class ImageTo3DGeometry:
    """One generated mesh per object from its de-occluded crop (module docstring)."""

    def __init__(self, adapter: ImageTo3DAdapter, name: str, cfg: ImageTo3DConfig):
        self.adapter, self.name, self.cfg = adapter, name, cfg

    def geometry(self, frame: RGBDFrame, points: list[np.ndarray], masks: np.ndarray,
                 crops: list[DeoccludedObject] | None = None,
                 plane: SupportPlane | None = None) -> list[ObjectGeometry | None]:
        if crops is None or len(crops) != len(points):
            raise SceneMakerError("image_to_3d geometry needs each object's de-occluded crop "
                                  "(ScenePipeline.run passes them)")
        return [self.object_geometry(p, crop) for p, crop in zip(points, crops, strict=True)]

    def object_geometry(self, points: np.ndarray, crop: DeoccludedObject
                        ) -> ObjectGeometry | None:
        """One object's generated mesh, canonical frame; T_cam_obj a coarse seed (the observed
        points' principal axes, centre and largest extent), the pose model places it."""
        if len(points) < self.cfg.min_points:
            return None
        x0, y0, x1, y1 = crop.box
        vertices, faces = self.adapter.generate(crop.rgb, crop.amodal[y0:y1, x0:x1])
        if not len(faces) or np.ptp(vertices, axis=0).max() <= 0:
            log.warning("image_to_3d: the %s generator returned an empty mesh for object %d",
                        self.name, crop.index)
            return None
        vertices = transform_points(canonical_frame(vertices), vertices)
        d = describe(points)
        seed = compose_pose(d.axes, d.centre, float(d.extents[0]))
        return ObjectGeometry(vertices, faces.astype(np.int64), LABEL,
                              f"image_to_3d:{self.name}", False, float("nan"), seed)


def square_on_white(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(s, s, 3) uint8: rgb (h, w, 3) white outside mask (h, w) bool, padded white to a centred
    square of side s = max(h, w)."""
    side = max(rgb.shape[:2])
    out = np.full((side, side, 3), 255, np.uint8)
    top, left = (side - rgb.shape[0]) // 2, (side - rgb.shape[1]) // 2
    out[top:top + rgb.shape[0], left:left + rgb.shape[1]] = np.where(mask[..., None], rgb, 255)
    return out


# -----------------------------------------------------------------------------
# adapters


class ShapEAdapter:
    """diffusers ``ShapEImg2ImgPipeline``: latents from the crop, then its renderer's
    marching-cubes mesh (z up) at ``mesh_resolution`` cells per side (``output_type="mesh"``
    fixes 128)."""

    def __init__(self, pipe, runtime: Runtime, cfg: ImageTo3DConfig):
        self.pipe, self.runtime, self.cfg = runtime.place(pipe), runtime, cfg
        self.pipe.set_progress_bar_config(disable=True)

    def generate(self, rgb: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from PIL import Image

        image = Image.fromarray(square_on_white(rgb, mask))
        generator = torch.Generator().manual_seed(self.cfg.seed)  # CPU: the same on any device
        with self.runtime.call(self.pipe):
            latents = self.pipe(image, num_inference_steps=self.cfg.steps,
                                guidance_scale=self.cfg.guidance_scale, generator=generator,
                                output_type="latent").images  # (1, tokens, width)
            try:
                mesh = self.pipe.shap_e_renderer.decode_to_mesh(
                    latents, self.runtime.device, grid_size=self.cfg.mesh_resolution)
            except ValueError as err:  # diffusers fails this way on an SDF with no surface
                log.warning("shap_e: no surface decoded (%s)", err)
                return np.zeros((0, 3)), np.zeros((0, 3), np.int64)
            vertices = mesh.verts.float().cpu().numpy().astype(np.float64)  # (V, 3)
            faces = mesh.faces.cpu().numpy().astype(np.int64)  # (F, 3)
        return vertices, faces


def _build_shap_e(cfg: ImageTo3DConfig, runtime: Runtime) -> ImageTo3DAdapter:
    diffusers = require("diffusers", "image_to_3d 'shap_e'")
    pipe = runtime.load(diffusers.ShapEImg2ImgPipeline.from_pretrained, cfg.model,
                        hub_id=ImageTo3DConfig.model, dtype=runtime.dtype)
    return ShapEAdapter(pipe, runtime, cfg)


ADAPTERS: dict[str, Callable[[ImageTo3DConfig, Runtime], ImageTo3DAdapter]] = {
    "shap_e": _build_shap_e,
}


def build_image_to_3d(cfg: GeometryConfig, known: list[KnownObject] | None = None
                      ) -> ImageTo3DGeometry:
    """The "image_to_3d" backend with the adapter cfg.image_to_3d.adapter names."""
    i3d = cfg.image_to_3d
    if i3d.adapter not in ADAPTERS:
        raise SceneMakerError(f"config: {KEY}.adapter must be one of {sorted(ADAPTERS)}, got "
                              f"{i3d.adapter!r}")
    if known:
        log.warning("image_to_3d geometry ignores the %d known meshes (--objects); the "
                    "'carving' and 'retrieval' backends use them", len(known))
    runtime = Runtime.from_config(i3d, KEY, f"image_to_3d '{i3d.adapter}'")
    return ImageTo3DGeometry(ADAPTERS[i3d.adapter](i3d, runtime), i3d.adapter, i3d)
