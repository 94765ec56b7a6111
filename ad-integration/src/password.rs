//! Users changing their own password: the thin client's flow for an expired password or one
//! that must be changed at first sign-in, and a voluntary change. The old password is always
//! proved; the directory applies its own policy (length, complexity, history, minimum age).

use std::sync::atomic::Ordering;

use ldap3::exop::PasswordModify;
use ldap3::Mod;
use ldap3::SearchEntry;

use crate::client::{with_timeout, DirectoryClient};
use crate::computer::{set, unicode_pwd};
use crate::config::Kind;
use crate::error::{bind_error, DirectoryError};
use crate::login::Login;

/// AD's (and Samba's) diagnostic text starts with the Win32 error: the old password did not
/// match (ERROR_INVALID_PASSWORD).
const WRONG_OLD_PASSWORD: &str = "00000056";
/// The new password breaks the policy (ERROR_PASSWORD_RESTRICTION).
const POLICY: &str = "0000052d";

impl DirectoryClient {
    /// Changes `login`'s password from `old` to `new`.
    pub async fn change_password(
        &self,
        login: &Login,
        old: &str,
        new: &str,
    ) -> Result<(), DirectoryError> {
        let Some(user) = self.find_user(login).await? else {
            return Err(DirectoryError::InvalidCredentials);
        };
        self.change_password_entry(&user, old, new).await
    }

    /// Changes the password of `user` (found with [`Self::find_user`]) from `old` to `new`.
    pub async fn change_password_entry(
        &self,
        user: &SearchEntry,
        old: &str,
        new: &str,
    ) -> Result<(), DirectoryError> {
        if old.is_empty() {
            return Err(DirectoryError::EmptyPassword);
        }
        if new.is_empty() {
            return Err(DirectoryError::PasswordRejected);
        }
        self.password_checks.fetch_add(1, Ordering::Relaxed);
        let r = match self.directory().config.kind {
            Kind::Ad => self.ad_change(&user.dn, old, new).await,
            Kind::Ldap => self.ldap_change(&user.dn, old, new).await,
        };
        tracing::info!(
            directory = %self.directory().config.name,
            user = %user.dn,
            ok = r.is_ok(),
            "password change"
        );
        r
    }

    /// AD refuses the user's own bind while the password is expired or must change (532,
    /// 773), so the change runs on the service connection in AD's "change" form: delete the
    /// old value and add the new one in one modify. AD verifies the old value and grants this
    /// (User-Change-Password) to Everyone by default; unlike a reset it needs no rights over
    /// the user.
    async fn ad_change(&self, dn: &str, old: &str, new: &str) -> Result<(), DirectoryError> {
        let dn = dn.to_string();
        let (old, new) = (unicode_pwd(old), unicode_pwd(new));
        let r = self
            .write("password change", move |mut ldap| async move {
                let mods = vec![
                    Mod::Delete(b"unicodePwd".to_vec(), set(&old)),
                    Mod::Add(b"unicodePwd".to_vec(), set(&new)),
                ];
                ldap.modify(&dn, mods).await
            })
            .await;
        match r {
            Err(DirectoryError::Result { rc, text, .. }) => Err(change_error(rc, &text)),
            r => r,
        }
    }

    /// Other directories: bind as the user with the old password (slapd's ppolicy lets an
    /// expired password bind within its grace logins) and send RFC 3062's Password Modify
    /// with the old password too, so that the server checks it again.
    async fn ldap_change(&self, dn: &str, old: &str, new: &str) -> Result<(), DirectoryError> {
        let timeout = self.directory().operation_timeout();
        let (mut ldap, _) = self.connect().await?;
        let result = async {
            let bind = with_timeout(timeout, "user bind", ldap.simple_bind(dn, old)).await?;
            if bind.rc != 0 {
                return Err(bind_error(bind.rc, &bind.text));
            }
            let exop = PasswordModify {
                user_id: None,
                old_pass: Some(old),
                new_pass: Some(new),
            };
            let ldap3::result::ExopResult(_, r) =
                with_timeout(timeout, "password modify", ldap.extended(exop)).await?;
            match r.rc {
                0 => Ok(()),
                rc => Err(change_error(rc, &r.text)),
            }
        }
        .await;
        let _ = ldap.unbind().await;
        result
    }
}

/// A refused change: a wrong old password, a policy violation, or something else.
fn change_error(rc: u32, text: &str) -> DirectoryError {
    let code = text.get(..8).map(str::to_ascii_lowercase);
    match (rc, code.as_deref()) {
        (_, Some(WRONG_OLD_PASSWORD)) | (49, _) => DirectoryError::InvalidCredentials,
        // 19 constraint violation, 53 unwilling to perform: AD's and slapd's policy answers.
        (_, Some(POLICY)) | (19 | 53, _) => DirectoryError::PasswordRejected,
        _ => DirectoryError::Result {
            op: "password change",
            rc,
            text: text.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_map_to_what_the_user_can_fix() {
        let wrong = "00000056: AtrErr: DSID-03191083, #1:\n\t0: 00000056: DSID-03191083, problem 1005 (CONSTRAINT_ATT_TYPE), data 0, Att 9005a (unicodePwd)";
        assert!(matches!(
            change_error(19, wrong),
            DirectoryError::InvalidCredentials
        ));
        let samba = "0000052D: Constraint violation - check_password_restrictions: the password is too short. It should be equal or longer than 7 characters!";
        assert!(matches!(
            change_error(19, samba),
            DirectoryError::PasswordRejected
        ));
        assert!(matches!(
            change_error(53, "Password is in history"),
            DirectoryError::PasswordRejected
        ));
        assert!(matches!(
            change_error(49, ""),
            DirectoryError::InvalidCredentials
        ));
        assert!(matches!(
            change_error(50, "insufficient access"),
            DirectoryError::Result { rc: 50, .. }
        ));
    }
}
