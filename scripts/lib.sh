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
TESSERA_PACKAGES=(qemu-system-x86 qemu-utils cpio binutils util-linux gzip libspice-server-dev
    libspice-client-glib-2.0-dev pkg-config)

# What the SPICE tests drive a real client with: remote-viewer under Xvfb, xwd, xdotool; and
# what tessera-client's window loads at run time (X11, xkbcommon, Mesa's GL with llvmpipe).
TESSERA_X_TEST_PACKAGES=(virt-viewer xvfb x11-apps xdotool openbox libx11-6 libx11-xcb1 libxcursor1
    libxi6 libxrandr2 libxkbcommon0 libxkbcommon-x11-0 libgl1 libglx-mesa0 libgl1-mesa-dri
    libegl1 libegl-mesa0)

# 0 when /dev/kvm is hardware virtualisation (svm/vmx and not PVM), 1 otherwise.
has_hardware_kvm() {
    [ -c /dev/kvm ] && grep -qwE 'svm|vmx' /proc/cpuinfo && [ ! -e /sys/module/kvm_pvm ]
}
