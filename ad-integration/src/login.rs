//! Parsing what a user types as their name: `alice`, `alice@vdi.test` (UPN) or `VDI\alice`
//! (down-level), with the checks that keep hostile input out of LDAP filters and logs.

use crate::error::DirectoryError;

/// Longest login accepted (AD's UPN limit is far below; this bounds work and log lines).
pub const MAX_LOGIN: usize = 256;

/// A parsed login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    /// The account name: sAMAccountName (AD) or uid (LDAP).
    pub user: String,
    /// The domain or realm the user named, if any.
    pub domain: Option<String>,
    /// The UPN as typed (`user@domain`), when that form was used.
    pub upn: Option<String>,
}

/// Parses a login. Control characters, NUL, empty parts and more than one separator are
/// refused before anything reaches a directory.
pub fn parse(login: &str) -> Result<Login, DirectoryError> {
    if login.chars().any(char::is_control) {
        return Err(DirectoryError::BadLogin("control characters"));
    }
    // Surrounding spaces (a paste, a stray keystroke) are not part of any account name.
    let s = login.trim();
    if s.is_empty() {
        return Err(DirectoryError::BadLogin("empty"));
    }
    if s.len() > MAX_LOGIN {
        return Err(DirectoryError::BadLogin("too long"));
    }
    let (domain, user, upn) = match (s.split_once('\\'), s.rsplit_once('@')) {
        (Some(_), Some(_)) => return Err(DirectoryError::BadLogin("both DOMAIN\\ and @")),
        (Some((d, u)), None) => (Some(d), u, None),
        (None, Some((u, d))) => (Some(d), u, Some(s.to_string())),
        (None, None) => (None, s, None),
    };
    if user.is_empty() || domain.is_some_and(str::is_empty) {
        return Err(DirectoryError::BadLogin("empty user or domain part"));
    }
    if user.contains(['\\', '@']) || domain.is_some_and(|d| d.contains(['\\', '@'])) {
        return Err(DirectoryError::BadLogin("more than one separator"));
    }
    Ok(Login {
        user: user.to_string(),
        domain: domain.map(str::to_string),
        upn,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_forms() {
        assert_eq!(
            parse("alice").unwrap(),
            Login {
                user: "alice".into(),
                domain: None,
                upn: None
            }
        );
        let l = parse("alice@VDI.TEST").unwrap();
        assert_eq!(
            (l.user.as_str(), l.domain.as_deref()),
            ("alice", Some("VDI.TEST"))
        );
        assert_eq!(l.upn.as_deref(), Some("alice@VDI.TEST"));
        let l = parse("VDI\\alice").unwrap();
        assert_eq!(
            (l.user.as_str(), l.domain.as_deref()),
            ("alice", Some("VDI"))
        );
        assert_eq!(parse("  bob  ").unwrap().user, "bob");
    }

    #[test]
    fn hostile_logins_are_refused() {
        for bad in [
            "",
            "   ",
            "a\0b",
            "a\nb",
            "@vdi.test",
            "alice@",
            "\\alice",
            "VDI\\",
            "VDI\\a\\b",
            "a@b@c",
            "VDI\\a@b",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert!(parse(&"x".repeat(MAX_LOGIN + 1)).is_err());
        // Filter metacharacters are legal in names; they are escaped where filters are built.
        assert_eq!(parse("*)(uid=*").unwrap().user, "*)(uid=*");
    }
}
