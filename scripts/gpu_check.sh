#!/usr/bin/env bash
# GPU readiness check: ResNet-32 on CIFAR-10-LT (rho 10) from a local copy of the dataset, bf16, channels_last,
# a fixed number of epochs, then the pipeline benchmark. Prints img/s and the metric table. Sized for < 5 minutes
# on one H200 (20,381 training images per epoch).
#
#   scripts/prepare_device_data.sh            # once, on a machine with ../shared: writes the CIFAR-10-LT split into device_data/
#   scripts/gpu_check.sh [DATA_DIR] [EPOCHS]  # on the GPU machine (defaults: device_data/cifar10-lt, 30)
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:-device_data/cifar10-lt}"
epochs="${2:-30}"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device visible'; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
start=$(date +%s)
python recipes/train.py --config recipes/configs/resnet32-cifar10lt-ce.yaml --overwrite \
    dataset.path="$data" train.epochs="$epochs" train.warmup_epochs=1 \
    "train.milestones=[$((epochs * 8 / 10)),$((epochs * 9 / 10))]" \
    train.mixed_precision=bf16 train.channels_last=true train.eval_batch_size=2048 \
    output_dir=runs/gpu_check/resnet32-cifar10lt-ce
echo "== training run: $(( $(date +%s) - start )) s wall"
python benchmarks/bench_pipeline.py --dataset "$data" --steps 100 --repeats 3 --json runs/gpu_check/bench_pipeline.json
echo "== total: $(( $(date +%s) - start )) s wall"
