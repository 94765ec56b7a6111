# The ACPI power button: the Debian test guest waits for it (Linux's button driver, busybox
# acpid); PUT /vm/power-button on the control API presses it, the guest powers off through
# ACPI's S5 and the VMM exits 0.
echo "NEST: scenario power: the ACPI power button"
L2=/tmp/l2-power.log
tessera-vmm --kernel /guest/vmlinuz --initrd /guest/initramfs.cpio.gz \
    --cmdline "console=ttyS0 reboot=k panic=-1 io_delay=none quiet tg.exit=button" \
    --memory 512M --vcpus 1 --serial "file:$L2" --api-socket /tmp/power.sock --log info &
vmm=$!
i=0
until grep -q 'tg: waiting for the power button' "$L2" 2>/dev/null; do
    i=$((i + 1)); [ $i -gt 800 ] && { echo "NEST: the guest never waited for the button:"; cat "$L2"; kill $vmm; exit 1; }
    kill -0 $vmm 2>/dev/null || { echo "NEST: the VMM exited early:"; cat "$L2"; exit 1; }
    sleep 0.5
done
echo "NEST: power-button reply $(vmm-api PUT /tmp/power.sock /vm/power-button)"
wait $vmm
rc=$?
sed 's/^/NEST: L2: /' "$L2" | grep -E 'tg: (acpi|power|waiting)|ACPI' | head -20
echo "NEST: power vmm rc=$rc"
[ "$rc" -eq 0 ]
