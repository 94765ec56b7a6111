# nest: qemu
# nest: backports-l0
# Benchmark: UEFI firmware start to the UEFI shell, tessera-vmm against QEMU -M q35
# (-enable-kvm), the same Debian OVMF_CODE_4M.fd with a fresh copy of OVMF_VARS_4M.fd each
# boot, 2 vCPUs, 512 MiB, no disk: from process start to "Shell>" on COM1 (boot-timer stops
# the VMM there), and the VMM's peak RSS by then. Rounds alternate the order. Runs: nest.runs=N
# (default 5). By hand (tests/nested/run.sh bench-uefi): L0's QEMU aborts now and then on UEFI
# guests (tests/nested/l0-qemu.sh), so a run may end early; rerun it.
runs=5
for w in $(cat /proc/cmdline); do
    case "$w" in nest.runs=*) runs=${w#nest.runs=} ;; esac
done
. /scenarios/lib.sh
CODE=/firmware/OVMF_CODE_4M.fd

boot() {
    cp /firmware/OVMF_VARS_4M.fd /tmp/bench-vars.fd
    case "$1" in
        tessera)
            boot-timer --kill-at-marker 'Shell>' -- tessera-vmm --firmware $CODE \
                --firmware-vars /tmp/bench-vars.fd --memory 512M --vcpus 2 ;;
        qemu-q35)
            boot-timer --kill-at-marker 'Shell>' -- qemu-system-x86_64 -M q35 -enable-kvm \
                -cpu host -smp 2 -m 512M -nodefaults -no-user-config -display none \
                -serial stdio -no-reboot \
                -drive if=pflash,format=raw,unit=0,readonly=on,file=$CODE \
                -drive if=pflash,format=raw,unit=1,file=/tmp/bench-vars.fd ;;
    esac < /dev/null | tr -d '\033' | grep -a '^BOOT-TIMER'
}

r=1
: > /tmp/bench-uefi.txt
while [ "$r" -le "$runs" ]; do
    for vmm in $(rotate "$r" tessera qemu-q35); do
        line=$(boot "$vmm")
        echo "BENCH run=$r vmm=$vmm $line"
        echo "$vmm $line" >> /tmp/bench-uefi.txt
    done
    r=$((r + 1))
done
# Medians of the time to the shell and of the peak RSS, and their ratios.
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
field() { grep "^$1 " /tmp/bench-uefi.txt | sed -n "s/.*$2=\([0-9.]*\).*/\1/p" | median; }
t=$(field tessera marker_ms); q=$(field qemu-q35 marker_ms)
rt=$(field tessera maxrss_kib); rq=$(field qemu-q35 maxrss_kib)
echo "NEST: bench-uefi shell_ms median tessera=$t qemu-q35=$q ratio=$(awk "BEGIN {printf \"%.2f\", $t / $q}")"
echo "NEST: bench-uefi maxrss_kib median tessera=$rt qemu-q35=$rq ratio=$(awk "BEGIN {printf \"%.2f\", $rt / $rq}")"
