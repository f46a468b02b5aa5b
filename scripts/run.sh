#!/usr/bin/env bash
# Set up (idempotent) and run the main job on the embedded CPU defaults. For now: generate a
# small synthetic dataset, pose its objects with the shipped pose model (ground-truth masks and
# meshes) and write preview images. Output goes to out/demo/ (or $1).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OUT=${1:-out/demo}
.venv/bin/scenemaker data generate --n 16 --out "$OUT" --seed 0 --workers 2 --noise
.venv/bin/scenemaker data preview "$OUT" --indices 0 1 2 3 --out "$OUT/preview.png"
.venv/bin/scenemaker data shapes --out "$OUT/shapes.png"
.venv/bin/scenemaker bench pose --data "$OUT" --split train --n 4 --out "$OUT/pose.json" \
  --plot "$OUT/poses.png"
echo "main job done: $OUT/preview.png, $OUT/shapes.png, $OUT/poses-$(basename "$OUT").png"
