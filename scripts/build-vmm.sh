#!/usr/bin/env bash
# Builds the release tessera-vmm, statically linked (glibc's static-pie), into
# target/release/tessera-vmm, next to the release tessera-display it starts. Every release
# build of the VMM in this repository goes through here: the all-in-one, scripts/demo.sh, the
# nested harness's L1 image and the benchmarks.
#
# Why static: one process per desktop, so what each start costs counts. Without the dynamic
# loader, libc.so and libgcc_s.so a VM starts about 0.5 ms sooner and maps about 800 KiB less
# (bench-vmm (a) and (c) in BENCHMARKS.md), and the binary runs on any x86-64 Linux host
# whatever its libraries (the nested L1 image carries none for it). tessera-vmm resolves no
# names and no users, so glibc's NSS, the one thing static glibc cannot do, is never reached.
# tessera-display stays dynamic: libspice-server has no static build.
#
# `cargo rustc` passes the flag to the binary's own link only; the library crates are the
# ones `cargo build --release` makes. A plain `cargo build --release -p tessera-vmm` still
# works and gives the same VMM, dynamically linked.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo rustc -q --release -p tessera-vmm --bin tessera-vmm -- -C target-feature=+crt-static
