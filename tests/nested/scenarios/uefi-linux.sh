# nest: backports-l0
# Linux through UEFI: Debian's OVMF finds the EFI system partition on a virtio-blk GPT disk
# (/guest/esp.img, tests/nested/build-esp.sh), its shell runs startup.nsh, which starts the
# Debian kernel's EFI stub with its initrd; the guest sees the firmware's ACPI tables, adds a
# boot entry with efibootmgr and powers off. The next boot, with the same variable store,
# goes straight to that entry: it was kept.
# By hand only: under the nested harness's QEMU (TCG), Linux booted through OVMF aborts L0
# (or, with one vCPU, triple-faults) whichever VMM runs L2, QEMU included
# (tests/nested/l0-qemu.sh); it needs hardware virtualisation.
echo "NEST: scenario uefi-linux: Debian's kernel from an EFI system partition, a boot entry kept"
VARS=/tmp/uefi-linux-vars.fd
cp /firmware/OVMF_VARS_4M.fd "$VARS"
ms() { awk '{printf "%d", $1 * 1000}' /proc/uptime; }

efi_boot() {
    out=$1
    start=$(ms)
    timeout 300 tessera-vmm --firmware /firmware/OVMF_CODE_4M.fd --firmware-vars "$VARS" \
        --disk path=/guest/esp.img,format=raw,readonly=on --memory 512M --vcpus 2 --serial "file:$out" \
        --log info 2> "$out.err" < /dev/null
    rc=$?
    echo "NEST: uefi-linux vmm rc=$rc after $(($(ms) - start)) ms"
    tr -d '\033' < "$out" | grep -a -E '^tg: |TESSERA-GUEST-READY|Shell>|startup.nsh' | cut -c1-200 | sed 's/^/NEST: L2: /'
    grep -v 'no device claims' "$out.err" | grep -E 'ERROR|WARN|stopped|tessera-vmm:' | head -5 | sed 's/^/NEST: vmm: /'
    return $rc
}

efi_boot /tmp/uefi-linux-1.log || exit 1
efi_boot /tmp/uefi-linux-2.log || exit 1
first=$(grep -a 'tg: efi boot current=' /tmp/uefi-linux-1.log)
second=$(grep -a 'tg: efi boot current=' /tmp/uefi-linux-2.log)
entry=${second##*tessera=}
case "$second" in
    *"current=$entry tessera=$entry"*) echo "NEST: uefi-linux booted the kept entry Boot$entry" ;;
    *) echo "NEST: uefi-linux did not boot a kept entry (first: $first; second: $second)"; exit 1 ;;
esac
