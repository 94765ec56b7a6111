//! A connection to one directory: servers tried in order within the connect timeout, TLS
//! verified against the configured CA, a cached service-account connection for searches, and
//! search helpers that page, skip AD's search references and never let a malformed entry
//! panic the caller.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::controls::RawControl;
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, ResultEntry, Scope, SearchEntry, StdStream};
use rustls::ClientConfig;
use tokio::sync::Mutex;

use crate::config::Directory;
use crate::error::DirectoryError;

/// A client for one configured directory.
pub struct DirectoryClient {
    dir: Arc<Directory>,
    tls: Option<Arc<ClientConfig>>,
    service: Mutex<Option<Ldap>>,
    /// The server that answered last and when the client failed over to it: later
    /// connections start there instead of waiting on a dead server each time, and go back to
    /// the configured order after [`RETRY_PREFERRED`].
    sticky: std::sync::Mutex<(usize, Instant)>,
    /// User passwords tried by binding (metrics, and how tests count what a storm reached).
    pub(crate) password_checks: AtomicU64,
    /// The domain's lockout policy, read once it is first needed.
    pub(crate) lockout: tokio::sync::OnceCell<Option<crate::lockout::Lockout>>,
}

/// How long the client stays on a fallback server before trying the first one again.
pub const RETRY_PREFERRED: Duration = Duration::from_secs(60);

/// "host:port" of an ldap:// or ldaps:// URL (default ports 389 and 636).
pub fn host_port(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let default = if scheme.eq_ignore_ascii_case("ldaps") {
        636
    } else {
        389
    };
    let authority = rest.split('/').next()?;
    if authority.is_empty() {
        return None;
    }
    let has_port = match authority.rfind(':') {
        Some(i) => !authority[i..].contains(']'),
        None => false,
    };
    Some(if has_port {
        authority.to_string()
    } else {
        format!("{authority}:{default}")
    })
}

/// A TCP connection with Nagle's algorithm off: LDAP requests are small writes answered at
/// once, and with Nagle on, delayed ACKs add ~40 ms to a bind.
async fn tcp(url: &str, limit: Duration) -> Result<std::net::TcpStream, String> {
    let addr = host_port(url).ok_or_else(|| "not an LDAP URL".to_string())?;
    let s = tokio::time::timeout(limit, tokio::net::TcpStream::connect(&addr))
        .await
        .map_err(|_| format!("no answer within {limit:?}"))?
        .map_err(|e| e.to_string())?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    s.into_std().map_err(|e| e.to_string())
}

/// Runs `fut` with a deadline.
pub async fn with_timeout<T>(
    limit: Duration,
    what: &'static str,
    fut: impl Future<Output = Result<T, ldap3::LdapError>>,
) -> Result<T, DirectoryError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(DirectoryError::Ldap {
            op: what,
            source: Box::new(source),
        }),
        Err(_) => Err(DirectoryError::Timeout(limit, what)),
    }
}

/// `SearchEntry::construct` panics on an entry it cannot decode (ldap3 issue #135); a hostile
/// or broken server must not take the broker down with it.
pub fn entry(re: ResultEntry) -> Result<SearchEntry, DirectoryError> {
    std::panic::catch_unwind(AssertUnwindSafe(|| SearchEntry::construct(re)))
        .map_err(|_| DirectoryError::Malformed("search"))
}

/// First value of a text attribute.
pub fn text(e: &SearchEntry, attr: &str) -> Option<String> {
    e.attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(attr))
        .and_then(|(_, v)| v.first().cloned())
}

/// First value of a binary attribute, wherever ldap3 put it (a binary value that happens to
/// be valid UTF-8 lands in the text map).
pub fn binary(e: &SearchEntry, attr: &str) -> Option<Vec<u8>> {
    e.bin_attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(attr))
        .and_then(|(_, v)| v.first().cloned())
        .or_else(|| text(e, attr).map(String::into_bytes))
}

/// Every value of a text attribute.
pub fn texts(e: &SearchEntry, attr: &str) -> Vec<String> {
    e.attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(attr))
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

impl DirectoryClient {
    /// A client; nothing is contacted until the first operation.
    pub fn new(dir: Directory) -> Result<Self, DirectoryError> {
        let tls = crate::tls::client_config(dir.config.ca_file.as_deref())
            .map_err(DirectoryError::Config)?;
        Ok(Self {
            dir: Arc::new(dir),
            tls,
            service: Mutex::new(None),
            sticky: std::sync::Mutex::new((0, Instant::now())),
            password_checks: AtomicU64::new(0),
            lockout: tokio::sync::OnceCell::new(),
        })
    }

    /// The directory's configuration.
    pub fn directory(&self) -> &Directory {
        &self.dir
    }

    /// Opens a TLS connection to the first server that answers within the connect timeout.
    /// Returns the connection and the URL it reached.
    pub async fn connect(&self) -> Result<(Ldap, String), DirectoryError> {
        let limit = self.dir.connect_timeout();
        let urls = &self.dir.config.urls;
        let start = {
            let s = self.sticky.lock().unwrap_or_else(|p| p.into_inner());
            if s.0 != 0 && s.1.elapsed() >= RETRY_PREFERRED {
                0
            } else {
                s.0
            }
        };
        let order = (start..urls.len()).chain(0..start);
        let mut tried = Vec::new();
        for i in order {
            let url = &urls[i];
            let plain = url.to_ascii_lowercase().starts_with("ldap://");
            let stream = match tcp(url, limit).await {
                Ok(s) => s,
                Err(e) => {
                    tried.push(format!("{url}: {e}"));
                    tracing::warn!(directory = %self.dir.config.name, error = %tried.last().map_or("", |s| s.as_str()), "directory server unreachable; trying the next");
                    continue;
                }
            };
            let mut s = LdapConnSettings::new()
                .set_conn_timeout(limit)
                .set_std_stream(StdStream::Tcp(stream))
                .set_starttls(plain && self.dir.config.starttls);
            if let Some(cfg) = &self.tls {
                s = s.set_config(cfg.clone());
            }
            match tokio::time::timeout(limit, LdapConnAsync::with_settings(s, url)).await {
                Ok(Ok((conn, ldap))) => {
                    ldap3::drive!(conn);
                    let mut sticky = self.sticky.lock().unwrap_or_else(|p| p.into_inner());
                    if sticky.0 != i {
                        *sticky = (i, Instant::now());
                    }
                    return Ok((ldap, url.clone()));
                }
                Ok(Err(e)) => tried.push(format!("{url}: {e}")),
                Err(_) => tried.push(format!("{url}: no answer within {limit:?}")),
            }
            tracing::warn!(directory = %self.dir.config.name, error = %tried.last().map_or("", |s| s.as_str()), "directory server unreachable; trying the next");
        }
        Err(DirectoryError::Unavailable {
            directory: self.dir.config.name.clone(),
            tried: tried.join("; "),
        })
    }

    /// A new connection bound as the service account.
    pub async fn service_connection(&self) -> Result<(Ldap, String), DirectoryError> {
        let (mut ldap, url) = self.connect().await?;
        let r = with_timeout(
            self.dir.operation_timeout(),
            "service bind",
            ldap.simple_bind(&self.dir.config.service_dn, &self.dir.service_password),
        )
        .await?;
        if r.rc != 0 {
            return Err(DirectoryError::ServiceBind(format!(
                "{} (result {}) {}",
                self.dir.config.service_dn, r.rc, r.text
            )));
        }
        Ok((ldap, url))
    }

    /// The cached service connection (ldap3 multiplexes operations on it).
    async fn service(&self) -> Result<Ldap, DirectoryError> {
        let mut slot = self.service.lock().await;
        if let Some(l) = slot.as_mut() {
            if !l.is_closed() {
                return Ok(l.clone());
            }
        }
        let (ldap, _) = self.service_connection().await?;
        *slot = Some(ldap.clone());
        Ok(ldap)
    }

    /// Forgets the cached service connection (after a transport error).
    async fn drop_service(&self) {
        *self.service.lock().await = None;
    }

    /// Searches as the service account, paged, references skipped; at most `limit` entries.
    /// A broken cached connection is replaced once.
    pub async fn search(
        &self,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: &[&str],
        limit: usize,
    ) -> Result<Vec<SearchEntry>, DirectoryError> {
        self.search_with(base, scope, filter, attrs, limit, Vec::new())
            .await
    }

    /// [`DirectoryClient::search`] with request controls (e.g. AD's show-deleted).
    pub async fn search_with(
        &self,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: &[&str],
        limit: usize,
        controls: Vec<RawControl>,
    ) -> Result<Vec<SearchEntry>, DirectoryError> {
        match self
            .search_once(base, scope, filter, attrs, limit, controls.clone())
            .await
        {
            Err(DirectoryError::Ldap { .. }) => {
                self.drop_service().await;
                self.search_once(base, scope, filter, attrs, limit, controls)
                    .await
            }
            other => other,
        }
    }

    async fn search_once(
        &self,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: &[&str],
        limit: usize,
        controls: Vec<RawControl>,
    ) -> Result<Vec<SearchEntry>, DirectoryError> {
        let mut ldap = self.service().await?;
        if !controls.is_empty() {
            ldap.with_controls(controls);
        }
        let page = i32::try_from(self.dir.config.page_size).unwrap_or(500);
        let attrs: Vec<String> = attrs.iter().map(|s| s.to_string()).collect();
        let fut = async move {
            // EntriesOnly first: a search reference reaching SearchEntry::construct panics.
            let adapters: Vec<Box<dyn Adapter<_, _>>> = vec![
                Box::new(EntriesOnly::new()),
                Box::new(PagedResults::new(page)),
            ];
            let mut stream = ldap
                .streaming_search_with(adapters, base, scope, filter, attrs)
                .await?;
            let mut out = Vec::new();
            while let Some(re) = stream.next().await? {
                if out.len() < limit {
                    out.push(re);
                }
            }
            let res = stream.finish().await;
            Ok::<_, ldap3::LdapError>((out, res))
        };
        let (raw, res) = with_timeout(self.dir.operation_timeout(), "search", fut).await?;
        // 0 success; 4 size limit exceeded still returns what fit.
        if res.rc != 0 && res.rc != 4 {
            return Err(DirectoryError::Result {
                op: "search",
                rc: res.rc,
                text: res.text,
            });
        }
        raw.into_iter().map(entry).collect()
    }

    /// Runs a modifying operation on a fresh service connection (adds, modifies, deletes are
    /// rare; a dedicated connection keeps them out of the search pipeline).
    pub async fn write<F, Fut>(&self, what: &'static str, op: F) -> Result<(), DirectoryError>
    where
        F: FnOnce(Ldap) -> Fut,
        Fut: Future<Output = Result<ldap3::LdapResult, ldap3::LdapError>>,
    {
        let (ldap, _) = self.service_connection().await?;
        let mut closer = ldap.clone();
        let r = with_timeout(self.dir.operation_timeout(), what, op(ldap)).await;
        let _ = closer.unbind().await;
        let r = r?;
        if r.rc != 0 {
            return Err(DirectoryError::Result {
                op: what,
                rc: r.rc,
                text: r.text,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_to_addresses() {
        assert_eq!(host_port("ldaps://dc1").as_deref(), Some("dc1:636"));
        assert_eq!(host_port("ldap://dc1:3268/").as_deref(), Some("dc1:3268"));
        assert_eq!(host_port("LDAPS://[::1]").as_deref(), Some("[::1]:636"));
        assert_eq!(
            host_port("ldap://[::1]:10389").as_deref(),
            Some("[::1]:10389")
        );
        assert_eq!(host_port("ldap://"), None);
        assert_eq!(host_port("dc1"), None);
    }
}
