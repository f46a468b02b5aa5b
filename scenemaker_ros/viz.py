"""Pictures: dataset previews (RGB / depth / masks / posed meshes over the image)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from scenemaker_ros.files import atomic_path  # noqa: E402
from scenemaker_ros.geometry import project_points, transform_points  # noqa: E402

# corner order of a unit box and its 12 edges, for drawing posed bounding boxes
_BOX_CORNERS = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)])
_BOX_EDGES = [(0, 1), (2, 3), (4, 5), (6, 7), (0, 2), (1, 3), (4, 6), (5, 7), (0, 4), (1, 5),
              (2, 6), (3, 7)]


def object_colors(n: int) -> np.ndarray:
    """(n, 3) float colours in [0, 1], distinct for neighbouring ids."""
    return plt.get_cmap("tab10")(np.arange(n) % 10)[:, :3]


def instance_overlay(rgb: np.ndarray, instance: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """RGB (H, W, 3) uint8 with each instance id > 0 tinted in its colour."""
    colors = object_colors(int(instance.max()) + 1)
    out = rgb.astype(np.float32) / 255.0
    mask = instance > 0
    out[mask] = (1 - alpha) * out[mask] + alpha * colors[instance[mask] - 1]
    return out


def draw_posed_meshes(ax: plt.Axes, K: np.ndarray,
                      posed: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
                      labels: Sequence[str] | None = None,
                      ids: Sequence[int] | None = None) -> None:
    """Draw each posed mesh's wireframe and oriented box over an image axis.

    ``posed``: (canonical vertices (V, 3), faces (F, 3), pose (4, 4) canonical -> camera).
    ``ids`` (default 0, 1, ...) pick each mesh's colour and number, so that the same object looks
    the same in plots that leave some objects out.
    """
    ids = list(range(len(posed))) if ids is None else list(ids)
    colors = object_colors(max(ids, default=0) + 1)
    for i, ((vertices, faces, pose), k) in enumerate(zip(posed, ids)):
        lo, hi = vertices.min(axis=0), vertices.max(axis=0)
        box = (lo + hi) / 2 + _BOX_CORNERS * (hi - lo)
        corners = project_points(K, transform_points(pose, box))
        for a, b in _BOX_EDGES:
            ax.plot(corners[[a, b], 0], corners[[a, b], 1], color=colors[k], lw=1.2)
        uv = project_points(K, transform_points(pose, vertices))
        step = max(1, len(faces) // 400)
        tri = uv[faces[::step]]  # (F', 3, 2)
        segments = np.concatenate([tri, tri[:, :1]], axis=1)
        for seg in segments:
            ax.plot(seg[:, 0], seg[:, 1], color=colors[k], lw=0.3, alpha=0.6)
        if labels is not None:
            centre = project_points(K, pose[None, :3, 3])[0]
            ax.text(centre[0], centre[1], f"{k}:{labels[i]}", color="white", fontsize=6,
                    clip_on=True, bbox={"facecolor": colors[k], "alpha": 0.8, "pad": 1, "lw": 0})


def save_dataset_preview(samples: Sequence, path: str | Path) -> None:
    """One row per scene: RGB, depth, instance masks, posed meshes over RGB, objects alone."""
    columns = ["RGB", "depth (m)", "instances", "ground-truth poses", "objects alone (amodal)"]
    fig, axes = plt.subplots(len(samples), len(columns), figsize=(4 * len(columns),
                                                                   3.1 * len(samples)),
                             squeeze=False)
    for row, sample in zip(axes, samples):
        scene = sample.scene
        row[0].imshow(sample.rgb)
        depth = np.where(sample.depth > 0, sample.depth, np.nan)
        image = row[1].imshow(depth, cmap="turbo")
        fig.colorbar(image, ax=row[1], fraction=0.035)
        row[2].imshow(instance_overlay(sample.rgb, sample.instance))
        _draw_over_image(row[3], sample, [obj.pose_matrix for obj in scene.objects])
        row[4].imshow(_alone_montage(sample))
    _save_grid(fig, axes, columns, path)


def _save_grid(fig: plt.Figure, axes: np.ndarray, columns: Sequence[str],
               path: str | Path) -> None:
    """Title every row's axes by column, hide their frames, save the figure atomically."""
    for row in axes:
        for ax, title in zip(row, columns):
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def _alone_montage(sample, tile: int = 96) -> np.ndarray:
    """Objects rendered alone, each fitted in a tile, side by side in a grid (uint8)."""
    crops = [sample.amodal[obj.id].rgb for obj in sample.scene.objects if obj.id in sample.amodal]
    columns = 4
    rows = max(1, -(-len(crops) // columns))
    canvas = np.full((rows * tile, columns * tile, 3), 255, dtype=np.uint8)
    for i, crop in enumerate(crops):
        h, w = crop.shape[:2]
        step = max(h, w) / tile
        ys = (np.arange(int(h / step)) * step).astype(int)
        xs = (np.arange(int(w / step)) * step).astype(int)
        small = crop[ys][:, xs]
        r, c = divmod(i, columns)
        canvas[r * tile:r * tile + small.shape[0], c * tile:c * tile + small.shape[1]] = small
    return canvas


def _draw_over_image(ax: plt.Axes, sample, poses: Sequence[np.ndarray | None]) -> None:
    """A SceneSample's RGB with its meshes placed by poses (one per object; None = not drawn)."""
    scene = sample.scene
    ax.imshow(sample.rgb)
    shown = [(o, T) for o, T in zip(scene.objects, poses) if T is not None]
    draw_posed_meshes(ax, scene.camera.K, [(*sample.meshes[o.id], T) for o, T in shown],
                      [o.label for o, _ in shown], [o.id for o, _ in shown])
    ax.set_xlim(0, scene.camera.width)
    ax.set_ylim(scene.camera.height, 0)


def save_pose_overlays(scenes: Sequence, path: str | Path) -> None:
    """One row per (SceneSample, PoseResult): ground truth, raw model poses and refined poses,
    each drawn over the RGB image."""
    columns = ["ground truth", "model (raw)", "default (model + refinement)"]
    fig, axes = plt.subplots(len(scenes), 3, figsize=(12, 3.1 * len(scenes)), squeeze=False)
    for row, (sample, result) in zip(axes, scenes):
        objects = sample.scene.objects
        for ax, poses in zip(row, [[o.pose_matrix for o in objects], result.raw_poses,
                                   result.poses]):
            _draw_over_image(ax, sample, poses)
    _save_grid(fig, axes, columns, path)


def save_scene_overlay(rgb: np.ndarray, scene, meshes: dict, path: str | Path) -> None:
    """A scene's posed meshes (wireframes, boxes, ``id:label``) over its RGB image (H, W, 3)."""
    height, width = rgb.shape[:2]
    fig, ax = plt.subplots(figsize=(width / 100, height / 100), dpi=100)
    ax.imshow(rgb)
    draw_posed_meshes(ax, scene.camera.K, [(*meshes[o.id], o.pose_matrix) for o in scene.objects],
                      [o.label for o in scene.objects], [o.id for o in scene.objects])
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.axis("off")
    fig.subplots_adjust(0, 0, 1, 1)
    with atomic_path(path) as tmp:
        fig.savefig(tmp)
    plt.close(fig)
