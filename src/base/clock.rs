//! Wall-clock conversions shared by everything that reports a time as a number.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch as a float; a time before the epoch reads as 0.
pub fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
