# nest: qemu
# Benchmark (d): the Debian test guest from process start to its userspace marker, tessera-vmm
# against QEMU (-M microvm and -M q35, -enable-kvm), same kernel, initrd, command line, 2 vCPUs
# and 512 MiB. Each round runs every VMM once, the order rotated by one every round so that no
# VMM always boots first (on a cold page cache) or last. Runs: nest.runs=N on the L1 command
# line (default 5). Each boot is announced as "BENCH run=N vmm=NAME" (xtask bench-nested parses
# it and boot-timer's line after it, in any order).
runs=5
for w in $(cat /proc/cmdline); do
    case "$w" in nest.runs=*) runs=${w#nest.runs=} ;; esac
done
K=/guest/vmlinuz
I=/guest/initramfs.cpio.gz
A="console=ttyS0 reboot=k panic=-1 io_delay=none quiet"
Q="qemu-system-x86_64 -enable-kvm -cpu host -smp 2 -m 512M -nodefaults -no-user-config -nographic -serial stdio -no-reboot"

# rotate(): the peers' order for a round.
. /scenarios/lib.sh

boot() {
    case "$1" in
        tessera)
            boot-timer TESSERA-GUEST-READY -- tessera-vmm --kernel $K --initrd $I --cmdline "$A" \
                --memory 512M --vcpus 2 ;;
        # microvm has no i8042, so reboot=k cannot end it: stop it at the marker.
        qemu-microvm)
            boot-timer --kill-at-marker TESSERA-GUEST-READY -- $Q -M microvm -kernel $K -initrd $I -append "$A" ;;
        qemu-q35)
            boot-timer TESSERA-GUEST-READY -- $Q -M q35 -kernel $K -initrd $I -append "$A" ;;
    esac
}

r=1
while [ "$r" -le "$runs" ]; do
    for vmm in $(rotate "$r" tessera qemu-microvm qemu-q35); do
        echo "BENCH run=$r vmm=$vmm"
        boot "$vmm"
    done
    r=$((r + 1))
done
