#!/usr/bin/env bash
# The procedural scenes the boundary net and the completion net learn from (resumable): 2000
# scenes of the default distribution (seed 0) into $DATA/segmentation and 3000 contact-rich
# scenes (seed 2) into $DATA/segmentation-contact. Called by train_segmentation.sh and
# train_completion.sh after set-up.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-data}
.venv/bin/scenemaker data generate --n 2000 --out "$DATA/segmentation" --seed 0 --workers 2 \
  --config config/pose_training_data.yaml
.venv/bin/scenemaker data generate --n 3000 --out "$DATA/segmentation-contact" --seed 2 \
  --workers 2 --config config/segmentation_contact_data.yaml
