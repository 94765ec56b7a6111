#!/usr/bin/env bash
# Fetches the QEMU that runs the nested harness's L1 (the "L0" QEMU, TCG with an emulated
# AMD-V CPU) into $TESSERA_CACHE/qemu-l0, idempotently, without touching the system's QEMU:
# Debian bookworm-backports' QEMU (10.0 when this was written), unpacked from its packages;
# once fetched it stays (delete the folder to take a newer one).
#
# Only the scenarios that say "# nest: backports-l0" use it (tests/nested/run.sh fetches it
# for them): UEFI guests. Bookworm's QEMU 7.2 aborts as soon as OVMF runs in L2 (its TCG SVM
# emulation raises an interrupt without holding its big lock when an L2 guest writes CR8
# while a virtual interrupt is pending: "tcg_handle_interrupt: assertion failed"). QEMU 10.0
# has the same fault on a narrower path: measured on 2026-12-05, OVMF to the UEFI shell
# passed 4 of 5 times, and Linux booted through OVMF aborted L0 every time, whether
# tessera-vmm or QEMU ran L2 (QEMU fixed the fault in 10.1, which bookworm does not ship).
# So the UEFI scenarios are run by hand, not in CI; the rest of the suite keeps the system's
# QEMU, which the benchmarks also compare with.
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
