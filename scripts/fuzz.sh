#!/usr/bin/env bash
# Runs the storage fuzz target (hostile qcow2 images) for a bounded time; part of the test
# command. Installs cargo-fuzz if it is missing, seeds the corpus with small images made by
# qemu-img, and fails if libFuzzer finds a crash (the input is kept under
# storage/fuzz/artifacts/).
#   scripts/fuzz.sh [SECONDS]      default 60
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
secs=${1:-60}
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
corpus=$repo/storage/fuzz/corpus/qcow2_image
mkdir -p "$corpus"
if [ -z "$(ls -A "$corpus")" ]; then
    tmp=$(mktemp -d)
    qemu-img create -q -f qcow2 -o cluster_size=512 "$tmp/plain" 1M
    qemu-img create -q -f qcow2 -o cluster_size=512,compat=0.10 "$tmp/v2" 1M
    qemu-img create -q -f qcow2 -o cluster_size=512 "$tmp/data" 1M
    qemu-io -f qcow2 -c "write -P 0x5a 0 4k" -c "write -z 8k 4k" "$tmp/data" >/dev/null
    qemu-img convert -c -O qcow2 -o cluster_size=4096 "$tmp/data" "$tmp/compressed"
    qemu-img create -q -f qcow2 -o cluster_size=512 -b plain -F qcow2 -u "$tmp/overlay" 1M
    cp "$tmp"/* "$corpus/"
    rm -rf "$tmp"
fi
cd "$repo/storage"
# cargo-fuzz needs unstable compiler flags; RUSTC_BOOTSTRAP lets the stable toolchain accept
# them for this build only.
RUSTC_BOOTSTRAP=1 cargo fuzz run qcow2_image "$corpus" -- -max_total_time="$secs" -max_len=65536 -timeout=10
echo "[tessera] fuzzing: no crash in ${secs} s"
