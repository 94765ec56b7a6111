#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the broker's store tests, from Debian's postgresql package.
#   pg-env.sh install        the package (idempotent)
#   pg-env.sh up   [DIR]     initdb + start on 127.0.0.1:55432 (user tessera, trust auth on
#                            loopback only), database "tessera"; writes DIR/env
#   pg-env.sh down [DIR]     stop and remove
# DIR defaults to $TESSERA_PG_DIR or /tmp/tessera-pg.
set -euo pipefail
CMD=${1:?usage: pg-env.sh install|up|down [DIR]}
D=${2:-${TESSERA_PG_DIR:-/tmp/tessera-pg}}
PORT=${TESSERA_PG_PORT:-55432}
log() { echo "[pg-env] $*" >&2; }
bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

down() {
    local B
    B=$(bin)
    if [ -n "$B" ] && [ -f "$D/data/postmaster.pid" ]; then
        as_pg "$B/pg_ctl" -D "$D/data" -m immediate stop >/dev/null 2>&1 || true
    fi
    rm -rf "$D"
}

case $CMD in
    install)
        dpkg-query -W -f='${Status}' postgresql 2>/dev/null | grep -q 'install ok installed' && exit 0
        log "installing postgresql"
        [ -x /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; }
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null ;;
    up)
        B=$(bin)
        [ -n "$B" ] || { log "postgresql is not installed (pg-env.sh install)"; exit 1; }
        down
        # The cluster just stopped (a previous test binary's) may hold the port a moment longer.
        for _ in $(seq 50); do
            (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null || break
            sleep 0.2
        done
        mkdir -p "$D"
        [ "$(id -u)" -eq 0 ] && chown postgres "$D"
        as_pg "$B/initdb" -D "$D/data" -U tessera -A trust --no-sync -E UTF8 >/dev/null
        # One more try after a failed start, with the server's own words on stderr: a CI run saw
        # "pg_ctl: could not start server" once, with the log gone by the time anyone looked.
        for try in 1 2; do
            as_pg "$B/pg_ctl" -D "$D/data" -l "$D/log" -w \
                -o "-p $PORT -k $D -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" \
                start >/dev/null && break
            log "start $try failed; the server's log ends:"
            tail -n 20 "$D/log" >&2 || true
            [ "$try" = 2 ] && exit 1
            sleep 2
        done
        as_pg "$B/createdb" -h 127.0.0.1 -p "$PORT" -U tessera tessera
        echo "export TESSERA_TEST_POSTGRES=postgres://tessera@127.0.0.1:$PORT/tessera" > "$D/env"
        log "PostgreSQL up on 127.0.0.1:$PORT; source $D/env" ;;
    down) down ;;
    *) echo "usage: pg-env.sh install|up|down [DIR]" >&2; exit 2 ;;
esac
