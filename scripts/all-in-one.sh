#!/usr/bin/env bash
# The all-in-one desktop cloud on this machine: tessera-broker (SQLite, local accounts) and
# tessera-agent (one host, one datastore) with a demo golden image and a demo pool, then the
# API address and a demo login.
#
#   scripts/all-in-one.sh            bring it up and stay in the foreground (Ctrl-C stops it)
#   scripts/all-in-one.sh --check    bring it up, log the demo user on and off through the
#                                    API, stop everything; exit status says whether it worked
#   scripts/all-in-one.sh stop       stop the broker, the agent and the demo desktops' VMs
#
# State lives in $TESSERA_AIO_DIR (default .cache/aio): the broker's CA and database, the
# agent's VM definitions, the datastore. Ports: API 8443 ($TESSERA_AIO_PORT), agent 8444.
# The demo image: with hardware virtualisation, the Debian test guest; without it (PVM, as on
# our build machines, where a stock kernel never reaches userspace) the demo desktop guest
# (hypervisor/demo-guest: no OS, its name in the title bar, a clock, a notes window).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
. scripts/lib.sh
D=${TESSERA_AIO_DIR:-$repo/.cache/aio}
PORT=${TESSERA_AIO_PORT:-8443}
AGENT_PORT=$((PORT + 1))
bin=$repo/target/release
log() { echo "[all-in-one] $*" >&2; }

stop_all() {
    local f p
    for f in "$D/broker.pid" "$D/agent.pid"; do
        [ -f "$f" ] && { kill "$(cat "$f")" 2>/dev/null || true; rm -f "$f"; }
    done
    # The desktops' VMMs run in their own process groups (they outlive the agent by design).
    for f in "$D"/agent/vms/*/pid; do
        [ -f "$f" ] || continue
        p=$(cat "$f")
        grep -qa "$D/agent/vms" "/proc/$p/cmdline" 2>/dev/null && kill "$p" 2>/dev/null || true
    done
}

if [ "${1:-}" = stop ]; then
    stop_all
    log "stopped"
    exit 0
fi
check=false
[ "${1:-}" = --check ] && check=true

ensure_packages "${TESSERA_PACKAGES[@]}"
log "building tessera-broker, tessera-agent, tessera-vmm, tessera-display, tessera-img (release)"
cargo build -q --release -p tessera-broker -p tessera-agent -p tessera-display \
    -p tessera-storage -p tessera-demo-guest --bin tessera-broker --bin tessera-agent \
    --bin tessera-display --bin tessera-img --bin tessera-demo-guest
scripts/build-vmm.sh
stop_all
mkdir -p "$D"/{broker,agent,ds1,library}

cat > "$D/broker.toml" <<CONF
state_dir = "$D/broker"
listen = "0.0.0.0:$PORT"
reconcile_interval_secs = 3
CONF
broker() { "$bin/tessera-broker" -c "$D/broker.toml" "$@"; }
# A random password in a file only its owner can read, from the first byte (umask, not chmod
# afterwards; a fresh file, not one somebody may hold open).
new_password() {
    rm -f "$1"
    (umask 077 && head -c 12 /dev/urandom | base64 | tr -d '/+=' > "$1")
}
pki=$D/broker/pki
tls=$D/agent/tls
cat > "$D/agent.toml" <<CONF
name = "local"
listen = "127.0.0.1:$AGENT_PORT"
state_dir = "$D/agent"
vmm = "$bin/tessera-vmm"
library = "$D/library"
[[datastore]]
name = "ds1"
path = "$D/ds1"
[tls]
cert = "$tls/agent.pem"
key = "$tls/agent.key"
client_ca = "$tls/ca.pem"
CONF

if [ ! -f "$D/.seeded" ]; then
    log "first start: demo image, pool and account"
    if has_hardware_kvm; then
        image=demo-linux memory=512
        tests/guest/build-guest.sh
        # Kernels come from the agent's image library, like golden images.
        cp "$repo/.cache/guest/vmlinuz" "$repo/.cache/guest/initramfs.cpio.gz" "$D/library/"
        "$bin/tessera-img" --datastore "$D/library" create -f qcow2 "$D/library/$image.qcow2" 8G >/dev/null
        broker add-image "$image" --disk "$D/library/$image.qcow2" \
            --kernel "$D/library/vmlinuz" --initrd "$D/library/initramfs.cpio.gz" \
            --cmdline "console=ttyS0 reboot=k panic=-1 quiet tg.exit=shell" >/dev/null
    else
        log "no hardware virtualisation here: desktops run the demo desktop guest"
        image=demo-desktop memory=64
        "$bin/tessera-demo-guest" --output "$D/library/$image.elf"
        # It needs no disk; desktops get a linked clone of this empty one like any other.
        "$bin/tessera-img" --datastore "$D/library" create -f qcow2 "$D/library/$image.qcow2" 64M >/dev/null
        broker add-image "$image" --disk "$D/library/$image.qcow2" \
            --kernel "$D/library/$image.elf" --cmdline "name={desktop}" >/dev/null
    fi
    cat > "$D/demo-pool.toml" <<CONF
name = "demo"
display_name = "Demo desktops"
image = "$image"
image_version = 1
assignment = "floating"
clone_kind = "linked"
naming = "demo-{n:02}"
min_desktops = 1
max_desktops = 4
spare_desktops = 1
power_policy = "always-on"
refresh_on_logoff = true
vcpus = 1
memory_mib = $memory
CONF
    broker add-pool "$D/demo-pool.toml" >/dev/null
    new_password "$D/demo-password"
    broker add-account demo --display-name "Demo User" < "$D/demo-password" >/dev/null
    broker entitle demo --local demo >/dev/null
    new_password "$D/admin-password"
    broker add-account admin --display-name "Administrator" --admin < "$D/admin-password" >/dev/null
    touch "$D/.seeded"
fi

NO_COLOR=1 "$bin/tessera-broker" -c "$D/broker.toml" serve >"$D/broker.log" 2>&1 &
echo $! > "$D/broker.pid"
trap 'stop_all' EXIT

api=https://127.0.0.1:$PORT
for _ in $(seq 1 100); do
    curl -sf --cacert "$pki/ca.pem" "$api/healthz" >/dev/null 2>&1 && break
    sleep 0.2
done
curl -sf --cacert "$pki/ca.pem" "$api/healthz" >/dev/null || { log "the broker did not come up:"; tail "$D/broker.log" >&2; exit 1; }
# The host joins as any host would: a one-time token pins the broker's CA, the agent makes its
# key, the broker certifies it and registers the host.
if [ ! -f "$tls/agent.pem" ]; then
    TESSERA_JOIN_TOKEN=$(broker join-token --host local --ttl-minutes 5 2>/dev/null) \
        "$bin/tessera-agent" -c "$D/agent.toml" join --broker "$api" \
        --address "https://127.0.0.1:$AGENT_PORT" >&2
fi
NO_COLOR=1 "$bin/tessera-agent" -c "$D/agent.toml" >"$D/agent.log" 2>&1 &
echo $! > "$D/agent.pid"
# Wait for the reconciler's first desktop.
for _ in $(seq 1 100); do
    grep -q '"provisioned\|provisioned: [1-9]' "$D/broker.log" && break
    sleep 0.3
done
password=$(cat "$D/demo-password")
admin_password=$(cat "$D/admin-password")
cat <<INFO

  Tessera all-in-one is up.
    client API   $api  (CA certificate: $pki/ca.pem)
    demo login   demo / $password
    admin login  admin / $admin_password  (admin API: $api/api/v1/admin/...)
    logs         $D/broker.log, $D/agent.log; desktop consoles in $D/agent/vms/*/console.log

  Sign in as the demo user (the answer carries the desktop, a one-time ticket and a session token):
    curl --cacert $pki/ca.pem -H 'content-type: application/json' \\
         -d '{"user": "demo", "password": "$password"}' $api/api/v1/sessions
  Then open the desktop's screen with remote-viewer (SESSION and TOKEN from that answer):
    curl --cacert $pki/ca.pem -X POST -H "authorization: Bearer TOKEN" \\
         $api/api/v1/sessions/SESSION/vv > desktop.vv && remote-viewer desktop.vv

INFO

if $check; then
    out=$(curl -s --cacert "$pki/ca.pem" -H 'content-type: application/json' \
        -d "{\"user\": \"demo\", \"password\": \"$password\"}" "$api/api/v1/sessions")
    echo "$out" | grep -q '"outcome":"granted"' || { log "logon failed: $out"; tail -20 "$D/broker.log" >&2; exit 1; }
    id=$(echo "$out" | sed -n 's/.*"session_id":"\([^"]*\)".*/\1/p')
    token=$(echo "$out" | sed -n 's/.*"session_token":"\([^"]*\)".*/\1/p')
    desktop=$(echo "$out" | sed -n 's/.*"desktop":"\([^"]*\)".*/\1/p')
    log "logon ok: desktop $desktop, session $id"
    for f in "$D/demo-password" "$D/admin-password" "$pki/ca.key" "$pki/broker.key" "$pki/hosts/ca.key" "$pki/hosts/broker-client.key" "$tls/agent.key"; do
        [ "$(stat -c %a "$f")" = 600 ] || { log "$f is mode $(stat -c %a "$f"), not 600"; exit 1; }
    done
    log "secret files ok: mode 600"
    admin_token=$(curl -s --cacert "$pki/ca.pem" -H 'content-type: application/json' \
        -d "{\"user\": \"admin\", \"password\": \"$admin_password\"}" "$api/api/v1/admin/tokens" |
        sed -n 's/.*"token":"\([^"]*\)".*/\1/p')
    sessions=$(curl -s --cacert "$pki/ca.pem" -H "authorization: Bearer $admin_token" "$api/api/v1/admin/sessions")
    echo "$sessions" | grep -q "\"id\":\"$id\"" || { log "the admin API does not list the session: $sessions"; exit 1; }
    log "admin API ok: the session is listed"
    vv=$(curl -s --cacert "$pki/ca.pem" -X POST -H "authorization: Bearer $token" "$api/api/v1/sessions/$id/vv")
    echo "$vv" | grep -q '^password=' && echo "$vv" | grep -q '^port=' || { log "no remote-viewer file: $vv"; exit 1; }
    log "remote-viewer file ok: $(echo "$vv" | grep -E '^(host|port)=' | tr '\n' ' ')"
    # What the desktop's console must show: the demo desktop guest prints its name (from the
    # image's command line, {desktop} filled in by the broker); the Debian test guest, booted
    # where hardware virtualisation exists, its userspace marker.
    if has_hardware_kvm; then marker=TESSERA-GUEST-READY wait_s=120; else marker="name=$desktop" wait_s=10; fi
    console=$D/agent/vms/$desktop/console.log
    for _ in $(seq 1 $(( wait_s * 5 ))); do
        grep -q "$marker" "$console" 2>/dev/null && break
        sleep 0.2
    done
    grep -q "$marker" "$console" ||
        { log "the desktop's console does not show $marker: $(tail -20 "$console")"; exit 1; }
    log "desktop console ok: $(grep -m1 "$marker" "$console")"
    code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$pki/ca.pem" -X DELETE \
        -H "authorization: Bearer $token" "$api/api/v1/sessions/$id")
    [ "$code" = 204 ] || { log "logoff answered $code"; exit 1; }
    log "logoff ok; all-in-one check passed"
    exit 0
fi
log "running; Ctrl-C stops the broker, the agent and the desktops"
wait "$(cat "$D/broker.pid")"
