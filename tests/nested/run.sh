#!/usr/bin/env bash
# Runs one scenario of the nested harness: tessera-vmm inside a QEMU TCG guest (L1) whose
# emulated AMD-V CPU gives it a real /dev/kvm, because this machine's own /dev/kvm (PVM)
# cannot run a stock kernel (see shared/research/nested-kvm.md).
#
#   tests/nested/run.sh SCENARIO        scenario = a file in tests/nested/scenarios/ (boot, ...)
#
# Builds what it needs (idempotent): the test guest (build-guest.sh), tessera-vmm (with its
# shared libraries), tessera-img and boot-timer, and the L1 initramfs. The L1 console goes to stdout and to
# $TESSERA_CACHE/nested/SCENARIO.log. Exit status: the scenario's (NEST-END rc=N), or 125 when
# L1 never reported (timeout or crash).
# Env: TESSERA_CACHE, NEST_TIMEOUT (seconds, default 600), NEST_MEM (default 2048M),
#      NEST_SMP (default 2), NEST_ARGS (extra L1 command-line words, e.g. nest.runs=3),
#      NEST_DISK (a file holding a tar archive of a datastore, padded with zeros to leave room:
#      L1 unpacks it into /ds before the scenario and writes /ds back into it afterwards),
#      NEST_HOSTFWD (a host TCP port: L1 gets a virtio-net NIC on QEMU's user network, 10.0.2.15,
#      and 127.0.0.1:NEST_HOSTFWD on this host reaches L1's port 5930, where a scenario's VMM
#      serves SPICE).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
CACHE=${TESSERA_CACHE:-$repo/.cache}
scenario=${1:?usage: run.sh SCENARIO}
[ -f "$here/scenarios/$scenario.sh" ] || { echo "run.sh: no scenario $scenario" >&2; exit 2; }
log() { printf '[nested] %s\n' "$*" >&2; }

command -v qemu-system-x86_64 >/dev/null || {
    log "installing qemu-system-x86"
    apt-get install -y --no-install-recommends qemu-system-x86 >/dev/null
}
"$repo/tests/guest/build-guest.sh"

target=x86_64-unknown-linux-gnu
log "building tessera-vmm, and static tessera-img, boot-timer, guest-io-bench and vmm-api"
# tessera-vmm links libspice-server (and through it glib, OpenSSL, ...), which has no static
# build: it goes in dynamically linked, with its libraries, as the hosts run it.
(cd "$repo" && cargo build -q --release -p tessera-vmm --bin tessera-vmm)
(cd "$repo" && RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build -q --release --target "$target" -p tessera-storage -p tessera-e2e \
        --bin tessera-img --bin boot-timer --bin guest-io-bench --bin vmm-api)
bindir=$repo/target/$target/release

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage"/{bin,dev,proc,sys,tmp,guest,modules,scenarios}
cp "$CACHE/debs"/x-busybox-static_*/bin/busybox "$stage/bin/busybox"
# Copies the shared libraries `$1` needs (and the dynamic loader) into the stage.
copy_libs() {
    ldd "$1" | awk '/=>/ {print $3} /^\t\/lib64/ {print $1}' | while read -r lib; do
        [ -f "$lib" ] && mkdir -p "$stage$(dirname "$lib")" && cp -L "$lib" "$stage$lib"
    done
}
strip -o "$stage/bin/tessera-vmm" "$repo/target/release/tessera-vmm"
copy_libs "$repo/target/release/tessera-vmm"
strip -o "$stage/bin/boot-timer" "$bindir/boot-timer"
strip -o "$stage/bin/tessera-img" "$bindir/tessera-img"
strip -o "$stage/bin/vmm-api" "$bindir/vmm-api"
cp "$CACHE/guest/vmlinuz" "$CACHE/guest/initramfs.cpio.gz" "$stage/guest/"
# The test guest plus guest-io-bench: Linux unpacks concatenated initramfs archives in order.
extra=$(mktemp -d)
mkdir -p "$extra/bin" && strip -o "$extra/bin/guest-io-bench" "$bindir/guest-io-bench"
(cd "$extra" && find . | cpio -o -H newc -R 0:0 --quiet) | gzip -1 \
    | cat "$CACHE/guest/initramfs.cpio.gz" - > "$stage/guest/initramfs-bench.cpio.gz"
rm -rf "$extra"
cp "$CACHE/guest/modules/"* "$stage/modules/"
cp "$here/scenarios/"*.sh "$stage/scenarios/"
# Scenarios that compare against QEMU ("# nest: qemu") get QEMU, its libraries and firmware.
if grep -q '^# nest: qemu' "$here/scenarios/$scenario.sh"; then
    qemu=$(command -v qemu-system-x86_64)
    mkdir -p "$stage/usr/bin" "$stage/usr/share/qemu" "$stage/usr/share/seabios"
    cp "$qemu" "$stage/usr/bin/"
    copy_libs "$qemu"
    for f in kvmvapic.bin linuxboot_dma.bin linuxboot.bin pvh.bin qboot.rom bios-microvm.bin; do
        cp -L "/usr/share/qemu/$f" "$stage/usr/share/qemu/"
    done
    cp -L /usr/share/seabios/bios-256k.bin /usr/share/seabios/vgabios-stdvga.bin \
        "$stage/usr/share/seabios/"
    # Debian builds QEMU's SPICE support as loadable modules (spice-core needs opengl).
    moddir=/usr/lib/x86_64-linux-gnu/qemu
    for m in ui-opengl ui-spice-core; do
        [ -f "$moddir/$m.so" ] || continue
        mkdir -p "$stage$moddir"
        cp "$moddir/$m.so" "$stage$moddir/"
        copy_libs "$moddir/$m.so"
    done
fi
install -m 0755 "$here/init" "$stage/init"
mkdir -p "$CACHE/nested"
l1=$CACHE/nested/l1.cpio.gz
(cd "$stage" && find . | cpio -o -H newc -R 0:0 --quiet) | gzip -1 > "$l1"

out=$CACHE/nested/$scenario.log
log "booting L1 (QEMU TCG, EPYC+svm) for scenario $scenario; console in $out"
disk=()
[ -n "${NEST_DISK:-}" ] && disk=(-drive "file=$NEST_DISK,format=raw,if=virtio")
[ -n "${NEST_HOSTFWD:-}" ] && disk+=(-netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$NEST_HOSTFWD-:5930" \
    -device virtio-net-pci,netdev=n0)
set +e
timeout "${NEST_TIMEOUT:-600}" qemu-system-x86_64 "${disk[@]}" -M q35 -accel tcg -cpu EPYC,+svm \
    -m "${NEST_MEM:-2048M}" -smp "${NEST_SMP:-2}" -nodefaults -no-user-config -nographic \
    -serial stdio -no-reboot -kernel "$CACHE/guest/vmlinuz" -initrd "$l1" \
    -append "console=ttyS0 panic=-1 quiet nest.run=$scenario ${NEST_ARGS:-}" </dev/null \
    2>"$CACHE/nested/$scenario.qemu-stderr" | tee "$out"
set -e
rc=$(sed -n "s/.*NEST-END $scenario rc=\([0-9]*\).*/\1/p" "$out" | tail -n 1)
if [ -z "$rc" ]; then
    log "L1 never reported the end of $scenario (timeout or crash)"
    exit 125
fi
exit "$rc"
