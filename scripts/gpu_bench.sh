#!/usr/bin/env bash
# GPU speed check in under 5 minutes on one NVIDIA GPU: benchmarks/bench_train.py with 4 concurrent training loops,
# then a 3-epoch ResNet-32 CIFAR-10-LT training run; prints one summary and writes its JSON.
#
#   scripts/prepare_device_data.sh          # once, where ../shared exists: the CIFAR-10-LT split into device_data/ (carry it)
#   scripts/gpu_bench.sh [DATA_DIR]         # on the GPU machine (default device_data/cifar10-lt)
#
# Output folder: $OUT_DIR, else the device tool's $OUT, else runs/gpu_bench. Files: bench_train_gpu.json (the
# benchmark), train/ (the run folder), gpu_bench.json (the summary), *.log.
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:-device_data/cifar10-lt}"
out="${OUT_DIR:-${OUT:-runs/gpu_bench}}"
if ! command -v nvidia-smi >/dev/null 2>&1 || ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "error: no GPU: scripts/gpu_bench.sh needs one NVIDIA GPU visible to torch (nvidia-smi and" \
         "torch.cuda.is_available()); on a CPU use benchmarks/bench_train.py directly" >&2
    exit 2
fi
if [ ! -d "$data" ]; then
    echo "error: no dataset at '$data': run scripts/prepare_device_data.sh where ../shared exists and carry" \
         "device_data/ to this machine, or pass the dataset folder as the first argument" >&2
    exit 2
fi
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
start=$(date +%s)

bench_rc=0
timeout 150 python benchmarks/bench_train.py --dataset "$data" --processes 4 --steps 20 --repeats 3 \
    --json "$out/bench_train_gpu.json" 2>&1 | tee "$out/bench_train.log" || bench_rc=$?
bench_s=$(( $(date +%s) - start ))

t0=$(date +%s)
train_rc=0
timeout 120 python recipes/train.py --config recipes/configs/resnet32-cifar10lt-ce.yaml --overwrite \
    dataset.path="$data" train.epochs=3 train.warmup_epochs=1 "train.milestones=[]" \
    output_dir="$out/train" 2>&1 | tee "$out/train.log" || train_rc=$?
train_s=$(( $(date +%s) - t0 ))

python - "$out" "$bench_rc" "$bench_s" "$train_rc" "$train_s" <<'PY'
import json, sys
from pathlib import Path

out, bench_rc, bench_s, train_rc, train_s = Path(sys.argv[1]), *map(int, sys.argv[2:])
def read(path):
    return json.loads(path.read_text()) if path.is_file() else None
bench, metrics = read(out / "bench_train_gpu.json"), read(out / "train" / "metrics.json")
log = [json.loads(line) for line in (out / "train" / "log.jsonl").read_text().splitlines()] \
    if (out / "train" / "log.jsonl").is_file() else []
speeds = [r["images_per_second"] for r in log if "images_per_second" in r]
summary = {
    "device": bench and bench.get("device"),
    "bench_train": {"exit": bench_rc, "wall_s": bench_s, **({k: bench.get(k) for k in (
        "auto", "eager_fp32_img_per_s", "best_bare_img_per_s", "loop_img_per_s", "supcon_2view_img_per_s",
        "loop_over_best_bare", "concurrent")} if bench else {})},
    "train_3_epochs": {"exit": train_rc, "wall_s": train_s, "epoch_img_per_s": speeds,
                       "accuracy": metrics and metrics.get("accuracy"), "ece": metrics and metrics.get("ece"),
                       "ts/ece": metrics and metrics.get("ts/ece")},
}
(out / "gpu_bench.json").write_text(json.dumps(summary, indent=2) + "\n")
print("== gpu_bench summary (" + str(out / "gpu_bench.json") + ")")
print(json.dumps(summary, indent=2))
PY
echo "== total: $(( $(date +%s) - start )) s wall"
[ "$bench_rc" -eq 0 ] && [ "$train_rc" -eq 0 ]
