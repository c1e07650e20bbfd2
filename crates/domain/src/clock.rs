//! Time as a dependency: services ask a [`Clock`] for the current time so that every rule that
//! depends on it (calling windows, retries, end of campaigns) can be tested by moving time
//! instead of waiting.

use chrono::{DateTime, Duration, Utc};
use std::sync::{Arc, RwLock};

/// The source of the current time.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The real time of the machine.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock for tests: it shows a set time, or the real time shifted by an offset, and can be
/// moved while shared (clones share the same setting).
#[derive(Debug, Clone)]
pub struct FixedClock {
    setting: Arc<RwLock<Setting>>,
}

#[derive(Debug, Clone, Copy)]
enum Setting {
    At(DateTime<Utc>),
    Shifted(Duration),
}

impl FixedClock {
    /// A clock stopped at `at`.
    pub fn at(at: DateTime<Utc>) -> Self {
        FixedClock {
            setting: Arc::new(RwLock::new(Setting::At(at))),
        }
    }

    /// A clock that runs with the real time, shifted by `offset` (negative: in the past).
    pub fn shifted(offset: Duration) -> Self {
        FixedClock {
            setting: Arc::new(RwLock::new(Setting::Shifted(offset))),
        }
    }

    /// Stops the clock at `at`.
    pub fn set(&self, at: DateTime<Utc>) {
        *self.write() = Setting::At(at);
    }

    /// Moves the clock by `by`, stopped or running.
    pub fn advance(&self, by: Duration) {
        let mut s = self.write();
        *s = match *s {
            Setting::At(t) => Setting::At(t + by),
            Setting::Shifted(o) => Setting::Shifted(o + by),
        };
    }

    /// Lets the clock run with the real time, shifted by `offset`.
    pub fn shift(&self, offset: Duration) {
        *self.write() = Setting::Shifted(offset);
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Setting> {
        // A poisoned lock only means a panicking writer: the setting itself is always valid.
        self.setting.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        let s = *self.setting.read().unwrap_or_else(|e| e.into_inner());
        match s {
            Setting::At(t) => t,
            Setting::Shifted(o) => Utc::now() + o,
        }
    }
}

/// The clock of a service that was given none.
pub fn system() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_fixed_clock_moves_only_when_told() {
        let t = Utc.with_ymd_and_hms(2027, 3, 28, 0, 30, 0).unwrap();
        let clock = FixedClock::at(t);
        assert_eq!(clock.now(), t);
        let shared: Arc<dyn Clock> = Arc::new(clock.clone());
        clock.advance(Duration::days(31));
        assert_eq!(shared.now(), t + Duration::days(31));
        clock.set(t);
        assert_eq!(shared.now(), t);
    }

    #[test]
    fn a_shifted_clock_runs_with_real_time() {
        let clock = FixedClock::shifted(Duration::days(-2));
        let now = Utc::now();
        let shown = clock.now();
        assert!(shown < now - Duration::days(1));
        assert!(shown > now - Duration::days(3));
        clock.shift(Duration::zero());
        assert!((clock.now() - Utc::now()).num_seconds().abs() < 5);
        assert!((SystemClock.now() - Utc::now()).num_seconds().abs() < 5);
    }
}
