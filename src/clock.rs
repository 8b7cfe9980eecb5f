//! Time, injected so that expiry can be tested without sleeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// A source of wall-clock time. The layer reads it once per request.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> SystemTime;
}

/// The operating system's clock; the default.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that only moves when told to. Clones share the same time, so a test keeps one
/// clone and hands another to the layer.
///
/// ```
/// use std::time::Duration;
/// use tower_session_guard::{Clock, ManualClock};
///
/// let clock = ManualClock::new();
/// let t0 = clock.now();
/// clock.advance(Duration::from_secs(60));
/// assert_eq!(clock.now().duration_since(t0).unwrap(), Duration::from_secs(60));
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock {
    start: SystemTime,
    offset_nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock frozen at the current system time.
    pub fn new() -> Self {
        Self::starting_at(SystemTime::now())
    }

    /// A clock frozen at `start`.
    pub fn starting_at(start: SystemTime) -> Self {
        ManualClock {
            start,
            offset_nanos: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.offset_nanos.fetch_add(nanos, Ordering::SeqCst);
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        self.start + Duration::from_nanos(self.offset_nanos.load(Ordering::SeqCst))
    }
}
