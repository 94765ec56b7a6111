#!/usr/bin/env bash
# Builds the nested harness's L1 initramfs once, for every scenario (idempotent: when nothing
# it is made of changed, it only checks and exits):
#   $TESSERA_CACHE/nested/l1.cpio.gz       busybox, KVM's modules, /init, the scenarios, a
#                                          tessera-vmm and tessera-display with their shared
#                                          libraries, static
#                                          tessera-img, boot-timer, guest-io-bench and vmm-api,
#                                          and the test guest (tests/guest/build-guest.sh);
#                                          swtpm (the TPM emulator) with its libraries,
#                                          Debian's OVMF (UEFI firmware) in /firmware, and
#                                          /guest/esp.img (tests/nested/build-esp.sh)
#   $TESSERA_CACHE/nested/l1-qemu.cpio.gz  the same with QEMU, its libraries and firmware
#                                          appended as a second archive, for the scenarios that
#                                          compare against QEMU ("# nest: qemu")
# Concurrent callers wait for one another (flock), so tests can call it freely.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
CACHE=${TESSERA_CACHE:-$repo/.cache}
out=$CACHE/nested
log() { printf '[build-l1] %s\n' "$*" >&2; }

mkdir -p "$out"
exec 9>"$out/.build.lock"
flock 9

command -v qemu-system-x86_64 >/dev/null || {
    log "installing qemu-system-x86"
    apt-get install -y --no-install-recommends qemu-system-x86 >/dev/null
}
command -v swtpm >/dev/null || {
    log "installing swtpm"
    apt-get install -y --no-install-recommends swtpm >/dev/null
}
"$repo/tests/guest/build-guest.sh"

target=x86_64-unknown-linux-gnu
# tessera-vmm goes in as the hosts run it, statically linked (scripts/build-vmm.sh);
# tessera-display links libspice-server (and through it glib, OpenSSL, ...), which has no
# static build: it goes in dynamically linked, with its libraries.
(cd "$repo" && cargo build -q --release -p tessera-display --bin tessera-display &&
    scripts/build-vmm.sh)
(cd "$repo" && RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build -q --release --target "$target" -p tessera-storage -p tessera-e2e \
        --bin tessera-img --bin boot-timer --bin guest-io-bench --bin vmm-api)
bindir=$repo/target/$target/release
qemu=$(command -v qemu-system-x86_64)

# What the images are made of; unchanged inputs (same paths, sizes and times) mean no rebuild.
inputs=("$repo/target/release/tessera-vmm" "$repo/target/release/tessera-display" "$bindir/boot-timer" "$bindir/tessera-img"
    "$bindir/vmm-api" "$bindir/guest-io-bench" "$CACHE/guest/vmlinuz"
    "$CACHE/guest/initramfs.cpio.gz" "$here/init" "$here/build-l1.sh" "$qemu"
    "$here"/scenarios/*.sh "$CACHE/guest/modules/"* /usr/share/OVMF/OVMF_CODE_4M.fd
    /usr/share/OVMF/OVMF_VARS_4M.fd "$here/build-esp.sh" "$(command -v efibootmgr || echo /usr/bin/efibootmgr)"
    "$(command -v swtpm)")
stamp=$(stat -L -c '%n %s %Y' "${inputs[@]}" | sha256sum | cut -d' ' -f1)
if [ -f "$out/l1-qemu.cpio.gz" ] && [ "$(cat "$out/.stamp" 2>/dev/null)" = "$stamp" ]; then
    log "up to date: $out/l1.cpio.gz"
    exit 0
fi
log "building $out/l1.cpio.gz and l1-qemu.cpio.gz"

stage=$(mktemp -d)
qstage=$(mktemp -d)
trap 'rm -rf "$stage" "$qstage"' EXIT
# Copies the shared libraries `$2` needs (and the dynamic loader) under `$1`.
copy_libs() {
    ldd "$2" | awk '/=>/ {print $3} /^\t\/lib64/ {print $1}' | while read -r lib; do
        [ -f "$lib" ] && mkdir -p "$1$(dirname "$lib")" && cp -L "$lib" "$1$lib"
    done
}
mkdir -p "$stage"/{bin,dev,proc,sys,tmp,guest,modules,scenarios,firmware}
cp /usr/share/OVMF/OVMF_CODE_4M.fd /usr/share/OVMF/OVMF_VARS_4M.fd "$stage/firmware/"
cp "$CACHE/debs"/x-busybox-static_*/bin/busybox "$stage/bin/busybox"
for b in tessera-vmm tessera-display; do
    strip -o "$stage/bin/$b" "$repo/target/release/$b"
    copy_libs "$stage" "$repo/target/release/$b"
done
for b in boot-timer tessera-img vmm-api; do strip -o "$stage/bin/$b" "$bindir/$b"; done
# swtpm, which tessera-vmm --tpm starts, with its libraries (libtpms, OpenSSL's libcrypto).
cp "$(command -v swtpm)" "$stage/bin/"
copy_libs "$stage" "$(command -v swtpm)"
cp "$CACHE/guest/vmlinuz" "$CACHE/guest/initramfs.cpio.gz" "$stage/guest/"
"$here/build-esp.sh" "$stage/guest/esp.img"
# The test guest plus guest-io-bench: Linux unpacks concatenated initramfs archives in order.
extra=$(mktemp -d)
mkdir -p "$extra/bin" && strip -o "$extra/bin/guest-io-bench" "$bindir/guest-io-bench"
(cd "$extra" && find . | cpio -o -H newc -R 0:0 --quiet) | gzip -1 \
    | cat "$CACHE/guest/initramfs.cpio.gz" - > "$stage/guest/initramfs-bench.cpio.gz"
rm -rf "$extra"
cp "$CACHE/guest/modules/"* "$stage/modules/"
cp "$here/scenarios/"*.sh "$stage/scenarios/"
install -m 0755 "$here/init" "$stage/init"
(cd "$stage" && find . | cpio -o -H newc -R 0:0 --quiet) | gzip -1 > "$out/l1.cpio.gz.new"

# QEMU for the comparison scenarios, as a second archive.
mkdir -p "$qstage/usr/bin" "$qstage/usr/share/qemu" "$qstage/usr/share/seabios"
cp "$qemu" "$qstage/usr/bin/"
copy_libs "$qstage" "$qemu"
for f in kvmvapic.bin linuxboot_dma.bin linuxboot.bin pvh.bin qboot.rom bios-microvm.bin; do
    cp -L "/usr/share/qemu/$f" "$qstage/usr/share/qemu/"
done
cp -L /usr/share/seabios/bios-256k.bin /usr/share/seabios/vgabios-stdvga.bin \
    "$qstage/usr/share/seabios/"
# Debian builds QEMU's SPICE support as loadable modules (spice-core needs opengl).
moddir=/usr/lib/x86_64-linux-gnu/qemu
for m in ui-opengl ui-spice-core; do
    [ -f "$moddir/$m.so" ] || continue
    mkdir -p "$qstage$moddir"
    cp "$moddir/$m.so" "$qstage$moddir/"
    copy_libs "$qstage" "$moddir/$m.so"
done
(cd "$qstage" && find . | cpio -o -H newc -R 0:0 --quiet) | gzip -1 \
    | cat "$out/l1.cpio.gz.new" - > "$out/l1-qemu.cpio.gz.new"
mv "$out/l1.cpio.gz.new" "$out/l1.cpio.gz"
mv "$out/l1-qemu.cpio.gz.new" "$out/l1-qemu.cpio.gz"
echo "$stamp" > "$out/.stamp"
log "built: $(du -h "$out/l1.cpio.gz" | cut -f1) ($(du -h "$out/l1-qemu.cpio.gz" | cut -f1) with QEMU)"
