# Hyper-V enlightenments: the Debian test guest (2 vCPUs) on tessera-vmm --hyperv takes itself
# to run on Hyper-V and keeps time with the reference TSC page; then powers off.
echo "NEST: scenario hyperv: Hyper-V enlightenments"
tessera-vmm --kernel /guest/vmlinuz --initrd /guest/initramfs.cpio.gz \
    --cmdline "console=ttyS0 panic=-1 io_delay=none quiet tg.exit=poweroff" \
    --memory 512M --vcpus 2 --hyperv --log info
echo "NEST: hyperv vmm rc=$?"
