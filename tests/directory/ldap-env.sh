#!/usr/bin/env bash
# A throwaway Samba AD domain controller and an OpenLDAP server on 127.0.0.1 for the directory
# tests and benchmarks, everything under one directory (recipes and timings:
# shared/research/ldap-ad.md).
#   ldap-env.sh install        Debian packages (idempotent)
#   ldap-env.sh up   [DIR]     TLS CA and certificate; Samba AD (VDI.TEST) on 389/636, slapd on
#                              10389/10636; seeds both; writes DIR/env with the tests' variables
#   ldap-env.sh down [DIR]     stops both and removes DIR
# DIR defaults to $TESSERA_LDAP_DIR or /tmp/tessera-ldap. With SAMBA_GOLDEN_DIR set, a pristine
# provision is cached there and restored next time (5 s instead of 20-35 s).
set -euo pipefail
CMD=${1:?usage: ldap-env.sh install|up|down [DIR]}
D=${2:-${TESSERA_LDAP_DIR:-/tmp/tessera-ldap}}
HERE=$(cd "$(dirname "$0")" && pwd)
REALM=VDI.TEST
DOMAIN=VDI
BASE_AD=DC=vdi,DC=test
BASE_OL=dc=example,dc=org
ADMIN_PW='Adm1n!Passw0rd'
log() { echo "[ldap-env] $*" >&2; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

PACKAGES=(samba-ad-dc samba-ad-provision samba-dsdb-modules krb5-user ldap-utils slapd openssl faketime)

install() {
    local need=() p
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
    done
    [ ${#need[@]} -eq 0 ] && return 0
    local t0; t0=$(now)
    export DEBIAN_FRONTEND=noninteractive
    # No man-db rebuild, no default slapd database, no service starts.
    echo 'man-db man-db/auto-update boolean false' | debconf-set-selections
    echo 'slapd slapd/no_configuration boolean true' | debconf-set-selections
    [ -x /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; }
    log "installing ${need[*]}"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
    log "install: $(since "$t0") s"
}

wait_ldap() { # url binddn password base
    local _
    for _ in $(seq 1 600); do
        LDAPTLS_CACERT=$D/tls/ca.pem ldapsearch -x -o nettimeout=2 -H "$1" -D "$2" -w "$3" -b "$4" -s base dn >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}

make_tls() { # a CA and one server certificate with the SANs rustls checks, for both servers
    local T=$D/tls
    mkdir -p "$T"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
        -subj "/CN=Tessera test CA" -keyout "$T/ca.key" -out "$T/ca.pem" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
        -keyout "$T/key.pem" -out "$T/server.csr" 2>/dev/null
    printf 'subjectAltName=DNS:localhost,DNS:dc1.vdi.test,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' > "$T/ext.cnf"
    openssl x509 -req -in "$T/server.csr" -CA "$T/ca.pem" -CAkey "$T/ca.key" -CAcreateserial \
        -days 3650 -out "$T/cert.pem" -extfile "$T/ext.cnf" 2>/dev/null
    # A second CA that signed nothing here: the "wrong CA" tests trust only it.
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
        -subj "/CN=Some other CA" -keyout "$T/other-ca.key" -out "$T/other-ca.pem" 2>/dev/null
    chmod 600 "$T/key.pem" "$T/ca.key" "$T/other-ca.key"
}

samba_provision() {
    local S=$1
    samba-tool domain provision --targetdir="$S" --realm=$REALM --domain=$DOMAIN \
        --server-role=dc --dns-backend=NONE --use-rfc2307 --adminpass="$ADMIN_PW" \
        --host-name=dc1 --host-ip=127.0.0.1 \
        --option="interfaces=lo" --option="bind interfaces only=yes" \
        --option="log file=$S/log/%m.log" --option="pid directory=$S/run" \
        --option="ncalrpc dir=$S/run/ncalrpc" --option="winbindd socket directory=$S/run/winbindd" \
        --option="ntp signd socket directory=$S/run/ntp_signd" \
        --option="tls keyfile=$D/tls/key.pem" --option="tls certfile=$D/tls/cert.pem" \
        --option="tls cafile=$D/tls/ca.pem" >"$S.provision.log" 2>&1 \
        || { tail -30 "$S.provision.log" >&2; exit 1; }
    # Samba 4.17's provision drops these --option values: set them afterwards. Plain-LDAP simple
    # binds stay allowed for the lab tests that check Tessera refuses them itself.
    sed -i -e '/^\s*server services\s*=/d' -e "/^\[global\]/a\\
\tldap server require strong auth = no\\
\tserver services = ldap cldap kdc" "$S/etc/smb.conf"
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

samba_up() {
    local S=$D/samba t0 golden="" p
    for p in 389 636 10389 10636; do
        port_free "$p" || { log "port $p is taken: another directory environment is up (ldap-env.sh down ITS_DIR)"; exit 1; }
    done
    t0=$(now)
    rm -rf "$S"
    mkdir -p "$S"
    if [ -n "${SAMBA_GOLDEN_DIR:-}" ]; then
        golden=$SAMBA_GOLDEN_DIR/samba-golden-$(samba --version | tr -c 'A-Za-z0-9.-' _).tgz
    fi
    if [ -n "$golden" ] && [ -f "$golden" ]; then
        tar xzf "$golden" -C "$S"
        sed -i -e "s#@@S@@#$S#g" -e "s#@@D@@#$D#g" "$S/etc/smb.conf"
        log "samba: restored the provision from $golden"
    else
        samba_provision "$S"
        if [ -n "$golden" ]; then
            local tmp
            tmp=$(mktemp -d)
            mkdir -p "$(dirname "$golden")"
            cp -a "$S/." "$tmp/"
            sed -i -e "s#$S#@@S@@#g" -e "s#$D#@@D@@#g" "$tmp/etc/smb.conf"
            tar czf "$golden.tmp" -C "$tmp" . && mv "$golden.tmp" "$golden"
            rm -rf "$tmp"
        fi
        log "samba: provisioned in $(since "$t0") s"
    fi
    mkdir -p "$S/log" "$S/run" "$S/cache"
    t0=$(now)
    samba -D -s "$S/etc/smb.conf" -l "$S/log" --maximum-runtime=7200
    wait_ldap ldaps://127.0.0.1 "Administrator@vdi.test" "$ADMIN_PW" "$BASE_AD" \
        || { log "samba did not come up"; tail -50 "$S"/log/*.log >&2; exit 1; }
    log "samba: answering after $(since "$t0") s"
    t0=$(now)
    "$HERE/seed-ad.sh" > "$S/seed.ldif"
    LDAPTLS_CACERT=$D/tls/ca.pem ldapadd -x -H ldaps://127.0.0.1 -D Administrator@vdi.test \
        -w "$ADMIN_PW" -f "$S/seed.ldif" > "$S/seed.log"
    # Least privilege for computer accounts: svc-vdi may create and delete computer objects in
    # OU=Desktops and has full control of the computers there (reset password, disable), and
    # nothing else beyond what every user may read.
    local sid
    sid=$(samba-tool user show svc-vdi --attributes=objectSid -H "$S/private/sam.ldb" | sed -n 's/^objectSid: //p')
    samba-tool dsacl set -H "$S/private/sam.ldb" --objectdn="OU=Desktops,OU=VDI,$BASE_AD" \
        --sddl="(OA;CI;CCDC;bf967a86-0de6-11d0-a285-00aa003049e2;;$sid)(OA;CIIO;GA;;bf967a86-0de6-11d0-a285-00aa003049e2;$sid)" >/dev/null
    # The sync engine lists deleted users (tombstones) to report deletions at once.
    /usr/bin/python3 "$HERE/grant-deleted-objects.py" "$S/private/sam.ldb" "$sid" "$S/etc/smb.conf"
    # Error 532 (password expired) needs a pwdLastSet in the past, which LDAP will not write:
    # ivan is created with a clock 50 days back.
    faketime -f '-50d' samba-tool user create ivan 'Us3r!Passw0rd' --userou=OU=People,OU=VDI \
        -s "$S/etc/smb.conf" >/dev/null
    log "samba: seeded in $(since "$t0") s"
}

slapd_up() {
    local O=$D/openldap t0
    t0=$(now)
    rm -rf "$O"
    mkdir -p "$O/slapd.d" "$O/data"
    cat > "$O/config.ldif" <<CONFIG
dn: cn=config
objectClass: olcGlobal
cn: config
olcPidFile: $O/slapd.pid
olcArgsFile: $O/slapd.args
olcTLSCACertificateFile: $D/tls/ca.pem
olcTLSCertificateFile: $D/tls/cert.pem
olcTLSCertificateKeyFile: $D/tls/key.pem
olcLogLevel: none

dn: cn=module{0},cn=config
objectClass: olcModuleList
cn: module{0}
olcModulePath: /usr/lib/ldap
olcModuleLoad: back_mdb
olcModuleLoad: dynlist

dn: cn=schema,cn=config
objectClass: olcSchemaConfig
cn: schema

include: file:///etc/ldap/schema/core.ldif
include: file:///etc/ldap/schema/cosine.ldif
include: file:///etc/ldap/schema/nis.ldif
include: file:///etc/ldap/schema/inetorgperson.ldif
include: file:///etc/ldap/schema/dyngroup.ldif

dn: olcDatabase={-1}frontend,cn=config
objectClass: olcDatabaseConfig
objectClass: olcFrontendConfig
olcDatabase: {-1}frontend
olcSizeLimit: 500

dn: olcDatabase={0}config,cn=config
objectClass: olcDatabaseConfig
olcDatabase: {0}config
olcAccess: {0}to * by dn.exact=gidNumber=0+uidNumber=0,cn=peercred,cn=external,cn=auth manage by * none

dn: olcDatabase={1}mdb,cn=config
objectClass: olcDatabaseConfig
objectClass: olcMdbConfig
olcDatabase: {1}mdb
olcDbDirectory: $O/data
olcSuffix: $BASE_OL
olcRootDN: cn=admin,$BASE_OL
olcRootPW: $ADMIN_PW
olcDbMaxSize: 104857600
olcDbNoSync: TRUE
olcDbIndex: objectClass eq
olcDbIndex: uid,cn,mail eq,sub
olcDbIndex: member eq
olcAccess: {0}to attrs=userPassword by self write by anonymous auth by * none
olcAccess: {1}to * by users read by * none

dn: olcOverlay={0}dynlist,olcDatabase={1}mdb,cn=config
objectClass: olcOverlayConfig
objectClass: olcDynListConfig
olcOverlay: {0}dynlist
olcDynListAttrSet: {0}groupOfURLs memberURL member+memberOf@groupOfNames*
CONFIG
    slapadd -q -n 0 -F "$O/slapd.d" -l "$O/config.ldif"
    "$HERE/seed-openldap.sh" > "$O/seed.ldif"
    slapadd -q -n 1 -F "$O/slapd.d" -l "$O/seed.ldif"
    slapd -F "$O/slapd.d" -h "ldap://127.0.0.1:10389/ ldaps://127.0.0.1:10636/"
    wait_ldap ldap://127.0.0.1:10389 "cn=admin,$BASE_OL" "$ADMIN_PW" "$BASE_OL" \
        || { log "slapd did not come up"; exit 1; }
    log "slapd: configured, seeded and answering in $(since "$t0") s"
}

stop_pidfile() {
    [ -f "$1" ] || return 0
    local p _
    p=$(cat "$1")
    kill "$p" 2>/dev/null || return 0
    for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
}

down() {
    stop_pidfile "$D/samba/run/samba.pid"
    stop_pidfile "$D/openldap/slapd.pid"
    rm -rf "$D"
}

case $CMD in
    install) install ;;
    up)
        t0=$(now)
        down
        mkdir -p "$D"
        make_tls
        samba_up
        slapd_up
        cat > "$D/env" <<ENV
export LDAP_TEST_CA=$D/tls/ca.pem LDAP_TEST_OTHER_CA=$D/tls/other-ca.pem
export AD_URL=ldaps://127.0.0.1:636 AD_STARTTLS_URL=ldap://127.0.0.1:389 AD_BASE=$BASE_AD
export AD_SVC_DN=svc-vdi@vdi.test AD_SVC_PW='Svc!Passw0rd1'
export AD_ADMIN_DN=Administrator@vdi.test AD_ADMIN_PW='$ADMIN_PW'
export AD_REALM=$REALM AD_NETBIOS=$DOMAIN
export OL_URL=ldaps://127.0.0.1:10636 OL_STARTTLS_URL=ldap://127.0.0.1:10389 OL_BASE=$BASE_OL
export OL_SVC_DN=uid=svc-vdi,ou=people,$BASE_OL OL_SVC_PW='Svc!Passw0rd1'
export OL_ADMIN_DN=cn=admin,$BASE_OL OL_ADMIN_PW='$ADMIN_PW'
ENV
        log "up in $(since "$t0") s; source $D/env" ;;
    down) down ;;
    *) echo "usage: ldap-env.sh install|up|down [DIR]" >&2; exit 2 ;;
esac
