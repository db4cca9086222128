#!/usr/bin/env bash
# Copy the shared CIFAR-10 (JPEG, HF layout, ~55 MB) into the git-ignored device_data/ so it travels with the
# checkout to a GPU machine (name device_data in the device tool's `carry`).
set -euo pipefail
cd "$(dirname "$0")/.."
src="${1:-../shared/datasets/cifar10}"
mkdir -p device_data
rm -rf device_data/cifar10
cp -r "$src" device_data/cifar10
chmod -R u+w device_data/cifar10
du -sh device_data/cifar10
