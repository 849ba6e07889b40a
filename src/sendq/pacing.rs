//! PURE pacing: the per-session token bucket with jitter, typing/seen simulation settings and
//! the backpressure hint. No I/O; time (Unix ms) and random samples are passed in.
//!
//! Defaults (anti-ban guidance in reference/whatsapp-web.md §6 item 8 asks for slow, irregular
//! sending): one message per 3 s ± 1 s, bursts of up to 3, a queue cap of 100 per session, "seen"
//! before sending and a typing indicator of 50 ms per character between 1 and 5 s.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Per-session send behaviour. Serializable so the worker can keep it in `session.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PacingConfig {
    /// Mean time between tokens (the sustained rate is one message per `interval_ms`).
    pub interval_ms: u64,
    /// Each refill period is drawn uniformly from `interval ± jitter`.
    pub jitter_ms: u64,
    /// Tokens the bucket holds: messages that may go back to back after a quiet period.
    pub burst: u32,
    /// Messages a session may have queued; beyond it submissions get 429 with `Retry-After`.
    pub queue_cap: u64,
    /// Mark the chat as seen before sending (whatsapp-web.js does by default).
    pub send_seen: bool,
    /// Show "typing…" before sending.
    pub typing: bool,
    /// Typing time per character of text.
    pub typing_ms_per_char: u64,
    /// Typing time lower bound.
    pub typing_min_ms: u64,
    /// Typing time upper bound.
    pub typing_max_ms: u64,
    /// Attempts for a message whose send fails transiently, before it fails.
    pub max_attempts: u32,
    /// Wait before retrying a transient failure or a session that is not connected.
    pub retry_delay_ms: u64,
    /// A message still queued after this long fails with reason `expired`.
    pub max_queue_age_ms: u64,
}

impl Default for PacingConfig {
    fn default() -> Self {
        Self {
            interval_ms: 3_000,
            jitter_ms: 1_000,
            burst: 3,
            queue_cap: 100,
            send_seen: true,
            typing: true,
            typing_ms_per_char: 50,
            typing_min_ms: 1_000,
            typing_max_ms: 5_000,
            max_attempts: 3,
            retry_delay_ms: 5_000,
            max_queue_age_ms: 24 * 3600 * 1000,
        }
    }
}

impl PacingConfig {
    /// Checks the values make sense (called when a session's settings are accepted).
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.interval_ms == 0 {
            return Err("interval_ms must be positive");
        }
        if self.jitter_ms > self.interval_ms {
            return Err("jitter_ms may not exceed interval_ms");
        }
        if self.burst == 0 {
            return Err("burst must be at least 1");
        }
        if self.queue_cap == 0 {
            return Err("queue_cap must be at least 1");
        }
        if self.typing_min_ms > self.typing_max_ms {
            return Err("typing_min_ms may not exceed typing_max_ms");
        }
        if self.max_attempts == 0 {
            return Err("max_attempts must be at least 1");
        }
        Ok(())
    }

    /// One refill period for the random sample `rand01` in `[0, 1)`:
    /// `interval + jitter · (2·rand01 − 1)`, at least 1 ms.
    pub fn period_ms(&self, rand01: f64) -> u64 {
        let j = self.jitter_ms as f64 * (2.0 * rand01.clamp(0.0, 1.0) - 1.0);
        ((self.interval_ms as f64 + j).round() as u64).max(1)
    }

    /// The shortest possible refill period.
    pub fn min_period_ms(&self) -> u64 {
        self.interval_ms.saturating_sub(self.jitter_ms).max(1)
    }

    /// How long to show "typing…" before a text of `chars` characters (`None` if disabled).
    pub fn typing_for(&self, chars: usize) -> Option<Duration> {
        if !self.typing {
            return None;
        }
        let ms = (chars as u64)
            .saturating_mul(self.typing_ms_per_char)
            .clamp(self.typing_min_ms, self.typing_max_ms);
        Some(Duration::from_millis(ms))
    }

    /// The `Retry-After` (seconds) for a submission refused because the queue is full: the time
    /// until the queue has room again, one slow refill period, at least 1 s.
    pub fn retry_after_secs(&self) -> u64 {
        (self.interval_ms + self.jitter_ms).div_ceil(1000).max(1)
    }
}

/// A token bucket with jittered refills. Refill periods are drawn per token, so consecutive
/// sends are irregular, never closer than `interval − jitter` once the burst is used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBucket {
    tokens: u32,
    /// When the next token arrives; `None` while the bucket is full (the clock is stopped).
    next_refill_ms: Option<u64>,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(cfg: &PacingConfig) -> Self {
        Self {
            tokens: cfg.burst.max(1),
            next_refill_ms: None,
        }
    }

    /// Tokens available after refilling up to `now_ms`.
    pub fn available(
        &mut self,
        now_ms: u64,
        cfg: &PacingConfig,
        rand: &mut impl FnMut() -> f64,
    ) -> u32 {
        self.refill(now_ms, cfg, rand);
        self.tokens
    }

    fn refill(&mut self, now_ms: u64, cfg: &PacingConfig, rand: &mut impl FnMut() -> f64) {
        let burst = cfg.burst.max(1);
        if self.tokens > burst {
            // The burst setting was lowered.
            self.tokens = burst;
        }
        while let Some(at) = self.next_refill_ms {
            if at > now_ms {
                break;
            }
            self.tokens += 1;
            self.next_refill_ms = if self.tokens >= burst {
                None
            } else {
                Some(at + cfg.period_ms(rand()))
            };
        }
    }

    /// `None` if a token is available at `now_ms`, else when the next one arrives. Takes nothing.
    pub fn ready_at(
        &mut self,
        now_ms: u64,
        cfg: &PacingConfig,
        rand: &mut impl FnMut() -> f64,
    ) -> Option<u64> {
        self.refill(now_ms, cfg, rand);
        (self.tokens == 0).then(|| self.next_refill_ms.unwrap_or(now_ms))
    }

    /// Takes a token at `now_ms` if there is one (`Ok`), else returns when the next token
    /// arrives (`Err(ready_at_ms)`). `rand` yields samples in `[0, 1)` for the jitter.
    pub fn try_take(
        &mut self,
        now_ms: u64,
        cfg: &PacingConfig,
        rand: &mut impl FnMut() -> f64,
    ) -> Result<(), u64> {
        self.refill(now_ms, cfg, rand);
        if self.tokens == 0 {
            // Refill clock always runs while not full, so this is set.
            return Err(self.next_refill_ms.unwrap_or(now_ms));
        }
        self.tokens -= 1;
        if self.next_refill_ms.is_none() {
            self.next_refill_ms = Some(now_ms + cfg.period_ms(rand()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn mid() -> impl FnMut() -> f64 {
        || 0.5
    }

    #[test]
    fn defaults_are_valid_and_documented() {
        let c = PacingConfig::default();
        c.validate().unwrap();
        assert_eq!((c.interval_ms, c.jitter_ms, c.burst), (3000, 1000, 3));
        assert_eq!(c.period_ms(0.0), 2000);
        assert_eq!(c.period_ms(0.5), 3000);
        assert_eq!(c.retry_after_secs(), 4);
    }

    #[test]
    fn burst_then_one_per_interval() {
        let c = PacingConfig::default();
        let mut b = TokenBucket::new(&c);
        let mut r = mid();
        // Greedy sender: sends as soon as it may.
        let mut sent_at = Vec::new();
        let mut now = 0;
        while sent_at.len() < 7 {
            match b.try_take(now, &c, &mut r) {
                Ok(()) => sent_at.push(now),
                Err(at) => {
                    assert!(at > now);
                    now = at;
                }
            }
        }
        assert_eq!(sent_at, [0, 0, 0, 3000, 6000, 9000, 12000]);
    }

    #[test]
    fn a_quiet_period_refills_up_to_burst_only() {
        let c = PacingConfig::default();
        let mut b = TokenBucket::new(&c);
        let mut r = mid();
        for _ in 0..3 {
            b.try_take(0, &c, &mut r).unwrap();
        }
        assert_eq!(b.try_take(1, &c, &mut r), Err(3000));
        assert_eq!(b.ready_at(1, &c, &mut r), Some(3000));
        assert_eq!(b.ready_at(3000, &c, &mut r), None);
        assert_eq!(b.available(1_000_000, &c, &mut r), 3);
        for _ in 0..3 {
            b.try_take(1_000_000, &c, &mut r).unwrap();
        }
        assert!(b.try_take(1_000_000, &c, &mut r).is_err());
    }

    #[test]
    fn typing_is_clamped() {
        let c = PacingConfig::default();
        assert_eq!(c.typing_for(2), Some(Duration::from_secs(1)));
        assert_eq!(c.typing_for(60), Some(Duration::from_secs(3)));
        assert_eq!(c.typing_for(10_000), Some(Duration::from_secs(5)));
        let off = PacingConfig { typing: false, ..c };
        assert_eq!(off.typing_for(60), None);
    }

    #[test]
    fn validation() {
        let ok = PacingConfig::default();
        assert!(
            PacingConfig {
                interval_ms: 0,
                ..ok.clone()
            }
            .validate()
            .is_err()
        );
        assert!(
            PacingConfig {
                jitter_ms: 4000,
                ..ok.clone()
            }
            .validate()
            .is_err()
        );
        assert!(
            PacingConfig {
                burst: 0,
                ..ok.clone()
            }
            .validate()
            .is_err()
        );
        assert!(PacingConfig { queue_cap: 0, ..ok }.validate().is_err());
    }

    proptest! {
        /// Whatever the jitter samples and request times, no window of length W sees more than
        /// `burst + W / min_period + 1` sends, and a waiting sender is told a time in the future.
        #[test]
        fn rate_is_bounded(
            interval in 1u64..5_000,
            jitter_frac in 0.0f64..1.0,
            burst in 1u32..6,
            samples in proptest::collection::vec(0.0f64..1.0, 64),
            gaps in proptest::collection::vec(0u64..4_000, 1..120),
        ) {
            let c = PacingConfig {
                interval_ms: interval,
                jitter_ms: (interval as f64 * jitter_frac) as u64,
                burst,
                ..PacingConfig::default()
            };
            let mut i = 0usize;
            let mut rand = || { i += 1; samples[i % samples.len()] };
            let mut b = TokenBucket::new(&c);
            let mut now = 0u64;
            let mut sent = Vec::new();
            for g in gaps {
                now += g;
                loop {
                    match b.try_take(now, &c, &mut rand) {
                        Ok(()) => { sent.push(now); break; }
                        Err(at) => { prop_assert!(at > now); now = at; }
                    }
                }
            }
            let min = c.min_period_ms();
            for (k, &start) in sent.iter().enumerate() {
                for w in [0u64, min, 3 * min, 10 * min] {
                    let n = sent[k..].iter().take_while(|&&t| t <= start + w).count() as u64;
                    prop_assert!(n <= u64::from(burst) + w / min + 1, "{n} sends in {w} ms");
                }
            }
        }
    }
}
