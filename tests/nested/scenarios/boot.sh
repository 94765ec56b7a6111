# The Debian test guest on tessera-vmm with 2 vCPUs, to its userspace marker, then powered off
# through ACPI (S5); the VMM must exit 0, and the test checks what the guest found in ACPI.
echo "NEST: scenario boot: tessera-vmm, Debian kernel, 2 vCPUs, 512M"
boot-timer TESSERA-GUEST-READY -- tessera-vmm \
    --kernel /guest/vmlinuz --initrd /guest/initramfs.cpio.gz \
    --cmdline "console=ttyS0 reboot=k panic=-1 io_delay=none quiet tg.exit=poweroff" \
    --memory 512M --vcpus 2 --log info
