#!/usr/bin/env bash
# Runs scenarios of the nested harness in one L1: tessera-vmm inside a QEMU TCG guest whose
# emulated AMD-V CPU gives it a real /dev/kvm, because this machine's own /dev/kvm (PVM)
# cannot run a stock kernel (see shared/research/nested-kvm.md). The tests drive the same
# harness from Rust (tessera_e2e::nested); this is the front door for people and benchmarks.
#
#   tests/nested/run.sh SCENARIO[,SCENARIO...]   scenarios: files in tests/nested/scenarios/
#
# Builds L1's image once (tests/nested/build-l1.sh, idempotent). L1's console goes to stdout
# and to $TESSERA_CACHE/nested/NAME.log. Exit status: the first failing scenario's (NEST-END
# rc=N), or 125 when L1 never reported the end (an overrun, diagnosed on stderr with QEMU's
# view of the vCPUs and L1's backtraces, or a crash).
# Env: TESSERA_CACHE, NEST_TIMEOUT (seconds for the whole run, default 600), NEST_MEM (default
#      2048M), NEST_SMP (default 2), NEST_ARGS (extra L1 command-line words, e.g. nest.runs=3;
#      NAME=value words become the scenarios' environment), NEST_DISK (a file holding a tar
#      archive of a datastore, zero-padded: L1 unpacks it into /ds before the scenarios and
#      writes /ds back into it afterwards), NEST_HOSTFWD (a host TCP port: L1 gets a
#      virtio-net NIC on QEMU's user network, 10.0.2.15, and 127.0.0.1:NEST_HOSTFWD on this
#      host reaches L1's port 5930, where a scenario's VMM serves SPICE).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
scenario=${1:?usage: run.sh SCENARIO[,SCENARIO...]}
for s in ${scenario//,/ }; do
    [ -f "$here/scenarios/$s.sh" ] || { echo "run.sh: no scenario $s" >&2; exit 2; }
done
"$here/build-l1.sh"
# Scenarios marked "# nest: backports-l0" run L1 on a newer QEMU (l0-qemu.sh says why).
for s in ${scenario//,/ }; do
    if grep -qx '# nest: backports-l0' "$here/scenarios/$s.sh"; then "$here/l0-qemu.sh" >/dev/null; break; fi
done
(cd "$repo" && cargo build -q -p tessera-e2e --bin nest)
exec "$repo/target/debug/nest" "$scenario"
