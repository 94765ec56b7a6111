#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets) within a total time budget; part of the test
# command. Installs cargo-fuzz if it is missing, builds all targets once, replays the kept
# regression inputs (fuzz/regressions/TARGET: every crash found, fixed, and kept), then fuzzes
# each target for its share of the budget from the committed seeds (fuzz/seeds/TARGET) and a
# working corpus (fuzz/corpus/TARGET, not committed). Fails if libFuzzer finds a crash (the
# input is kept under fuzz/artifacts/TARGET/).
#   scripts/fuzz.sh [SECONDS]      total budget, default 180
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
budget=${1:-180}
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
cd "$repo/fuzz"
# cargo-fuzz needs unstable compiler flags; RUSTC_BOOTSTRAP lets the stable toolchain accept
# them for this build only.
export RUSTC_BOOTSTRAP=1
seed_qcow2() {
    local corpus=$1 tmp
    [ -n "$(ls -A "$corpus")" ] && return
    tmp=$(mktemp -d)
    qemu-img create -q -f qcow2 -o cluster_size=512 "$tmp/plain" 1M
    qemu-img create -q -f qcow2 -o cluster_size=512,compat=0.10 "$tmp/v2" 1M
    qemu-img create -q -f qcow2 -o cluster_size=512 "$tmp/data" 1M
    qemu-io -f qcow2 -c "write -P 0x5a 0 4k" -c "write -z 8k 4k" "$tmp/data" >/dev/null
    qemu-img convert -c -O qcow2 -o cluster_size=4096 "$tmp/data" "$tmp/compressed"
    qemu-img create -q -f qcow2 -o cluster_size=512 -b plain -F qcow2 -u "$tmp/overlay" 1M
    cp "$tmp"/* "$corpus/"
    rm -rf "$tmp"
}
# Target and its share of the budget (the storage target, the oldest and largest input
# space, gets the most).
targets=(qcow2_image:40 broker_api:28 vmm_api:28 virtio_blk_chain:28 virtio_pci_registers:28 legacy_registers:28
    chipset_registers:20 ahci_registers:20 xhci_registers:20 virtio_net_queues:20)
cargo fuzz build
total=0
for t in "${targets[@]}"; do total=$((total + ${t#*:})); done
for t in "${targets[@]}"; do
    name=${t%%:*} share=${t#*:}
    secs=$(( share * budget / total ))
    corpus=$repo/fuzz/corpus/$name
    mkdir -p "$corpus"
    [ "$name" = qcow2_image ] && seed_qcow2 "$corpus"
    if [ -d "$repo/fuzz/regressions/$name" ]; then
        # Each kept input runs once; a crash fails here, before any fuzzing.
        cargo fuzz run "$name" "$repo/fuzz/regressions/$name"/* -- -runs=1 >/dev/null 2>&1 ||
            { echo "[tessera] fuzzing: a kept regression input of $name crashes again" >&2; exit 1; }
    fi
    seeds=()
    [ -d "$repo/fuzz/seeds/$name" ] && seeds=("$repo/fuzz/seeds/$name")
    echo "[tessera] fuzzing $name for ${secs} s"
    log=$corpus.log
    rc=0
    cargo fuzz run "$name" "$corpus" "${seeds[@]}" -- \
        -max_total_time="$secs" -max_len=65536 -timeout=10 -print_final_stats=1 >"$log" 2>&1 || rc=$?
    grep -E "^(Done|stat::number_of_executed_units|stat::peak_rss_mb)" "$log" || true
    if [ "$rc" -ne 0 ]; then
        tail -40 "$log" >&2
        echo "[tessera] fuzzing: $name crashed (exit $rc); the input is in fuzz/artifacts/$name" >&2
        exit 1
    fi
done
echo "[tessera] fuzzing: no crash in ${budget} s over ${#targets[@]} targets"
