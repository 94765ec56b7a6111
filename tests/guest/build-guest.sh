#!/usr/bin/env bash
# Builds the Debian test guest from Debian packages only, into a cache directory:
#   $OUT/vmlinuz            Debian's own kernel (linux-image-amd64 -> linux-image-6.1.0-*-amd64)
#   $OUT/initramfs.cpio.gz  busybox-static + tests/guest/init (prints TESSERA-GUEST-READY, reboots)
#                           + the virtio-pci and virtio-blk modules, and the bochs display
#                           driver (bochs-drm, loaded with tg.display)
#   $OUT/modules/           the kernel's modules that the nested harness loads in L1 (kvm, kvm-amd,
#                           virtio-blk for the harness's transfer disk)
#   $OUT/manifest.txt       package versions and sha256 of inputs and outputs
# Idempotent: does nothing when the outputs are newer than this script and init.
# Env: TESSERA_CACHE (default: <repo>/.cache), KPKG (pin the kernel package), MODULES (extra
# modules for the test guest, dependencies resolved from each .ko's modinfo).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
CACHE=${TESSERA_CACHE:-$repo/.cache}
OUT=$CACHE/guest
DEBS=$CACHE/debs
MODULES=${MODULES-}
L1_MODULES="irqbypass kvm ccp kvm-amd virtio_pci virtio_blk virtio_net tun vhost_net"
# The test guest's virtio drivers (Debian builds them as modules); MODULES adds more.
GUEST_MODULES="virtio_pci virtio_blk"
# Loaded only when the command line has tg.display (fbcon is built into Debian's kernel).
DISPLAY_MODULES="bochs"
# Loaded only for tg.exit=button: the ACPI power button's input device, read by busybox acpid.
ACPI_MODULES="button evdev"
# Loaded only for tg.ahci: the AHCI driver, SCSI disks and CD-ROMs, and ISO 9660.
AHCI_MODULES="ahci sd_mod sr_mod isofs"
# Loaded only for tg.usb: the xHCI driver, USB HID, and event devices to read them by.
USB_MODULES="xhci_pci usbhid hid_generic evdev"
# Loaded only for tg.net: the virtio-net driver (tessera-vmm --net).
NET_MODULES="virtio_net"
export LC_ALL=C SOURCE_DATE_EPOCH=0

log() { printf '[build-guest] %s\n' "$*" >&2; }

stamp=$OUT/.stamp
# What was asked for (KPKG unset: whatever linux-image-amd64 resolves to), before resolving it.
wanted="${KPKG:-auto} ${MODULES}"
if [ -f "$stamp" ] && [ "$stamp" -nt "$here/build-guest.sh" ] && [ "$stamp" -nt "$here/init" ] \
   && [ "$(cat "$stamp")" = "$wanted" ]; then
    log "up to date: $OUT"
    exit 0
fi

need=()
for tool in cpio gzip dpkg-deb apt-get; do command -v "$tool" >/dev/null || need+=("$tool"); done
if [ ${#need[@]} -gt 0 ]; then
    log "installing cpio"
    apt-get install -y --no-install-recommends cpio >/dev/null
fi

resolve_kpkg() { apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}'; }
KPKG=${KPKG:-$(resolve_kpkg)}
if [ -z "$KPKG" ]; then
    log "apt-get update (to resolve linux-image-amd64)"
    apt-get update -qq
    KPKG=$(resolve_kpkg)
fi
[ -n "$KPKG" ] || { log "cannot resolve linux-image-amd64 to a kernel package"; exit 1; }

mkdir -p "$DEBS" "$OUT"
cd "$DEBS"
fetch() {
    local pkg=$1
    if ! ls "${pkg}"_*.deb >/dev/null 2>&1; then
        log "apt-get download $pkg"
        apt-get download -q "$pkg" 2>&1 | grep -v 'Download is performed unsandboxed' >&2 || true
    fi
    ls -1 "${pkg}"_*.deb 2>/dev/null | tail -n 1
}
KDEB=$(fetch "$KPKG")
BDEB=$(fetch busybox-static)
[ -n "$KDEB" ] && [ -n "$BDEB" ] || { log "download failed (is apt configured?)"; exit 1; }

unpack() {
    local deb=$1 dir=$DEBS/x-${1%.deb}
    if [ ! -e "$dir/.done" ]; then
        log "dpkg-deb -x $deb"
        rm -rf "$dir" && mkdir -p "$dir" && dpkg-deb -x "$deb" "$dir" && touch "$dir/.done"
    fi
    echo "$dir"
}
KX=$(unpack "$KDEB")
BX=$(unpack "$BDEB")
KVER=$(ls "$KX/lib/modules" | head -n 1)
MODROOT=$KX/lib/modules/$KVER

# Module name -> .ko path, and the dependency closure in load order.
declare -A KO
while IFS= read -r f; do
    n=${f##*/}; n=${n%.ko}; KO[$n]=$f; KO[${n//-/_}]=$f
done < <(find "$MODROOT/kernel" -name '*.ko')
ORDER=()
declare -A SEEN
add_mod() {
    local m=${1//-/_} f deps d
    [ -n "${SEEN[$m]:-}" ] && return 0
    SEEN[$m]=1
    f=${KO[$m]:-}
    [ -n "$f" ] || { log "module $1 not in $KPKG"; exit 1; }
    deps=$(grep -a -o 'depends=[a-z0-9_,-]*' "$f" | head -n 1 | cut -d= -f2)
    for d in ${deps//,/ }; do add_mod "$d"; done
    ORDER+=("$f")
}

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage"/{bin,dev,proc,sys,tmp,etc,lib/modules}
cp "$BX/bin/busybox" "$stage/bin/busybox"
cp "$here/init" "$stage/init"
chmod 0755 "$stage/init" "$stage/bin/busybox"
# Stages modules $2... with their dependencies in load order, listed in etc/$1. Each list is
# whole (lists may share modules: init skips one already loaded).
stage_modules() {
    local list=$1 m f
    shift
    ORDER=()
    SEEN=()
    : > "$stage/etc/$list"
    for m in "$@"; do add_mod "$m"; done
    for f in "${ORDER[@]}"; do
        cp "$f" "$stage/lib/modules/"
        echo "${f##*/}" >> "$stage/etc/$list"
    done
}
stage_modules modules.load $GUEST_MODULES $MODULES
stage_modules modules.display $DISPLAY_MODULES
stage_modules modules.acpi $ACPI_MODULES
stage_modules modules.ahci $AHCI_MODULES
stage_modules modules.usb $USB_MODULES
stage_modules modules.net $NET_MODULES
find "$stage" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
(cd "$stage" && find . -print0 | sort -z | cpio --null -o -H newc --reproducible -R 0:0 --quiet) \
    | gzip -n -9 > "$OUT/initramfs.cpio.gz.tmp"
mv "$OUT/initramfs.cpio.gz.tmp" "$OUT/initramfs.cpio.gz"
cp "$KX/boot/vmlinuz-$KVER" "$OUT/vmlinuz"

# Modules the nested harness needs in its L1 guest.
rm -rf "$OUT/modules" && mkdir -p "$OUT/modules"
ORDER=(); SEEN=()
for m in $L1_MODULES; do add_mod "$m"; done
: > "$OUT/modules/load-order"
for f in "${ORDER[@]}"; do cp "$f" "$OUT/modules/"; echo "${f##*/}" >> "$OUT/modules/load-order"; done

{
    echo "kernel_package $KPKG $(dpkg-deb -f "$DEBS/$KDEB" Version) $(sha256sum "$DEBS/$KDEB" | cut -c1-16)"
    echo "busybox $(dpkg-deb -f "$DEBS/$BDEB" Version)"
    echo "kernel_version $KVER"
    echo "guest_modules ${MODULES:-none}"
    (cd "$OUT" && sha256sum vmlinuz initramfs.cpio.gz)
} > "$OUT/manifest.txt"
echo "$wanted" > "$stamp"
log "built $OUT ($(du -sh "$OUT" | cut -f1))"
