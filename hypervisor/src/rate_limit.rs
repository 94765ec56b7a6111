//! A log rate limiter, so that a guest hammering an unknown port cannot flood the host's logs.

use std::time::{Duration, Instant};

/// Lets through at most `burst` events per `window`, counting the ones it holds back.
#[derive(Debug)]
pub struct RateLimiter {
    window: Duration,
    burst: u32,
    window_start: Option<Instant>,
    in_window: u32,
    suppressed: u64,
}

/// What to do with one event.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Log it; `suppressed` events were dropped since the last one logged.
    Log {
        /// Events held back since the previous logged one.
        suppressed: u64,
    },
    /// Drop it.
    Drop,
}

impl RateLimiter {
    /// A limiter of `burst` events per `window`.
    pub const fn new(burst: u32, window: Duration) -> Self {
        Self {
            window,
            burst,
            window_start: None,
            in_window: 0,
            suppressed: 0,
        }
    }

    /// Decides for one event at time `now`.
    pub fn check(&mut self, now: Instant) -> Verdict {
        let expired = self
            .window_start
            .is_none_or(|start| now.duration_since(start) >= self.window);
        if expired {
            self.window_start = Some(now);
            self.in_window = 0;
        }
        if self.in_window < self.burst {
            self.in_window += 1;
            let suppressed = std::mem::take(&mut self.suppressed);
            Verdict::Log { suppressed }
        } else {
            self.suppressed += 1;
            Verdict::Drop
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_drop_then_report() {
        let mut r = RateLimiter::new(2, Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(r.check(t0), Verdict::Log { suppressed: 0 });
        assert_eq!(r.check(t0), Verdict::Log { suppressed: 0 });
        for _ in 0..1000 {
            assert_eq!(r.check(t0), Verdict::Drop);
        }
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(r.check(t1), Verdict::Log { suppressed: 1000 });
        assert_eq!(r.check(t1), Verdict::Log { suppressed: 0 });
    }
}
