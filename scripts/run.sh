#!/usr/bin/env bash
# Set up (idempotent) and run the main job on the embedded CPU defaults: the scene pipeline on the
# shipped example frame (examples/tabletop), scored against its ground truth; then a small
# synthetic dataset whose objects the shipped pose model poses (ground-truth masks and meshes),
# with preview images. Output goes to out/demo/ (or $1).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OUT=${1:-out/demo}
.venv/bin/scenemaker run --rgb examples/tabletop/rgb.png --depth examples/tabletop/depth.png \
  --camera-info examples/tabletop/camera_info.yaml --out "$OUT/scene"
.venv/bin/scenemaker eval --pred "$OUT/scene" --gt examples/tabletop/ground_truth \
  --out "$OUT/scene/metrics.json"
.venv/bin/scenemaker data generate --n 16 --out "$OUT" --seed 0 --workers 2 --noise
.venv/bin/scenemaker data preview "$OUT" --indices 0 1 2 3 --out "$OUT/preview.png"
.venv/bin/scenemaker data shapes --out "$OUT/shapes.png"
.venv/bin/scenemaker bench pose --data "$OUT" --split train --n 4 --out "$OUT/pose.json" \
  --plot "$OUT/poses.png"
echo "main job done: $OUT/scene/ (scene.json, scene.glb, overlay.png, metrics.json)," \
  "$OUT/preview.png, $OUT/shapes.png, $OUT/poses-$(basename "$OUT").png"
