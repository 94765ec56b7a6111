#!/usr/bin/env bash
# Display benchmark: the same guest and workload on tessera-vmm's SPICE server and on QEMU's
# (-vga std -spice), both inside the nested harness (tests/nested/scenarios/bench-display.sh),
# with remote-viewer under Xvfb on this host as the client of both. The guest (Debian, bochs-drm,
# fbcon) scrolls its console for 20 s, then shows a still screen for 20 s. Reports, per phase,
# the bytes the server sent per second and the VMM process's CPU seconds, and the ratios.
#
#   scripts/bench-display.sh            prints a Markdown table (BENCHMARKS.md takes it as is)
# Env: TESSERA_BENCH_PORT (host port forwarded to L1's SPICE port; default 15931).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
. scripts/lib.sh
log() { echo "[bench-display] $*" >&2; }
ensure_packages "${TESSERA_PACKAGES[@]}" "${TESSERA_X_TEST_PACKAGES[@]}"
port=${TESSERA_BENCH_PORT:-15931}
work=$(mktemp -d)
l1=$work/l1.log
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -- "-$p" 2>/dev/null || kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

NEST_HOSTFWD=$port NEST_TIMEOUT=1800 setsid tests/nested/run.sh bench-display >"$l1" 2>"$work/run.err" &
pids+=($!)
display=:$((300 + $$ % 300))
setsid Xvfb "$display" -screen 0 1280x1024x24 -nolisten tcp >/dev/null 2>&1 &
pids+=($!)
printf '[virt-viewer]\ntype=spice\nhost=127.0.0.1\nport=%s\npassword=nested-ticket\ntitle=bench-guest\n' \
    "$port" >"$work/bench.vv"

wait_l1() { # PATTERN SECONDS
    local i=0
    until grep -q "$1" "$l1"; do
        if grep -q 'NEST-END' "$l1" || [ $i -gt $(($2 * 2)) ]; then
            log "no '$1' from L1:"; tail -30 "$l1" >&2; cat "$work/run.err" >&2; exit 1
        fi
        i=$((i + 1)); sleep 0.5
    done
}

for vmm in tessera qemu; do
    log "waiting for the guest on $vmm (the first run builds and boots L1: minutes)"
    wait_l1 "NEST: bench ready vmm=$vmm" 1500
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
    # the guest reads its console, keys are lost, so press it until the guest has started.
    for _ in $(seq 1 60); do
        DISPLAY=$display xdotool windowfocus --sync "$win" key Return
        sleep 5
        grep -q "NEST: bench started vmm=$vmm" "$l1" && break
    done
    wait_l1 "NEST: bench started vmm=$vmm" 10
    log "$vmm: workload started (20 s scrolling, 20 s still)"
    wait_l1 "NEST: bench result vmm=$vmm" 300
    kill -- "-$rv" 2>/dev/null || kill "$rv" 2>/dev/null || true
done

# NEST: bench result vmm=V lines=N start=T,CPU,BYTES scrolled=T,CPU,BYTES still=T,CPU,BYTES
grep -a 'NEST: bench result' "$l1" | tr -d '\r' | awk '
function field(s, k,   a) { split(s, a, ","); return a[k] }
{
    for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
    n = v["vmm"]; lines[n] = v["lines"]
    for (p = 1; p <= 2; p++) {
        a = (p == 1) ? v["start"] : v["scrolled"]; b = (p == 1) ? v["scrolled"] : v["still"]
        secs = (field(b, 1) - field(a, 1)) / 100
        bps[n, p] = (field(b, 3) - field(a, 3)) / secs
        cpu[n, p] = (field(b, 2) - field(a, 2)) / 100
        dur[n, p] = secs
    }
}
END {
    printf "| phase | tessera-vmm | QEMU | tessera / QEMU |\n|---|---|---|---|\n"
    name[1] = "scrolling console"; name[2] = "still screen"
    for (p = 1; p <= 2; p++) {
        printf "| %s: KB/s sent | %.1f | %.1f | %.2f |\n", name[p], bps["tessera", p] / 1000, bps["qemu", p] / 1000, \
            (bps["qemu", p] > 0 ? bps["tessera", p] / bps["qemu", p] : 0)
        printf "| %s: VMM CPU s (phase %.0f s / %.0f s) | %.2f | %.2f | %.2f |\n", name[p], dur["tessera", p], dur["qemu", p], \
            cpu["tessera", p], cpu["qemu", p], (cpu["qemu", p] > 0 ? cpu["tessera", p] / cpu["qemu", p] : 0)
    }
    printf "| lines scrolled by the guest | %d | %d | %.2f |\n", lines["tessera"], lines["qemu"], \
        (lines["qemu"] > 0 ? lines["tessera"] / lines["qemu"] : 0)
}'
