//! The broker's client API (HTTPS, JSON), as the thin client uses it: sign in (a desktop, or
//! the pools to choose from), a new ticket, disconnect, log off. Blocking: the UI calls it from
//! a worker thread ([`crate::app`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::blocking::{Client, Response};
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::json;

use crate::trust::{Trust, TrustError, Verifier};
use crate::tunnel::TunnelTarget;

/// How long a broker call may take (a logon that starts a desktop takes seconds).
const TIMEOUT: Duration = Duration::from_secs(60);

/// Why a broker call failed, in the terms the user is shown.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The address cannot be a broker's.
    #[error("{0}")]
    BadAddress(String),
    /// TLS could not be set up (a bad CA file).
    #[error(transparent)]
    Trust(#[from] TrustError),
    /// The broker's certificate is not trusted; the user may accept it by its fingerprint.
    #[error("the broker's certificate is not trusted ({fingerprint})")]
    Untrusted {
        /// What the user compares.
        fingerprint: String,
    },
    /// Nothing answered.
    #[error("the broker at {address} cannot be reached: {why}")]
    Unreachable {
        /// Where we tried.
        address: String,
        /// The network's reason.
        why: String,
    },
    /// The broker said no; `message` is its explanation, written for users.
    #[error("{message}")]
    Refused {
        /// What kind of refusal.
        kind: Refusal,
        /// The broker's machine-readable reason (`password_expired`, `account_locked`...;
        /// empty from a broker that gives none).
        code: String,
        /// The broker's words.
        message: String,
    },
    /// The broker answered something this client does not understand.
    #[error("the broker gave an answer this client does not understand: {0}")]
    Protocol(String),
}

/// The kinds of refusal, by the broker's status codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// 401: wrong name or password, a locked, disabled or expired account, an expired password.
    SignIn,
    /// 403: not entitled.
    NotEntitled,
    /// 404: the session is gone.
    Gone,
    /// 429: too many attempts.
    Throttled,
    /// 503: no free desktop, or a directory or host down.
    Unavailable,
    /// 400, 409, 500 and the rest.
    Other,
}

/// Where a desktop's display is.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Display {
    /// Host the client connects to.
    pub host: String,
    /// Plain-text SPICE port (loopback desktops only).
    pub port: Option<u16>,
    /// TLS SPICE port.
    pub tls_port: Option<u16>,
    /// The CA that signs the display's certificate (PEM).
    pub ca: Option<String>,
}

/// A desktop the broker gave the user.
#[derive(Clone, Debug, Deserialize)]
pub struct Granted {
    /// The session.
    pub session_id: String,
    /// The session's bearer token.
    pub session_token: String,
    /// The desktop's name.
    pub desktop: String,
    /// Its pool.
    pub pool: String,
    /// One-time display ticket.
    pub ticket: String,
    /// Whether this is a desktop the user already had (a reconnect).
    #[serde(default)]
    pub reconnected: bool,
    /// Where its display is (none: the desktop has no display).
    pub display: Option<Display>,
    /// Reach the display through the broker's tunnel (the broker says so).
    #[serde(default)]
    pub tunnel: bool,
}

/// A pool the user may use, and the desktop they hold there.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct MyDesktop {
    /// The pool (what a sign-in asks for).
    pub pool: String,
    /// Its name for users.
    #[serde(default)]
    pub display_name: String,
    /// The desktop held there (none: one is given on connecting).
    #[serde(default)]
    pub desktop: Option<String>,
    /// Its state (`assigned`, `connected`, `disconnected`, `running`...).
    #[serde(default)]
    pub state: Option<String>,
}

/// What signing in gave.
#[derive(Clone, Debug)]
pub enum SignIn {
    /// A desktop.
    Granted(Box<Granted>),
    /// The user is entitled to several pools: pick one and sign in again with it.
    ChoosePool(Vec<MyDesktop>),
}

/// A fresh ticket.
#[derive(Clone, Debug, Deserialize)]
pub struct Ticket {
    /// The secret.
    pub ticket: String,
    /// Where the display is now.
    pub display: Option<Display>,
    /// Reach it through the broker's tunnel.
    #[serde(default)]
    pub tunnel: bool,
}

/// A broker.
pub struct Broker {
    base: String,
    http: Client,
    tls: Arc<rustls::ClientConfig>,
    refused: Arc<Mutex<Option<String>>>,
}

/// `host[:port]` or `https://host[:port]` as a base URL. Plain HTTP only to loopback (a
/// password must not cross a network in clear).
pub fn base_url(address: &str) -> Result<String, BrokerError> {
    let a = address.trim().trim_end_matches('/');
    if a.is_empty() {
        return Err(BrokerError::BadAddress("enter the broker's address".into()));
    }
    let url = if a.contains("://") {
        a.to_string()
    } else {
        format!("https://{a}")
    };
    let parsed = reqwest::Url::parse(&url)
        .map_err(|e| BrokerError::BadAddress(format!("{address:?} is not an address: {e}")))?;
    let loopback = matches!(parsed.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
    match parsed.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => return Err(BrokerError::BadAddress(
            "the broker must be reached over HTTPS (plain HTTP would send your password in clear)"
                .into(),
        )),
        s => {
            return Err(BrokerError::BadAddress(format!(
                "{s}:// is not a broker address"
            )))
        }
    }
    if parsed.path() != "/" || parsed.query().is_some() {
        return Err(BrokerError::BadAddress(format!(
            "{address:?}: give the broker's host (and port) only"
        )));
    }
    Ok(url)
}

impl Broker {
    /// A client for the broker at `address`, trusting `trust`.
    pub fn new(address: &str, trust: &Trust) -> Result<Self, BrokerError> {
        let base = base_url(address)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let refused = Arc::new(Mutex::new(None));
        let verifier = Verifier::new(trust, provider.clone(), refused.clone())?;
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TrustError::Tls(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        let http = Client::builder()
            .use_preconfigured_tls(tls.clone())
            .timeout(TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| TrustError::Tls(e.to_string()))?;
        Ok(Self {
            base,
            http,
            tls: Arc::new(tls),
            refused,
        })
    }

    /// Where `s`'s display tunnels open: this broker, trusted as its API is.
    pub fn tunnel_target(&self, s: &Granted) -> Result<TunnelTarget, BrokerError> {
        let url =
            reqwest::Url::parse(&self.base).map_err(|e| BrokerError::BadAddress(e.to_string()))?;
        let host = url
            .host_str()
            .ok_or_else(|| BrokerError::BadAddress(self.base.clone()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        Ok(TunnelTarget {
            host,
            port: url.port_or_known_default().unwrap_or(443),
            tls: (url.scheme() == "https").then(|| self.tls.clone()),
            session_id: s.session_id.clone(),
            token: s.session_token.clone(),
        })
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Signs in; `pool` picks one when the user has several.
    pub fn sign_in(
        &self,
        user: &str,
        password: &str,
        pool: Option<&str>,
    ) -> Result<SignIn, BrokerError> {
        let body = json!({ "user": user, "password": password, "pool": pool });
        let r = self.call(self.http.post(self.url("/api/v1/sessions")).json(&body))?;
        #[derive(Deserialize)]
        #[serde(tag = "outcome", rename_all = "snake_case")]
        enum Outcome {
            Granted {
                session: Box<Granted>,
            },
            ChoosePool {
                pools: Vec<String>,
                #[serde(default)]
                desktops: Option<Vec<MyDesktop>>,
            },
        }
        match parse::<Outcome>(r)? {
            Outcome::Granted { session } => Ok(SignIn::Granted(session)),
            Outcome::ChoosePool { pools, desktops } => {
                // A broker without the desktop list names the pools only.
                let desktops = desktops.unwrap_or_else(|| {
                    pools
                        .into_iter()
                        .map(|pool| MyDesktop {
                            pool,
                            display_name: String::new(),
                            desktop: None,
                            state: None,
                        })
                        .collect()
                });
                Ok(SignIn::ChoosePool(desktops))
            }
        }
    }

    /// The user's pools and the desktops held in them (fresh states).
    pub fn my_desktops(&self, user: &str, password: &str) -> Result<Vec<MyDesktop>, BrokerError> {
        #[derive(Deserialize)]
        struct List {
            desktops: Vec<MyDesktop>,
        }
        let body = json!({ "user": user, "password": password });
        let r = self.call(self.http.post(self.url("/api/v1/desktops")).json(&body))?;
        Ok(parse::<List>(r)?.desktops)
    }

    /// Restarts the desktop the user holds in `pool`.
    pub fn restart_desktop(
        &self,
        user: &str,
        password: &str,
        pool: &str,
    ) -> Result<(), BrokerError> {
        self.desktop_action(user, password, pool, "restart")
    }

    /// Logs the user off the desktop they hold in `pool`.
    pub fn log_off_desktop(
        &self,
        user: &str,
        password: &str,
        pool: &str,
    ) -> Result<(), BrokerError> {
        self.desktop_action(user, password, pool, "logoff")
    }

    fn desktop_action(
        &self,
        user: &str,
        password: &str,
        pool: &str,
        action: &str,
    ) -> Result<(), BrokerError> {
        let mut url =
            reqwest::Url::parse(&self.base).map_err(|e| BrokerError::BadAddress(e.to_string()))?;
        // The pool name is one path segment, whatever it contains.
        url.path_segments_mut()
            .map_err(|_| BrokerError::BadAddress(self.base.clone()))?
            .extend(["api", "v1", "desktops", pool, action]);
        let body = json!({ "user": user, "password": password });
        self.call(self.http.post(url).json(&body)).map(drop)
    }

    /// Restarts session `s`'s desktop (its connection drops; reconnect with a new ticket).
    pub fn restart_session(&self, s: &Granted) -> Result<(), BrokerError> {
        let path = format!("/api/v1/sessions/{}/restart", s.session_id);
        self.call(self.authed(self.http.post(self.url(&path)), s))
            .map(drop)
    }

    /// The domains the sign-in form offers (empty: the user types a plain name).
    pub fn domains(&self) -> Result<Vec<String>, BrokerError> {
        #[derive(Deserialize)]
        struct Domains {
            domains: Vec<String>,
        }
        let r = self.call(self.http.get(self.url("/api/v1/domains")))?;
        Ok(parse::<Domains>(r)?.domains)
    }

    /// Changes `user`'s password (an expired or temporary one too), proving `old`.
    pub fn change_password(&self, user: &str, old: &str, new: &str) -> Result<(), BrokerError> {
        let body = json!({ "user": user, "old_password": old, "new_password": new });
        self.call(self.http.post(self.url("/api/v1/password")).json(&body))
            .map(drop)
    }

    /// A new one-time ticket for `s`'s display (a reconnect).
    pub fn new_ticket(&self, s: &Granted) -> Result<Ticket, BrokerError> {
        let path = format!("/api/v1/sessions/{}/ticket", s.session_id);
        parse(self.call(self.authed(self.http.post(self.url(&path)), s))?)
    }

    /// Tells the broker the user left without logging off (the desktop waits for them).
    pub fn disconnect(&self, s: &Granted) -> Result<(), BrokerError> {
        let path = format!("/api/v1/sessions/{}/disconnect", s.session_id);
        self.call(self.authed(self.http.post(self.url(&path)), s))
            .map(drop)
    }

    /// Logs off: the session ends and the desktop goes back to its pool.
    pub fn log_off(&self, s: &Granted) -> Result<(), BrokerError> {
        let path = format!("/api/v1/sessions/{}", s.session_id);
        self.call(self.authed(self.http.delete(self.url(&path)), s))
            .map(drop)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn authed(
        &self,
        r: reqwest::blocking::RequestBuilder,
        s: &Granted,
    ) -> reqwest::blocking::RequestBuilder {
        r.bearer_auth(&s.session_token)
    }

    /// Sends; a transport failure becomes Untrusted or Unreachable, an error status Refused.
    fn call(&self, r: reqwest::blocking::RequestBuilder) -> Result<Response, BrokerError> {
        *self.refused.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let resp = r.send().map_err(|e| {
            if let Some(fingerprint) = self
                .refused
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
            {
                return BrokerError::Untrusted { fingerprint };
            }
            BrokerError::Unreachable {
                address: self.base.clone(),
                why: reason(&e),
            }
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        #[derive(Deserialize)]
        struct ErrorBody {
            error: String,
            #[serde(default)]
            code: String,
        }
        let (message, code) = resp
            .json::<ErrorBody>()
            .map(|b| (b.error, b.code))
            .unwrap_or_else(|_| (format!("the broker answered {status}"), String::new()));
        let kind = match status {
            StatusCode::UNAUTHORIZED => Refusal::SignIn,
            StatusCode::FORBIDDEN => Refusal::NotEntitled,
            StatusCode::NOT_FOUND => Refusal::Gone,
            StatusCode::TOO_MANY_REQUESTS => Refusal::Throttled,
            StatusCode::SERVICE_UNAVAILABLE => Refusal::Unavailable,
            _ => Refusal::Other,
        };
        Err(BrokerError::Refused {
            kind,
            code,
            message,
        })
    }
}

fn parse<T: serde::de::DeserializeOwned>(r: Response) -> Result<T, BrokerError> {
    r.json().map_err(|e| BrokerError::Protocol(e.to_string()))
}

/// The innermost cause of a transport error (reqwest's outer text is "error sending request").
fn reason(e: &reqwest::Error) -> String {
    let mut inner: &dyn std::error::Error = e;
    while let Some(s) = inner.source() {
        inner = s;
    }
    if e.is_timeout() {
        "no answer in time".into()
    } else {
        inner.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            base_url("vdi.example.com").unwrap(),
            "https://vdi.example.com"
        );
        assert_eq!(
            base_url(" https://vdi.example.com:8443/ ").unwrap(),
            "https://vdi.example.com:8443"
        );
        assert_eq!(
            base_url("http://127.0.0.1:80").unwrap(),
            "http://127.0.0.1:80"
        );
        for bad in [
            "",
            "http://vdi.example.com",
            "ftp://x",
            "https://x/admin",
            "a b",
        ] {
            assert!(
                matches!(base_url(bad), Err(BrokerError::BadAddress(_))),
                "{bad:?} accepted"
            );
        }
    }
}
