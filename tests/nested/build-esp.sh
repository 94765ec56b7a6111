#!/usr/bin/env bash
# Builds the disk the nested harness's UEFI scenario boots Linux from, with Debian's tools and
# no loop mounts (sgdisk, mkfs.vfat, mtools): a 32 MiB GPT disk whose one partition is an EFI
# system partition (FAT) holding
#   \vmlinuz       the test guest's Debian kernel (an EFI stub)
#   \initrd.img    the test guest's initramfs, with an archive appended that brings
#                  efibootmgr (and the libraries it loads) and the efivarfs module, for the
#                  guest's tg.exit=efi mode (tests/guest/init)
#   \startup.nsh   what the UEFI shell runs when the firmware has no boot entry for the disk:
#                  the kernel with its initrd and command line
# Output: $1 (a raw image). Needs tests/guest/build-guest.sh's output.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
CACHE=${TESSERA_CACHE:-$repo/.cache}
out=${1:?usage: build-esp.sh OUTPUT.img}
for tool in sgdisk mkfs.vfat mcopy efibootmgr; do
    command -v "$tool" >/dev/null || {
        echo "[build-esp] installing gdisk dosfstools mtools efibootmgr" >&2
        apt-get install -y --no-install-recommends gdisk dosfstools mtools efibootmgr >/dev/null
        break
    }
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# efibootmgr with its shared libraries and loader, and efivarfs.ko, as a second archive.
extra=$work/extra
mkdir -p "$extra/bin" "$extra/lib/modules"
cp "$(command -v efibootmgr)" "$extra/bin/"
ldd "$(command -v efibootmgr)" | awk '/=>/ {print $3} /^\t\/lib64/ {print $1}' | while read -r lib; do
    [ -f "$lib" ] && mkdir -p "$extra$(dirname "$lib")" && cp -L "$lib" "$extra$lib"
done
ko=$(find "$CACHE"/debs/x-linux-image-*/lib/modules -name efivarfs.ko | head -1)
[ -n "$ko" ] || { echo "[build-esp] no efivarfs.ko in the guest kernel's package" >&2; exit 1; }
cp "$ko" "$extra/lib/modules/"
(cd "$extra" && find . | cpio -o -H newc -R 0:0 --quiet) | gzip -1 \
    | cat "$CACHE/guest/initramfs.cpio.gz" - > "$work/initrd.img"

printf 'fs0:\r\n\\vmlinuz initrd=\\initrd.img console=ttyS0 panic=-1 io_delay=none tg.exit=efi\r\n' \
    > "$work/startup.nsh"

# The partition from 1 MiB to the backup GPT's start (32 MiB - 34 sectors, rounded down).
size=$((32 << 20))
start=2048
end=$(((size / 512 - 34) / 8 * 8 - 1))
truncate -s 0 "$work/disk.img"
truncate -s "$size" "$work/disk.img"
sgdisk -n "1:$start:$end" -t 1:EF00 -c 1:"EFI system" "$work/disk.img" >/dev/null
mkfs.vfat -C -n TESSERA-ESP "$work/esp.fat" $(((end - start + 1) / 2)) >/dev/null
mcopy -i "$work/esp.fat" "$CACHE/guest/vmlinuz" ::/vmlinuz
mcopy -i "$work/esp.fat" "$work/initrd.img" ::/initrd.img
mcopy -i "$work/esp.fat" "$work/startup.nsh" ::/startup.nsh
dd if="$work/esp.fat" of="$work/disk.img" bs=512 seek="$start" conv=notrunc status=none
mv "$work/disk.img" "$out"
echo "[build-esp] built $out: $(mdir -i "$out@@$((start * 512))" -b :: | tr '\n' ' ')" >&2
