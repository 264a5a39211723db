#!/usr/bin/env bash
# Does every benchmark still run?  Each one once with small arguments (its numbers mean nothing at
# this size: run the commands of benchmarks/README.md for those), printing its exit code and wall
# time; the output of a failed one is shown.  Exit 1 if any failed.
#
#   bash benchmarks/smoke.sh                       # from the repository root, ../shared beside it
#   TFLITE_PYTHON=/tmp/tfl/bin/python bash benchmarks/smoke.sh   # also tflite_runtime_check.py
#
# calibrate_vs_exhaustive.py runs calibrate-fps with its full time budget, and people_ids.py needs an
# OpenPose model built with TensorFlow (`edgepose models quantize openpose-thin-fast-float32`), so only
# their --help (imports and arguments) is run here.  Models are copied from ../shared/models into a temporary
# cache unless EDGEPOSE_MODEL_DIR is set.
set -uo pipefail
cd "$(dirname "$0")/.."
SHARED="${EDGEPOSE_SHARED:-$(cd .. && pwd)/shared}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export EDGEPOSE_MODEL_DIR="${EDGEPOSE_MODEL_DIR:-$tmp/models}"
failed=0

run() {
    local t0 t1 rc
    t0=$(date +%s.%N)
    "$@" >"$tmp/out" 2>&1
    rc=$?
    t1=$(date +%s.%N)
    printf '%-4s %6.1f s  %s\n' "$([ $rc = 0 ] && echo ok || echo FAIL)" "$(echo "$t1 - $t0" | bc)" "$*"
    if [ $rc != 0 ]; then
        failed=1
        tail -n 20 "$tmp/out" | sed 's/^/     | /'
    fi
}

run python3 benchmarks/decode_speed.py --repeat 50
run python3 benchmarks/accuracy.py --models hourglass --paddings 0.25
run python3 benchmarks/jitter.py --model hourglass --people 1 --frames 20
run python3 benchmarks/small_person.py --models hourglass --frames 4
run python3 benchmarks/frame_mode.py --models hourglass --limit 3 --datasets eval
run python3 benchmarks/quantized.py --models cpm --runs 3 --threads 1
run python3 benchmarks/pipeline.py --model hourglass --frames 30 --rounds 1
run python3 benchmarks/preview.py --model hourglass --frames 30 --runs 1
run python3 benchmarks/mqtt.py --latency-model hourglass --model hourglass --messages 30 --frames 30 --repeat 1
run python3 benchmarks/calibrate_vs_exhaustive.py --help
run python3 benchmarks/people_ids.py --help
run python3 benchmarks/movenet_reference.py --limit 5
run python3 benchmarks/tf_example_loop.py --frames 10 --rounds 1
run python3 benchmarks/which_model.py --models hourglass movenet-lightning --limit 5 --runs 3
if command -v swig >/dev/null && command -v g++ >/dev/null; then
    run python3 benchmarks/paf_reference.py --limit 2 --frames 25 --rounds 1
else
    echo "skip        benchmarks/paf_reference.py (needs swig and g++ to build the reference's pafprocess)"
fi
if [ -n "${TFLITE_PYTHON:-}" ]; then
    run env PYTHONPATH=. "$TFLITE_PYTHON" benchmarks/tflite_runtime_check.py "$SHARED/models/hourglass/model.tflite"
else
    echo "skip        benchmarks/tflite_runtime_check.py (set TFLITE_PYTHON to a venv's python with tflite-runtime 2.14)"
fi
exit $failed
