#!/usr/bin/env bash
# The main job on the embedded default: synthetic CLOTHO-format data (generated on first use),
# train CE (VGGish + VGGSound), fuse the 5 caption queries of each clip, predict query performance
# and fuse with the predicted weights. No network needed once the requirements are installed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh requirements/requirements.txt
cfg="${CONFIG:-configs/clotho-synthetic/train-vggish-vggsound.json}"
py=.venv/bin/python
$py train.py --config "$cfg" --precision float32 "$@"   # float32: the README tables bit for bit (bf16 is the faster default)
$py fusion.py --config "$cfg" --device cpu --eval_from_training_config
$py qpp.py --config "$cfg" --eval_from_training_config
