//! Warnings that repeat for as long as a condition lasts (a broker that cannot be reached
//! makes librdkafka report an error every few tens of milliseconds): the first is logged,
//! then at most one per interval, carrying the number held back since the last. An outage
//! of an hour then costs a few hundred lines of log instead of a hundred thousand, and the
//! counts still say how often it happened.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The least time between two logged repeats of one warning.
pub const WARN_EVERY: Duration = Duration::from_secs(30);

/// One warning's repeats. Shared by the threads that report it (librdkafka calls back from
/// its own threads).
#[derive(Debug, Default)]
pub struct Throttle {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// When an occurrence was last logged.
    logged: Option<Instant>,
    /// Occurrences held back since then.
    held: u64,
}

impl Throttle {
    /// Whether an occurrence now is to be logged (at most one per [`WARN_EVERY`]):
    /// `Some(n)` with the `n` occurrences held back since the last one logged, or `None`
    /// when this one is held back (and counted).
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(Instant::now(), WARN_EVERY)
    }

    /// [`admit`](Self::admit) at `now`, at most one per `every`.
    pub fn admit_at(&self, now: Instant, every: Duration) -> Option<u64> {
        // The state is two plain fields: still consistent if a holder panicked.
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match s.logged {
            Some(t) if now.saturating_duration_since(t) < every => {
                s.held += 1;
                None
            }
            _ => {
                s.logged = Some(now);
                Some(std::mem::take(&mut s.held))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_is_logged_then_one_per_interval_with_the_count_held_back() {
        let t = Throttle::default();
        let t0 = Instant::now();
        let every = Duration::from_secs(30);
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(t.admit_at(at(0), every), Some(0));
        // A report every 50 ms for just under the interval: all held back.
        for i in 1..600 {
            assert_eq!(t.admit_at(at(i * 50), every), None, "report {i}");
        }
        assert_eq!(t.admit_at(at(30_000), every), Some(599));
        assert_eq!(t.admit_at(at(30_001), every), None);
        // After a quiet spell the next one is logged at once, with what was held.
        assert_eq!(t.admit_at(at(500_000), every), Some(1));
        // A clock that steps back holds back rather than logging twice.
        assert_eq!(t.admit_at(at(499_000), every), None);
    }
}
