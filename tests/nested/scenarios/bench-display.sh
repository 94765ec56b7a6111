# nest: qemu
# The display benchmark's L1 half: the Debian test guest with bochs-drm/fbcon, on tessera-vmm
# (bochs display + SPICE) and on QEMU (-vga std -spice), each serving SPICE on L1's port 5930
# (the host reaches it through run.sh's NEST_HOSTFWD). Each round runs both VMMs, the order
# swapped every round so that neither always goes first; nest.runs=N rounds (default 3),
# nest.scroll=L lines to scroll (default 2000). For each run: announce readiness, wait for the
# client's Enter (the guest then scrolls its console by the same L lines on every VMM, then
# stays still for 20 s), and sample at each phase boundary: L1's uptime (centiseconds), the
# VMM's CPU ticks (1/100 s, all its processes) and L1's NIC transmit bytes, as T,CPU,BYTES
# (only SPICE flows out). scripts/bench-display.sh runs the client side and turns the samples
# into figures. A run whose VMM dies or stalls (L1's emulated AMD-V has crashed and hung L2
# guests now and then, under either VMM) is announced as "NEST: bench failed TAG" and tried
# again, up to 3 tries; each try has its own tag (run=R vmm=V try=T).
ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 || { echo "NEST: no network"; exit 1; }
runs=3
scroll=2000
for w in $(cat /proc/cmdline); do
    case "$w" in
        nest.runs=*) runs=${w#nest.runs=} ;;
        nest.scroll=*) scroll=${w#nest.scroll=} ;;
    esac
done
K=/guest/vmlinuz
I=/guest/initramfs.cpio.gz
# video= pins fbcon at the same mode on both (QEMU's EDID would offer 1280x800).
A="video=1024x768 console=ttyS0 reboot=k panic=-1 io_delay=none quiet tg.display tg.exit=display-bench tg.scroll=$scroll"
L2=/tmp/l2-console.log

# rotate(): the peers' order for a round.
. /scenarios/lib.sh
# CPU ticks of process $1 and its children: tessera-vmm serves SPICE from a child process
# (tessera-display), QEMU from its own, so only the sum compares like with like. The VMM's
# own count includes children it has reaped (a display process that was restarted).
cpu_ticks() {
    cat /proc/[0-9]*/stat 2>/dev/null \
        | awk -v p="$1" '$1 == p { t += $14 + $15 + $16 + $17 } $4 == p { t += $14 + $15 } END { print t + 0 }'
}
sample() {
    echo "$(cut -d' ' -f1 /proc/uptime | tr -d .),$(cpu_ticks "$1"),$(cat /sys/class/net/eth0/statistics/tx_bytes)"
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
start_vmm() {
    case "$1" in
        tessera)
            tessera-vmm --kernel $K --initrd $I --cmdline "$A" --memory 512M --vcpus 1 \
                --serial "file:$L2" --api-socket /tmp/vm.sock \
                --display spice-port=5930,addr=0.0.0.0 --log warn & ;;
        qemu)
            qemu-system-x86_64 -enable-kvm -cpu host -M q35 -m 512M -smp 1 -nodefaults \
                -no-user-config -display none -vga std -object secret,id=sp0,data=nested-ticket \
                -spice port=5930,addr=0.0.0.0,password-secret=sp0 -serial "file:$L2" -no-reboot \
                -kernel $K -initrd $I -append "$A" & ;;
    esac
    pid=$!
}
# One try ($3) of VMM $1 in round $2.
bench() {
    name=$1
    tag="run=$2 vmm=$1 try=$3"
    : > "$L2"
    rm -f /tmp/vm.sock
    start_vmm "$name"
    wait_l2 TESSERA-GUEST-READY 600 || return 1
    if [ "$name" = tessera ]; then
        vmm-api PUT /tmp/vm.sock /display/ticket '{"ticket": "nested-ticket", "lifetime_secs": 900}' || return 1
    fi
    echo "NEST: bench ready $tag"
    wait_l2 "tg: bench scroll-start" 600 || return 1
    s0=$(sample $pid)
    echo "NEST: bench started $tag"
    wait_l2 "tg: bench scroll-end" 600 || return 1
    s1=$(sample $pid)
    wait_l2 "tg: bench static-end" 120 || return 1
    s2=$(sample $pid)
    lines=$(sed -n 's/.*scroll-end lines=\([0-9]*\).*/\1/p' "$L2")
    echo "NEST: bench result $tag lines=$lines start=$s0 scrolled=$s1 still=$s2"
    kill "$pid"
    wait "$pid" 2>/dev/null
    sleep 1
}

r=1
while [ "$r" -le "$runs" ]; do
    for vmm in $(rotate "$r" tessera qemu); do
        t=1
        until bench "$vmm" "$r" "$t"; do
            echo "NEST: bench failed run=$r vmm=$vmm try=$t"
            kill "$pid" 2>/dev/null
            wait "$pid" 2>/dev/null
            sleep 1
            t=$((t + 1))
            [ "$t" -le 3 ] || exit 1
        done
    done
    r=$((r + 1))
done
