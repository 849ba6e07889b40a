//! Go `time.Duration` strings (`"15s"`, `"1m30s"`, `"1.5h"`, `"250ms"`), as Consul accepts them
//! in `wait`, session `TTL`/`LockDelay` and check `TTL`/`Interval` fields.
//!
//! Pure parsing and formatting only; no clock.

use std::time::Duration;

/// The one Go-duration parser, shared with the client.
pub use crate::consul::duration::parse_go_duration;

/// Formats a duration the way Go's `Duration.String()` does for whole seconds and above
/// (`"15s"`, `"1m30s"`, `"1h0m0s"`), and as milliseconds below one second.
pub fn format_go_duration(d: Duration) -> String {
    let total_ms = d.as_millis();
    if total_ms == 0 && d.as_nanos() > 0 {
        return format!("{}ns", d.as_nanos());
    }
    if d.is_zero() {
        return "0s".to_string();
    }
    if total_ms < 1000 {
        return format!("{total_ms}ms");
    }
    let secs = d.as_secs();
    let frac_ms = d.subsec_millis();
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    let sec_part = if frac_ms > 0 {
        format!("{s}.{frac_ms:03}")
            .trim_end_matches('0')
            .to_string()
    } else {
        s.to_string()
    };
    if h > 0 {
        format!("{h}h{m}m{sec_part}s")
    } else if m > 0 {
        format!("{m}m{sec_part}s")
    } else {
        format!("{sec_part}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        assert_eq!(parse_go_duration("15s"), Some(Duration::from_secs(15)));
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_go_duration("10"), None);
        assert_eq!(parse_go_duration("abc"), None);
        assert_eq!(parse_go_duration("-5s"), None);
        assert_eq!(parse_go_duration(""), None);
        assert_eq!(parse_go_duration("5x"), None);
        assert_eq!(parse_go_duration("99999999999h"), None);
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(format_go_duration(Duration::from_secs(15)), "15s");
        assert_eq!(format_go_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_go_duration(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(format_go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_go_duration(Duration::from_millis(20)), "20ms");
    }
}
