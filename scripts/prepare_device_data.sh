#!/usr/bin/env bash
# Write the CIFAR-10-LT split the recipes train on (rho 10, seed 0, 50 validation images per class: the train,
# validation and test splits, original JPEG bytes) into the git-ignored device_data/cifar10-lt, so it travels with
# the checkout to a GPU machine (name device_data in the device tool's `carry`). It is about 28 MB where the whole
# CIFAR-10 copy is 54 MB, and it stands in for its source: `dataset.path=device_data/cifar10-lt` with the recipes'
# own dataset settings trains on the same tensors and records the source's identity (refcal_zoo.data.prepare).
#
#   scripts/prepare_device_data.sh [SOURCE]     # default ../shared/datasets/cifar10
set -euo pipefail
cd "$(dirname "$0")/.."
src="${1:-../shared/datasets/cifar10}"
py="${PYTHON:-python}"
if [ ! -d "$src" ]; then
    echo "error: no dataset folder at '$src': pass the local CIFAR-10 copy (uoft-cs/cifar10's layout) as the" \
         "first argument" >&2
    exit 2
fi
mkdir -p device_data
rm -rf device_data/cifar10  # the whole copy an earlier version of this script made
"$py" -m refcal_zoo.cli dataset export --dataset "$src" --rho 10 --seed 0 --val-per-class 50 \
    --to device_data/cifar10-lt --overwrite
# the packages refcal_zoo needs that the GPU machine's image lacks (datasets, with dill and multiprocess at the
# versions installed here), as wheels: scripts/zoo_build_gpu.sh installs them there when `import datasets` fails
rm -rf device_data/wheels
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d device_data/wheels $("$py" -m pip list --format=freeze 2>/dev/null | grep -iE '^(datasets|dill|multiprocess)==') \
    || echo "warning: could not download the wheels (no package registry?); the GPU machine needs datasets" >&2
du -sh device_data/cifar10-lt device_data/wheels 2>/dev/null || true
