//! Sign-in: find exactly one user with the service account, verify the password by binding as
//! that entry's DN on a fresh connection, then collect the identity and nested groups.

use std::sync::atomic::Ordering;

use ldap3::{ldap_escape, Scope, SearchEntry};

use crate::client::{binary, text, with_timeout, DirectoryClient};
use crate::config::Kind;
use crate::error::{bind_error, DirectoryError};
use crate::identity::{guid_text, sid_text, Identity};
use crate::login::Login;

impl DirectoryClient {
    /// Attributes read for a user.
    pub(crate) fn user_attributes(&self) -> Vec<String> {
        let a = &self.directory().attributes;
        let mut v = vec![
            a.login.clone(),
            a.display_name.clone(),
            a.mail.clone(),
            a.id.clone(),
            "memberOf".to_string(),
            "cn".to_string(),
        ];
        if let Some(u) = &a.upn {
            v.push(u.clone());
        }
        if self.directory().config.kind == Kind::Ad {
            v.extend(["objectSid".to_string(), "userAccountControl".to_string()]);
        }
        v
    }

    /// The user entry for `login`, if exactly one matches; None if none does.
    pub async fn find_user(&self, login: &Login) -> Result<Option<SearchEntry>, DirectoryError> {
        let d = self.directory();
        let a = &d.attributes;
        let by_login = format!("({}={})", a.login, ldap_escape(login.user.as_str()));
        let who = match (&login.upn, &a.upn) {
            (Some(upn), Some(attr)) => {
                format!("(|{by_login}({attr}={}))", ldap_escape(upn.as_str()))
            }
            _ => by_login,
        };
        let filter = format!("(&{}{who})", a.user_filter);
        let attrs = self.user_attributes();
        let attrs: Vec<&str> = attrs.iter().map(String::as_str).collect();
        let mut found = self
            .search(&d.config.user_base, Scope::Subtree, &filter, &attrs, 2)
            .await?;
        match found.len() {
            0 => Ok(None),
            1 => Ok(found.pop()),
            _ => Err(DirectoryError::Ambiguous(login.user.clone())),
        }
    }

    /// Verifies `password` by binding as `dn` on a connection of its own, so that the service
    /// connection never changes identity.
    pub async fn verify_password(&self, dn: &str, password: &str) -> Result<(), DirectoryError> {
        // An empty password or DN is an unauthenticated bind, which AD answers with success.
        if password.is_empty() {
            return Err(DirectoryError::EmptyPassword);
        }
        if dn.is_empty() {
            return Err(DirectoryError::InvalidCredentials);
        }
        let (mut ldap, _) = self.connect().await?;
        self.password_checks.fetch_add(1, Ordering::Relaxed);
        let r = with_timeout(
            self.directory().operation_timeout(),
            "user bind",
            ldap.simple_bind(dn, password),
        )
        .await;
        let _ = ldap.unbind().await;
        let r = r?;
        if r.rc == 0 {
            Ok(())
        } else {
            Err(bind_error(r.rc, &r.text))
        }
    }

    /// Authenticates a parsed login against this directory.
    pub async fn authenticate_login(
        &self,
        login: &Login,
        password: &str,
    ) -> Result<Identity, DirectoryError> {
        if password.is_empty() {
            return Err(DirectoryError::EmptyPassword);
        }
        let Some(user) = self.find_user(login).await? else {
            tracing::info!(directory = %self.directory().config.name, user = %login.user, "sign-in: no such user");
            return Err(DirectoryError::InvalidCredentials);
        };
        self.authenticate_entry(user, password).await
    }

    /// Authenticates the user `user` (found with [`Self::find_user`]): a bind as its DN, then
    /// its identity and nested groups.
    pub async fn authenticate_entry(
        &self,
        user: SearchEntry,
        password: &str,
    ) -> Result<Identity, DirectoryError> {
        self.verify_password(&user.dn, password).await?;
        let groups = self.groups_of(&user).await?;
        Ok(self.identity(user, groups))
    }

    /// User passwords this client has tried by binding since it was made.
    pub fn password_checks(&self) -> u64 {
        self.password_checks.load(Ordering::Relaxed)
    }

    pub(crate) fn identity(
        &self,
        user: SearchEntry,
        groups: Vec<crate::identity::GroupRef>,
    ) -> Identity {
        let d = self.directory();
        let a = &d.attributes;
        let guid = match d.config.kind {
            Kind::Ad => binary(&user, &a.id).and_then(|b| guid_text(&b)),
            Kind::Ldap => text(&user, &a.id),
        };
        Identity {
            directory: d.config.name.clone(),
            guid,
            sid: binary(&user, "objectSid").and_then(|b| sid_text(&b)),
            login: text(&user, &a.login).unwrap_or_default(),
            upn: a.upn.as_ref().and_then(|u| text(&user, u)),
            display_name: text(&user, &a.display_name).or_else(|| text(&user, "cn")),
            mail: text(&user, &a.mail),
            groups,
            dn: user.dn,
        }
    }
}
