#!/usr/bin/env bash
# Retrain the shipped boundary net (scenemaker_ros/stages/weights/boundary-S.safetensors) from
# scratch with one command: generate its procedural training data (2000 scenes of the default
# distribution, seed 0, and 3000 contact-rich scenes, seed 2; both resumable), then train with
# the default schedule (boundary_train: 12000 steps; resumes from RUN/last.pt).
# Usage: bash scripts/train_segmentation.sh [RUN_DIR] [extra `scenemaker train segmentation` args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
DATA=${DATA:-data}
RUN=${1:-runs/boundary-S}
shift $(( $# > 1 ? 1 : $# ))
DATA="$DATA" bash scripts/procedural_training_data.sh
.venv/bin/scenemaker train segmentation --data "$DATA/segmentation" "$DATA/segmentation-contact" \
  --out "$RUN" --workers 2 "$@"
echo "trained: $RUN/model.safetensors (ship it as scenemaker_ros/stages/weights/boundary-S.safetensors)"
