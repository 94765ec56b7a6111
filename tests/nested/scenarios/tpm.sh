# The TPM 2.0: the Debian test guest on tessera-vmm --tpm (swtpm started by the VMM on a state
# directory) finds the chip through ACPI (tpm_crb), reads random bytes through it and its
# clock; twice on the same state, which the TPM must keep (its reset count goes up by one).
echo "NEST: scenario tpm: TPM 2.0 through the CRB with swtpm"
rm -rf /tmp/tpm-state
for run in 1 2; do
    tessera-vmm --kernel /guest/vmlinuz --initrd /guest/initramfs.cpio.gz \
        --cmdline "console=ttyS0 panic=-1 io_delay=none quiet tg.tpm tg.exit=poweroff" \
        --memory 512M --vcpus 2 --tpm state=/tmp/tpm-state --log info
    echo "NEST: tpm run $run vmm rc=$?"
done
echo "NEST: tpm state $(ls /tmp/tpm-state | tr '\n' ' ')"
