# Shared helpers for the project's scripts (sourced, not run).

# Installs Debian packages that are missing, idempotently: nothing runs when all are present.
ensure_packages() {
    local need=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
    done
    [ ${#need[@]} -eq 0 ] && return 0
    local sudo=
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    echo "[tessera] installing Debian packages: ${need[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "${need[@]}" >/dev/null
}

# Packages the build, the tests and the nested harness need.
TESSERA_PACKAGES=(qemu-system-x86 qemu-utils cpio binutils util-linux gzip)

# 0 when /dev/kvm is hardware virtualisation (svm/vmx and not PVM), 1 otherwise.
has_hardware_kvm() {
    [ -c /dev/kvm ] && grep -qwE 'svm|vmx' /proc/cpuinfo && [ ! -e /sys/module/kvm_pvm ]
}
