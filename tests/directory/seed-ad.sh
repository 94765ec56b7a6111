#!/usr/bin/env bash
# Prints the test domain's data as LDIF (domain DC=vdi,DC=test), loaded by ldap-env.sh with one
# ldapadd over LDAPS. Each user exists for one test, so that lockouts and failed binds of one
# test never change another's outcome:
#   svc-vdi    the service account (reads; computer accounts in OU=Desktops by delegation)
#   alice      nested groups: vdi-engineering -> vdi-users, vdi-gpu; used by the benchmark too
#   bob        a DN with ',' and '()' in it; member of vdi-gpu
#   carol 533 disabled, dave 773 must change password, erin 701 account expired,
#   frank 530 logon hours, grace 531 workstation, larry 775 (locked by its test), walter (wrong
#   passwords), ivan 532 (password expired: created by ldap-env.sh under faketime)
#   stormy     50 concurrent guesses through the broker (its throttle stays below the lockout)
#   mona       changes her must-change password (the password-change test resets her first)
#   zoe        moved in and out of groups by the sync tests; user01..user30 fill vdi-big (paging)
set -euo pipefail
B=DC=vdi,DC=test
upw() { printf '"%s"' "$1" | iconv -f UTF-8 -t UTF-16LE | base64 -w0; }
user() { # sam cn ou password uac [extra lines...]
    local sam=$1 cn=$2 ou=$3 pw=$4 uac=$5
    shift 5
    printf 'dn: CN=%s,OU=%s,OU=VDI,%s\nobjectClass: user\nsAMAccountName: %s\n' "$cn" "$ou" "$B" "$sam"
    printf 'userPrincipalName: %s@vdi.test\nunicodePwd:: %s\nuserAccountControl: %s\n' "$sam" "$(upw "$pw")" "$uac"
    local l
    for l in "$@"; do printf '%s\n' "$l"; done
    printf '\n'
}
for ou in VDI People,OU=VDI Groups,OU=VDI Desktops,OU=VDI; do
    printf 'dn: OU=%s,%s\nobjectClass: organizationalUnit\n\n' "$ou" "$B"
done
user svc-vdi "VDI Service" People 'Svc!Passw0rd1' 66048
user alice "Alice Liddell" People 'Al1ce!Passw0rd' 512 "mail: alice@vdi.test" "displayName: Alice Liddell"
user bob 'Bob (Builder)\, Jr.' People 'B0b!Passw0rd' 512 "displayName: Bob (Builder), Jr."
user carol Carol People 'Car0l!Passw0rd' 514
user dave Dave People 'Us3r!Passw0rd' 512 "pwdLastSet: 0"
user erin Erin People 'Us3r!Passw0rd' 512 "accountExpires: 116444736000000000"
user frank Frank People 'Us3r!Passw0rd' 512 "logonHours:: AAAAAAAAAAAAAAAAAAAAAAAAAAAA"
user grace Grace People 'Us3r!Passw0rd' 512 "userWorkstations: NOSUCHWS"
user larry Larry People 'Us3r!Passw0rd' 512
user walter Walter People 'Us3r!Passw0rd' 512
user stormy Stormy People 'St0rmy!Passw0rd' 512
user zoe Zoe People 'Us3r!Passw0rd' 512
user mona Mona People 'Us3r!Passw0rd' 512 "pwdLastSet: 0"
for i in $(seq -w 1 30); do
    user "user$i" "User $i" People 'Us3r!Passw0rd' 512
done
printf 'dn: CN=vdi-engineering,OU=Groups,OU=VDI,%s\nobjectClass: group\nsAMAccountName: vdi-engineering\n' "$B"
printf 'member: CN=Alice Liddell,OU=People,OU=VDI,%s\n\n' "$B"
printf 'dn: CN=vdi-users,OU=Groups,OU=VDI,%s\nobjectClass: group\nsAMAccountName: vdi-users\n' "$B"
printf 'member: CN=vdi-engineering,OU=Groups,OU=VDI,%s\n\n' "$B"
printf 'dn: CN=vdi-gpu,OU=Groups,OU=VDI,%s\nobjectClass: group\nsAMAccountName: vdi-gpu\n' "$B"
printf 'member: CN=vdi-engineering,OU=Groups,OU=VDI,%s\n' "$B"
printf 'member: CN=Bob (Builder)\\, Jr.,OU=People,OU=VDI,%s\n\n' "$B"
printf 'dn: CN=vdi-sync,OU=Groups,OU=VDI,%s\nobjectClass: group\nsAMAccountName: vdi-sync\n\n' "$B"
printf 'dn: CN=vdi-big,OU=Groups,OU=VDI,%s\nobjectClass: group\nsAMAccountName: vdi-big\n' "$B"
for i in $(seq -w 1 30); do printf 'member: CN=User %s,OU=People,OU=VDI,%s\n' "$i" "$B"; done
printf '\n'
# An existing computer account, for the "reuse" path.
printf 'dn: CN=vdi-lc-001,OU=Desktops,OU=VDI,%s\nobjectClass: computer\nsAMAccountName: vdi-lc-001$\n' "$B"
printf 'userAccountControl: 4096\ndNSHostName: vdi-lc-001.vdi.test\nunicodePwd:: %s\n\n' "$(upw 'Mach1ne!Secret-0001')"
# Password policy: lock after 3 bad passwords for 1 minute; no minimum password age.
printf 'dn: %s\nchangetype: modify\n' "$B"
printf 'replace: lockoutThreshold\nlockoutThreshold: 3\n-\n'
printf 'replace: lockoutDuration\nlockoutDuration: -600000000\n-\n'
printf 'replace: lockOutObservationWindow\nlockOutObservationWindow: -600000000\n-\n'
printf 'replace: minPwdAge\nminPwdAge: 0\n-\n\n'
