#!/usr/bin/env bash
# Proof of stability, repeatable: runs the nested suite N times, or the whole CI (.ci/run) on
# M fresh clones of this checkout's HEAD, one after the other, and prints each run's result
# and duration, then a summary. Stops nothing early: every run is counted.
#
#   scripts/soak.sh nested N [--load]   the nested whole-system suite (hypervisor/tests/nested.rs)
#   scripts/soak.sh ci M                .ci/run on M fresh clones under /tmp (CI=true)
#
# --load reproduces a busy CI machine beside each nested run: two busy loops (the build
# machine has 2 cores) and the page cache filled with a file as large as free memory allows
# (up to 8 GiB), the conditions under which the nested hangs were seen.
# Logs: $TESSERA_CACHE/soak/ (one per run; a failed nested run keeps its L1 console and
# diagnosis there too). Exit status 0 only when every run passed.
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
. scripts/lib.sh
CACHE=${TESSERA_CACHE:-$repo/.cache}
out=$CACHE/soak
mkdir -p "$out"
mode=${1:?usage: soak.sh nested N [--load] | soak.sh ci M}
runs=${2:?usage: soak.sh nested N [--load] | soak.sh ci M}
load=${3:-}

results=()
fails=0
record() { # name rc seconds
    local verdict=passed
    [ "$2" -eq 0 ] || { verdict="FAILED (exit $2)"; fails=$((fails + 1)); }
    results+=("$(printf '%-12s %-18s %6d s' "$1" "$verdict" "$3")")
    echo "[soak] $1: $verdict in $3 s" >&2
}

load_pids=()
start_load() {
    local i
    for i in 1 2; do (while :; do :; done) & load_pids+=($!); done
    local free_gib
    free_gib=$(awk '/MemAvailable/ {print int($2 / 1048576) - 6}' /proc/meminfo)
    [ "$free_gib" -gt 8 ] && free_gib=8
    if [ "$free_gib" -gt 0 ]; then
        (while :; do
            dd if=/dev/zero of="$out/pagecache.fill" bs=1M count=$((free_gib * 1024)) status=none
            cat "$out/pagecache.fill" > /dev/null
            sleep 30
        done) & load_pids+=($!)
    fi
    echo "[soak] load: 2 busy loops, ${free_gib} GiB of page cache" >&2
}
stop_load() {
    [ ${#load_pids[@]} -gt 0 ] && kill "${load_pids[@]}" 2>/dev/null
    wait 2>/dev/null
    rm -f "$out/pagecache.fill"
}
trap stop_load EXIT

case "$mode" in
nested)
    cargo build -q --workspace --all-targets || exit 1
    tests/nested/build-l1.sh || exit 1
    [ "$load" = --load ] && start_load
    for i in $(seq 1 "$runs"); do
        t0=$(date +%s)
        TESSERA_REQUIRE_NESTED=1 TESSERA_REQUIRE_X=1 RUST_TEST_NOCAPTURE=1 \
            cargo test -q -p tessera-vmm --test nested > "$out/nested-$i.log" 2>&1
        rc=$?
        [ $rc -eq 0 ] || cp "$CACHE/nested/suite.log" "$out/nested-$i.console" 2>/dev/null
        [ $rc -eq 0 ] || cp "$CACHE/nested/suite.diag" "$out/nested-$i.diag" 2>/dev/null
        record "nested #$i" $rc $(( $(date +%s) - t0 ))
    done
    ;;
ci)
    head=$(git rev-parse HEAD)
    for i in $(seq 1 "$runs"); do
        dir=/tmp/tessera-soak-ci-$i
        rm -rf "$dir"
        git clone -q "$repo" "$dir" && git -C "$dir" checkout -q "$head" || exit 1
        t0=$(date +%s)
        (cd "$dir" && CI=true bash .ci/run) > "$out/ci-$i.log" 2>&1 < /dev/null
        rc=$?
        record "ci #$i" $rc $(( $(date +%s) - t0 ))
        # The report at the end of each run: phases, slowest test binaries, peak memory.
        sed -n '/==== run report/,$p' "$out/ci-$i.log" >&2
        rm -rf "$dir"
    done
    ;;
*)
    echo "usage: soak.sh nested N [--load] | soak.sh ci M" >&2
    exit 2
    ;;
esac
echo "[soak] $mode: $runs run(s), $fails failed"
printf '    %s\n' "${results[@]}"
[ "$fails" -eq 0 ]
