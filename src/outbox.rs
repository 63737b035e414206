//! The outbox: events waiting to be sent, and the batches being sent or retried.
//!
//! A pure state machine. The browser layer asks it what to send
//! ([`Outbox::next_send`]), does the fetch, and reports the answer
//! ([`Outbox::on_answer`]); the outbox decides batching, backoff, splitting
//! and dropping. One batch is in flight at a time, so events reach the relay
//! in the order they were tracked.
//!
//! Everything here is serialisable plain data, so the same state can be
//! persisted between page loads.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::config::{Config, ENVELOPE_BYTES};
use crate::retry::{classify, RetryPolicy, Verdict};
use crate::time::format_millis;
use crate::wire::{Library, VERSION};

/// What happened to the events since the last [`Outbox::take_report`]
/// (what `flush()` resolves with).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Acknowledged by the relay.
    pub sent: u64,
    /// Refused by the relay (4xx), or retried for longer than the policy allows.
    pub failed: u64,
    /// Still waiting to be sent or retried.
    pub pending: u64,
    /// Dropped by policy before sending: queue full, or opt-out.
    pub dropped: u64,
}

/// What a [`Outbox::push`] asks of the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// A threshold (count or bytes) is reached: send now.
    SendNow,
    /// Send at this time (ms) unless something else triggers first.
    SendAt(i64),
}

/// One request to make.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub batch_id: String,
    pub attempt: u32,
    pub events: usize,
    /// The JSON body, ready for `fetch`.
    pub body: String,
}

/// What an answer did to the batch, for the caller's scheduling and debug log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Delivered {
        events: usize,
    },
    RetryAt {
        at: i64,
        attempt: u32,
    },
    /// The batch was halved (413); both halves are ready to send.
    Split,
    /// Dropped as failed: a status that resending cannot fix, or too old.
    Failed {
        events: usize,
        why: String,
    },
    /// Dropped unsent after the user opted out while it was in flight.
    Dropped {
        events: usize,
    },
    /// No batch in flight has this id (a stale answer); nothing changed.
    Unknown,
}

/// An event as it will be sent: serialised once when tracked, so batching,
/// resending and (later) persisting never re-serialise or parse it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Queued {
    json: String,
    queued_at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum State {
    Ready,
    InFlight,
    /// `server`: the relay named the time (Retry-After); an explicit flush waits for it too.
    Waiting {
        until: i64,
        server: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Formed {
    batch_id: String,
    attempt: u32,
    events: Vec<Queued>,
    first_sent_at: Option<i64>,
    last_sent_at: i64,
    state: State,
}

/// Batching and sending policy, copied from [`Config`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub flush_at: usize,
    pub flush_interval_ms: u64,
    pub max_batch_bytes: usize,
    pub max_queue_events: usize,
    pub retry: RetryPolicy,
}

impl From<&Config> for Limits {
    fn from(c: &Config) -> Self {
        Limits {
            flush_at: c.flush_at,
            flush_interval_ms: c.flush_interval_ms,
            max_batch_bytes: c.max_batch_bytes,
            max_queue_events: c.max_queue_events,
            retry: c.retry,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Outbox {
    limits: Limits,
    write_key: String,
    /// Events not yet in a batch, oldest first.
    queue: VecDeque<Queued>,
    queued_bytes: usize,
    /// Formed batches, oldest first; only the front one is ever in flight.
    batches: VecDeque<Formed>,
    report: Report,
    /// Opted out: nothing new is queued and nothing is retried.
    stopped: bool,
}

impl Outbox {
    pub fn new(limits: Limits, write_key: impl Into<String>) -> Self {
        Outbox {
            limits,
            write_key: write_key.into(),
            queue: VecDeque::new(),
            queued_bytes: 0,
            batches: VecDeque::new(),
            report: Report::default(),
            stopped: false,
        }
    }

    /// Queues an event given as its JSON (see [`crate::wire::Event`]). When
    /// the outbox is full the oldest waiting events are dropped (and counted)
    /// to make room; the second value says how many.
    pub fn push(&mut self, event_json: String, now: i64) -> (Push, usize) {
        let mut dropped = 0;
        while self.pending() >= self.limits.max_queue_events && self.drop_oldest() {
            dropped += 1;
        }
        (self.push_kept(event_json, now), dropped)
    }

    fn push_kept(&mut self, event_json: String, now: i64) -> Push {
        self.queued_bytes += event_json.len() + 1;
        self.queue.push_back(Queued { json: event_json, queued_at: now });
        if self.queue.len() >= self.limits.flush_at || self.queued_bytes + ENVELOPE_BYTES >= self.limits.max_batch_bytes
        {
            Push::SendNow
        } else {
            Push::SendAt(self.queue[0].queued_at + self.limits.flush_interval_ms as i64)
        }
    }

    fn drop_oldest(&mut self) -> bool {
        // Never touch the batch in flight: its answer is on its way.
        let waiting = self.batches.iter_mut().find(|b| b.state != State::InFlight);
        if let Some(formed) = waiting {
            formed.events.remove(0);
            self.batches.retain(|b| !b.events.is_empty());
        } else if let Some(q) = self.queue.pop_front() {
            self.queued_bytes -= q.json.len() + 1;
        } else {
            return false;
        }
        self.report.dropped += 1;
        true
    }

    /// The next request to make at `now`, if any. `flush_since` is the start
    /// of an explicit `flush()`: it sends queued events at once and skips our
    /// own backoff once per batch (a batch already tried since the flush began
    /// waits, so a flush against a dead relay ends), but never a wait the relay
    /// asked for. `new_id` makes batch ids.
    pub fn next_send(
        &mut self,
        now: i64,
        flush_since: Option<i64>,
        new_id: &mut dyn FnMut() -> String,
    ) -> Option<Outgoing> {
        if self.batches.is_empty() && self.due(now, flush_since.is_some()) {
            let events = self.take_batch_events(self.limits.max_batch_bytes);
            self.batches.push_back(Formed {
                batch_id: new_id(),
                attempt: 0,
                events,
                first_sent_at: None,
                last_sent_at: i64::MIN,
                state: State::Ready,
            });
        }
        let front = self.batches.front_mut()?;
        match front.state {
            State::InFlight => return None,
            State::Waiting { until, server } => {
                // A flush tries each batch once; after that, the schedule decides
                // (a flush against a dead or slow relay must end).
                let tried_in_this_flush = flush_since.is_some_and(|since| front.last_sent_at >= since);
                let early = now < until && (server || flush_since.is_none());
                if tried_in_this_flush || early {
                    return None;
                }
            }
            State::Ready => {}
        }
        front.state = State::InFlight;
        front.attempt += 1;
        front.first_sent_at.get_or_insert(now);
        front.last_sent_at = now;
        Some(Outgoing {
            batch_id: front.batch_id.clone(),
            attempt: front.attempt,
            events: front.events.len(),
            body: body(&self.write_key, front, now),
        })
    }

    fn due(&self, now: i64, force: bool) -> bool {
        let Some(first) = self.queue.front() else { return false };
        force
            || self.queue.len() >= self.limits.flush_at
            || self.queued_bytes + ENVELOPE_BYTES >= self.limits.max_batch_bytes
            || now >= first.queued_at + self.limits.flush_interval_ms as i64
    }

    /// Takes the oldest queued events for one batch: at most `flush_at`
    /// events and a body of at most `max_bytes` (events are at most 32 KB,
    /// so with the normal limit at least one always fits).
    fn take_batch_events(&mut self, max_bytes: usize) -> Vec<Queued> {
        let mut events = Vec::new();
        let mut bytes = ENVELOPE_BYTES;
        while let Some(next) = self.queue.front() {
            let size = next.json.len() + 1;
            if events.len() == self.limits.flush_at || bytes + size > max_bytes {
                break;
            }
            bytes += size;
            self.queued_bytes -= size;
            events.extend(self.queue.pop_front());
        }
        events
    }

    /// Records the relay's answer to batch `batch_id`: `status` is `None` for a
    /// network error; `retry_after_ms` is the parsed `Retry-After`; `unit` is
    /// a uniform random number in `[0, 1)` for jitter.
    pub fn on_answer(
        &mut self,
        batch_id: &str,
        status: Option<u16>,
        retry_after_ms: Option<u64>,
        now: i64,
        unit: f64,
        new_id: &mut dyn FnMut() -> String,
    ) -> Answer {
        // Usually the front batch; after a page-hide drain, any of several.
        let Some(at) = self.position_in_flight(batch_id) else { return Answer::Unknown };
        let front = &mut self.batches[at];
        let events = front.events.len();
        let verdict = classify(status);
        if self.stopped && verdict != Verdict::Delivered && verdict != Verdict::Reject {
            self.batches.remove(at);
            self.report.dropped += events as u64;
            return Answer::Dropped { events };
        }
        match verdict {
            Verdict::Delivered => {
                self.batches.remove(at);
                self.report.sent += events as u64;
                Answer::Delivered { events }
            }
            Verdict::Retry => {
                let attempt = front.attempt;
                // Only 429 and 503 carry a Retry-After we must honour.
                let hint = retry_after_ms.filter(|_| matches!(status, Some(429 | 503)));
                let due = now + self.limits.retry.delay_ms(attempt, hint, unit) as i64;
                let first = front.first_sent_at.unwrap_or(now);
                if due - first > self.limits.retry.max_age_ms as i64 {
                    return self.fail(at, format!("gave up after {attempt} attempts over {} s", (now - first) / 1000));
                }
                front.state = State::Waiting { until: due, server: hint.is_some() };
                Answer::RetryAt { at: due, attempt }
            }
            Verdict::Split if events > 1 => {
                let mut formed = self.batches.remove(at).expect("batch exists");
                let second_half = formed.events.split_off(events / 2);
                // Each half is a new batch (new id, attempt 0) but keeps the
                // original first send time, so max age still counts from it.
                for half in [second_half, formed.events] {
                    let half = Formed {
                        batch_id: new_id(),
                        attempt: 0,
                        events: half,
                        first_sent_at: formed.first_sent_at,
                        last_sent_at: i64::MIN,
                        state: State::Ready,
                    };
                    self.batches.insert(at, half);
                }
                Answer::Split
            }
            Verdict::Split => self.fail(at, "the relay refused a single event as too large (413)".into()),
            Verdict::Reject => {
                self.fail(at, format!("the relay refused the batch with status {}", status.unwrap_or(0)))
            }
        }
    }

    fn position_in_flight(&self, batch_id: &str) -> Option<usize> {
        self.batches.iter().position(|b| b.batch_id == batch_id && b.state == State::InFlight)
    }

    /// The request never left the device (the browser is offline): not an
    /// attempt. The batch is ready again with the same attempt number and no
    /// backoff; the caller waits for the network before sending it.
    pub fn on_offline(&mut self, batch_id: &str) -> bool {
        let Some(at) = self.position_in_flight(batch_id) else { return false };
        let formed = &mut self.batches[at];
        formed.attempt -= 1;
        formed.state = State::Ready;
        true
    }

    /// The page is being hidden and may be gone in a moment: every batch not
    /// in flight, then the queued events, as requests whose bodies together
    /// fit in `budget` bytes (browsers cap the keepalive requests of a page
    /// at 64 KB in all). Our own backoff is skipped; what does not fit stays.
    pub fn drain_for_hide(&mut self, now: i64, budget: usize, new_id: &mut dyn FnMut() -> String) -> Vec<Outgoing> {
        let mut left = budget;
        let mut out = Vec::new();
        let mut i = 0;
        loop {
            if i == self.batches.len() {
                // Everything formed is out or too big: form more from the queue.
                let room = left.min(self.limits.max_batch_bytes);
                let events = self.take_batch_events(room);
                if events.is_empty() {
                    break;
                }
                let formed = Formed {
                    batch_id: new_id(),
                    attempt: 0,
                    events,
                    first_sent_at: None,
                    last_sent_at: i64::MIN,
                    state: State::Ready,
                };
                self.batches.push_back(formed);
            }
            let formed = &mut self.batches[i];
            i += 1;
            if formed.state == State::InFlight {
                continue;
            }
            let body = body(&self.write_key, &Formed { attempt: formed.attempt + 1, ..formed.clone() }, now);
            if body.len() > left {
                break;
            }
            left -= body.len();
            formed.state = State::InFlight;
            formed.attempt += 1;
            formed.first_sent_at.get_or_insert(now);
            formed.last_sent_at = now;
            out.push(Outgoing {
                batch_id: formed.batch_id.clone(),
                attempt: formed.attempt,
                events: formed.events.len(),
                body,
            });
        }
        out
    }

    fn fail(&mut self, at: usize, why: String) -> Answer {
        let formed = self.batches.remove(at).expect("batch exists");
        let events = formed.events.len();
        self.report.failed += events as u64;
        Answer::Failed { events, why }
    }

    /// When the caller should next call [`Outbox::next_send`]: `None` when
    /// nothing waits or a request is in flight (its answer will tell).
    pub fn next_wakeup(&self) -> Option<i64> {
        match self.batches.front() {
            Some(Formed { state: State::InFlight, .. }) => None,
            Some(Formed { state: State::Waiting { until, .. }, .. }) => Some(*until),
            Some(Formed { state: State::Ready, .. }) => Some(i64::MIN),
            None => self.queue.front().map(|q| q.queued_at + self.limits.flush_interval_ms as i64),
        }
    }

    /// Whether a request is in flight.
    pub fn in_flight(&self) -> bool {
        self.batches.front().is_some_and(|b| b.state == State::InFlight)
    }

    /// Events not yet acknowledged, refused or dropped.
    pub fn pending(&self) -> usize {
        self.queue.len() + self.batches.iter().map(|b| b.events.len()).sum::<usize>()
    }

    /// Opt-out: drops everything not in flight (counted as dropped), and the
    /// batch in flight too unless its answer says it was delivered.
    pub fn stop(&mut self) -> usize {
        self.stopped = true;
        let mut dropped = 0;
        while self.drop_oldest() {
            dropped += 1;
        }
        dropped
    }

    /// Opt-in again after [`Outbox::stop`].
    pub fn resume(&mut self) {
        self.stopped = false;
    }

    /// Counts since the previous report, with the current pending count.
    pub fn take_report(&mut self) -> Report {
        let report = Report { pending: self.pending() as u64, ..self.report };
        self.report = Report::default();
        report
    }
}

/// The request body: the wire [`crate::wire::Batch`] envelope around the
/// already serialised events. Assembled by hand so the browser build carries
/// no second serialiser; the tests decode it with the shared wire types.
fn body(write_key: &str, formed: &Formed, now: i64) -> String {
    let size = ENVELOPE_BYTES + formed.events.iter().map(|e| e.json.len() + 1).sum::<usize>();
    let mut out = String::with_capacity(size);
    out.push_str("{\"v\":");
    out.push_str(&VERSION.to_string());
    out.push_str(",\"writeKey\":");
    out.push_str(&serde_json::to_string(write_key).unwrap_or_default());
    out.push_str(",\"batchId\":");
    out.push_str(&serde_json::to_string(&formed.batch_id).unwrap_or_default());
    out.push_str(",\"sentAt\":\"");
    out.push_str(&format_millis(now));
    out.push_str("\",\"attempt\":");
    out.push_str(&formed.attempt.to_string());
    out.push_str(",\"sdk\":");
    out.push_str(&serde_json::to_string(&Library::cuecast()).unwrap_or_default());
    out.push_str(",\"events\":[");
    for (i, event) in formed.events.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&event.json);
    }
    out.push_str("]}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Batch, Event};
    use serde_json::Value;

    fn limits() -> Limits {
        Limits {
            flush_at: 20,
            flush_interval_ms: 5000,
            max_batch_bytes: 48 * 1024,
            max_queue_events: 1000,
            retry: RetryPolicy::default(),
        }
    }

    fn event(n: usize, pad: usize) -> String {
        let mut e: Event = serde_json::from_str(include_str!("../tests/fixtures/events/custom.json")).unwrap();
        e.id = format!("e{n}");
        e.properties.insert("pad".into(), Value::String("x".repeat(pad)));
        serde_json::to_string(&e).unwrap()
    }

    fn ids() -> impl FnMut() -> String {
        let mut n = 0;
        move || {
            n += 1;
            format!("b{n}")
        }
    }

    fn ids_of(out: &Outgoing) -> Vec<String> {
        let b: Batch = serde_json::from_str(&out.body).unwrap();
        b.events.into_iter().map(|e| e.id).collect()
    }

    fn fill(o: &mut Outbox, count: usize, pad: usize, now: i64) -> Push {
        let mut last = Push::SendAt(0);
        for n in 0..count {
            last = o.push(event(n, pad), now).0;
        }
        last
    }

    #[test]
    fn flushes_at_twenty_events() {
        let mut o = Outbox::new(limits(), "pk");
        assert_eq!(fill(&mut o, 19, 0, 1000), Push::SendAt(6000));
        assert_eq!(o.next_send(1000, None, &mut ids()), None, "19 events wait for the timer");
        assert_eq!(o.push(event(19, 0), 1001), (Push::SendNow, 0));
        let out = o.next_send(1001, None, &mut ids()).unwrap();
        assert_eq!((out.events, out.attempt), (20, 1));
        let batch: Batch = serde_json::from_str(&out.body).unwrap();
        assert_eq!((batch.v, batch.write_key.as_str(), batch.sent_at.as_str()), (1, "pk", "1970-01-01T00:00:01.001Z"));
        batch.validate().unwrap();
    }

    #[test]
    fn flushes_five_seconds_after_the_first_event() {
        let mut o = Outbox::new(limits(), "pk");
        assert_eq!(fill(&mut o, 1, 0, 10_000), Push::SendAt(15_000));
        assert_eq!(fill(&mut o, 1, 0, 12_000), Push::SendAt(15_000), "the timer runs from the first event");
        assert_eq!(o.next_wakeup(), Some(15_000));
        assert!(o.next_send(14_999, None, &mut ids()).is_none());
        assert_eq!(o.next_send(15_000, None, &mut ids()).unwrap().events, 2);
    }

    #[test]
    fn flushes_before_the_body_reaches_48_kb() {
        let mut o = Outbox::new(limits(), "pk");
        let pushes: Vec<Push> = (0..6).map(|n| o.push(event(n, 10_000), 0).0).collect();
        let first_now = pushes.iter().position(|p| *p == Push::SendNow).unwrap();
        assert_eq!(first_now, 4, "the fifth ~11 KB event passes the 48 KB threshold");
        let mut ids = ids();
        let mut sizes = Vec::new();
        while let Some(out) = o.next_send(0, Some(0), &mut ids) {
            assert!(out.body.len() <= 48 * 1024, "{} bytes", out.body.len());
            sizes.push(out.events);
            o.on_answer(&out.batch_id, Some(202), None, 0, 0.5, &mut ids);
        }
        assert_eq!(sizes.iter().sum::<usize>(), 6);
        assert!(sizes.len() >= 2);
    }

    #[test]
    fn one_batch_in_flight_and_order_is_kept() {
        let mut o = Outbox::new(limits(), "pk");
        fill(&mut o, 45, 0, 0);
        let mut ids = ids();
        let a = o.next_send(0, Some(0), &mut ids).unwrap();
        assert!(o.next_send(0, Some(0), &mut ids).is_none(), "second request waits for the first answer");
        assert!(o.in_flight());
        o.on_answer(&a.batch_id, Some(200), None, 1, 0.5, &mut ids);
        let b = o.next_send(1, Some(1), &mut ids).unwrap();
        o.on_answer(&b.batch_id, Some(202), None, 2, 0.5, &mut ids);
        let c = o.next_send(2, Some(2), &mut ids).unwrap();
        let all: Vec<String> = [ids_of(&a), ids_of(&b), ids_of(&c)].concat();
        assert_eq!(all, (0..45).map(|n| format!("e{n}")).collect::<Vec<_>>());
        assert_eq!(o.on_answer(&c.batch_id, Some(202), None, 3, 0.5, &mut ids), Answer::Delivered { events: 5 });
        assert_eq!(o.take_report(), Report { sent: 45, failed: 0, pending: 0, dropped: 0 });
    }

    #[test]
    fn retries_keep_batch_id_and_count_attempts_with_backoff() {
        let mut o = Outbox::new(limits(), "pk");
        fill(&mut o, 3, 0, 0);
        let mut ids = ids();
        let first = o.next_send(0, Some(0), &mut ids).unwrap();
        assert_eq!(
            o.on_answer(&first.batch_id, Some(500), None, 100, 0.5, &mut ids),
            Answer::RetryAt { at: 600, attempt: 1 }
        );
        assert!(o.next_send(599, None, &mut ids).is_none());
        let second = o.next_send(600, None, &mut ids).unwrap();
        assert_eq!((second.batch_id.as_str(), second.attempt), (first.batch_id.as_str(), 2));
        assert_eq!(ids_of(&second), ids_of(&first), "same event ids on every resend");
        assert_eq!(
            o.on_answer(&second.batch_id, None, None, 700, 0.5, &mut ids),
            Answer::RetryAt { at: 1700, attempt: 2 }
        );
        // An explicit flush skips our own backoff, once.
        let third = o.next_send(800, Some(800), &mut ids).unwrap();
        assert_eq!(third.attempt, 3);
        assert_eq!(
            o.on_answer(&third.batch_id, Some(502), None, 850, 0.5, &mut ids),
            Answer::RetryAt { at: 2850, attempt: 3 }
        );
        assert!(o.next_send(860, Some(800), &mut ids).is_none(), "the same flush does not retry it again");
        assert!(o.next_send(3000, Some(800), &mut ids).is_none(), "not even once its wait has passed");
        let third = o.next_send(900, Some(900), &mut ids).unwrap();
        assert_eq!(third.attempt, 4, "a new flush does");
        assert_eq!(o.on_answer(&third.batch_id, Some(202), None, 900, 0.5, &mut ids), Answer::Delivered { events: 3 });
    }

    #[test]
    fn retry_after_is_honoured_even_by_flush() {
        let mut o = Outbox::new(limits(), "pk");
        fill(&mut o, 1, 0, 0);
        let mut ids = ids();
        let out = o.next_send(0, Some(0), &mut ids).unwrap();
        assert_eq!(
            o.on_answer(&out.batch_id, Some(429), Some(2000), 10, 0.9, &mut ids),
            Answer::RetryAt { at: 2010, attempt: 1 }
        );
        assert!(o.next_send(2009, Some(2009), &mut ids).is_none(), "flush waits for the server's Retry-After");
        assert!(o.next_send(2010, None, &mut ids).is_some());
        // Retry-After on a 500 is not an instruction we must follow.
        let mut o = Outbox::new(limits(), "pk");
        fill(&mut o, 1, 0, 0);
        let out = o.next_send(0, Some(0), &mut ids).unwrap();
        assert_eq!(
            o.on_answer(&out.batch_id, Some(500), Some(90_000), 0, 0.5, &mut ids),
            Answer::RetryAt { at: 500, attempt: 1 }
        );
    }

    #[test]
    fn gives_up_after_max_age() {
        let mut o = Outbox::new(limits(), "pk");
        fill(&mut o, 2, 0, 0);
        let mut ids = ids();
        let mut now = 5000; // the flush interval
        let mut attempts = 0;
        loop {
            let out = o.next_send(now, None, &mut ids).expect("a retry is due");
            attempts += 1;
            match o.on_answer(&out.batch_id, Some(503), None, now, 0.5, &mut ids) {
                Answer::RetryAt { at, .. } => now = at,
                Answer::Failed { events, why } => {
                    assert_eq!(events, 2);
                    assert!(why.starts_with("gave up after"), "{why}");
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(now <= 5000 + 24 * 3600 * 1000);
        assert!((1440..1460).contains(&attempts), "about one attempt a minute for a day: {attempts}");
        assert_eq!(o.take_report(), Report { sent: 0, failed: 2, pending: 0, dropped: 0 });
    }

    #[test]
    fn too_large_splits_in_halves_until_one_event() {
        let mut o = Outbox::new(limits(), "pk");
        fill(&mut o, 5, 0, 0);
        let mut ids = ids();
        let whole = o.next_send(0, Some(0), &mut ids).unwrap();
        assert_eq!(o.on_answer(&whole.batch_id, Some(413), None, 0, 0.5, &mut ids), Answer::Split);
        let a = o.next_send(0, None, &mut ids).unwrap();
        assert_eq!((ids_of(&a), a.attempt), (vec!["e0".to_string(), "e1".to_string()], 1));
        assert_ne!(a.batch_id, whole.batch_id, "a half is a new batch");
        o.on_answer(&a.batch_id, Some(202), None, 0, 0.5, &mut ids);
        let b = o.next_send(0, None, &mut ids).unwrap();
        assert_eq!(ids_of(&b), ["e2", "e3", "e4"]);
        assert_eq!(o.on_answer(&b.batch_id, Some(413), None, 0, 0.5, &mut ids), Answer::Split);
        let c = o.next_send(0, None, &mut ids).unwrap();
        assert_eq!(ids_of(&c), ["e2"]);
        let Answer::Failed { events: 1, why } = o.on_answer(&c.batch_id, Some(413), None, 0, 0.5, &mut ids) else {
            panic!()
        };
        assert!(why.contains("single event"));
        let d = o.next_send(0, None, &mut ids).unwrap();
        assert_eq!(ids_of(&d), ["e3", "e4"]);
        o.on_answer(&d.batch_id, Some(200), None, 0, 0.5, &mut ids);
        assert_eq!(o.take_report(), Report { sent: 4, failed: 1, pending: 0, dropped: 0 });
    }

    #[test]
    fn other_client_errors_drop_the_batch_as_failed() {
        let mut o = Outbox::new(limits(), "pk");
        fill(&mut o, 4, 0, 0);
        let mut ids = ids();
        let out = o.next_send(0, Some(0), &mut ids).unwrap();
        let Answer::Failed { events: 4, why } = o.on_answer(&out.batch_id, Some(400), None, 0, 0.5, &mut ids) else {
            panic!()
        };
        assert!(why.contains("400"));
        assert_eq!(o.take_report(), Report { sent: 0, failed: 4, pending: 0, dropped: 0 });
        assert_eq!(o.take_report(), Report::default(), "a report covers what happened since the last one");
    }

    #[test]
    fn a_full_outbox_drops_the_oldest_waiting_events() {
        let mut o = Outbox::new(Limits { max_queue_events: 10, ..limits() }, "pk");
        fill(&mut o, 5, 0, 0);
        let mut ids = ids();
        let inflight = o.next_send(0, Some(0), &mut ids).unwrap();
        let dropped: usize = (5..17).map(|n| o.push(event(n, 0), 0).1).sum();
        assert_eq!(dropped, 7, "push says how many it dropped");
        assert_eq!(o.pending(), 10);
        o.on_answer(&inflight.batch_id, Some(202), None, 0, 0.5, &mut ids);
        let next = o.next_send(0, Some(0), &mut ids).unwrap();
        assert_eq!(
            ids_of(&next),
            (12..17).map(|n| format!("e{n}")).collect::<Vec<_>>(),
            "the in-flight batch is never dropped"
        );
        assert_eq!(o.take_report(), Report { sent: 5, failed: 0, pending: 5, dropped: 7 });
    }

    #[test]
    fn opting_out_drops_the_batch_in_flight_instead_of_retrying_it() {
        let mut o = Outbox::new(limits(), "pk");
        fill(&mut o, 3, 0, 0);
        let mut ids = ids();
        let out = o.next_send(0, Some(0), &mut ids).unwrap();
        fill(&mut o, 2, 0, 1);
        assert_eq!(o.stop(), 2, "waiting events are dropped at once");
        assert_eq!(o.on_answer(&out.batch_id, Some(503), None, 5, 0.5, &mut ids), Answer::Dropped { events: 3 });
        assert_eq!(o.take_report(), Report { sent: 0, failed: 0, pending: 0, dropped: 5 });
        o.resume();
        fill(&mut o, 1, 0, 10);
        let out = o.next_send(10, Some(10), &mut ids).unwrap();
        assert!(matches!(o.on_answer(&out.batch_id, Some(503), None, 10, 0.5, &mut ids), Answer::RetryAt { .. }));
    }

    #[test]
    fn a_send_while_offline_spends_no_attempt() {
        let mut o = Outbox::new(limits(), "pk");
        fill(&mut o, 2, 0, 0);
        let mut ids = ids();
        let out = o.next_send(0, Some(0), &mut ids).unwrap();
        assert!(o.on_offline(&out.batch_id));
        assert!(!o.on_offline(&out.batch_id), "only a batch in flight");
        let again = o.next_send(10, None, &mut ids).unwrap();
        assert_eq!((again.batch_id, again.attempt), (out.batch_id, 1), "same batch, still attempt 1");
    }

    #[test]
    fn hiding_the_page_sends_what_fits_in_the_keepalive_budget_in_order() {
        let mut o = Outbox::new(limits(), "pk");
        fill(&mut o, 200, 0, 0);
        let mut ids = ids();
        let out = o.drain_for_hide(0, 60 * 1024, &mut ids);
        let bytes: usize = out.iter().map(|b| b.body.len()).sum();
        assert!(bytes <= 60 * 1024, "{bytes} bytes");
        assert!(out.len() >= 2, "{} requests", out.len());
        let sent: Vec<String> = out.iter().flat_map(ids_of).collect();
        let n = sent.len();
        assert!(n >= 40, "about 1.4 KB per event: {n} fit");
        assert_eq!(sent, (0..n).map(|i| format!("e{i}")).collect::<Vec<_>>(), "oldest first");
        assert_eq!(o.pending(), 200, "nothing is forgotten until acknowledged");
        // Answers come back in any order, for any of the batches in flight.
        for b in out.iter().rev() {
            assert_eq!(
                o.on_answer(&b.batch_id, Some(202), None, 1, 0.5, &mut ids),
                Answer::Delivered { events: b.events }
            );
        }
        assert_eq!(o.pending(), 200 - n);
        let next = o.next_send(2, Some(2), &mut ids).unwrap();
        assert_eq!(ids_of(&next)[0], format!("e{n}"), "the rest follows in order");
    }

    #[test]
    fn hiding_the_page_leaves_the_batch_in_flight_alone_and_honours_a_small_budget() {
        let mut o = Outbox::new(limits(), "pk");
        fill(&mut o, 30, 0, 0);
        let mut ids = ids();
        let inflight = o.next_send(0, Some(0), &mut ids).unwrap();
        let out = o.drain_for_hide(1, 5000, &mut ids);
        assert!(out.iter().all(|b| b.batch_id != inflight.batch_id));
        assert!(out.iter().map(|b| b.body.len()).sum::<usize>() <= 5000);
        assert_eq!(o.drain_for_hide(1, 100, &mut ids), vec![], "nothing fits in 100 bytes");
        let Answer::RetryAt { .. } = o.on_answer(&out[0].batch_id, None, None, 2, 0.5, &mut ids) else { panic!() };
        assert_eq!(
            o.on_answer(&inflight.batch_id, Some(200), None, 3, 0.5, &mut ids),
            Answer::Delivered { events: 20 }
        );
    }

    #[test]
    fn stale_answers_change_nothing() {
        let mut o = Outbox::new(limits(), "pk");
        fill(&mut o, 1, 0, 0);
        let mut ids = ids();
        let out = o.next_send(0, Some(0), &mut ids).unwrap();
        assert_eq!(o.on_answer("someone-else", Some(202), None, 0, 0.5, &mut ids), Answer::Unknown);
        assert!(o.in_flight());
        assert_eq!(o.on_answer(&out.batch_id, Some(202), None, 0, 0.5, &mut ids), Answer::Delivered { events: 1 });
        assert_eq!(o.on_answer(&out.batch_id, Some(202), None, 0, 0.5, &mut ids), Answer::Unknown);
    }
}
