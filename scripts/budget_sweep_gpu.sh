#!/usr/bin/env bash
# The budget sweep (`cifar10lt-budget`: CE, RefCal-joint, two-stage RefCal at 10 / 30 / 60 CE-epoch units, ResNet-20,
# seeds 0 and 1, fp32) on one GPU, as the suite `cifar10lt-budget-gpu`. A ResNet-20 at batch 128 leaves an H200 mostly
# idle, so the three methods train side by side as three processes sharing one results folder; each takes its
# budgets largest first, so a time limit cuts the small budgets that a CPU can also run.
#
#   scripts/prepare_device_data.sh                 # once, on a machine with ../shared: the CIFAR-10-LT split into device_data/
#   [SEEDS="0 1"] scripts/budget_sweep_gpu.sh [DATA_DIR] [OUT]   # defaults: device_data/cifar10-lt,
#                                                  #           benchmarks/results/cifar10lt-budget-gpu
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:-device_data/cifar10-lt}"
out="${2:-benchmarks/results/cifar10lt-budget-gpu}"
py="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS="${OMP_NUM_THREADS:-4}"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
"$py" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device visible'; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
# decode the dataset once (cached as uint8 arrays) instead of three times at once
"$py" -c "from refcal_zoo.config import load_config; from refcal_zoo.data import prepare_data
print(prepare_data(load_config('recipes/configs/resnet32-cifar10lt-ce.yaml', ['dataset.path=$data']).dataset).split.train_counts)"
mkdir -p "$out"
start=$(date +%s)
for method in ce refcal_joint refcal; do
    (for units in 60 10 30; do
        "$py" benchmarks/compare_methods.py --suite cifar10lt-budget-gpu --data "$data" --out "$out" \
            --methods "$method@$units" --seeds ${SEEDS:-0 1} || echo "$method@$units failed"
    done) > "$out/lane-$method.log" 2>&1 &
done
wait
echo "== sweep: $(( $(date +%s) - start )) s wall"
cat "$out/results.md" 2>/dev/null || echo "no cell finished"
# then, where the runs are: python benchmarks/compare_methods.py --suite cifar10lt-budget-gpu --plots (draws only,
# once every cell is done) and python benchmarks/make_report.py
