#!/usr/bin/env bash
# Runs every test of the project on a fresh machine: installs what it needs (Debian packages,
# idempotent), builds the Debian test guest and the nested harness's L1 image into .cache/,
# then checks formatting and clippy and runs the workspace's tests (the tiny-guest KVM tests,
# the nested whole-system suite, the qemu-img compatibility and crash tests, the directory
# tests against a real Samba AD DC and slapd, the broker's store tests on SQLite and
# PostgreSQL, the SPICE display and thin client against real clients under Xvfb; the tests
# start those servers on 127.0.0.1) and the fuzz targets for 180 s in all
# (TESSERA_FUZZ_SECONDS). Whatever happens, every process the run started is stopped at the
# end. It ends with a time table per phase and per test binary, and the run's peak memory.
#
#   scripts/test.sh                  everything
#   scripts/test.sh -p tessera-vmm   extra arguments go to `cargo test`
#
# Env: TESSERA_ALLOW_NO_KVM=1 lets the run go on without /dev/kvm (the direct KVM tests then
# SKIP; by default a missing /dev/kvm fails the run). TESSERA_DROP_CACHES=GIB (CI sets 12):
# drop the page cache whenever the memory cgroup's usage passes GIB (this machine's memory
# accounting counts page cache, and runs have been killed near 24 GB).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
. scripts/lib.sh

start=$(date +%s)
report=$(mktemp -d)
phase_start=$start
# Records how long the phase that just ended took.
phase() {
    local now
    now=$(date +%s)
    printf '%s\t%s\n' "$(( now - phase_start ))" "$1" >> "$report/phases"
    phase_start=$now
}

# The memory watcher starts before the marker below, so it is not among what the exit trap
# stops (it is stopped first, on its own).
watch_memory "$report/memory" "${TESSERA_DROP_CACHES:-}" &
watcher=$!
# Every process started from here on carries this marker in its environment, so the exit
# trap finds them all: QEMU, VMMs, Xvfb, servers, whatever process group or session they
# made for themselves.
export TESSERA_TEST_RUN="test-$$-$start"
finish() {
    local rc=$?
    set +e
    tests/directory/ldap-env.sh down >/dev/null 2>&1
    tests/broker/pg-env.sh down >/dev/null 2>&1
    kill "$watcher" 2>/dev/null
    stop_marked_processes "$TESSERA_TEST_RUN"
    print_report "$report" "$(( $(date +%s) - start ))" "$rc"
    rm -rf "$report"
    exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT TERM

ensure_packages "${TESSERA_PACKAGES[@]}" "${TESSERA_X_TEST_PACKAGES[@]}"
tests/directory/ldap-env.sh install
tests/broker/pg-env.sh install
phase "install packages"
tests/guest/build-guest.sh
tests/nested/build-l1.sh
phase "build the test guest and L1"

# Every suite must run, not skip: each REQUIRE variable turns its suite's SKIP into a failure.
export TESSERA_REQUIRE_NESTED=1 TESSERA_REQUIRE_QEMU_IMG=1 TESSERA_REQUIRE_DIRECTORY=1 \
    TESSERA_REQUIRE_POSTGRES=1 TESSERA_REQUIRE_X=1 TESSERA_REQUIRE_ACPICA=1 \
    TESSERA_REQUIRE_SWTPM=1
[ "$(id -u)" -eq 0 ] && export TESSERA_REQUIRE_ROOT=1
# Show what tests print (their SKIP lines above all) even when they pass.
export RUST_TEST_NOCAPTURE=1
if [ -c /dev/kvm ]; then
    export TESSERA_REQUIRE_KVM=1
elif [ "${TESSERA_ALLOW_NO_KVM:-}" = 1 ]; then
    echo "*** SKIP notice: no /dev/kvm (TESSERA_ALLOW_NO_KVM=1): the direct KVM tests will print SKIP; the nested suite still runs ***" >&2
else
    echo "scripts/test.sh: no /dev/kvm on this machine; the KVM tests cannot run. Set TESSERA_ALLOW_NO_KVM=1 to run the rest." >&2
    exit 1
fi
if has_hardware_kvm; then
    export TESSERA_REQUIRE_HW_KVM=1
fi

cargo fmt --all -- --check
cargo build --workspace --all-targets
phase "fmt and build"
cargo clippy -q --workspace --all-targets -- -D warnings
phase "clippy"
cargo test --workspace "$@" 2>&1 | tee "$report/cargo-test.log"
phase "cargo test"
# The fuzz targets, within a total budget (see scripts/fuzz.sh).
scripts/fuzz.sh "${TESSERA_FUZZ_SECONDS:-180}"
phase "fuzz"
echo "[tessera] all tests finished in $(( $(date +%s) - start )) s"
