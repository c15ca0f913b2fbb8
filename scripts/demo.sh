#!/usr/bin/env bash
# The whole scenefit pipeline on the embedded synthetic world with tiny models, on CPU.
#
#     make demo                          # sets up .venv, then runs this script
#     make demo VERBOSE=1                # every stage's own output on the terminal too
#     DEMO_DIR=/tmp/d bash scripts/demo.sh [--verbose]
#
# Every stage writes its own subfolder of $DEMO_DIR (default runs/demo) and its whole output
# (tables, trainer logs) to $DEMO_DIR/logs/NN-STAGE.log; the terminal gets one line per stage with
# its time and result, and a live line with the stage's progress while it runs.
# Budget: <= 10 min on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
D=${DEMO_DIR:-runs/demo}
C=${DEMO_CONFIG:-configs/demo.yaml}
VERBOSE=${VERBOSE:-0}
for arg in "$@"; do
  case "$arg" in
    --verbose|-v) VERBOSE=1 ;;
    *) echo "usage: $0 [--verbose]" >&2; exit 2 ;;
  esac
done
SF=.venv/bin/scenefit
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$D/logs"
start=$(date +%s)
LIVE=0; [ -t 1 ] && [ "$VERBOSE" != 1 ] && LIVE=1   # the live progress line needs a terminal

# run_stage N NAME TITLE CMD...: CMD's output goes to $D/logs/N-NAME.log (and the terminal with
# --verbose); then one line: the stage, its time, and what it produced (scripts/demo_report.py).
run_stage() {
  local n=$1 name=$2 title=$3; shift 3
  local log="$D/logs/$n-$name.log" t0 rc=0 watcher=""
  t0=$(date +%s)
  : > "$log"
  if [ "$VERBOSE" = 1 ]; then
    printf '\n\033[1m== %s/10 %s ==\033[0m\n' "$n" "$title"
    "$@" 2>&1 | tee -a "$log" || rc=${PIPESTATUS[0]}
  else
    if [ "$LIVE" = 1 ]; then  # the last line (or progress-bar state) of the log, redrawn each second
      ( while sleep 1; do
          last=$(tail -c 2000 "$log" 2>/dev/null | tr '\r' '\n' | sed -e 's/\x1b\[[0-9;]*[A-Za-z]//g' -e '/^[[:space:]]*$/d' | tail -n 1 | cut -c1-$(( $(tput cols 2>/dev/null || echo 100) - 24 )))
          printf '\r\033[K  %2s/10 %-10s %4ss  %s' "$n" "$name" "$(( $(date +%s) - t0 ))" "$last"
        done ) &
      watcher=$!
    fi
    "$@" >> "$log" 2>&1 || rc=$?
    if [ -n "$watcher" ]; then kill "$watcher" 2>/dev/null; wait "$watcher" 2>/dev/null || true; printf '\r\033[K'; fi
  fi
  local dt=$(( $(date +%s) - t0 ))
  if [ "$rc" != 0 ]; then
    printf '  %2s/10 %-10s %4ss  FAILED (exit %s); the end of %s:\n' "$n" "$name" "$dt" "$rc" "$log"
    tail -n 30 "$log"
    exit "$rc"
  fi
  printf '  %2s/10 %-10s %4ss  %s\n' "$n" "$name" "$dt" "$(.venv/bin/python scripts/demo_report.py "$name" "$D" 2>/dev/null || true)"
}

echo "scenefit demo: the whole pipeline on the SYNTHETIC world (procedurally drawn scenes, simulated"
echo "teachers, a tiny Qwen2.5-VL built here) on CPU — a test bed, not a result on real data."
echo "Outputs: $D/   each stage's full log: $D/logs/"
echo
run_stage 1 model "tiny Qwen2.5-VL (local tokenizer; ~2 min of vision perception and ~30 s of catalog-knowledge pretraining)" \
  $SF tiny-model "$D/model" --config "$C"

run_stage 2 world "synthetic world (scenes with one boxed object, known truth)" \
  $SF synth --config "$C" --out "$D/world"

run_stage 3 ingest "ingest (validate images and boxes, normalised manifest, errors.jsonl)" \
  $SF ingest "$D/world/manifest.parquet" --out "$D/ingest" --config "$C"

run_stage 4 annotate "annotate (three simulated teachers answer every sample; resumable SQLite store)" \
  $SF annotate "$D/ingest/manifest.parquet" --db "$D/annotate/annotations.sqlite" --config "$C"

run_stage 5 consensus "consensus (teachers' agreement: rules, Cohen's and Fleiss' kappa, accuracy vs truth)" \
  $SF consensus --db "$D/annotate/annotations.sqlite" --manifest "$D/ingest/manifest.parquet" --out "$D/consensus" --config "$C"

run_stage 6 split "split (balanced 1:1 on the final decision, group-aware, seeded)" \
  $SF split "$D/consensus/consensus.parquet" --out "$D/split" --config "$C"

run_stage 7 datasets "student datasets (one chat-format dataset per criterion, with a dataset card)" \
  $SF datasets "$D/split" --out "$D/datasets" --config "$C"

# train writes each student's decision accuracy on the test split (vs consensus labels and vs
# truth, next to the untrained base) as JSON; a rerun skips finished students and resumes the rest.
train_students() { $SF train --criterion all --data "$D/datasets" --model "$D/model" --out "$D/students" --config "$C" > "$D/students.json"; }
run_stage 8 train "train the three students (LoRA on the tiny model's language layers, answer-only loss)" train_students

run_stage 9 evaluate "evaluate (students vs teacher and truth, untrained base as baseline, shortcut test, report)" \
  $SF evaluate --students "$D/students" --data "$D/datasets" --split test --out "$D/report" \
  --originals "$D/world/originals/manifest.parquet" --config "$C"

# --- keep this block last: serve the students on loopback and classify one test image over HTTP ---
printf '  %2s/10 %-10s       %s\n' 10 serve "the students on 127.0.0.1; one test image classified over HTTP:"
mkdir -p "$D/serve"
SERVE_TOKEN=$(.venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(18))')
SERVE_PID=""
stop_server() { if [ -n "$SERVE_PID" ]; then kill "$SERVE_PID" 2>/dev/null || true; wait "$SERVE_PID" 2>/dev/null || true; SERVE_PID=""; fi; }
trap stop_server EXIT INT TERM   # the server never outlives this script
# --port 0: the OS picks a free port; the server's first stdout line is "serving http://127.0.0.1:PORT".
DEMO_DIR="$D" SCENEFIT_API_TOKEN="$SERVE_TOKEN" $SF serve --demo --port 0 --config "$C" \
  > "$D/serve/stdout.txt" 2> "$D/serve/server.log" &
SERVE_PID=$!
URL=""
for _ in $(seq 1 240); do
  URL=$(sed -n 's/^serving \(http:\/\/127\.0\.0\.1:[0-9]*\)$/\1/p' "$D/serve/stdout.txt" 2>/dev/null | head -n1)
  if [ -n "$URL" ] && curl -fsS "$URL/health" > /dev/null 2>&1; then break; fi
  kill -0 "$SERVE_PID" 2>/dev/null || { echo "server exited early; log:"; cat "$D/serve/server.log"; exit 1; }
  URL=""; sleep 0.5
done
[ -n "$URL" ] || { echo "server not healthy after 120 s; log:"; cat "$D/serve/server.log"; exit 1; }
echo "        server up at $URL (web page: $URL/; log $D/serve/server.log)"
.venv/bin/python - "$URL" "$SERVE_TOKEN" "$D" <<'PY'
"""Send the first test sample to POST /v1/classify and print the three verdicts."""
import base64, json, sys, urllib.request
from pathlib import Path
import pyarrow.parquet as pq
from scenefit.core.parquet_io import resolved_path

url, token, d = sys.argv[1], sys.argv[2], Path(sys.argv[3])
table = next(p for p in (d / "split/test.parquet", d / "ingest/manifest.parquet") if p.is_file())
row = pq.read_table(table).slice(0, 1).to_pylist()[0]
row["image"] = resolved_path(row["image"], table.parent.resolve())  # stored relative to the table
body = {"image": base64.b64encode(Path(row["image"]).read_bytes()).decode(), "object": row["object"],
        "box": row["box"], "boxed": bool(row.get("boxed")), "explain": True}
req = urllib.request.Request(url + "/v1/classify", data=json.dumps(body).encode(), method="POST",
                             headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
with urllib.request.urlopen(req, timeout=300) as r:
    out = json.load(r)
print(f"sample {row['id']} from {table}: object {row['object']!r}, box {row['box']}")
for name, v in out["criteria"].items():
    truth = row.get(f"truth_{name}")
    print(f"  {name:<14} {v['label']:<15} p={v['probability']:.3f}" + (f"  (truth: {truth})" if truth else "")
          + (f"\n  {'':<14} {v['analysis']}" if v.get("analysis") else ""))
print(f"  {'final':<14} {out['final']}")
if out.get("notice"):
    print(out["notice"])
PY
stop_server

# --- the demo's result: the evaluation report of stage 9 (headline again, after the server's output) ---
printf '\n\033[1m== result ==\033[0m  (the whole demo: %ss)\n' "$(( $(date +%s) - start ))"
.venv/bin/python -c 'import json, sys; from scenefit.cli.evaluate import print_headline; print_headline(json.load(open(sys.argv[1])))' "$D/report/metrics.json"
echo "report: $D/report/report.html  (metrics: $D/report/metrics.json)"
