//! When to send again: how an answer is classified and how long to wait.
//!
//! Policy is data ([`RetryPolicy`]); the functions take the attempt number,
//! the clock and a random number as arguments so tests can pin every case.

use crate::time::{days_from_civil, digits};

/// How failed batches are retried. Defaults follow the contract: 0.5 s
/// doubling to 60 s, ±20 % jitter, `Retry-After` honoured up to 300 s, and a
/// batch given up after 24 h.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    pub min_delay_ms: u64,
    pub max_delay_ms: u64,
    /// Fraction of the delay added or removed at random, so that many pages
    /// failing together do not retry together.
    pub jitter: f64,
    /// A server's `Retry-After` is honoured up to this long.
    pub max_retry_after_ms: u64,
    /// A batch first sent longer ago than this is dropped as failed.
    pub max_age_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            min_delay_ms: 500,
            max_delay_ms: 60_000,
            jitter: 0.2,
            max_retry_after_ms: 300_000,
            max_age_ms: 24 * 3600 * 1000,
        }
    }
}

impl RetryPolicy {
    /// Delay before attempt `attempt + 1`, after `attempt` failed attempts
    /// (1-based). `unit` is uniform in `[0, 1)`. A server-given wait wins,
    /// capped at `max_retry_after_ms`, and is not jittered: the server asked
    /// for that moment. It is never shorter than `min_delay_ms`, so
    /// `Retry-After: 0` (or a date already past) cannot start a resend storm.
    pub fn delay_ms(&self, attempt: u32, retry_after_ms: Option<u64>, unit: f64) -> u64 {
        if let Some(wait) = retry_after_ms {
            return wait.min(self.max_retry_after_ms).max(self.min_delay_ms);
        }
        let doublings = attempt.saturating_sub(1).min(30);
        let base = self.min_delay_ms.saturating_mul(1 << doublings).min(self.max_delay_ms) as f64;
        let factor = 1.0 + self.jitter * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
        (base * factor).round() as u64
    }
}

/// What to do with a batch after the relay answered (or did not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx: the relay stored it.
    Delivered,
    /// Network error, 408, 429, 5xx but 501/505: try the same batch again.
    Retry,
    /// 413: the relay wants smaller batches.
    Split,
    /// Any other status: resending cannot help; drop and count as failed.
    Reject,
}

/// Classifies an answer; `None` is a network error (no answer at all).
pub fn classify(status: Option<u16>) -> Verdict {
    match status {
        None => Verdict::Retry,
        Some(200..=299) => Verdict::Delivered,
        Some(413) => Verdict::Split,
        Some(408 | 429) => Verdict::Retry,
        Some(501 | 505) => Verdict::Reject,
        Some(500..=599) => Verdict::Retry,
        Some(_) => Verdict::Reject,
    }
}

/// Parses `Retry-After` (delay-seconds or an IMF-fixdate HTTP date) into a
/// wait from `now_ms`. Unparseable values are ignored, as browsers do.
///
/// ```
/// use cuecast::retry::parse_retry_after;
/// assert_eq!(parse_retry_after("120", 0), Some(120_000));
/// assert_eq!(parse_retry_after("Thu, 01 Jan 1970 00:00:10 GMT", 4_000), Some(6_000));
/// ```
pub fn parse_retry_after(value: &str, now_ms: i64) -> Option<u64> {
    let value = value.trim();
    if let Some(seconds) = digits(value) {
        return Some((seconds as u64).saturating_mul(1000));
    }
    let at = parse_http_date(value)?;
    Some(at.saturating_sub(now_ms).max(0) as u64)
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` → Unix milliseconds.
fn parse_http_date(s: &str) -> Option<i64> {
    let rest = s.split_once(',')?.1.strip_prefix(' ')?;
    let parts: Vec<&str> = rest.split(' ').collect();
    let [day, month, year, clock, "GMT"] = parts[..] else { return None };
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let month = MONTHS.iter().position(|m| *m == month)? as i64 + 1;
    let (day, year) = (digits(day)?, digits(year)?);
    let hms: Vec<i64> = clock.split(':').map(digits).collect::<Option<_>>()?;
    let [h, m, sec] = hms[..] else { return None };
    if !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    Some(((days_from_civil(year, month, day) * 24 + h) * 60 + m) * 60_000 + sec * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_half_a_second_to_a_minute() {
        let p = RetryPolicy::default();
        let mid: Vec<u64> = (1..=9).map(|a| p.delay_ms(a, None, 0.5)).collect();
        assert_eq!(mid, [500, 1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000]);
        assert_eq!(p.delay_ms(1000, None, 0.5), 60_000, "no overflow on huge attempt counts");
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let p = RetryPolicy::default();
        for attempt in 1..=10 {
            let base = p.delay_ms(attempt, None, 0.5) as f64;
            assert_eq!(p.delay_ms(attempt, None, 0.0) as f64, (base * 0.8).round());
            assert_eq!(p.delay_ms(attempt, None, 1.0) as f64, (base * 1.2).round());
            for i in 0..100 {
                let d = p.delay_ms(attempt, None, f64::from(i) / 100.0) as f64;
                assert!(d >= base * 0.8 - 1.0 && d <= base * 1.2 + 1.0, "attempt {attempt}: {d}");
            }
        }
    }

    #[test]
    fn retry_after_wins_and_is_capped() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay_ms(1, Some(2_000), 0.9), 2_000);
        assert_eq!(p.delay_ms(1, Some(0), 0.9), 500, "Retry-After: 0 still waits the minimum delay");
        assert_eq!(p.delay_ms(1, Some(3_600_000), 0.9), 300_000);
    }

    #[test]
    fn statuses_are_classified_as_the_contract_says() {
        assert_eq!(classify(None), Verdict::Retry);
        for s in [200, 202, 204] {
            assert_eq!(classify(Some(s)), Verdict::Delivered, "{s}");
        }
        for s in [408, 429, 500, 502, 503, 504, 599] {
            assert_eq!(classify(Some(s)), Verdict::Retry, "{s}");
        }
        assert_eq!(classify(Some(413)), Verdict::Split);
        for s in [301, 400, 401, 403, 404, 422, 501, 505] {
            assert_eq!(classify(Some(s)), Verdict::Reject, "{s}");
        }
    }

    #[test]
    fn retry_after_accepts_seconds_and_http_dates() {
        let now = crate::time::parse_millis("2026-12-04T15:16:52Z").unwrap();
        assert_eq!(parse_retry_after("0", now), Some(0));
        assert_eq!(parse_retry_after(" 3 ", now), Some(3000));
        assert_eq!(parse_retry_after("Fri, 04 Dec 2026 15:17:02 GMT", now), Some(10_000));
        assert_eq!(parse_retry_after("Fri, 04 Dec 2026 15:00:00 GMT", now), Some(0), "a date in the past means now");
        for junk in ["", "-5", "1.5", "soon", "Fri, 04 Dec 2026 15:17:02 CET", "Fri, 04 Foo 2026 15:17:02 GMT"] {
            assert_eq!(parse_retry_after(junk, now), None, "{junk:?}");
        }
    }
}
