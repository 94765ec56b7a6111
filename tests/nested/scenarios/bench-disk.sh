# nest: qemu
# Benchmark storage (c): the test guest's disk I/O through virtio-blk, tessera-vmm against QEMU
# (-M q35, virtio-blk-pci with 2 queues, default cache and AIO), each run on a fresh linked
# clone of /ds/base.qcow2 (from NEST_DISK), 2 vCPUs, 512 MiB. Each round runs both VMMs, the
# order swapped every round so that neither always goes first. Each run is announced as
# "BENCH run=N vmm=NAME" before the guest's "tg: io" lines (xtask bench-disk parses them).
# nest.runs=N (default 3), nest.iosecs=S seconds per random phase (default 5). A run that has
# not ended after 180 s is killed and announced as "BENCH-HUNG run=N vmm=NAME" (the emulated
# AMD-V of L1 has lost an I/O completion now and then, for either VMM): the other runs go on,
# and xtask bench-disk reports how many runs each VMM completed.
runs=3
secs=5
for w in $(cat /proc/cmdline); do
    case "$w" in
        nest.runs=*) runs=${w#nest.runs=} ;;
        nest.iosecs=*) secs=${w#nest.iosecs=} ;;
    esac
done
K=/guest/vmlinuz
I=/guest/initramfs-bench.cpio.gz
A="console=ttyS0 reboot=k panic=-1 io_delay=none quiet tg.iobench=$secs,64"
Q="qemu-system-x86_64 -enable-kvm -cpu host -smp 2 -m 512M -nodefaults -no-user-config -nographic -serial stdio -no-reboot"

# rotate(): the peers' order for a round.
. /scenarios/lib.sh

fresh() {
    rm -f /ds/run.qcow2
    tessera-img --datastore /ds clone /ds/base.qcow2 /ds/run.qcow2 >/dev/null
}

io() {
    case "$1" in
        tessera)
            tessera-vmm --kernel $K --initrd $I --cmdline "$A" --memory 512M --vcpus 2 \
                --disk path=/ds/run.qcow2,datastore=/ds ;;
        qemu-q35)
            $Q -M q35 -kernel $K -initrd $I -append "$A" \
                -drive file=/ds/run.qcow2,if=none,id=d0,format=qcow2 \
                -device virtio-blk-pci,drive=d0,num-queues=2 ;;
    esac
}

r=1
while [ "$r" -le "$runs" ]; do
    for vmm in $(rotate "$r" tessera qemu-q35); do
        fresh
        echo "BENCH run=$r vmm=$vmm"
        io "$vmm" &
        pid=$!
        t=0
        while kill -0 "$pid" 2>/dev/null && [ "$t" -lt 180 ]; do sleep 1; t=$((t + 1)); done
        if kill -0 "$pid" 2>/dev/null; then
            kill -9 "$pid" 2>/dev/null
            echo "BENCH-HUNG run=$r vmm=$vmm"
        fi
        wait "$pid" 2>/dev/null
    done
    r=$((r + 1))
done
rm -f /ds/run.qcow2
