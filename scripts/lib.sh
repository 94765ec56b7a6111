# Shared helpers for the project's scripts (sourced, not run).

# Installs Debian packages that are missing, idempotently: nothing runs when all are present.
ensure_packages() {
    local need=() p round sudo=
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    # Two rounds: installing one package can remove another that came from elsewhere (a
    # preinstalled qemu-utils from a newer release conflicts with Debian's qemu-system-x86).
    for round in 1 2; do
        need=()
        for p in "$@"; do
            dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
        done
        [ ${#need[@]} -eq 0 ] && return 0
        echo "[tessera] installing Debian packages: ${need[*]}" >&2
        [ "$round" -eq 1 ] && $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "${need[@]}" >/dev/null
    done
}

# Packages the build, the tests and the nested harness need.
# (gdisk, dosfstools, mtools, efibootmgr: the nested harness's EFI system partition, which
# build-l1.sh fingerprints before it builds it.)
TESSERA_PACKAGES=(qemu-system-x86 qemu-utils cpio binutils util-linux gzip libspice-server-dev
    libspice-client-glib-2.0-dev pkg-config acpica-tools ovmf swtpm xorriso gdisk dosfstools
    mtools efibootmgr)

# What the SPICE tests drive a real client with: remote-viewer under Xvfb, xwd, xdotool; and
# what tessera-client's window loads at run time (X11, xkbcommon, Mesa's GL with llvmpipe).
TESSERA_X_TEST_PACKAGES=(virt-viewer xvfb x11-apps xdotool openbox libx11-6 libx11-xcb1 libxcursor1
    libxi6 libxrandr2 libxkbcommon0 libxkbcommon-x11-0 libgl1 libglx-mesa0 libgl1-mesa-dri
    libegl1 libegl-mesa0)

# 0 when /dev/kvm is hardware virtualisation (svm/vmx and not PVM), 1 otherwise.
has_hardware_kvm() {
    [ -c /dev/kvm ] && grep -qwE 'svm|vmx' /proc/cpuinfo && [ ! -e /sys/module/kvm_pvm ]
}

# The memory cgroup's usage (page cache included, as this machine accounts it) and its
# anonymous memory, in bytes: "USAGE ANON".
cgroup_memory() {
    local g=/sys/fs/cgroup
    if [ -f $g/memory.current ]; then
        echo "$(cat $g/memory.current) $(awk '$1 == "anon" {print $2}' $g/memory.stat)"
    elif [ -f $g/memory/memory.usage_in_bytes ]; then
        echo "$(cat $g/memory/memory.usage_in_bytes) $(awk '$1 == "total_rss" {print $2}' $g/memory/memory.stat)"
    else
        echo "0 0"
    fi
}

# Samples the memory cgroup every 2 s and keeps the peaks in FILE ("USAGE ANON DROPS"); with
# a number of GiB as $2, drops the page cache whenever usage passes it.
watch_memory() {
    local file=$1 drop_gib=${2:-} peak=0 peak_anon=0 drops=0 usage anon t0=$SECONDS
    while :; do
        read -r usage anon < <(cgroup_memory)
        [ "${usage:-0}" -gt "$peak" ] && peak=$usage
        [ "${anon:-0}" -gt "$peak_anon" ] && peak_anon=$anon
        if [ -n "$drop_gib" ] && [ "${usage:-0}" -gt $(( drop_gib << 30 )) ]; then
            sync
            if echo 1 > /proc/sys/vm/drop_caches 2>/dev/null; then
                drops=$(( drops + 1 ))
                echo "[tessera] memory: $(( usage >> 20 )) MiB in use ($(( anon >> 20 )) MiB anonymous) at +$(( SECONDS - t0 )) s: page cache dropped" >&2
            fi
        fi
        echo "$peak $peak_anon $drops" > "$file"
        sleep 2
    done
}

# Kills (SIGKILL) every process whose environment carries TESSERA_TEST_RUN=$1, except this
# shell: what a test run started, whatever process group or session it moved to.
stop_marked_processes() {
    local marker="TESSERA_TEST_RUN=$1" p pid left=()
    for p in /proc/[0-9]*; do
        pid=${p#/proc/}
        [ "$pid" = $$ ] && continue
        if tr '\0' '\n' < "$p/environ" 2>/dev/null | grep -qxF "$marker"; then
            left+=("$pid $(tr '\0' ' ' < "$p/cmdline" 2>/dev/null | cut -c1-80)")
            kill -KILL "$pid" 2>/dev/null
        fi
    done
    if [ ${#left[@]} -gt 0 ]; then
        echo "[tessera] stopped ${#left[@]} process(es) the run left behind:" >&2
        printf '    %s\n' "${left[@]}" >&2
    fi
}

# The end-of-run report: time per phase, per test binary (from cargo test's output), peaks.
print_report() {
    local dir=$1 total=$2 rc=$3 peak anon drops
    echo
    echo "[tessera] ==== run report (exit status $rc, $total s in all) ===="
    if [ -f "$dir/phases" ]; then
        echo "[tessera] time per phase (s):"
        awk -F'\t' '{printf "    %6d  %s\n", $1, $2}' "$dir/phases"
    fi
    if [ -f "$dir/cargo-test.log" ]; then
        echo "[tessera] time per test binary (s; the slowest first, those over 1 s):"
        awk '
            /^ *Running / {
                if ($2 == "unittests") { src = $3; dep = $4 } else { src = $2; dep = $3 }
                gsub(/[()]/, "", dep); sub(/.*\//, "", dep); sub(/-[0-9a-f]+$/, "", dep)
                cur = dep " (" src ")"
            }
            /^ *Doc-tests / { cur = "doc-tests " $2 }
            /^test result:/ {
                secs = $0; sub(/.*finished in /, "", secs); sub(/s$/, "", secs)
                res = $3 " " $4 " passed, " $6 " failed"
                printf "%s\t%s\t%s\n", secs, cur, res
            }' "$dir/cargo-test.log" | sort -t$'\t' -k1,1 -rn \
            | awk -F'\t' '$1 >= 1 {printf "    %6.0f  %-60s %s\n", $1, $2, $3}'
    fi
    if [ -f "$dir/memory" ]; then
        read -r peak anon drops < "$dir/memory"
        echo "[tessera] peak memory (cgroup, sampled every 2 s): $(( peak >> 20 )) MiB with page cache, $(( anon >> 20 )) MiB anonymous; page cache dropped $drops time(s)"
    fi
}
