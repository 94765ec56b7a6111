# The Debian test guest on tessera-vmm with 2 vCPUs, to its userspace marker; then the API
# must have recorded the guest's userspace milestone (0x60) and the VMM must exit 0.
echo "NEST: scenario boot: tessera-vmm, Debian kernel, 2 vCPUs, 512M"
boot-timer TESSERA-GUEST-READY -- tessera-vmm \
    --kernel /guest/vmlinuz --initrd /guest/initramfs.cpio.gz \
    --cmdline "console=ttyS0 reboot=k panic=-1 io_delay=none quiet" \
    --memory 512M --vcpus 2 --log info
