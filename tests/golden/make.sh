#!/usr/bin/env bash
# Regenerate the golden payloads of tests/test_golden.py (only when a change of behaviour is intended).
# Run from the repo root with ../shared beside it.
set -euo pipefail
export EDGEPOSE_MODEL_DIR="${EDGEPOSE_MODEL_DIR:-$(mktemp -d)}" EDGEPOSE_MODEL_MIRROR="${EDGEPOSE_MODEL_MIRROR:-../shared/models}"
strip='import json,sys
for line in sys.stdin:
    d = json.loads(line); d.pop("ts"); d.pop("latency_ms"); print(json.dumps(d, separators=(",", ":")))'
for m in cpm hourglass movenet-lightning; do
  for clip in demo posetrack_000001; do
    python3 -m edgepose.cli run --source "../shared/data/video/$clip.mp4" --model $m --threads 1 --no-smoothing \
      --device golden | python3 -c "$strip" > "tests/golden/${m}_${clip}.jsonl"
  done
  python3 -m edgepose.cli run --source ../shared/data/calib --model $m --threads 1 --device golden \
    | python3 -c "$strip" > "tests/golden/${m}_calib.jsonl"
done
