# virtio-blk: the test guest on a linked clone (/ds/clone.qcow2 over /ds/base.qcow2, put there
# by the host through NEST_DISK). The guest checks what the host wrote, writes a pattern,
# discards a range and flushes; the host then checks the images with qemu-img and qemu-io.
echo "NEST: scenario disk: tessera-vmm, virtio-blk on a qcow2 linked clone"
tessera-vmm --kernel /guest/vmlinuz --initrd /guest/initramfs.cpio.gz \
    --cmdline "console=ttyS0 reboot=k panic=-1 io_delay=none quiet tg.disk=check" \
    --memory 512M --vcpus 2 --log info \
    --disk path=/ds/clone.qcow2,datastore=/ds,serial=tessera-disk-0
