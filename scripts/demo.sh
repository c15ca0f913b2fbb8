#!/usr/bin/env bash
# The whole scenefit pipeline on the embedded synthetic world with tiny models, on CPU.
#
#     make demo                 # sets up .venv, then runs this script
#     DEMO_DIR=/tmp/d bash scripts/demo.sh
#
# Every stage writes its own subfolder of $DEMO_DIR (default runs/demo). Budget: <= 10 min on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
D=${DEMO_DIR:-runs/demo}
C=${DEMO_CONFIG:-configs/demo.yaml}
SF=.venv/bin/scenefit
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$D"
start=$(date +%s)
stage() { printf '\n\033[1m== %s ==\033[0m  (%ss)\n' "$1" "$(( $(date +%s) - start ))"; }

stage "1/10 tiny Qwen2.5-VL (random weights, local tokenizer)"
$SF tiny-model "$D/model" --config "$C"

stage "2/10 synthetic world (scenes with one boxed object, known truth)"
$SF synth --config "$C" --out "$D/world"

stage "3/10 ingest (validate images and boxes, normalised manifest, errors.jsonl)"
$SF ingest "$D/world/manifest.parquet" --out "$D/ingest" --config "$C"
