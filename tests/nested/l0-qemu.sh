#!/usr/bin/env bash
# Fetches the QEMU that runs the nested harness's L1 (the "L0" QEMU, TCG with an emulated
# AMD-V CPU) into $TESSERA_CACHE/qemu-l0, idempotently, without touching the system's QEMU:
# Debian bookworm-backports' QEMU (10.0 when this was written), unpacked from its packages;
# once fetched it stays (delete the folder to take a newer one).
#
# Why not bookworm's QEMU 7.2: its TCG SVM emulation aborts L1 as soon as an L2 guest writes
# CR8 under virtual interrupt masking (tcg_handle_interrupt: "assertion failed:
# (qemu_mutex_iothread_locked())"), which UEFI firmware does in its first second (measured:
# OVMF on tessera-vmm in L1 killed QEMU 7.2 every time; QEMU 10.0 reaches the UEFI shell).
# The system's QEMU stays what the benchmarks compare with, inside L1 and on this host.
#
# Prints the path of the qemu-system-x86_64 to use.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
CACHE=${TESSERA_CACHE:-$repo/.cache}
out=$CACHE/qemu-l0
log() { printf '[l0-qemu] %s\n' "$*" >&2; }

mkdir -p "$out"
exec 8>"$out/.lock"
flock 8
if [ -f "$out/.version" ] && [ -x "$out/root/usr/bin/qemu-system-x86_64" ]; then
    echo "$out/root/usr/bin/qemu-system-x86_64"
    exit 0
fi
log "fetching QEMU from bookworm-backports into $out"
apt=(-o "Dir::Etc::sourcelist=$out/sources.list" -o Dir::Etc::sourceparts=/dev/null
    -o "Dir::State::Lists=$out/lists" -o "Dir::Cache::archives=$out/archives")
echo "deb http://deb.debian.org/debian bookworm-backports main" > "$out/sources.list"
mkdir -p "$out/lists/partial" "$out/archives/partial" "$out/debs"
apt-get "${apt[@]}" update -qq
(cd "$out/debs" && rm -f ./*.deb &&
    apt-get "${apt[@]}" download -qq qemu-system-x86/bookworm-backports \
        qemu-system-common/bookworm-backports qemu-system-data/bookworm-backports 2>&1 |
        grep -v 'unsandboxed' >&2 || true)
ls "$out/debs"/qemu-system-x86_*.deb >/dev/null
rm -rf "$out/root"
for d in "$out/debs"/*.deb; do dpkg-deb -x "$d" "$out/root"; done
# Its firmware beside it: the ROMs of this QEMU's data package, and the BIOS images the
# packages it would depend on (seabios, ipxe) install on the system.
data=$out/root/usr/share/qemu
for f in /usr/share/seabios/*.bin /usr/share/qemu/*; do
    b=$(basename "$f")
    [ -e "$data/$b" ] || ln -sf "$(readlink -f "$f")" "$data/$b"
done
missing=$(ldd "$out/root/usr/bin/qemu-system-x86_64" | grep 'not found' || true)
[ -z "$missing" ] || { log "libraries missing: $missing"; exit 1; }
"$out/root/usr/bin/qemu-system-x86_64" --version | head -1 > "$out/.version"
log "ready: $(cat "$out/.version")"
echo "$out/root/usr/bin/qemu-system-x86_64"
