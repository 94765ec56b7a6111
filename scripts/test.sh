#!/usr/bin/env bash
# Runs every test of the project on a fresh machine: installs what it needs (Debian packages,
# idempotent), builds the Debian test guest into .cache/, then runs the workspace's tests
# (the tiny-guest KVM tests, the nested full-boot suite, the qemu-img compatibility and
# crash tests, the directory tests against a real Samba AD DC and slapd, the broker's store
# tests on SQLite and PostgreSQL, and the SPICE server against remote-viewer under Xvfb; the tests start those servers on 127.0.0.1 and this script
# stops them at the end) and the storage fuzz target for 60 s (TESSERA_FUZZ_SECONDS).
#
#   scripts/test.sh                  everything
#   scripts/test.sh -p tessera-vmm   extra arguments go to `cargo test`
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
. scripts/lib.sh

start=$(date +%s)
ensure_packages "${TESSERA_PACKAGES[@]}" "${TESSERA_X_TEST_PACKAGES[@]}"
tests/directory/ldap-env.sh install
tests/broker/pg-env.sh install
tests/guest/build-guest.sh
trap 'tests/directory/ldap-env.sh down; tests/broker/pg-env.sh down' EXIT

# The nested harness is installed above, so its tests must run, not skip.
export TESSERA_REQUIRE_NESTED=1 TESSERA_REQUIRE_QEMU_IMG=1 TESSERA_REQUIRE_DIRECTORY=1 \
    TESSERA_REQUIRE_POSTGRES=1 TESSERA_REQUIRE_X=1
# Show what tests print (their SKIP lines above all) even when they pass.
export RUST_TEST_NOCAPTURE=1
if [ -c /dev/kvm ]; then
    export TESSERA_REQUIRE_KVM=1
else
    echo "*** SKIP notice: no /dev/kvm on this machine: the direct KVM tests will print SKIP; the nested suite still runs ***" >&2
fi

cargo fmt --all -- --check
cargo build --workspace --all-targets
cargo test --workspace "$@"
# The storage fuzz target, bounded (see scripts/fuzz.sh).
scripts/fuzz.sh "${TESSERA_FUZZ_SECONDS:-60}"
echo "[tessera] all tests finished in $(( $(date +%s) - start )) s"
