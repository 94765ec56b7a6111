# The Debian test guest with a screen: bochs-drm and fbcon in L2 on tessera-vmm's display,
# SPICE on L1's 10.0.2.15:5930 (the host reaches it through QEMU's hostfwd, run.sh
# NEST_HOSTFWD), and the USB tablet and keyboard driven by xhci_hcd and usbhid (tg.usb), so
# the client's keys and pointer reach the guest through them. Announces the ticket, echoes
# the lines the host types (the guest writes them to its serial console), then prints the
# VMM's screenshot (PNG, base64) and keeps the VM up for the host to compare its client's
# picture and click in it, until the host types "nest-done" (or NEST_HOLD seconds, default
# 120, pass); then what the USB devices reported.
ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 || { echo "NEST: no network"; exit 1; }
L2=/tmp/l2-console.log
tessera-vmm --kernel /guest/vmlinuz --initrd /guest/initramfs.cpio.gz \
    --cmdline "console=ttyS0 reboot=k panic=-1 io_delay=none quiet tg.display tg.usb tg.exit=echo-tty1" \
    --memory 512M --vcpus 1 --serial "file:$L2" --api-socket /tmp/vm.sock \
    --display spice-port=5930,addr=0.0.0.0 --log warn &
vmm=$!
# Waits up to $2 seconds for the guest to print $1.
wait_l2() {
    i=0
    while ! grep -q "$1" "$L2" 2>/dev/null; do
        i=$((i + 1)); [ $i -gt $(($2 * 2)) ] && { echo "NEST: no '$1' from L2:"; cat "$L2"; return 1; }
        kill -0 $vmm 2>/dev/null || { echo "NEST: the VMM exited:"; cat "$L2"; return 1; }
        sleep 0.5
    done
}
wait_l2 TESSERA-GUEST-READY 400 || exit 1
grep '^tg: display' "$L2"
grep '^tg: usb \(xhci\|input\)' "$L2" | sed 's/^/NEST: /'
vmm-api PUT /tmp/vm.sock /display/ticket '{"ticket": "nested-ticket", "lifetime_secs": 900}' || exit 1
echo "NEST: display ready $(vmm-api GET /tmp/vm.sock /display)"
# Keys typed before the client's inputs channel is up are lost: say when it is.
i=0
until vmm-api GET /tmp/vm.sock /display | grep -q '"input_clients":[1-9]'; do
    i=$((i + 1)); [ $i -gt 600 ] && { echo "NEST: no client's inputs channel came up"; exit 1; }
    kill -0 $vmm 2>/dev/null || { echo "NEST: the VMM exited:"; cat "$L2"; exit 1; }
    sleep 0.5
done
echo "NEST: client inputs up"
# Each typed line goes to the host as it arrives (a line that lost its first keys, typed
# before the client's inputs channel was up, makes the host type it again), until the one
# expected.
seen=0 i=0
until grep -q 'tg: typed: hello from the client' "$L2"; do
    n=$(grep -c '^tg: typed: ' "$L2" || true)
    if [ "$n" -gt "$seen" ]; then
        grep '^tg: typed: ' "$L2" | tail -n +$((seen + 1)) | sed 's/^/NEST: /'
        seen=$n
    fi
    i=$((i + 1)); [ $i -gt 1200 ] && { echo "NEST: no typed line from L2:"; cat "$L2"; exit 1; }
    kill -0 $vmm 2>/dev/null || { echo "NEST: the VMM exited:"; cat "$L2"; exit 1; }
    sleep 0.5
done
grep '^tg: typed: ' "$L2" | tail -n +$((seen + 1)) | sed 's/^/NEST: /'
# The echo on tty1 is drawn before the line reaches the reader; give fbcon a moment anyway.
sleep 2
vmm-api GET /tmp/vm.sock /display/screenshot > /tmp/shot.png || exit 1
echo "NEST-SCREENSHOT-BEGIN"
base64 /tmp/shot.png
echo "NEST-SCREENSHOT-END"
# The host compares its client's picture now, and types "nest-done" when it has.
i=0
until grep -q 'tg: typed: nest-done' "$L2"; do
    i=$((i + 1)); [ $i -gt $((${NEST_HOLD:-120} * 2)) ] && break
    sleep 0.5
done
kill $vmm
# What reached the guest through the USB devices: the keys typed, the pointer's clicks.
echo "NEST: usb events keyboard=$(grep -c '^tg: usb event keyboard' "$L2") tablet=$(grep -c '^tg: usb event tablet' "$L2")"
grep '^tg: usb event tablet' "$L2" | tail -n 12 | sed 's/^/NEST: /'
