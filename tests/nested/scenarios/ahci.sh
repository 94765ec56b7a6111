# AHCI: the test guest on tessera-vmm with a SATA disk (a qcow2 image in /ds) and two DVD-ROM
# drives (the ISO 9660 disc the host made with xorriso, and an empty drive), all on the ICH9
# AHCI controller. The guest mounts the disc, writes and reads the disk and ejects the disc
# (tests/guest/init, tg.ahci); the host checks the lines, and the disk image once /ds is back.
echo "NEST: scenario ahci: tessera-vmm, SATA disk and DVD-ROM drives on AHCI"
tessera-vmm --kernel /guest/vmlinuz --initrd /guest/initramfs.cpio.gz \
    --cmdline "console=ttyS0 reboot=k panic=-1 io_delay=none quiet tg.ahci" \
    --memory 512M --vcpus 2 --log info \
    --disk path=/ds/sata.qcow2,datastore=/ds,bus=sata,serial=tessera-sata-0 \
    --cdrom /ds/disc.iso --cdrom empty
