#!/usr/bin/env bash
# The zoo build on a GPU machine lent for a few minutes per call (the device tool): trains the chosen cells side by
# side until a deadline, then packs what it has (finished runs first, then interrupted ones) into $OUT within the
# tool's limits. Nothing is published there; the runs come home and are published here.
#
# Here, before a call:
#   scripts/prepare_device_data.sh                                      # once: device_data/cifar10-lt (28 MB)
#   python scripts/device_runs.py stage ~/zoo_build/cifar10lt-full-gpu device_runs   # interrupted runs to carry
# The call (carry: ["device_data", "device_runs"]; timeout_s 600):
#   ENTRIES="resnet32-cifar10lt-crl resnet32-cifar10lt-logit_adjusted" SEEDS="0" PARALLEL=8 DEADLINE_S=420 \
#       scripts/zoo_build_gpu.sh
# Here, after it (its files land in the folder the tool names):
#   python scripts/device_runs.py unpack <files folder> ~/zoo_build/cifar10lt-full-gpu
#   python benchmarks/build_zoo.py --suite cifar10lt-full-gpu --root ~/zoo_build/cifar10lt-full-gpu --publish-only
#
# Environment: SUITE (cifar10lt-full-gpu), ENTRIES / SEEDS (default: the whole suite, seeds 0-2), PARALLEL (cells at
# once, 8), DEADLINE_S (seconds of training before the build is stopped with SIGINT; interrupted runs keep their
# newest checkpoint, at most one epoch is lost; 420), OUT_DIR (else the tool's $OUT, else runs/zoo_build_gpu),
# OVERRIDES (extra KEY=VALUE for every cell, e.g. a smoke budget to try the script on a CPU; runs trained with them
# must not be published as the full-budget entries, and build_zoo's cards say so).
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PYTHON:-python3}"
suite="${SUITE:-cifar10lt-full-gpu}"
data="$PWD/device_data/cifar10-lt"  # absolute: the run records a folder, never a path that looks like a Hub id
root="$PWD/device_runs"
out="${OUT_DIR:-${OUT:-runs/zoo_build_gpu}}"
if [ ! -f "$data/lt_indices.json" ]; then
    echo "error: no exported split at device_data/cifar10-lt: run scripts/prepare_device_data.sh where ../shared" \
         "exists and name device_data in the device tool's carry" >&2
    exit 2
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # refcal_zoo from this checkout, installed or not
if ! "$py" -c "import datasets" 2>/dev/null; then  # the GPU image lacks it: the wheels prepare_device_data.sh saved
    # a failed install stops here, in one line, not minutes later as an ImportError inside every cell
    if ! compgen -G "device_data/wheels/*.whl" > /dev/null || ! "$py" -m pip install -q --no-index --no-deps \
            --no-compile --no-cache-dir --target /tmp/site device_data/wheels/*.whl; then
        echo "error: 'datasets' is not importable and its wheels in device_data/wheels did not install: rerun" \
             "scripts/prepare_device_data.sh here (it saves wheels for the device's Python) and carry device_data" >&2
        exit 2
    fi
    export PYTHONPATH="/tmp/site:$PYTHONPATH"
    if ! "$py" -c "import datasets" 2>/dev/null; then
        echo "error: the wheels in device_data/wheels installed but 'datasets' does not import with $py" \
             "($("$py" -V 2>&1)): scripts/prepare_device_data.sh downloads them for Python 3.12; match its" \
             "--python-version to the device's and rerun it" >&2
        exit 2
    fi
fi
if ! "$py" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "warning: no GPU visible to torch: the cells train on the CPU" >&2
fi
mkdir -p "$root/runs" "$out"
skip=()
[ -f "$root/finished.txt" ] && mapfile -t skip < "$root/finished.txt"
entries=()
[ -n "${ENTRIES:-}" ] && read -r -a entries <<< "$ENTRIES"
seeds=()
[ -n "${SEEDS:-}" ] && read -r -a seeds <<< "$SEEDS"
overrides=()
[ -n "${OVERRIDES:-}" ] && read -r -a overrides <<< "$OVERRIDES"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || true
export PYTHONUNBUFFERED=1
start=$(date +%s)
rc=0
timeout -s INT -k 60 "${DEADLINE_S:-420}" "$py" benchmarks/build_zoo.py --suite "$suite" --data "$data" \
    --root "$root" --parallel "${PARALLEL:-8}" --no-publish --no-corruption-study \
    ${entries[@]+--entries "${entries[@]}"} ${seeds[@]+--seeds "${seeds[@]}"} ${skip[@]+--skip "${skip[@]}"} \
    ${overrides[@]+--override "${overrides[@]}"} 2>&1 | tee "$root/build.log" || rc=$?
echo "== build: exit $rc after $(( $(date +%s) - start )) s (124/130: stopped at the deadline; rerun to resume)"
"$py" benchmarks/build_zoo.py --suite "$suite" --data "$data" --root "$root" --list \
    ${entries[@]+--entries "${entries[@]}"} ${seeds[@]+--seeds "${seeds[@]}"} \
    ${overrides[@]+--override "${overrides[@]}"} || true
"$py" scripts/device_runs.py pack "$root" "$out"
echo "== total: $(( $(date +%s) - start )) s"
