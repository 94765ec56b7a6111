//! Directory errors. The sign-in errors are the ones a user can act on (AD's bind sub-codes
//! mapped one to one); the others are for the admin and the logs.

use std::time::Duration;

/// Everything that can go wrong talking to a directory.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// Wrong password, or no such user (the two are not told apart, as AD does not).
    #[error("wrong user name or password")]
    InvalidCredentials,
    /// AD 533.
    #[error("the account is disabled")]
    AccountDisabled,
    /// AD 775.
    #[error("the account is locked out after too many failed sign-ins; wait, or ask the help desk to unlock it")]
    AccountLocked,
    /// AD 701.
    #[error("the account has expired")]
    AccountExpired,
    /// AD 532.
    #[error("the password has expired and must be changed")]
    PasswordExpired,
    /// AD 773.
    #[error("the password must be changed before the first sign-in")]
    PasswordMustChange,
    /// AD 530.
    #[error("sign-in is not allowed at this time of day (logon hours)")]
    LogonHours,
    /// AD 531.
    #[error("sign-in is not allowed from this workstation")]
    Workstation,
    /// The directory refused a new password: too short, too simple, used before, or changed too
    /// recently (AD 0x52D, slapd's ppolicy).
    #[error("the new password does not meet the domain's password policy (length, complexity, history or minimum age)")]
    PasswordRejected,
    /// An empty password: a bind with it would be an unauthenticated (anonymous) bind, which
    /// AD accepts as a success.
    #[error("an empty password is not accepted")]
    EmptyPassword,
    /// A login that cannot be a user name.
    #[error("invalid user name: {0}")]
    BadLogin(&'static str),
    /// `DOMAIN\user` or `user@REALM` named a domain no directory serves.
    #[error("no configured directory serves the domain {0:?}")]
    UnknownDomain(String),
    /// More than one entry matched where exactly one must.
    #[error("more than one directory entry matches {0:?}")]
    Ambiguous(String),
    /// Not found (lookups and computer accounts; sign-in reports InvalidCredentials instead).
    #[error("not found: {0}")]
    NotFound(String),
    /// Every server of the directory failed.
    #[error("no server of directory {directory} could be reached: {tried}")]
    Unavailable {
        /// Directory name.
        directory: String,
        /// Each URL with its failure.
        tried: String,
    },
    /// An operation ran past its timeout.
    #[error("timed out after {0:?} during {1}")]
    Timeout(Duration, &'static str),
    /// The service account could not bind.
    #[error("the service account could not bind: {0}")]
    ServiceBind(String),
    /// The server answered an operation with an error.
    #[error("{op} failed: LDAP result {rc} {text}")]
    Result {
        /// Operation.
        op: &'static str,
        /// LDAP result code.
        rc: u32,
        /// Diagnostic text.
        text: String,
    },
    /// Transport or protocol error from the LDAP client.
    #[error("{op}: {source}")]
    Ldap {
        /// Operation.
        op: &'static str,
        /// Cause (boxed: ldap3's error is large and this enum travels in every Result).
        source: Box<ldap3::LdapError>,
    },
    /// The server sent something the client cannot parse.
    #[error("malformed reply from the server during {0}")]
    Malformed(&'static str),
    /// The operation needs a directory of another kind.
    #[error("{0} needs an Active Directory directory")]
    NeedsAd(&'static str),
    /// Bad configuration.
    #[error("{0}")]
    Config(String),
}

impl DirectoryError {
    /// Whether this is a sign-in outcome the user can act on (as opposed to an outage or a
    /// configuration problem the admin must fix).
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            Self::InvalidCredentials
                | Self::AccountDisabled
                | Self::AccountLocked
                | Self::AccountExpired
                | Self::PasswordExpired
                | Self::PasswordMustChange
                | Self::LogonHours
                | Self::Workstation
                | Self::PasswordRejected
                | Self::EmptyPassword
                | Self::BadLogin(_)
                | Self::UnknownDomain(_)
        )
    }
}

/// AD puts the reason for a failed bind in the diagnostic text: "..., data 52e, v4563".
pub fn ad_subcode(text: &str) -> Option<&str> {
    let rest = text.split("data ").nth(1)?;
    let code = rest.split([',', ' ']).next()?;
    (!code.is_empty() && code.chars().all(|c| c.is_ascii_hexdigit())).then_some(code)
}

/// Maps a failed user bind (result code and diagnostic text) to the error to report.
pub fn bind_error(rc: u32, text: &str) -> DirectoryError {
    match ad_subcode(text).map(str::to_ascii_lowercase).as_deref() {
        Some("530") => DirectoryError::LogonHours,
        Some("531") => DirectoryError::Workstation,
        Some("532") => DirectoryError::PasswordExpired,
        Some("533") => DirectoryError::AccountDisabled,
        Some("701") => DirectoryError::AccountExpired,
        Some("773") => DirectoryError::PasswordMustChange,
        Some("775") => DirectoryError::AccountLocked,
        // 52e wrong password, 525 no such user: the same answer to the user.
        _ if rc == 49 => DirectoryError::InvalidCredentials,
        _ => DirectoryError::Result {
            op: "bind",
            rc,
            text: text.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ad_codes_map_to_actionable_errors() {
        let t = |c: &str| {
            format!("80090308: LdapErr: DSID-0C0903A9, comment: AcceptSecurityContext error, data {c}, v1db1")
        };
        assert!(matches!(
            bind_error(49, &t("52e")),
            DirectoryError::InvalidCredentials
        ));
        assert!(matches!(
            bind_error(49, &t("525")),
            DirectoryError::InvalidCredentials
        ));
        assert!(matches!(
            bind_error(49, &t("530")),
            DirectoryError::LogonHours
        ));
        assert!(matches!(
            bind_error(49, &t("531")),
            DirectoryError::Workstation
        ));
        assert!(matches!(
            bind_error(49, &t("532")),
            DirectoryError::PasswordExpired
        ));
        assert!(matches!(
            bind_error(49, &t("533")),
            DirectoryError::AccountDisabled
        ));
        assert!(matches!(
            bind_error(49, &t("701")),
            DirectoryError::AccountExpired
        ));
        assert!(matches!(
            bind_error(49, &t("773")),
            DirectoryError::PasswordMustChange
        ));
        assert!(matches!(
            bind_error(49, &t("775")),
            DirectoryError::AccountLocked
        ));
        // OpenLDAP: no text at all.
        assert!(matches!(
            bind_error(49, ""),
            DirectoryError::InvalidCredentials
        ));
        assert!(matches!(
            bind_error(53, "unwilling"),
            DirectoryError::Result { rc: 53, .. }
        ));
        assert_eq!(ad_subcode("data , v1"), None);
        assert_eq!(ad_subcode("data zz9, v1"), None);
    }
}
