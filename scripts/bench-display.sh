#!/usr/bin/env bash
# Display benchmark: the same guest and workload on tessera-vmm's SPICE server and on QEMU's
# (-vga std -spice), both inside the nested harness (tests/nested/scenarios/bench-display.sh),
# with remote-viewer under Xvfb on this host as the client of both. The guest (Debian, bochs-drm,
# fbcon) scrolls its console by a fixed number of lines (the same work on both), then shows a
# still screen for 20 s. Each round runs both VMMs, the order swapped every round. Reports, per
# phase, the medians over the rounds of the bytes the server sent, the VMM's CPU seconds (all
# its processes) and the time the guest took to scroll, and the ratios tessera / QEMU.
#
#   scripts/bench-display.sh [--runs N] [--lines L]   prints a Markdown table (BENCHMARKS.md
#                                                     takes it as is); N >= 3 (default 3),
#                                                     L lines scrolled (default 2000)
# Env: TESSERA_BENCH_PORT (host port forwarded to L1's SPICE port; default 15931).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
. scripts/lib.sh
log() { echo "[bench-display] $*" >&2; }
ensure_packages "${TESSERA_PACKAGES[@]}" "${TESSERA_X_TEST_PACKAGES[@]}"
port=${TESSERA_BENCH_PORT:-15931}
runs=3
lines=2000
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) runs=${2:?--runs N}; shift 2 ;;
        --lines) lines=${2:?--lines L}; shift 2 ;;
        *) echo "usage: scripts/bench-display.sh [--runs N] [--lines L]" >&2; exit 2 ;;
    esac
done
# Fewer than 3 rounds cannot tell a trend from one disturbed run.
[ "$runs" -ge 3 ] || { echo "bench-display: --runs must be at least 3" >&2; exit 2; }
work=$(mktemp -d)
l1=$work/l1.log
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -- "-$p" 2>/dev/null || kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

# Budget: building and booting L1, then up to 5 minutes per VMM run, two retries included.
NEST_HOSTFWD=$port NEST_TIMEOUT=$((900 + (runs * 2 + 2) * 300)) NEST_ARGS="nest.runs=$runs nest.scroll=$lines" \
    setsid tests/nested/run.sh bench-display >"$l1" 2>"$work/run.err" &
pids+=($!)
display=:$((300 + $$ % 300))
setsid Xvfb "$display" -screen 0 1280x1024x24 -nolisten tcp >/dev/null 2>&1 &
pids+=($!)
printf '[virt-viewer]\ntype=spice\nhost=127.0.0.1\nport=%s\npassword=nested-ticket\ntitle=bench-guest\n' \
    "$port" >"$work/bench.vv"

wait_l1() { # PATTERN SECONDS [COUNT]: until L1's log has COUNT (default 1) lines matching
    local i=0
    until [ "$(grep -ac "$1" "$l1")" -ge "${3:-1}" ]; do
        # L1 ended (NEST-END), its runner is gone (QEMU died without a word), or time is up.
        if grep -q 'NEST-END' "$l1" || ! kill -0 "${pids[0]}" 2>/dev/null || [ $i -gt $(($2 * 2)) ]; then
            log "no '$1' (#${3:-1}) from L1:"; tail -30 "$l1" >&2; cat "$work/run.err" >&2; exit 1
        fi
        i=$((i + 1)); sleep 0.5
    done
}

# L1 decides the order (rotated each round); the k-th "bench ready" line names the next try.
# A try that fails in L1 (its VMM died or stalled: "NEST: bench failed TAG") is tried again
# there, with a ready line of its own; we go on until every run has a result.
k=0
results=0
while [ "$results" -lt $((runs * 2)) ]; do
    k=$((k + 1))
    log "try $k ($results/$((runs * 2)) runs done): waiting for the guest (the first builds and boots L1: minutes)"
    wait_l1 "NEST: bench ready" 1500 "$k"
    tag=$(grep -a "NEST: bench ready" "$l1" | sed -n "${k}p" | tr -d '\r' | sed 's/.*bench ready //')
    DISPLAY=$display setsid remote-viewer "$work/bench.vv" >/dev/null 2>&1 &
    rv=$!
    pids+=($rv)
    win=
    for _ in $(seq 1 120); do
        win=$(DISPLAY=$display xdotool search --name bench-guest 2>/dev/null | head -n 1) && [ -n "$win" ] && break
        sleep 0.5
    done
    [ -n "$win" ] || { log "remote-viewer showed no window"; exit 1; }
    # Enter on the guest's console starts the workload; until the client is connected and
    # the guest reads its console, keys are lost, so press it until the guest has started
    # (or the try failed).
    for _ in $(seq 1 60); do
        DISPLAY=$display xdotool windowfocus --sync "$win" key Return
        sleep 5
        grep -q "NEST: bench \(started\|failed\) $tag" "$l1" && break
    done
    wait_l1 "NEST: bench \(started\|failed\) $tag" 10
    if ! grep -q "NEST: bench failed $tag" "$l1"; then
        log "$tag: workload started ($lines lines scrolled, then 20 s still)"
        wait_l1 "NEST: bench \(result\|failed\) $tag" 900
    fi
    if grep -q "NEST: bench result $tag" "$l1"; then
        results=$((results + 1))
    else
        log "$tag failed in L1 (its VMM died or stalled there); L1 tries it again"
    fi
    kill -- "-$rv" 2>/dev/null || kill "$rv" 2>/dev/null || true
done

# NEST: bench result run=R vmm=V try=T lines=N start=T,CPU,BYTES scrolled=T,CPU,BYTES still=T,CPU,BYTES
grep -a 'NEST: bench result' "$l1" | tr -d '\r' | awk -v runs="$runs" '
function field(s, k,   a) { split(s, a, ","); return a[k] }
function add(key, x) { vals[key] = vals[key] " " x }
# Median of the numbers in the string s (insertion sort: mawk has no asort).
function median(s,   a, n, i, j, t) {
    n = split(s, a, " ")
    for (i = 2; i <= n; i++)
        for (j = i; j > 1 && a[j - 1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
    if (n == 0) return 0
    return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
function row(label, key, fmt,   t, q) {
    t = median(vals["tessera", key]); q = median(vals["qemu", key])
    printf "| %s | " fmt " | " fmt " | %s |\n", label, t, q, (q > 0 ? sprintf("%.2f", t / q) : "n/a")
}
{
    delete v
    for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
    n = v["vmm"]; count[n]++
    add(n SUBSEP "lines", v["lines"])
    for (p = 1; p <= 2; p++) {
        a = (p == 1) ? v["start"] : v["scrolled"]; b = (p == 1) ? v["scrolled"] : v["still"]
        add(n SUBSEP "secs" p, (field(b, 1) - field(a, 1)) / 100)
        add(n SUBSEP "kb" p, (field(b, 3) - field(a, 3)) / 1000)
        add(n SUBSEP "cpu" p, (field(b, 2) - field(a, 2)) / 100)
    }
}
END {
    printf "| metric (medians of %d / %d runs) | tessera-vmm | QEMU | tessera / QEMU |\n", count["tessera"], count["qemu"]
    printf "|---|---|---|---|\n"
    row("lines scrolled by the guest", "lines", "%d")
    row("scrolling: seconds the guest took", "secs1", "%.1f")
    row("scrolling: KB sent", "kb1", "%.0f")
    row("scrolling: VMM CPU s (all its processes)", "cpu1", "%.2f")
    row("still screen: seconds", "secs2", "%.1f")
    row("still screen: KB sent", "kb2", "%.1f")
    row("still screen: VMM CPU s (all its processes)", "cpu2", "%.2f")
}'
