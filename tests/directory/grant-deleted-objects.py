"""Lets an account list AD's tombstones: adds "list contents, read properties" for its SID to
CN=Deleted Objects, which samba-tool dsacl cannot reach (the container is visible only with the
show-deleted control). What an AD admin does with `dsacls "CN=Deleted Objects,DC=..."
/takeownership` and `/G DOMAIN\\svc:LCRP` for a directory sync account.

usage: /usr/bin/python3 grant-deleted-objects.py SAM_LDB SID SMB_CONF
"""
import sys

import ldb
from samba.auth import system_session
from samba.dcerpc import security
from samba.ndr import ndr_pack, ndr_unpack
from samba.param import LoadParm
from samba.samdb import SamDB

path, sid, conf = sys.argv[1:4]
lp = LoadParm()
lp.load(conf)
db = SamDB(url=path, session_info=system_session(), lp=lp)
dn = "CN=Deleted Objects," + str(db.get_default_basedn())
controls = ["show_deleted:1", "sd_flags:1:4"]  # 4: the DACL only
res = db.search(base=dn, scope=ldb.SCOPE_BASE, attrs=["nTSecurityDescriptor"], controls=controls)
sd = ndr_unpack(security.descriptor, res[0]["nTSecurityDescriptor"][0])
ace = security.ace()
ace.type = security.SEC_ACE_TYPE_ACCESS_ALLOWED
ace.access_mask = security.SEC_ADS_LIST | security.SEC_ADS_READ_PROP
ace.trustee = security.dom_sid(sid)
sd.dacl_add(ace)
msg = ldb.Message()
msg.dn = ldb.Dn(db, dn)
msg["nTSecurityDescriptor"] = ldb.MessageElement(
    ndr_pack(sd), ldb.FLAG_MOD_REPLACE, "nTSecurityDescriptor"
)
db.modify(msg, controls=controls)
