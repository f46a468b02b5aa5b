#!/usr/bin/env bash
# Retrain the shipped completion net (scenemaker_ros/stages/weights/completion-S.safetensors) from
# scratch with one command: generate the procedural scenes it learns from (the boundary net's
# data: 2000 scenes of the default distribution, seed 0, and 3000 contact-rich scenes, seed 2;
# both resumable), then train with the default schedule (completion_train: the first 2000 scenes
# of each, 12000 steps; resumes from RUN/last.pt).
# Usage: bash scripts/train_completion.sh [RUN_DIR] [extra `scenemaker train completion` args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
DATA=${DATA:-data}
RUN=${1:-runs/completion-S}
shift $(( $# > 1 ? 1 : $# ))
DATA="$DATA" bash scripts/procedural_training_data.sh
.venv/bin/scenemaker train completion --data "$DATA/segmentation" "$DATA/segmentation-contact" \
  --out "$RUN" --workers 2 "$@"
echo "trained: $RUN/model.safetensors (ship it as scenemaker_ros/stages/weights/completion-S.safetensors)"
