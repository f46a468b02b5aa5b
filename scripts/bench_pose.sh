#!/usr/bin/env bash
# Reproduce docs/bench/pose.json: generate the held-out evaluation datasets (seed 1; resumable)
# and run the pose benchmark on them. Ablation checkpoints may be added as extra arguments:
#   bash scripts/bench_pose.sh --ablation runs/ablation-no-gsa/model.safetensors ...
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
DATA=${DATA:-data}
for spec in "procedural 100" "openset 100" "many_objects 40"; do
  read -r name n <<< "$spec"
  .venv/bin/scenemaker data generate --n "$n" --split test --out "$DATA/eval-${name//_/-}" \
    --seed 1 --workers 2 --config "config/eval/$name.yaml"
done
.venv/bin/scenemaker bench pose --data "$DATA/eval-procedural" "$DATA/eval-openset" \
  "$DATA/eval-many-objects" --n 50 --out docs/bench/pose.json --plot docs/bench/pose.png "$@"
