#!/usr/bin/env bash
# Retrain the shipped pose model from scratch with one command: generate the procedural training
# data (4000 train + 200 val scenes, seed 0; resumable), then train as the shipped run was:
# 1800 steps (the default schedule), then resumed to 3000 steps (the cosine schedule stretched to
# the new length). Every stage resumes where it stopped.
# Usage: bash scripts/train_pose.sh [DATA_DIR] [RUN_DIR] [extra `scenemaker train pose` args]
# Several processes: TORCHRUN="torchrun --standalone --nproc_per_node=2" bash scripts/train_pose.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
DATA=${1:-data/procedural}
RUN=${2:-runs/pose-S}
shift $(( $# > 2 ? 2 : $# ))
for split in "train 4000" "val 200"; do
  read -r name n <<< "$split"
  .venv/bin/scenemaker data generate --n "$n" --split "$name" --out "$DATA" --seed 0 --workers 2 \
    --config config/pose_training_data.yaml
done
for steps in 1800 3000; do
  if [ -n "${TORCHRUN:-}" ]; then
    .venv/bin/$TORCHRUN -m scenemaker_ros.cli train pose --data "$DATA" --out "$RUN" \
      --set train.steps=$steps "$@"
  else
    .venv/bin/scenemaker train pose --data "$DATA" --out "$RUN" --workers 2 \
      --set train.steps=$steps "$@"
  fi
done
echo "trained: $RUN/model.safetensors (ship it as scenemaker_ros/pose/weights/pose-S.safetensors)"
