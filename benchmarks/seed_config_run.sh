#!/usr/bin/env bash
# The seed guide's examples/train_lora/selectors/less.yaml, unshrunk, on 2 CPU processes
# (ZeRO-3 on gloo), with the two edits a CPU machine needs: the quickstart model instead of
# the 8B hub model, bf16: false. Prints each LESS round's log line and its phase times.
#
#   bash benchmarks/seed_config_run.sh [DATA_DIR] [WORK_DIR]
#
# DATA_DIR: LLaMA-Factory's data folder (alpaca_en_demo, alpaca_zh_demo, dataset_info.json);
# default ../shared/data/llamafactory. WORK_DIR (default: a new temporary folder) gets the
# run folder and the seed's ../dataflex_saves output, so the feature cache starts empty; it
# must not exist yet or be empty (nothing already there is deleted or overwritten).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
DATA=$(cd "${1:-$REPO/../shared/data/llamafactory}" && pwd)
WORK=${2:-$(mktemp -d)}
if [ -e "$WORK" ] && [ -n "$(ls -A "$WORK")" ]; then
  echo "seed_config_run.sh: WORK_DIR $WORK is not empty; give a new or empty folder" >&2
  exit 2
fi
mkdir -p "$WORK/run"
sed -e "s#meta-llama/Llama-3.1-8B#$REPO/examples/quickstart/model#" -e "s#bf16: true#bf16: false#" \
    "$REPO/examples/train_lora/selectors/less.yaml" > "$WORK/run/less.yaml"
for name in examples dataflex; do ln -sfn "$REPO/$name" "$WORK/run/$name"; done
ln -sfn "$DATA" "$WORK/run/data"
cd "$WORK/run"
FORCE_TORCHRUN=1 NPROC_PER_NODE=2 OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 PYTHONPATH="$REPO" \
    python -m dataflex.cli train less.yaml 2>&1 | tee log.txt | grep -E "^\[dataflex\] round"
python - "$WORK/dataflex_saves/Llama-3.1-8B/less/dataflex/selections.jsonl" <<'PY'
import json
import sys

for line in open(sys.argv[1]):
    record = json.loads(line)
    meta = record.get("metadata", {})
    if "time_features_s" in meta:
        print(f"round {record['round']}: features {meta['time_features_s']} s, phases {meta['feature_phases']}")
PY
