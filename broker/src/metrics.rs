//! GET /metrics: Prometheus text for the broker: logons by result and their time, desktops
//! by pool and state, live sessions, hosts by state, display tunnels open.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State;
use axum::response::IntoResponse;

use crate::api::{ApiError, Shared};

/// The broker's own counters (the rest comes from the store at scrape time).
#[derive(Default)]
pub struct Counters {
    logons_ok: AtomicU64,
    logons_failed: AtomicU64,
    logon_micros: AtomicU64,
    tunnels_open: AtomicU64,
    tunnels_total: AtomicU64,
}

impl Counters {
    /// Counts a logon and its duration.
    pub fn logon(&self, ok: bool, micros: u64) {
        let c = if ok {
            &self.logons_ok
        } else {
            &self.logons_failed
        };
        c.fetch_add(1, Ordering::Relaxed);
        self.logon_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// A display tunnel opened.
    pub fn tunnel_opened(&self) {
        self.tunnels_open.fetch_add(1, Ordering::Relaxed);
        self.tunnels_total.fetch_add(1, Ordering::Relaxed);
    }

    /// A display tunnel closed.
    pub fn tunnel_closed(&self) {
        self.tunnels_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Label values come from admins' names (pools); quote what Prometheus' text format needs.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The handler.
pub async fn metrics(State(s): State<Shared>) -> Result<impl IntoResponse, ApiError> {
    let c = &s.counters;
    let mut out = String::new();
    let ok = c.logons_ok.load(Ordering::Relaxed);
    let failed = c.logons_failed.load(Ordering::Relaxed);
    let _ = write!(
        out,
        "# HELP tessera_broker_logons_total Logon requests by result.\n\
         # TYPE tessera_broker_logons_total counter\n\
         tessera_broker_logons_total{{result=\"ok\"}} {ok}\n\
         tessera_broker_logons_total{{result=\"failed\"}} {failed}\n\
         # HELP tessera_broker_logon_seconds_sum Time spent in logons.\n\
         # TYPE tessera_broker_logon_seconds_sum counter\n\
         tessera_broker_logon_seconds_sum {:.6}\n",
        c.logon_micros.load(Ordering::Relaxed) as f64 / 1e6
    );
    out.push_str(
        "# HELP tessera_broker_desktops Desktops by pool and state.\n# TYPE tessera_broker_desktops gauge\n",
    );
    for (pool, state, n) in s.store.desktop_counts().await? {
        let _ = writeln!(
            out,
            "tessera_broker_desktops{{pool=\"{}\",state=\"{state}\"}} {n}",
            label(&pool)
        );
    }
    let sessions = s.store.live_sessions().await?.len();
    let _ = write!(
        out,
        "# HELP tessera_broker_sessions Live sessions.\n# TYPE tessera_broker_sessions gauge\n\
         tessera_broker_sessions {sessions}\n\
         # HELP tessera_broker_hosts Registered hosts by state.\n# TYPE tessera_broker_hosts gauge\n"
    );
    let _ = write!(
        out,
        "# HELP tessera_broker_tunnels Display tunnels open.\n# TYPE tessera_broker_tunnels gauge\n\
         tessera_broker_tunnels {}\n\
         # HELP tessera_broker_tunnels_total Display tunnels opened.\n\
         # TYPE tessera_broker_tunnels_total counter\ntessera_broker_tunnels_total {}\n",
        c.tunnels_open.load(Ordering::Relaxed),
        c.tunnels_total.load(Ordering::Relaxed)
    );
    let _ = write!(
        out,
        "# HELP tessera_broker_password_checks_total Passwords actually tried (argon2 for local \
         accounts, a bind for directory users); throttled and locked attempts never get here.\n\
         # TYPE tessera_broker_password_checks_total counter\n\
         tessera_broker_password_checks_total{{source=\"local\"}} {}\n",
        s.store.password_checks()
    );
    for d in s
        .logon
        .directories()
        .map(|d| d.clients())
        .unwrap_or_default()
    {
        let _ = writeln!(
            out,
            "tessera_broker_password_checks_total{{source=\"directory\",directory=\"{}\"}} {}",
            label(&d.directory().config.name),
            d.password_checks()
        );
    }
    let _ = write!(
        out,
        "# HELP tessera_broker_throttled_keys Accounts and client networks with counted attempts.\n\
         # TYPE tessera_broker_throttled_keys gauge\n\
         tessera_broker_throttled_keys{{throttle=\"account\"}} {}\n\
         tessera_broker_throttled_keys{{throttle=\"address\"}} {}\n",
        s.logon.throttled_accounts(),
        s.throttled_addresses()
    );
    let hosts = s.store.hosts().await?;
    for state in ["joining", "online", "offline", "maintenance"] {
        let n = hosts.iter().filter(|h| h.state == state).count();
        let _ = writeln!(out, "tessera_broker_hosts{{state=\"{state}\"}} {n}");
    }
    Ok(([("content-type", "text/plain; version=0.0.4")], out))
}

#[cfg(test)]
mod tests {
    #[test]
    fn labels_are_escaped() {
        assert_eq!(super::label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
