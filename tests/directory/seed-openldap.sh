#!/usr/bin/env bash
# Prints the OpenLDAP test tree as LDIF (suffix dc=example,dc=org), loaded offline by
# ldap-env.sh with slapadd. Nested groups resolve through the dynlist overlay's memberOf.
set -euo pipefail
B=dc=example,dc=org
h() { slappasswd -h '{SSHA}' -s "$1"; }
person() { # uid cn sn password [extra lines...]
    local uid=$1 cn=$2 sn=$3 pw=$4
    shift 4
    printf 'dn: uid=%s,ou=people,%s\nobjectClass: inetOrgPerson\nuid: %s\ncn: %s\nsn: %s\n' "$uid" "$B" "$uid" "$cn" "$sn"
    printf 'userPassword: %s\n' "$(h "$pw")"
    local l
    for l in "$@"; do printf '%s\n' "$l"; done
    printf '\n'
}
printf 'dn: %s\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example\n\n' "$B"
printf 'dn: ou=people,%s\nobjectClass: organizationalUnit\nou: people\n\n' "$B"
printf 'dn: ou=groups,%s\nobjectClass: organizationalUnit\nou: groups\n\n' "$B"
person svc-vdi "VDI service" service 'Svc!Passw0rd1'
person alice "Alice Liddell" Liddell 'Al1ce!Passw0rd' "mail: alice@example.org" "displayName: Alice Liddell"
person bob "Bob (Builder), Jr." Builder 'B0b!Passw0rd'
person walter Walter Walter 'Us3r!Passw0rd'
person zoe Zoe Zoe 'Us3r!Passw0rd'
person mona Mona Mona 'Us3r!Passw0rd'
group() { # cn members...
    local cn=$1 m
    shift
    printf 'dn: cn=%s,ou=groups,%s\nobjectClass: groupOfNames\ncn: %s\n' "$cn" "$B" "$cn"
    for m in "$@"; do printf 'member: %s,%s\n' "$m" "$B"; done
    printf '\n'
}
group vdi-engineering uid=alice,ou=people
group vdi-users cn=vdi-engineering,ou=groups
group vdi-gpu cn=vdi-engineering,ou=groups uid=bob,ou=people
# groupOfNames needs a member: the service account stands in until the sync tests add users.
group vdi-sync uid=svc-vdi,ou=people
