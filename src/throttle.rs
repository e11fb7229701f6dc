//! Log lines that bad input can trigger, kept few and short: a [`Throttle`] lets one line
//! through per period and counts what it held back, and [`clip`] shortens a value a peer
//! chose (a subject, a reason) before it is logged.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// How long a throttle holds back lines after letting one through.
pub(crate) const PERIOD: Duration = Duration::from_secs(10);

/// The longest value a log line quotes whole.
pub(crate) const CLIP: usize = 120;

/// Lets one log line through per [`PERIOD`], counting the rest.
#[derive(Debug, Default)]
pub(crate) struct Throttle {
    last: Mutex<Option<Instant>>,
    held_back: AtomicU64,
}

impl Throttle {
    /// `Some(n)` when a line may go now, `n` being how many were held back since the
    /// last one; `None` when this one is held back.
    pub(crate) fn allow(&self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    fn allow_at(&self, now: Instant) -> Option<u64> {
        let mut last = self.last.lock();
        match *last {
            Some(at) if now.duration_since(at) < PERIOD => {
                self.held_back.fetch_add(1, Ordering::Relaxed);
                None
            }
            _ => {
                *last = Some(now);
                Some(self.held_back.swap(0, Ordering::Relaxed))
            }
        }
    }
}

/// `value`, cut to its first [`CLIP`] bytes (on a character boundary) with a note of how
/// much was left out.
pub(crate) fn clip(value: &str) -> Cow<'_, str> {
    if value.len() <= CLIP {
        return Cow::Borrowed(value);
    }
    let mut end = CLIP;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!(
        "{}… ({} more bytes)",
        &value[..end],
        value.len() - end
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_period_and_a_count_of_the_rest() {
        let throttle = Throttle::default();
        let start = Instant::now();
        assert_eq!(throttle.allow_at(start), Some(0));
        assert_eq!(throttle.allow_at(start + Duration::from_secs(1)), None);
        assert_eq!(throttle.allow_at(start + Duration::from_secs(2)), None);
        assert_eq!(throttle.allow_at(start + PERIOD), Some(2));
        assert_eq!(throttle.allow_at(start + PERIOD), None);
    }

    #[test]
    fn long_values_are_clipped_on_a_character_boundary() {
        assert_eq!(clip("short"), "short");
        let long = "é".repeat(200);
        let clipped = clip(&long);
        assert!(clipped.len() < 200, "{clipped}");
        assert!(clipped.ends_with("(280 more bytes)"), "{clipped}");
    }
}
