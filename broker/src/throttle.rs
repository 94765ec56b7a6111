//! Sign-in throttles that hold under concurrency: an attempt is counted when it is *reserved*,
//! before the password is checked, so N parallel guesses get at most the limit's worth of
//! checks (checking first and counting after let every one of N concurrent requests pass the
//! check). A success, or an outcome that says nothing about the password (a directory down),
//! hands its own reservation back; a wrong password, or a request that was cancelled halfway,
//! keeps it. A success does not wipe the key's earlier failures: guesses still in flight
//! would then reach the directory beyond the limit, and its lockout with them.
//!
//! Keys are what the caller resolved (an account, a directory user's DN, a client network),
//! never raw input. The map is bounded: expired entries are pruned as time passes, and when
//! [`MAX_KEYS`] live keys are held a new key is refused (fail closed: an attacker spraying
//! names from many addresses delays sign-ins for a window instead of getting unthrottled
//! guesses). Written here because no maintained crate counts before checking with a refund
//! (governor's GCRA, for one, has no notion of giving a cell back).

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Live keys one throttle holds at most.
pub const MAX_KEYS: usize = 100_000;

/// How many attempts a key gets in what window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Attempts (reserved and not handed back) allowed in the window.
    pub max: usize,
    /// How long an attempt counts.
    pub window: Duration,
}

/// Why an attempt was not allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The key has used its attempts.
    #[error("too many attempts")]
    Exhausted,
    /// The throttle holds [`MAX_KEYS`] live keys.
    #[error("too many keys throttled at once")]
    Full,
}

struct Entries<K> {
    map: HashMap<K, VecDeque<Instant>>,
    /// The longest window any key was reserved with: what pruning keeps.
    longest: Duration,
    last_prune: Instant,
}

/// Attempts per key in a sliding window.
pub struct Throttle<K> {
    entries: Mutex<Entries<K>>,
    max_keys: usize,
}

impl<K: Hash + Eq + Clone> Default for Throttle<K> {
    fn default() -> Self {
        Self::with_capacity(MAX_KEYS)
    }
}

impl<K: Hash + Eq + Clone> Throttle<K> {
    /// A throttle holding at most `max_keys` live keys.
    pub fn with_capacity(max_keys: usize) -> Self {
        Self {
            entries: Mutex::new(Entries {
                map: HashMap::new(),
                longest: Duration::ZERO,
                last_prune: Instant::now(),
            }),
            max_keys,
        }
    }

    /// Reserves an attempt for `key` under `limit`: counted from now on, unless the returned
    /// [`Attempt`] is handed back.
    pub fn reserve(&self, key: K, limit: Limit) -> Result<Attempt<'_, K>, Refused> {
        let now = Instant::now();
        let mut e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        e.longest = e.longest.max(limit.window);
        if now.duration_since(e.last_prune) >= e.longest || e.map.len() >= self.max_keys {
            let longest = e.longest;
            e.map.retain(|_, v| {
                v.retain(|t| now.duration_since(*t) < longest);
                !v.is_empty()
            });
            e.last_prune = now;
        }
        if !e.map.contains_key(&key) && e.map.len() >= self.max_keys {
            return Err(Refused::Full);
        }
        let v = e.map.entry(key.clone()).or_default();
        v.retain(|t| now.duration_since(*t) < limit.window);
        if v.len() >= limit.max {
            return Err(Refused::Exhausted);
        }
        v.push_back(now);
        Ok(Attempt {
            throttle: self,
            key: Some(key),
            at: now,
        })
    }

    /// Attempts counted for `key` now (within `window`).
    #[cfg(test)]
    fn counted(&self, key: &K, window: Duration) -> usize {
        let e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        e.map
            .get(key)
            .map_or(0, |v| v.iter().filter(|t| t.elapsed() < window).count())
    }

    /// Live keys held (for tests and /metrics).
    pub fn keys(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map
            .len()
    }

    fn hand_back(&self, key: &K, at: Instant) {
        let mut e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = e.map.get_mut(key) {
            if let Some(i) = v.iter().position(|t| *t == at) {
                v.remove(i);
            }
            if v.is_empty() {
                e.map.remove(key);
            }
        }
    }
}

/// A reserved attempt. Dropped, it stays counted (a wrong password, or a request cancelled
/// before its outcome was known); [`Attempt::hand_back`] uncounts it.
#[must_use = "an attempt stays counted unless handed back"]
pub struct Attempt<'a, K: Hash + Eq + Clone> {
    throttle: &'a Throttle<K>,
    key: Option<K>,
    at: Instant,
}

impl<K: Hash + Eq + Clone> Attempt<'_, K> {
    /// The attempt proved nothing against the account (it succeeded, or failed for a reason
    /// that is not a wrong password): it no longer counts.
    pub fn hand_back(mut self) {
        if let Some(k) = self.key.take() {
            self.throttle.hand_back(&k, self.at);
        }
    }

    /// The attempt counts (a wrong password); the same as dropping it, said out loud.
    pub fn keep(mut self) {
        self.key = None;
    }
}

/// The key a client address is throttled by: an IPv4 address, or an IPv6 address's /64 (one
/// customer's network hands out a whole /64; keying on single addresses would give a guesser
/// 2^64 fresh keys). IPv4-mapped IPv6 addresses count as the IPv4 address.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIVE: Limit = Limit {
        max: 5,
        window: Duration::from_secs(60),
    };

    #[test]
    fn counts_before_checking_and_hands_back() {
        let t = Throttle::default();
        let held: Vec<_> = (0..5).map(|_| t.reserve("a", FIVE).unwrap()).collect();
        // Five in flight: a sixth is refused before any of them has an outcome.
        assert_eq!(t.reserve("a", FIVE).err(), Some(Refused::Exhausted));
        assert!(t.reserve("b", FIVE).is_ok(), "other keys are untouched");
        let mut held = held.into_iter();
        held.next().unwrap().hand_back();
        assert_eq!(t.counted(&"a", FIVE.window), 4);
        t.reserve("a", FIVE).unwrap().keep();
        assert_eq!(t.reserve("a", FIVE).err(), Some(Refused::Exhausted));
        drop(held);
        assert_eq!(
            t.counted(&"a", FIVE.window),
            5,
            "dropped attempts stay counted"
        );
    }

    #[test]
    fn attempts_expire_and_keys_are_pruned_and_bounded() {
        let short = Limit {
            max: 1,
            window: Duration::from_millis(30),
        };
        let t = Throttle::with_capacity(3);
        for k in 0..3 {
            t.reserve(k, short).unwrap().keep();
        }
        assert_eq!(t.reserve(9, short).err(), Some(Refused::Full));
        assert_eq!(t.reserve(0, short).err(), Some(Refused::Exhausted));
        std::thread::sleep(Duration::from_millis(40));
        // Expired: pruned when the map is full, and the key may try again.
        t.reserve(9, short).unwrap().keep();
        assert_eq!(t.keys(), 1);
        t.reserve(0, short).unwrap().hand_back();
        assert_eq!(t.keys(), 1, "a handed-back attempt leaves no empty entry");
    }

    #[test]
    fn ipv6_is_keyed_by_its_64_and_mapped_v4_as_v4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(c));
        let m: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(address_key(m), "192.0.2.7".parse::<IpAddr>().unwrap());
    }
}
