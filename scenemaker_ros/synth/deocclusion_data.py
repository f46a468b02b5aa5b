"""De-occlusion triplets (occluded input, prompt, target) from our own procedural renders.

The paper fine-tunes FLUX.1 Kontext on 10K object-level triplets: GPT writes object descriptions,
FLUX draws the targets, and three masking strategies (background-free cutouts, rectangular
boundary cropping, random brush strokes) make the occluded inputs. Ours come from the scenes of
``synth/scenes.py`` (data policy: procedural shapes for training; ``random_urdfs`` scenes only
for evaluation), one triplet per chosen object:

- target: the object rendered alone (``SceneRenderer.render_alone``: same camera, unoccluded, no
  shadows cast by others, no pixel noise), white off the object, in a square crop centred on its
  whole (amodal) box, side = the box's longer side * (1 + 2 * margin), margin drawn from
  ``crop_margin``; pixels outside the image are white. Objects cut by the image border or smaller
  than ``min_amodal_pixels`` are skipped.
- input: the same crop of the scene render with every pixel that is not the object's visible
  part painted white: background and the real occluders (a background-free cutout, which is
  also what the "flux_kontext" backend feeds the model). One masking strategy, drawn with
  ``strategy_weights``, then hides more of the object behind a virtual occluder, painted white:

  - "cutout": another object's silhouette from the same scene (its mask rendered alone), scaled
    to 0.5-1.0 of the object's size and centred on one of its pixels (the paper pastes
    background-free object cutouts);
  - "rectangle": a band of the crop along one side of the object's box, covering 20-55 % of the
    box (the object cut by the image border);
  - "brush": 1-3 strokes of 2-4 random segments, 8-20 % of the object's size wide.

  The share of the whole mask hidden in the input must lie in ``hidden_fraction``; a strategy is
  redrawn up to ``_DRAWS`` times, then the object is skipped.
- prompt: ``prompt`` (config) with {object} = the family's noun (``FAMILY_NOUNS``), or "object"
  with probability ``generic_prompt_prob`` and for non-procedural objects, so the model also
  follows the label-free prompt a class-agnostic segmenter gives at inference.

Each triplet also keeps its crop of the scene as an RGB-D frame (the virtual occluder drawn in
as a white surface just in front of the object, so depth-based de-occluders see it as one),
with the object's true whole mask and the support plane: ``scenemaker bench deocclusion``
scores any de-occlusion backend on it.

Storage: ``ROOT/deocclusion.json`` (seed, configs, shape source), ``ROOT/triplets.jsonl`` (one
record per triplet, in scene order), ``ROOT/images/<key>_input.png``, ``<key>_target.png``,
``ROOT/frames/<key>.npz``, with key = ``<scene>_<object>``. Scene ``j`` draws from its own
random stream ``(seed, "deocclusion", j)``; scenes are made in chunks of ``scenes_per_chunk``
whose record lists (``ROOT/chunks/``) are written last and atomically, so a rerun keeps complete
chunks (resume) and the content does not depend on the number of workers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import multiprocessing as mp
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from scenemaker_ros.config import (
    DataConfig,
    DeocclusionDataConfig,
    config_from_dict,
    config_to_dict,
)
from scenemaker_ros.errors import SceneMakerError
from scenemaker_ros.files import atomic_path, write_json_atomic, write_text_atomic
from scenemaker_ros.synth.dataset import scene_rng
from scenemaker_ros.synth.render import AMODAL_BACKGROUND, AmodalRender
from scenemaker_ros.synth.scenes import SceneSample, generate_scene
from scenemaker_ros.synth.shapes import FAMILIES

MANIFEST = "deocclusion.json"
RECORDS = "triplets.jsonl"
FORMAT_VERSION = 1
SPLIT = "deocclusion"  # the scenes' random streams, apart from those of ``data generate``
STRATEGIES = ("cutout", "rectangle", "brush")
GENERIC_NOUN = "object"
FAMILY_NOUNS = {"l_block": "L-shaped block", "t_block": "T-shaped block",
                "u_block": "U-shaped block", "box_cylinder": "box with a cylinder on it",
                "regular_prism": "regular prism", "superquadric": "rounded box",
                "blob": "rounded pebble"}  # other families: the name with spaces
VISIBLE, WHITE = 1, np.uint8(255)  # instance id of the object in a triplet's frame; paint colour
_DRAWS = 10  # masking draws per object before it is skipped
_VIRTUAL_DEPTH = 0.97  # the virtual occluder's depth / the object's nearest depth


# -----------------------------------------------------------------------------
# triplets


@dataclass
class Triplet:
    """One training / scoring example; S = the square crop's side, pixels.

    target: (S, S, 3) uint8, the object alone, white off it. amodal: (S, S) bool, its whole
    mask. rgb: (S, S, 3) uint8 crop of the scene with the virtual occluder painted white.
    depth: (S, S) float32 metres, 0 = none (outside the image, background). instance: (S, S)
    uint16, 0 = none, 1 = the object's part visible in the input, 2.. = other objects (the
    virtual occluder last). K: (3, 3) intrinsics of the crop. plane_normal (3,), plane_offset:
    the support plane in the camera frame (normal @ p + offset = 0, normal towards the camera).
    meta: the record written to ``triplets.jsonl`` (key, prompt, strategy, family, ...).
    """

    target: np.ndarray
    amodal: np.ndarray
    rgb: np.ndarray
    depth: np.ndarray
    instance: np.ndarray
    K: np.ndarray
    plane_normal: np.ndarray
    plane_offset: float
    meta: dict

    @property
    def key(self) -> str:
        return self.meta["key"]

    @property
    def prompt(self) -> str:
        return self.meta["prompt"]

    @property
    def visible(self) -> np.ndarray:
        """(S, S) bool: the object's pixels left in the input."""
        return self.instance == VISIBLE

    @property
    def input(self) -> np.ndarray:
        """(S, S, 3) uint8: the occluded view, everything but the visible part painted white."""
        return np.where(self.visible[..., None], self.rgb, WHITE)


def object_noun(family: str, generic: bool = False) -> str:
    """The prompt's noun for an object of ``family``: "object" when generic or not a procedural
    family (random_urdfs objects)."""
    if generic or family not in FAMILIES:
        return GENERIC_NOUN
    return FAMILY_NOUNS.get(family, family.replace("_", " "))


def scene_triplets(sample: SceneSample, cfg: DeocclusionDataConfig, rng: np.random.Generator,
                   scene_index: int = 0) -> list[Triplet]:
    """Triplets of up to ``cfg.objects_per_scene`` objects of a scene rendered with objects
    alone (module docstring)."""
    height, width = sample.instance.shape
    T_world_cam = sample.scene.camera.camera_to_world
    plane = (T_world_cam[2, :3].copy(), float(T_world_cam[2, 3]))  # world z = 0, camera frame
    weights = np.asarray(cfg.strategy_weights, np.float64)
    triplets = []
    for k in rng.permutation(len(sample.scene.objects)):
        truth = sample.amodal.get(int(k))
        if truth is None or not _eligible(truth, cfg.min_amodal_pixels, width, height):
            continue
        strategy = STRATEGIES[rng.choice(len(STRATEGIES), p=weights / weights.sum())]
        triplet = _triplet(sample, int(k), strategy, plane, cfg, rng)
        if triplet is None:
            continue
        family = sample.scene.objects[k].label
        noun = object_noun(family, generic=bool(rng.random() < cfg.generic_prompt_prob))
        triplet.meta.update(key=f"{scene_index:06d}_{int(k):02d}", scene=scene_index,
                            object=int(k), family=family, noun=noun,
                            prompt=cfg.prompt.format(object=noun))
        triplets.append(triplet)
        if len(triplets) == cfg.objects_per_scene:
            break
    return triplets


def _eligible(truth: AmodalRender, min_pixels: int, width: int, height: int) -> bool:
    """Big enough, and whole: its mask rendered alone does not touch the image border."""
    x0, y0, x1, y1 = truth.bbox
    return (int(truth.mask.sum()) >= min_pixels and x0 > 0 and y0 > 0 and x1 < width
            and y1 < height)


def _triplet(sample: SceneSample, k: int, strategy: str, plane: tuple[np.ndarray, float],
             cfg: DeocclusionDataConfig, rng: np.random.Generator) -> Triplet | None:
    """Object k's triplet with the given masking strategy, without its prompt; None when no draw
    hides a share of it inside cfg.hidden_fraction. plane: (normal (3,), offset), camera frame."""
    truth = sample.amodal[k]
    ax0, ay0, ax1, ay1 = truth.bbox
    box = square_box(truth.bbox, rng.uniform(*cfg.crop_margin))
    x0, y0, side = box[0], box[1], box[2] - box[0]
    inner = np.s_[ay0 - y0:ay1 - y0, ax0 - x0:ax1 - x0]  # the amodal box inside the crop
    amodal = np.zeros((side, side), bool)
    amodal[inner] = truth.mask
    target = np.full((side, side, 3), AMODAL_BACKGROUND, np.uint8)
    target[inner] = truth.rgb
    rgb = padded_crop(sample.rgb, box, WHITE)
    depth = padded_crop(sample.depth, box, np.float32(0))
    instance = padded_crop(sample.instance, box, np.uint16(0)).astype(np.int64)
    visible = instance == k + 1
    silhouettes = [a.mask for j, a in sample.amodal.items() if j != k and a.mask.size]
    used = strategy if strategy != "cutout" or silhouettes else "brush"
    near = float(truth.depth[truth.mask].min()) * _VIRTUAL_DEPTH
    low, high = cfg.hidden_fraction
    area = amodal.sum()
    for _ in range(_DRAWS):
        occluder = _virtual_occluder(used, amodal, (ax1 - ax0, ay1 - ay0), silhouettes, rng)
        occluder &= (depth == 0) | (depth > near)  # behind a real occluder: stays hidden by it
        hidden = 1 - (visible & ~occluder).sum() / area
        if low <= hidden <= high:
            break
    else:
        return None
    # the frame: the object first, the other objects in order, the virtual occluder last
    others = [i for i in np.unique(instance) if i not in (0, k + 1)]
    relabelled = np.zeros(instance.shape, np.uint16)
    relabelled[visible] = VISIBLE
    for new, old in enumerate(others, start=VISIBLE + 1):
        relabelled[instance == old] = new
    relabelled[occluder] = len(others) + 2
    rgb[occluder], depth[occluder] = WHITE, near
    K = sample.scene.camera.K.copy()
    K[0, 2] -= x0
    K[1, 2] -= y0
    return Triplet(
        target=target, amodal=amodal, rgb=rgb, depth=depth, instance=relabelled, K=K,
        plane_normal=plane[0], plane_offset=plane[1],
        meta={"strategy": used, "hidden_fraction": round(float(hidden), 4),
              "real_hidden_fraction": round(float(1 - visible.sum() / area), 4),
              "size": side, "box": [int(v) for v in box]})


def square_box(box: tuple[int, int, int, int], margin: float) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) square crop centred on box (x0, y0, x1, y1), side = its longer side *
    (1 + 2 * margin), rounded up; may reach outside the image. The "flux_kontext" backend crops
    with it too, so its inputs look like the training inputs."""
    side = int(np.ceil(max(box[2] - box[0], box[3] - box[1]) * (1 + 2 * margin)))
    x0, y0 = int(round((box[0] + box[2] - side) / 2)), int(round((box[1] + box[3] - side) / 2))
    return x0, y0, x0 + side, y0 + side


def padded_crop(image: np.ndarray, box: tuple[int, int, int, int], fill) -> np.ndarray:
    """The (y1 - y0, x1 - x0, ...) window box (x0, y0, x1, y1) of image (H, W, ...); the parts
    outside the image are fill."""
    x0, y0, x1, y1 = box
    height, width = image.shape[:2]
    out = np.full((y1 - y0, x1 - x0, *image.shape[2:]), fill, image.dtype)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = image[sy0:sy1, sx0:sx1]
    return out


# -----------------------------------------------------------------------------
# masking strategies


def _virtual_occluder(strategy: str, amodal: np.ndarray, box_size: tuple[int, int],
                      silhouettes: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """(S, S) bool virtual occluder over the object's whole mask amodal (S, S) bool, whose box
    is box_size (w, h) pixels; silhouettes: other objects' masks, (h, w) bool each."""
    rows, cols = np.nonzero(amodal)
    centre = int(rows.mean()), int(cols.mean())
    pick = rng.integers(len(rows))
    anchor = int(rows[pick]), int(cols[pick])  # (row, col) of a random pixel of the object
    size = max(box_size)
    if strategy == "cutout":
        return _cutout(amodal.shape, silhouettes[rng.integers(len(silhouettes))],
                       size * rng.uniform(0.5, 1.0), anchor)
    if strategy == "rectangle":
        return _boundary_band(amodal.shape, rows, cols, int(rng.integers(4)),
                              rng.uniform(0.2, 0.55))
    return _brush_strokes(amodal.shape, anchor, centre, size, rng)


def _cutout(shape: tuple[int, int], silhouette: np.ndarray, size: float, anchor: tuple[int, int]
            ) -> np.ndarray:
    """(S, S) bool: silhouette scaled so its longer side is size pixels, centred on anchor."""
    scale = size / max(silhouette.shape)
    h, w = (max(1, round(n * scale)) for n in silhouette.shape)
    scaled = np.asarray(Image.fromarray(silhouette).resize((w, h), Image.NEAREST))
    out = np.zeros(shape, bool)
    top, left = anchor[0] - h // 2, anchor[1] - w // 2
    r0, c0 = max(top, 0), max(left, 0)
    r1, c1 = min(top + h, shape[0]), min(left + w, shape[1])
    out[r0:r1, c0:c1] = scaled[r0 - top:r1 - top, c0 - left:c1 - left]
    return out


def _boundary_band(shape: tuple[int, int], rows: np.ndarray, cols: np.ndarray, side: int,
                   depth: float) -> np.ndarray:
    """(S, S) bool: the crop from its edge to depth (fraction) into the object's box on one
    side (0 left, 1 right, 2 top, 3 bottom); rows, cols: the object's pixels."""
    out = np.zeros(shape, bool)
    lo, hi = (cols.min(), cols.max() + 1) if side < 2 else (rows.min(), rows.max() + 1)
    cut = int(round(depth * (hi - lo)))
    band = np.s_[:lo + cut] if side % 2 == 0 else np.s_[hi - cut:]
    if side < 2:
        out[:, band] = True
    else:
        out[band] = True
    return out


def _brush_strokes(shape: tuple[int, int], anchor: tuple[int, int], centre: tuple[int, int],
                   size: int, rng: np.random.Generator) -> np.ndarray:
    """(S, S) bool: 1-3 random strokes of 2-4 segments, the first from anchor, the others from
    near centre (row, col); segments 20-50 % of size long, 8-20 % of size wide."""
    canvas = Image.new("L", (shape[1], shape[0]))
    draw = ImageDraw.Draw(canvas)
    for stroke in range(int(rng.integers(1, 4))):
        start = anchor if stroke == 0 else (centre[0] + rng.normal(0, 0.25 * size),
                                            centre[1] + rng.normal(0, 0.25 * size))
        points = [(float(start[1]), float(start[0]))]  # PIL: (x, y)
        heading = rng.uniform(0, 2 * np.pi)
        for _ in range(int(rng.integers(2, 5))):
            heading += rng.uniform(-1.0, 1.0)
            length = size * rng.uniform(0.2, 0.5)
            x, y = points[-1]
            points.append((x + length * np.cos(heading), y + length * np.sin(heading)))
        width = max(2, int(round(size * rng.uniform(0.08, 0.2))))
        draw.line(points, fill=255, width=width, joint="curve")
        for x, y in (points[0], points[-1]):  # round caps
            draw.ellipse((x - width / 2, y - width / 2, x + width / 2, y + width / 2), fill=255)
    return np.asarray(canvas) > 0


# -----------------------------------------------------------------------------
# writing and reading


def write_triplet(root: Path, triplet: Triplet) -> None:
    """The triplet's PNGs and frame under root, each file atomically."""
    key = triplet.key
    for name, image in (("input", triplet.input), ("target", triplet.target)):
        with atomic_path(root / "images" / f"{key}_{name}.png") as tmp:
            Image.fromarray(image).save(tmp)
    with atomic_path(root / "frames" / f"{key}.npz") as tmp:
        np.savez_compressed(tmp, rgb=triplet.rgb, depth=triplet.depth, instance=triplet.instance,
                            amodal=triplet.amodal, K=triplet.K, plane_normal=triplet.plane_normal,
                            plane_offset=np.float64(triplet.plane_offset))


def _chunk_path(root: Path, chunk: int) -> Path:
    return root / "chunks" / f"chunk-{chunk:05d}.jsonl"


def _generate_chunk(task: tuple[str, int, int, list[int], dict, dict]) -> list[dict]:
    """Render the chunk's scenes, write their triplets, then the chunk's record list."""
    root, seed, chunk, scenes, data_dict, triplet_dict = task
    cfg = config_from_dict(DataConfig, data_dict)
    triplet_cfg = config_from_dict(DeocclusionDataConfig, triplet_dict)
    records = []
    for j in scenes:
        rng = scene_rng(seed, SPLIT, j)
        sample = generate_scene(cfg, rng)
        for triplet in scene_triplets(sample, triplet_cfg, rng, scene_index=j):
            write_triplet(Path(root), triplet)
            records.append(triplet.meta)
    write_text_atomic(_chunk_path(Path(root), chunk),
                      "".join(json.dumps(r) + "\n" for r in records))
    return records


def _read_chunk(path: Path) -> list[dict] | None:
    try:
        return [json.loads(line) for line in path.read_text().splitlines()]
    except (OSError, json.JSONDecodeError):
        return None  # missing or damaged: made again


def _check_manifest(root: Path, seed: int, data: DataConfig, cfg: DeocclusionDataConfig) -> None:
    path = root / MANIFEST
    manifest = {"version": FORMAT_VERSION, "seed": seed, "shapes": data.shapes,
                "data": config_to_dict(data), "deocclusion_data": config_to_dict(cfg)}
    if path.exists():
        try:
            existing = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise SceneMakerError(f"{path}: not valid JSON ({err})") from None
        if {k: existing.get(k) for k in manifest} != manifest:
            raise SceneMakerError(
                f"{path}: folder holds triplets made with another seed or config (seed "
                f"{existing.get('seed')}); use a new --out or the same seed and config")
    else:
        write_json_atomic(path, manifest)


def generate_triplets(root: str | Path, n: int, seed: int, data: DataConfig,
                      cfg: DeocclusionDataConfig, workers: int = 1, progress: bool = True
                      ) -> dict:
    """Write the first n triplets of the stream ``seed`` under root (module docstring); complete
    chunks are kept (resume). Returns {"triplets", "scenes", "made", "seconds",
    "triplets_per_s"}, "made" and the rate counting this run's new triplets only."""
    if n < 1 or workers < 1:
        raise SceneMakerError("data deocclusion: --n and --workers must be >= 1")
    data = dataclasses.replace(data, render_alone=True, sensor_noise=False)
    root = Path(root)
    _check_manifest(root, seed, data, cfg)
    done = {int(path.stem.split("-")[1]): records for path in root.glob("chunks/chunk-*.jsonl")
            if (records := _read_chunk(path)) is not None}

    def first_records() -> list[dict]:  # of chunks 0, 1, ... up to the first one missing
        records, chunk = [], 0
        while chunk in done and len(records) < n:
            records += done[chunk]
            chunk += 1
        return records

    records = first_records()
    bar = tqdm(total=n, initial=min(len(records), n), unit="triplet",
               desc="de-occlusion triplets", disable=not progress)
    start, made = time.perf_counter(), 0
    per_chunk = cfg.scenes_per_chunk
    with (mp.get_context("spawn").Pool(workers) if workers > 1 and len(records) < n else
          contextlib.nullcontext()) as pool:
        run = map if pool is None else pool.imap
        while len(records) < n:
            wave, chunk = [], 0
            while len(wave) < workers:  # the first chunks not on disk
                if chunk not in done:
                    wave.append(chunk)
                chunk += 1
            tasks = [(str(root), seed, c, list(range(c * per_chunk, (c + 1) * per_chunk)),
                      config_to_dict(data), config_to_dict(cfg)) for c in wave]
            for c, chunk_records in zip(wave, run(_generate_chunk, tasks)):
                done[c] = chunk_records
                made += len(chunk_records)
            if not any(done.values()):
                raise SceneMakerError(
                    f"data deocclusion: no object of {len(done) * per_chunk} scenes makes a "
                    "triplet; check deocclusion_data.min_amodal_pixels and hidden_fraction "
                    "against the data.camera size")
            records = first_records()
            bar.update(min(len(records), n) - bar.n)
    bar.close()
    seconds = time.perf_counter() - start
    records = records[:n]
    write_text_atomic(root / RECORDS, "".join(json.dumps(r) + "\n" for r in records))
    return {"triplets": n, "scenes": records[-1]["scene"] + 1, "made": made, "seconds": seconds,
            "triplets_per_s": made / seconds if made else float("nan")}


class TripletDataset:
    """The triplets of a ``data deocclusion`` folder: ``dataset[i]`` is the i-th Triplet."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        manifest, records = self.root / MANIFEST, self.root / RECORDS
        if not manifest.exists() or not records.exists():
            raise SceneMakerError(f"{self.root}: not a de-occlusion triplet folder (no {MANIFEST} "
                                  f"and {RECORDS}; make one with scenemaker data deocclusion)")
        self.manifest = json.loads(manifest.read_text())
        self.records = [json.loads(line) for line in records.read_text().splitlines()]

    @property
    def shapes(self) -> str:
        """Where the objects come from: "procedural" or "random_urdfs" (evaluation only)."""
        return self.manifest.get("shapes", "procedural")

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> Triplet:
        meta = self.records[i]
        key = meta["key"]
        try:
            target = Image.open(self.root / "images" / f"{key}_target.png").convert("RGB")
            with np.load(self.root / "frames" / f"{key}.npz") as frame:
                arrays = {name: frame[name] for name in frame.files}
        except (OSError, ValueError, KeyError) as err:
            raise SceneMakerError(f"{self.root}: triplet {key} is missing or corrupt ({err}); "
                                  "rerun scenemaker data deocclusion on the folder") from None
        return Triplet(target=np.asarray(target), amodal=arrays["amodal"], rgb=arrays["rgb"],
                       depth=arrays["depth"], instance=arrays["instance"], K=arrays["K"],
                       plane_normal=arrays["plane_normal"],
                       plane_offset=float(arrays["plane_offset"]), meta=meta)


def save_triplet_preview(triplets: list[Triplet], path: str | Path, columns: int = 4) -> None:
    """A PNG grid of (input | target) pairs titled with strategy, hidden share and prompt noun."""
    from matplotlib.figure import Figure

    rows = -(-len(triplets) // columns)
    figure = Figure(figsize=(4.0 * columns, 2.3 * rows), dpi=100)
    for i, triplet in enumerate(triplets):
        pair = np.concatenate([triplet.input, np.full((triplet.input.shape[0], 4, 3), 128,
                                                      np.uint8), triplet.target], axis=1)
        ax = figure.add_subplot(rows, columns, i + 1)
        ax.imshow(pair)
        meta = triplet.meta
        ax.set_title(f"{meta['strategy']}, {100 * meta['hidden_fraction']:.0f} % hidden: "
                     f"{meta['noun']}",
                     fontsize=8)
        ax.axis("off")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp)
