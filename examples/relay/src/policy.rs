//! Delivery and ingest policy as pure functions: which webhooks an event
//! name matches, how an answer is classified, when the next attempt is due,
//! and the token bucket behind every rate limit. Nothing here does IO or
//! reads the clock; callers pass `now` and randomness in.

use std::time::Duration;

/// One entry of a webhook's `events` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// `"*"`: every event.
    All,
    /// `"onboarding.*"`: every name starting with `onboarding.`.
    Prefix(String),
    /// `"survey.submitted"`: exactly this name.
    Exact(String),
}

impl Pattern {
    pub fn parse(s: &str) -> Result<Pattern, String> {
        if s == "*" {
            return Ok(Pattern::All);
        }
        if let Some(prefix) = s.strip_suffix('*') {
            if prefix.is_empty() || prefix.contains('*') || !prefix.ends_with('.') {
                return Err(format!("event pattern {s:?} must be a name, \"prefix.*\" or \"*\""));
            }
            return Ok(Pattern::Prefix(prefix.to_string()));
        }
        if s.trim().is_empty() || s.contains('*') {
            return Err(format!("event pattern {s:?} must be a name, \"prefix.*\" or \"*\""));
        }
        Ok(Pattern::Exact(s.to_string()))
    }

    pub fn matches(&self, name: &str) -> bool {
        match self {
            Pattern::All => true,
            Pattern::Prefix(p) => name.starts_with(p.as_str()),
            Pattern::Exact(e) => e == name,
        }
    }
}

/// Whether any of `patterns` matches the event `name`.
pub fn matches_any(patterns: &[Pattern], name: &str) -> bool {
    patterns.iter().any(|p| p.matches(name))
}

/// What one delivery attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx.
    Delivered,
    /// 408, 429, 5xx, a timeout or a connection error: try again later,
    /// no earlier than `retry_after` if the receiver said so.
    Retry { retry_after: Option<Duration> },
    /// 3xx (never followed) and other 4xx: trying again would not help.
    Failed,
    /// 410 Gone: the receiver asks us to stop; the webhook is disabled.
    Gone,
}

/// Classifies an HTTP answer (`Some(status)`) or a transport failure (`None`).
pub fn classify(status: Option<u16>, retry_after: Option<Duration>) -> Outcome {
    match status {
        None => Outcome::Retry { retry_after: None },
        Some(200..=299) => Outcome::Delivered,
        Some(410) => Outcome::Gone,
        Some(408 | 429 | 500..=599) => Outcome::Retry { retry_after },
        Some(_) => Outcome::Failed,
    }
}

/// Parses a `Retry-After` header: delay-seconds or an HTTP date (relative to `now`).
pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate_parse(value)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

fn httpdate_parse(value: &str) -> Option<std::time::SystemTime> {
    humantime::parse_rfc3339_weak(value).ok().or_else(|| {
        // IMF-fixdate, e.g. "Sun, 06 Nov 1994 08:49:37 GMT".
        let parts: Vec<&str> = value.split_whitespace().collect();
        if parts.len() != 6 || parts[5] != "GMT" {
            return None;
        }
        let month = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
            .iter()
            .position(|m| *m == parts[2])?
            + 1;
        let stamp = format!("{}-{month:02}-{:0>2}T{}Z", parts[3], parts[1], parts[4]);
        humantime::parse_rfc3339(&stamp).ok()
    })
}

/// The default schedule: the delay before each attempt, the first at once.
pub const DEFAULT_SCHEDULE: [Duration; 8] = [
    Duration::ZERO,
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(10 * 3600),
];

/// Share of a delay by which it is moved at random, either way.
pub const JITTER: f64 = 0.2;

/// The delay before the next attempt after `attempts_made` attempts failed
/// with `outcome`, or `None` when the delivery should be dead-lettered.
///
/// `unit` is a random number in `[0, 1)` that spreads retries of many
/// deliveries by ±20 %. A receiver's `Retry-After` can push the attempt later
/// but never beyond the longest delay of the schedule, so a bogus header
/// cannot park a delivery for a year.
pub fn next_delay(
    schedule: &[Duration],
    attempts_made: u32,
    retry_after: Option<Duration>,
    unit: f64,
) -> Option<Duration> {
    let base = *schedule.get(attempts_made as usize)?;
    let factor = 1.0 + JITTER * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
    let jittered = base.mul_f64(factor);
    let cap = schedule.iter().copied().max().unwrap_or_default();
    Some(match retry_after {
        Some(after) => jittered.max(after.min(cap)),
        None => jittered,
    })
}

/// A rate such as `20/s`: `count` requests per `per`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

impl Rate {
    /// Parses `N/s`, `N/m`, `N/min`, `N/h` (also `N/second`, `N/minute`, `N/hour`).
    pub fn parse(s: &str) -> Result<Rate, String> {
        let err = || format!("rate {s:?} must look like \"20/s\", \"600/m\" or \"1000/h\"");
        let (n, unit) = s.split_once('/').ok_or_else(err)?;
        let count: u32 = n.trim().parse().map_err(|_| err())?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return Err(err()),
        };
        if count == 0 {
            return Err(format!("rate {s:?} must allow at least one request"));
        }
        Ok(Rate { count, per })
    }
}

/// A token bucket: `rate.count` tokens refill over `rate.per`; a burst of up
/// to `rate.count` passes at once.
#[derive(Debug, Clone)]
pub struct Bucket {
    rate: Rate,
    tokens: f64,
    updated: Duration,
}

impl Bucket {
    /// A full bucket; `now` is any monotonic time (e.g. since process start).
    pub fn new(rate: Rate, now: Duration) -> Bucket {
        Bucket { rate, tokens: f64::from(rate.count), updated: now }
    }

    /// Takes one token, or says how long until one is available.
    pub fn take(&mut self, now: Duration) -> Result<(), Duration> {
        let per_token = self.rate.per.as_secs_f64() / f64::from(self.rate.count);
        let elapsed = now.saturating_sub(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed / per_token).min(f64::from(self.rate.count));
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) * per_token))
        }
    }

    /// Whether the bucket has refilled completely (and can be forgotten).
    pub fn is_full(&self, now: Duration) -> bool {
        let per_token = self.rate.per.as_secs_f64() / f64::from(self.rate.count);
        self.tokens + now.saturating_sub(self.updated).as_secs_f64() / per_token >= f64::from(self.rate.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_exact_prefix_and_all() {
        let p = |s| Pattern::parse(s).unwrap();
        assert!(p("survey.submitted").matches("survey.submitted"));
        assert!(!p("survey.submitted").matches("survey.submitted.v2"));
        assert!(p("onboarding.*").matches("onboarding.task_completed"));
        assert!(!p("onboarding.*").matches("onboardingx"));
        assert!(!p("onboarding.*").matches("onboarding"));
        assert!(p("*").matches("anything"));
        for bad in ["", "survey*", "*.clicked", "a.*.b", "**"] {
            assert!(Pattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn outcomes_are_classified() {
        assert_eq!(classify(Some(200), None), Outcome::Delivered);
        assert_eq!(classify(Some(204), None), Outcome::Delivered);
        assert_eq!(classify(Some(301), None), Outcome::Failed);
        assert_eq!(classify(Some(302), None), Outcome::Failed);
        assert_eq!(classify(Some(400), None), Outcome::Failed);
        assert_eq!(classify(Some(404), None), Outcome::Failed);
        assert_eq!(classify(Some(410), None), Outcome::Gone);
        assert_eq!(classify(Some(408), None), Outcome::Retry { retry_after: None });
        let after = Some(Duration::from_secs(7));
        assert_eq!(classify(Some(429), after), Outcome::Retry { retry_after: after });
        assert_eq!(classify(Some(500), None), Outcome::Retry { retry_after: None });
        assert_eq!(classify(Some(503), None), Outcome::Retry { retry_after: None });
        assert_eq!(classify(None, None), Outcome::Retry { retry_after: None });
    }

    #[test]
    fn default_schedule_with_jitter_and_retry_after() {
        let s = &DEFAULT_SCHEDULE;
        // Attempt 1 is at once; 8 attempts in all, then dead.
        assert_eq!(next_delay(s, 0, None, 0.5), Some(Duration::ZERO));
        assert_eq!(next_delay(s, 1, None, 0.5), Some(Duration::from_secs(5)));
        assert_eq!(next_delay(s, 2, None, 0.5), Some(Duration::from_secs(300)));
        assert_eq!(next_delay(s, 7, None, 0.5), Some(Duration::from_secs(36000)));
        assert_eq!(next_delay(s, 8, None, 0.5), None);
        // ±20 % jitter at the extremes.
        assert_eq!(next_delay(s, 1, None, 0.0), Some(Duration::from_secs(4)));
        assert_eq!(next_delay(s, 1, None, 1.0), Some(Duration::from_secs(6)));
        // Retry-After pushes later, but never past the longest delay.
        assert_eq!(next_delay(s, 1, Some(Duration::from_secs(60)), 0.5), Some(Duration::from_secs(60)));
        assert_eq!(next_delay(s, 1, Some(Duration::from_secs(1)), 0.5), Some(Duration::from_secs(5)));
        assert_eq!(next_delay(s, 1, Some(Duration::from_secs(10_000_000)), 0.5), Some(Duration::from_secs(36000)));
    }

    #[test]
    fn retry_after_is_parsed() {
        let now = humantime::parse_rfc3339("1994-11-06T08:49:00Z").unwrap();
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now), Some(Duration::from_secs(37)));
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn rates_parse() {
        assert_eq!(Rate::parse("20/s").unwrap(), Rate { count: 20, per: Duration::from_secs(1) });
        assert_eq!(Rate::parse("600/min").unwrap().per, Duration::from_secs(60));
        assert!(Rate::parse("20").is_err());
        assert!(Rate::parse("0/s").is_err());
        assert!(Rate::parse("x/s").is_err());
    }

    #[test]
    fn bucket_allows_a_burst_then_refills() {
        let t = Duration::from_millis;
        let mut b = Bucket::new(Rate { count: 2, per: Duration::from_secs(1) }, t(0));
        assert!(b.take(t(0)).is_ok());
        assert!(b.take(t(0)).is_ok());
        assert_eq!(b.take(t(0)), Err(t(500)));
        assert_eq!(b.take(t(250)), Err(t(250)));
        assert!(b.take(t(500)).is_ok());
        assert!(!b.is_full(t(600)));
        assert!(b.is_full(t(2000)));
    }
}
