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
du -sh device_data/cifar10-lt
