//! Who signed in: the identity a successful authentication returns, and the decoding of AD's
//! binary identifiers.

use serde::Serialize;

/// A group the user belongs to, directly or through nesting.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct GroupRef {
    /// Distinguished name.
    pub dn: String,
    /// Short name (cn).
    pub name: String,
}

/// An authenticated user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// The directory that authenticated the user.
    pub directory: String,
    /// Distinguished name.
    pub dn: String,
    /// Stable ID: AD objectGUID as text, or LDAP entryUUID.
    pub guid: Option<String>,
    /// AD objectSid as text (S-1-5-21-...).
    pub sid: Option<String>,
    /// Login name (sAMAccountName or uid).
    pub login: String,
    /// userPrincipalName (AD).
    pub upn: Option<String>,
    /// Display name.
    pub display_name: Option<String>,
    /// Mail.
    pub mail: Option<String>,
    /// Every group, nested ones included, sorted by DN.
    pub groups: Vec<GroupRef>,
}

/// AD's objectGUID as text: the first three fields are little-endian on the wire.
pub fn guid_text(b: &[u8]) -> Option<String> {
    let b: &[u8; 16] = b.try_into().ok()?;
    Some(format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]
    ))
}

/// The 16 wire bytes of a GUID in text form (the inverse of [`guid_text`]).
pub fn guid_bytes(text: &str) -> Option<[u8; 16]> {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut v = [0u8; 16];
    for (i, byte) in v.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    let mut b = v;
    b[0..4].copy_from_slice(&[v[3], v[2], v[1], v[0]]);
    b[4..6].copy_from_slice(&[v[5], v[4]]);
    b[6..8].copy_from_slice(&[v[7], v[6]]);
    Some(b)
}

/// AD's objectSid as text: revision, 48-bit big-endian authority, then little-endian
/// sub-authorities.
pub fn sid_text(b: &[u8]) -> Option<String> {
    let (&rev, rest) = b.split_first()?;
    let (&count, rest) = rest.split_first()?;
    let count = usize::from(count);
    if rest.len() != 6 + 4 * count {
        return None;
    }
    let authority = rest[..6].iter().fold(0u64, |a, x| a << 8 | u64::from(*x));
    let mut s = format!("S-{rev}-{authority}");
    for c in rest[6..].chunks_exact(4) {
        s.push_str(&format!(
            "-{}",
            u32::from_le_bytes([c[0], c[1], c[2], c[3]])
        ));
    }
    Some(s)
}

/// The value of the first RDN of a DN: "CN=vdi-users,OU=Groups,..." -> "vdi-users".
pub fn first_rdn_value(dn: &str) -> String {
    let mut out = String::new();
    let mut escaped = false;
    let Some((_, rest)) = dn.split_once('=') else {
        return dn.to_string();
    };
    for c in rest.chars() {
        if escaped {
            out.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == ',' || c == '+' {
            break;
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_and_sid() {
        let wire = [
            0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
            0xee, 0xff,
        ];
        let t = guid_text(&wire).unwrap();
        assert_eq!(t, "00112233-4455-6677-8899-aabbccddeeff");
        assert_eq!(guid_bytes(&t).unwrap(), wire);
        assert_eq!(guid_text(&wire[..15]), None);
        assert_eq!(guid_bytes("zz"), None);
        // S-1-5-21-1-2-3-1104
        let mut sid = vec![1, 5, 0, 0, 0, 0, 0, 5];
        for sub in [21u32, 1, 2, 3, 1104] {
            sid.extend_from_slice(&sub.to_le_bytes());
        }
        assert_eq!(sid_text(&sid).unwrap(), "S-1-5-21-1-2-3-1104");
        assert_eq!(sid_text(&sid[..9]), None);
        assert_eq!(sid_text(&[]), None);
    }

    #[test]
    fn rdn_values() {
        assert_eq!(first_rdn_value("CN=vdi-users,OU=Groups,DC=x"), "vdi-users");
        assert_eq!(
            first_rdn_value("CN=Bob (Builder)\\, Jr.,OU=People"),
            "Bob (Builder), Jr."
        );
        assert_eq!(first_rdn_value("uid=alice,ou=people"), "alice");
        assert_eq!(first_rdn_value("weird"), "weird");
    }
}
