//! Go `time.Duration` strings (`"15s"`, `"1m30s"`, `"1.5h"`, `"250ms"`), as Consul accepts them
//! in `wait`, session `TTL`/`LockDelay` and check `TTL`/`Interval` fields.
//!
//! Pure parsing and formatting only; no clock.

use std::time::Duration;

/// Parses a Go duration string. Returns `None` for anything Go's `time.ParseDuration` rejects
/// (and for negative durations, which no Consul field here accepts).
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    if s.starts_with('-') {
        return None;
    }
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut total_nanos: f64 = 0.0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
            i += 1;
        }
        if start == i {
            return None;
        }
        let number: f64 = s[start..i].parse().ok()?;
        let unit_start = i;
        while i < bytes.len() && !(bytes[i].is_ascii_digit() || bytes[i] == b'.') {
            i += 1;
        }
        let unit_nanos: f64 = match &s[unit_start..i] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total_nanos += number * unit_nanos;
    }
    // Go's Duration is an int64 of nanoseconds: anything larger overflows there too.
    if !total_nanos.is_finite() || total_nanos > i64::MAX as f64 {
        return None;
    }
    Some(Duration::from_nanos(total_nanos.round() as u64))
}

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
