# nest: qemu
# The display benchmark's L1 half: the Debian test guest with bochs-drm/fbcon, on tessera-vmm
# (bochs display + SPICE) and then on QEMU (-vga std -spice), each serving SPICE on L1's port
# 5930 (the host reaches it through run.sh's NEST_HOSTFWD). For each: announce readiness, wait
# for the client's Enter (the guest then scrolls its console for 20 s and stays still for 20 s),
# and sample at each phase boundary: L1's uptime (centiseconds), the VMM process's CPU ticks
# (1/100 s) and L1's NIC transmit bytes, as T,CPU,BYTES (only SPICE flows out). scripts/bench-display.sh runs
# the client side and turns the samples into figures.
ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 || { echo "NEST: no network"; exit 1; }
K=/guest/vmlinuz
I=/guest/initramfs.cpio.gz
# video= pins fbcon at the same mode on both (QEMU's EDID would offer 1280x800).
A="video=1024x768 console=ttyS0 reboot=k panic=-1 io_delay=none quiet tg.display tg.exit=display-bench"
L2=/tmp/l2-console.log

sample() {
    echo "$(cut -d' ' -f1 /proc/uptime | tr -d .),$(awk '{print $14 + $15}' "/proc/$1/stat"),$(cat /sys/class/net/eth0/statistics/tx_bytes)"
}
wait_l2() {
    i=0
    while ! grep -q "$1" "$L2" 2>/dev/null; do
        i=$((i + 1)); [ $i -gt $(($2 * 5)) ] && { echo "NEST: no '$1' from L2:"; cat "$L2"; return 1; }
        if ! kill -0 "$pid" 2>/dev/null; then
            wait "$pid"
            echo "NEST: the VMM exited with status $?:"; cat "$L2"; dmesg | tail -5; return 1
        fi
        sleep 0.2
    done
}
bench() {
    name=$1
    shift
    : > "$L2"
    "$@" &
    pid=$!
    wait_l2 TESSERA-GUEST-READY 600 || return 1
    if [ "$name" = tessera ]; then
        vmm-api PUT /tmp/vm.sock /display/ticket '{"ticket": "nested-ticket", "lifetime_secs": 900}' || return 1
    fi
    echo "NEST: bench ready vmm=$name"
    wait_l2 "tg: bench scroll-start" 600 || return 1
    s0=$(sample $pid)
    echo "NEST: bench started vmm=$name"
    wait_l2 "tg: bench scroll-end" 120 || return 1
    s1=$(sample $pid)
    wait_l2 "tg: bench static-end" 120 || return 1
    s2=$(sample $pid)
    lines=$(sed -n 's/.*scroll-end lines=\([0-9]*\).*/\1/p' "$L2")
    echo "NEST: bench result vmm=$name lines=$lines start=$s0 scrolled=$s1 still=$s2"
    kill "$pid"
    wait "$pid" 2>/dev/null
    sleep 1
}
bench tessera tessera-vmm --kernel $K --initrd $I --cmdline "$A" --memory 512M --vcpus 1 \
    --serial "file:$L2" --api-socket /tmp/vm.sock --display spice-port=5930,addr=0.0.0.0 \
    --log warn || exit 1
bench qemu qemu-system-x86_64 -enable-kvm -cpu host -M q35 -m 512M -smp 1 -nodefaults \
    -no-user-config -display none -vga std -object secret,id=sp0,data=nested-ticket \
    -spice port=5930,addr=0.0.0.0,password-secret=sp0 -serial "file:$L2" -no-reboot \
    -kernel $K -initrd $I -append "$A" || exit 1
