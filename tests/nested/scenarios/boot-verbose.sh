# nest: qemu
# Diagnostics: the Debian test guest on tessera-vmm, then on QEMU q35, each printing its kernel
# log (with printk times) after the marker, to compare where boot time goes.
K=/guest/vmlinuz
I=/guest/initramfs.cpio.gz
A="console=ttyS0 reboot=k panic=-1 io_delay=none quiet printk.time=1 tg.dmesg"
echo "VERBOSE vmm=tessera"
boot-timer TESSERA-GUEST-READY -- tessera-vmm --kernel $K --initrd $I --cmdline "$A" --memory 512M --vcpus 2
echo "VERBOSE vmm=qemu-q35"
boot-timer TESSERA-GUEST-READY -- qemu-system-x86_64 -enable-kvm -cpu host -smp 2 -m 512M -nodefaults \
    -no-user-config -nographic -serial stdio -no-reboot -M q35 -kernel $K -initrd $I -append "$A"
