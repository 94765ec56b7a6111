#!/usr/bin/env bash
# The main job, for now: boots the Debian test guest with tessera-vmm (2 vCPUs, 512 MiB) and
# shows its console. Where this machine lacks hardware virtualisation (no svm/vmx, or PVM),
# it says so and runs the same boot inside the nested TCG+SVM harness.
#   scripts/demo.sh           boot to the ready marker, then the guest powers off
#   scripts/demo.sh --shell   stay in a guest shell (hardware virtualisation only)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
. scripts/lib.sh

ensure_packages "${TESSERA_PACKAGES[@]}"
tests/guest/build-guest.sh
cache=${TESSERA_CACHE:-$repo/.cache}

if has_hardware_kvm; then
    exit_mode=reboot
    [ "${1:-}" = "--shell" ] && exit_mode=shell
    scripts/build-vmm.sh
    echo "[tessera] booting the test guest on this machine's KVM (console below)" >&2
    exec target/release/tessera-vmm --kernel "$cache/guest/vmlinuz" \
        --initrd "$cache/guest/initramfs.cpio.gz" \
        --cmdline "console=ttyS0 reboot=k panic=-1 io_delay=none tg.exit=$exit_mode" \
        --memory 512M --vcpus 2 --log info
fi

echo "[tessera] This machine has no hardware virtualisation for a stock kernel:" >&2
if [ -e /sys/module/kvm_pvm ]; then
    echo "[tessera]   /dev/kvm is PVM, which emulates a stock kernel ~1,000x too slowly." >&2
else
    echo "[tessera]   no /dev/kvm with svm/vmx." >&2
fi
echo "[tessera] Running tessera-vmm inside the nested harness (QEMU TCG guest with an emulated" >&2
echo "[tessera] AMD-V CPU, which offers a real /dev/kvm). The L1 console follows; the test" >&2
echo "[tessera] guest's console is the part between NEST-BEGIN and NEST-END." >&2
exec tests/nested/run.sh boot
