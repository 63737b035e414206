//! The outbox: events waiting to be sent, and the batches being sent or retried.
//!
//! A pure state machine. The browser layer asks it what to send
//! ([`Outbox::next_send`]), does the fetch, and reports the answer
//! ([`Outbox::on_answer`]); the outbox decides batching, backoff, splitting
//! and dropping. One batch is in flight at a time, so events reach the relay
//! in the order they were tracked.
//!
//! Persistence is write-through: once [`Outbox::persist_as`] names the page
//! that owns this outbox, every change to an event's fate is also recorded
//! as a [`Change`] (one [`Record`] per event, keyed by the event id) for the
//! browser layer to write to storage. [`Outbox::adopt`] takes back records
//! left by pages that are gone (an earlier load, a closed tab), with their
//! batch ids, attempt counts and schedules.

use crate::config::{Config, ENVELOPE_BYTES};
use crate::json::{quote, Json, ObjectWriter};
use crate::retry::{classify, RetryPolicy, Verdict};
use crate::time::format_millis;
use crate::wire::{LIBRARY_JSON, VERSION};

/// How long a batch found in flight in storage (sent by a page that is gone,
/// often as a keepalive request that outlived it) is left alone before it is
/// sent again: the request timeout plus a margin, so the same events are
/// never on the wire twice at once.
pub const LEASE_MS: i64 = 15_000;

/// What happened to the events since the last [`Outbox::take_report`]
/// (what `flush()` resolves with).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Acknowledged by the relay.
    pub sent: u64,
    /// Refused by the relay (4xx), or retried for longer than the policy allows.
    pub failed: u64,
    /// Still waiting to be sent or retried.
    pub pending: u64,
    /// Dropped by policy before sending: queue full, or opt-out.
    pub dropped: u64,
    /// Why the last events were dropped, when any were.
    pub dropped_why: Option<&'static str>,
}

/// Why events were dropped (see [`Report::dropped_why`]).
pub const DROPPED_FULL: &str = "the queue was full (maxQueueEvents or maxQueueBytes): the oldest were dropped";
pub const DROPPED_OPT_OUT: &str = "the user opted out";

/// One stored event: what storage holds, keyed by `id`.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The event id.
    pub id: String,
    /// The page that sends it; another page adopts it once that page is gone.
    pub owner: String,
    /// The event's JSON, as it is sent.
    pub json: String,
    /// When it was queued (ms).
    pub at: i64,
    /// Its place among the events its page queued in the same millisecond.
    pub seq: u64,
    /// The batch it was sent in, if it was: resent with the same batch id and
    /// the next attempt number.
    pub batch: Option<Mark>,
}

/// A batch as stored with each of its events.
#[derive(Debug, Clone, PartialEq)]
pub struct Mark {
    pub id: String,
    pub attempt: u32,
    pub first: Option<i64>,
    pub last: i64,
    pub state: State,
}

impl Record {
    /// Reads a record back from its stored JSON; `None` for anything that
    /// is not one (a corrupt or foreign entry is skipped, never sent).
    pub fn from_json(v: &Json) -> Option<Record> {
        let text = |v: &Json, k: &str| v.get(k).and_then(Json::as_str).map(str::to_string);
        let batch = match v.get("batch") {
            None | Some(Json::Null) => None,
            Some(m) => {
                let state = match m.get("state")? {
                    Json::String(s) if s == "Ready" => State::Ready,
                    Json::String(s) if s == "InFlight" => State::InFlight,
                    w => match (w.get("Waiting"), w.get("Leased")) {
                        (Some(w), _) => {
                            State::Waiting { until: w.get("until")?.as_i64()?, firm: w.get("firm")?.as_bool()? }
                        }
                        (None, l) => State::Leased { until: l?.get("until")?.as_i64()? },
                    },
                };
                Some(Mark {
                    id: text(m, "id")?,
                    attempt: u32::try_from(m.get("attempt")?.as_u64()?).ok()?,
                    first: m.get("first").and_then(Json::as_i64),
                    last: m.get("last")?.as_i64()?,
                    state,
                })
            }
        };
        Some(Record {
            id: text(v, "id")?,
            owner: text(v, "owner")?,
            json: text(v, "json")?,
            seq: v.get("seq").and_then(Json::as_u64).unwrap_or(0),
            at: v.get("at")?.as_i64()?,
            batch,
        })
    }

    /// The stored form, which [`Record::from_json`] reads (the layout serde
    /// gave it in earlier versions, so stored records stay readable).
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(self.json.len() + 256);
        let mut w = ObjectWriter::new(&mut out);
        w.str("id", &self.id).str("owner", &self.owner).str("json", &self.json);
        w.int("at", self.at).int("seq", self.seq.min(i64::MAX as u64) as i64);
        if let Some(m) = &self.batch {
            let mut b = ObjectWriter::new(w.key("batch"));
            b.str("id", &m.id).int("attempt", m.attempt.into());
            match m.first {
                Some(first) => drop(b.int("first", first)),
                None => b.key("first").push_str("null"),
            }
            b.int("last", m.last);
            let state = b.key("state");
            match m.state {
                State::Ready => quote("Ready", state),
                State::InFlight => quote("InFlight", state),
                State::Waiting { until, firm } => {
                    let mut outer = ObjectWriter::new(state);
                    let mut inner = ObjectWriter::new(outer.key("Waiting"));
                    inner.int("until", until).bool("firm", firm).end();
                    outer.end();
                }
                State::Leased { until } => {
                    let mut outer = ObjectWriter::new(state);
                    ObjectWriter::new(outer.key("Leased")).int("until", until).end();
                    outer.end();
                }
            }
            b.end();
        }
        w.end();
        out
    }
}

/// What to write to storage.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Put(Record),
    /// The event was acknowledged, refused or dropped, or another page took
    /// it over: forget the record stored under `owner`.
    Delete {
        owner: String,
        id: String,
    },
}

/// The storage namespace of one relay and write key: events queued for one
/// are never sent to another, and the key stays short (FNV-1a, 64 bits).
pub fn storage_scope(write_key: &str, endpoint: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in write_key.bytes().chain([0]).chain(endpoint.bytes()) {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    let mut scope = String::with_capacity(16);
    for byte in hash.to_be_bytes() {
        crate::json::push_hex(byte, &mut scope);
    }
    scope
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
#[derive(Debug, Clone, PartialEq)]
struct Queued {
    id: String,
    json: String,
    queued_at: i64,
    /// Orders events of one millisecond (ids are random within one).
    seq: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum State {
    Ready,
    InFlight,
    /// Waiting to be retried. `firm`: the relay named the time (Retry-After),
    /// and not even an explicit flush may come earlier.
    Waiting {
        until: i64,
        firm: bool,
    },
    /// Sent by a page that is gone, maybe still on the wire (often a
    /// keepalive request that outlived its page, most likely delivered):
    /// sent again only after `until`, and meanwhile it holds up nothing else.
    Leased {
        until: i64,
    },
}

#[derive(Debug, Clone, PartialEq)]
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
    pub max_queue_bytes: usize,
    pub retry: RetryPolicy,
}

impl From<&Config> for Limits {
    fn from(c: &Config) -> Self {
        Limits {
            flush_at: c.flush_at,
            flush_interval_ms: c.flush_interval_ms,
            max_batch_bytes: c.max_batch_bytes,
            max_queue_events: c.max_queue_events,
            max_queue_bytes: c.max_queue_bytes,
            retry: c.retry,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Outbox {
    limits: Limits,
    write_key: String,
    /// Events not yet in a batch, oldest first. A `Vec`, not a `VecDeque`:
    /// events leave by whole batches (one `drain` each) from a queue of at
    /// most `maxQueueEvents`, and a `VecDeque`'s own code cost the browser
    /// bundle 2 KB gzip (README, "Size").
    queue: Vec<Queued>,
    queued_bytes: usize,
    /// Formed batches, oldest first; only the front one is ever in flight.
    batches: Vec<Formed>,
    report: Report,
    /// Opted out: nothing new is queued and nothing is retried.
    stopped: bool,
    /// The page that owns this outbox, once it persists ([`Outbox::persist_as`]).
    owner: Option<String>,
    /// Changes not yet taken by [`Outbox::take_changes`].
    changes: Vec<Change>,
    /// Queued events up to this time were adopted from pages that are gone:
    /// they have waited long enough and go without waiting for a threshold.
    adopted_until: i64,
    /// The last event's [`Record::seq`].
    seq: u64,
}

impl Outbox {
    pub fn new(limits: Limits, write_key: impl Into<String>) -> Self {
        Outbox {
            limits,
            write_key: write_key.into(),
            queue: Vec::new(),
            queued_bytes: 0,
            batches: Vec::new(),
            report: Report::default(),
            stopped: false,
            owner: None,
            changes: Vec::new(),
            adopted_until: i64::MIN,
            seq: 0,
        }
    }

    /// Starts recording changes for storage, as the page `owner`. What is
    /// already pending (tracked before storage opened) is recorded at once.
    pub fn persist_as(&mut self, owner: impl Into<String>) {
        self.owner = Some(owner.into());
        for at in 0..self.batches.len() {
            self.put_batch(at);
        }
        for at in 0..self.queue.len() {
            self.put_queued(at);
        }
    }

    /// Whether [`Outbox::persist_as`] named an owner.
    pub fn persisting(&self) -> bool {
        self.owner.is_some()
    }

    /// The changes to write to storage since the last call, in order.
    pub fn take_changes(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.changes)
    }

    fn put_queued(&mut self, at: usize) {
        let Some(owner) = &self.owner else { return };
        let q = &self.queue[at];
        let record = Record {
            id: q.id.clone(),
            owner: owner.clone(),
            json: q.json.clone(),
            at: q.queued_at,
            seq: q.seq,
            batch: None,
        };
        self.changes.push(Change::Put(record));
    }

    /// Records every event of `batches[at]` with the batch's current state.
    fn put_batch(&mut self, at: usize) {
        let Some(owner) = &self.owner else { return };
        let formed = &self.batches[at];
        let mark = Mark {
            id: formed.batch_id.clone(),
            attempt: formed.attempt,
            first: formed.first_sent_at,
            last: formed.last_sent_at,
            state: formed.state.clone(),
        };
        for q in &formed.events {
            let record = Record {
                id: q.id.clone(),
                owner: owner.clone(),
                json: q.json.clone(),
                at: q.queued_at,
                seq: q.seq,
                batch: Some(mark.clone()),
            };
            self.changes.push(Change::Put(record));
        }
    }

    fn forget(&mut self, events: &[Queued]) {
        let Some(owner) = &self.owner else { return };
        self.changes.extend(events.iter().map(|q| Change::Delete { owner: owner.clone(), id: q.id.clone() }));
    }

    /// Every pending event as a record, for a synchronous copy when the page
    /// may be closing (see `persist`). Empty unless persisting.
    pub fn snapshot(&mut self) -> Vec<Record> {
        let saved = std::mem::take(&mut self.changes);
        for at in 0..self.batches.len() {
            self.put_batch(at);
        }
        for at in 0..self.queue.len() {
            self.put_queued(at);
        }
        std::mem::replace(&mut self.changes, saved)
            .into_iter()
            .filter_map(|c| if let Change::Put(r) = c { Some(r) } else { None })
            .collect()
    }

    /// Removes, without counting them, the events not in `ours`: another page
    /// took them over while this one was frozen (back/forward cache).
    pub fn keep_only(&mut self, ours: &[String]) {
        self.queue.retain(|q| ours.contains(&q.id));
        self.queued_bytes = self.queue.iter().map(|q| q.json.len() + 1).sum();
        for formed in &mut self.batches {
            if formed.state != State::InFlight {
                formed.events.retain(|q| ours.contains(&q.id));
            }
        }
        self.batches.retain(|b| !b.events.is_empty());
    }

    /// Queues event `id` given as its JSON (see [`crate::wire::Event`]). When
    /// the outbox is full (events or bytes) the oldest waiting events are
    /// dropped (and counted) to make room; the second value says how many.
    pub fn push(&mut self, id: String, event_json: String, now: i64) -> (Push, usize) {
        let dropped = self.make_room(1, event_json.len() + 1);
        self.queued_bytes += event_json.len() + 1;
        self.seq += 1;
        self.queue.push(Queued { id, json: event_json, queued_at: now, seq: self.seq });
        self.put_queued(self.queue.len() - 1);
        let push = if self.queue.len() >= self.limits.flush_at
            || self.queued_bytes + ENVELOPE_BYTES >= self.limits.max_batch_bytes
        {
            Push::SendNow
        } else {
            Push::SendAt(self.queue[0].queued_at + self.limits.flush_interval_ms as i64)
        };
        (push, dropped)
    }

    /// Drops the oldest waiting events until `events` more events of `bytes`
    /// in all fit in the limits; returns how many were dropped.
    fn make_room(&mut self, events: usize, bytes: usize) -> usize {
        let mut dropped = 0;
        let mut held = self.pending_bytes();
        while self.pending() + events > self.limits.max_queue_events || held + bytes > self.limits.max_queue_bytes {
            match self.drop_oldest() {
                Some(size) => held -= size,
                None => break,
            }
            dropped += 1;
            self.report.dropped_why = Some(DROPPED_FULL);
        }
        dropped
    }

    /// Bytes of event JSON pending, as counted against `max_queue_bytes`.
    pub fn pending_bytes(&self) -> usize {
        self.queued_bytes + self.batches.iter().flat_map(|b| &b.events).map(|q| q.json.len() + 1).sum::<usize>()
    }

    /// Drops the oldest event not in flight; returns its size.
    fn drop_oldest(&mut self) -> Option<usize> {
        // Never touch the batch in flight: its answer is on its way.
        let waiting = self.batches.iter().position(|b| b.state != State::InFlight);
        let dropped = if let Some(at) = waiting {
            let q = self.batches[at].events.remove(0);
            if self.batches[at].events.is_empty() {
                self.batches.remove(at);
            }
            q
        } else {
            let q = (!self.queue.is_empty()).then(|| self.queue.remove(0))?;
            self.queued_bytes -= q.json.len() + 1;
            q
        };
        self.forget(std::slice::from_ref(&dropped));
        self.report.dropped += 1;
        Some(dropped.json.len() + 1)
    }

    /// Takes over `records` left in storage by pages that are gone: each
    /// batch keeps its id, attempt count and schedule (one that was in flight
    /// waits [`LEASE_MS`] after its last send, for the request that may still
    /// be on its way), and the events are recorded again as this page's.
    /// Records already here are skipped. Returns how many were adopted.
    pub fn adopt(&mut self, mut records: Vec<Record>) -> usize {
        // Linear lookups and an insertion sort instead of a hash set and the
        // standard sorts: this runs only when pages are adopted, on at most
        // `max_queue_events` records (usually already in order), and the
        // general versions cost kilobytes of bundle.
        let mut known: Vec<String> =
            self.queue.iter().chain(self.batches.iter().flat_map(|b| &b.events)).map(|q| q.id.clone()).collect();
        records.retain(|r| {
            let new = !known.contains(&r.id);
            if new {
                known.push(r.id.clone());
            }
            new
        });
        for i in 1..records.len() {
            let mut j = i;
            while j > 0 && (records[j - 1].at, records[j - 1].seq) > (records[j].at, records[j].seq) {
                records.swap(j - 1, j);
                j -= 1;
            }
        }
        if self.owner.is_some() {
            let gone = records.iter().map(|r| Change::Delete { owner: r.owner.clone(), id: r.id.clone() });
            self.changes.extend(gone);
        }
        let adopted = records.len();
        let mut formed: Vec<Formed> = Vec::new();
        let mut queued: Vec<Queued> = Vec::new();
        for r in records {
            let q = Queued { id: r.id, json: r.json, queued_at: r.at, seq: r.seq };
            let Some(mark) = r.batch else {
                queued.push(q);
                continue;
            };
            if let Some(batch) = formed.iter_mut().find(|b| b.batch_id == mark.id) {
                batch.events.push(q);
                continue;
            }
            let state = match mark.state {
                State::InFlight => State::Leased { until: mark.last.saturating_add(LEASE_MS) },
                other => other,
            };
            formed.push(Formed {
                batch_id: mark.id,
                attempt: mark.attempt,
                events: vec![q],
                first_sent_at: mark.first,
                last_sent_at: mark.last,
                state,
            });
        }
        // Adopted batches go first (they are older), but after any batch of
        // ours already in flight: only the front batch is sent normally.
        let at = self.batches.iter().take_while(|b| b.state == State::InFlight).count();
        for (i, batch) in formed.into_iter().enumerate() {
            self.batches.insert(at + i, batch);
            self.put_batch(at + i);
        }
        // Merge the adopted events into ours by time; ours keep their order.
        let own = std::mem::take(&mut self.queue);
        let mut adopted_at = Vec::new();
        let mut queued = queued.into_iter().peekable();
        for next in own {
            while let Some(a) = queued.next_if(|a| a.queued_at <= next.queued_at) {
                adopted_at.push(self.queue.len());
                self.queue.push(a);
            }
            self.queue.push(next);
        }
        for a in queued {
            adopted_at.push(self.queue.len());
            self.queue.push(a);
        }
        for &at in &adopted_at {
            self.adopted_until = self.adopted_until.max(self.queue[at].queued_at);
        }
        self.queued_bytes = self.queue.iter().map(|q| q.json.len() + 1).sum();
        for at in adopted_at {
            self.put_queued(at);
        }
        self.make_room(0, 0);
        adopted
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
        if self.in_flight() {
            return None;
        }
        // The first batch that is not a running lease decides; a lease that
        // ran out is sent in its place in the order.
        let head = self.batches.iter().position(|b| !matches!(b.state, State::Leased { until } if until > now));
        let at = match head {
            Some(at) => at,
            None if self.due(now, flush_since.is_some()) => {
                let events = self.take_batch_events(self.limits.max_batch_bytes);
                self.batches.push(Formed {
                    batch_id: new_id(),
                    attempt: 0,
                    events,
                    first_sent_at: None,
                    last_sent_at: i64::MIN,
                    state: State::Ready,
                });
                self.batches.len() - 1
            }
            None => return None,
        };
        let front = &mut self.batches[at];
        match front.state {
            State::InFlight => return None,
            State::Waiting { until, firm } => {
                // A flush tries each batch once; after that, the schedule decides
                // (a flush against a dead or slow relay must end).
                let tried_in_this_flush = flush_since.is_some_and(|since| front.last_sent_at >= since);
                let early = now < until && (firm || flush_since.is_none());
                if tried_in_this_flush || early {
                    return None;
                }
            }
            State::Ready | State::Leased { .. } => {}
        }
        front.state = State::InFlight;
        front.attempt += 1;
        front.first_sent_at.get_or_insert(now);
        front.last_sent_at = now;
        let out = Outgoing {
            batch_id: front.batch_id.clone(),
            attempt: front.attempt,
            events: front.events.len(),
            body: body(&self.write_key, front, now),
        };
        // Stored as in flight before the request leaves: a page that takes
        // these events over later waits out the lease instead of racing it.
        self.put_batch(at);
        Some(out)
    }

    fn due(&self, now: i64, force: bool) -> bool {
        let Some(first) = self.queue.first() else { return false };
        force
            || first.queued_at <= self.adopted_until
            || self.queue.len() >= self.limits.flush_at
            || self.queued_bytes + ENVELOPE_BYTES >= self.limits.max_batch_bytes
            || now >= first.queued_at + self.limits.flush_interval_ms as i64
    }

    /// Takes the oldest queued events for one batch: at most `flush_at`
    /// events and a body of at most `max_bytes` (events are at most 32 KB,
    /// so with the normal limit at least one always fits).
    fn take_batch_events(&mut self, max_bytes: usize) -> Vec<Queued> {
        let (mut count, mut bytes) = (0, ENVELOPE_BYTES);
        for next in &self.queue {
            let size = next.json.len() + 1;
            if count == self.limits.flush_at || bytes + size > max_bytes {
                break;
            }
            bytes += size;
            count += 1;
        }
        self.queued_bytes -= bytes - ENVELOPE_BYTES;
        self.queue.drain(..count).collect()
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
            let formed = self.batches.remove(at);
            self.forget(&formed.events);
            self.report.dropped += events as u64;
            self.report.dropped_why = Some(DROPPED_OPT_OUT);
            return Answer::Dropped { events };
        }
        match verdict {
            Verdict::Delivered => {
                let formed = self.batches.remove(at);
                self.forget(&formed.events);
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
                front.state = State::Waiting { until: due, firm: hint.is_some() };
                self.put_batch(at);
                Answer::RetryAt { at: due, attempt }
            }
            Verdict::Split if events > 1 => {
                let mut formed = self.batches.remove(at);
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
                self.put_batch(at);
                self.put_batch(at + 1);
                Answer::Split
            }
            Verdict::Split => self.fail(at, "the relay refused a single event as too large (413)".into()),
            Verdict::Reject => {
                self.fail(at, format!("the relay refused the batch with status {}", u32::from(status.unwrap_or(0))))
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
        self.put_batch(at);
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
                self.batches.push(formed);
            }
            let formed = &mut self.batches[i];
            i += 1;
            match formed.state {
                // Another request may carry these: not ours to race.
                State::InFlight | State::Leased { .. } => continue,
                // The relay failed or asked us to wait: what follows stays
                // stored, in order, for this page later or the next one.
                State::Waiting { .. } => break,
                State::Ready => {}
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
            self.put_batch(i - 1);
        }
        out
    }

    fn fail(&mut self, at: usize, why: String) -> Answer {
        let formed = self.batches.remove(at);
        let events = formed.events.len();
        self.forget(&formed.events);
        self.report.failed += events as u64;
        Answer::Failed { events, why }
    }

    /// When the caller should next call [`Outbox::next_send`]: `None` when
    /// nothing waits or a request is in flight (its answer will tell).
    pub fn next_wakeup(&self) -> Option<i64> {
        if self.in_flight() {
            return None;
        }
        let mut wake = None;
        for formed in &self.batches {
            let at = match formed.state {
                State::Leased { until } => until,
                State::Waiting { until, .. } => until,
                State::Ready | State::InFlight => i64::MIN,
            };
            wake = Some(wake.map_or(at, |w: i64| w.min(at)));
            if !matches!(formed.state, State::Leased { .. }) {
                return wake;
            }
        }
        let queued = self.queue.first().map(|q| match q.queued_at <= self.adopted_until {
            true => i64::MIN,
            false => q.queued_at + self.limits.flush_interval_ms as i64,
        });
        match (wake, queued) {
            (Some(w), Some(q)) => Some(w.min(q)),
            (w, q) => w.or(q),
        }
    }

    /// Whether a request of this page is in flight.
    pub fn in_flight(&self) -> bool {
        self.batches.iter().any(|b| b.state == State::InFlight)
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
        while self.drop_oldest().is_some() {
            dropped += 1;
            self.report.dropped_why = Some(DROPPED_OPT_OUT);
        }
        dropped
    }

    /// Opt-in again after [`Outbox::stop`].
    pub fn resume(&mut self) {
        self.stopped = false;
    }

    /// Counts since the previous report, with the current pending count.
    pub fn take_report(&mut self) -> Report {
        let report = std::mem::take(&mut self.report);
        Report { pending: self.pending() as u64, ..report }
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
    quote(write_key, &mut out);
    out.push_str(",\"batchId\":");
    quote(&formed.batch_id, &mut out);
    out.push_str(",\"sentAt\":\"");
    out.push_str(&format_millis(now));
    out.push_str("\",\"attempt\":");
    out.push_str(&formed.attempt.to_string());
    out.push_str(",\"sdk\":");
    out.push_str(LIBRARY_JSON);
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
            max_queue_bytes: 2 << 20,
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
            last = o.push(format!("e{}", n), event(n, pad), now).0;
        }
        last
    }

    #[test]
    fn flushes_at_twenty_events() {
        let mut o = Outbox::new(limits(), "pk");
        assert_eq!(fill(&mut o, 19, 0, 1000), Push::SendAt(6000));
        assert_eq!(o.next_send(1000, None, &mut ids()), None, "19 events wait for the timer");
        assert_eq!(o.push(format!("e{}", 19), event(19, 0), 1001), (Push::SendNow, 0));
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
        let pushes: Vec<Push> = (0..6).map(|n| o.push(format!("e{}", n), event(n, 10_000), 0).0).collect();
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
        assert_eq!(o.take_report(), Report { sent: 45, ..Report::default() });
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
        assert_eq!(o.take_report(), Report { failed: 2, ..Report::default() });
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
        assert_eq!(o.take_report(), Report { sent: 4, failed: 1, ..Report::default() });
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
        assert_eq!(o.take_report(), Report { failed: 4, ..Report::default() });
        assert_eq!(o.take_report(), Report::default(), "a report covers what happened since the last one");
    }

    #[test]
    fn a_full_outbox_drops_the_oldest_waiting_events() {
        let mut o = Outbox::new(Limits { max_queue_events: 10, ..limits() }, "pk");
        fill(&mut o, 5, 0, 0);
        let mut ids = ids();
        let inflight = o.next_send(0, Some(0), &mut ids).unwrap();
        let dropped: usize = (5..17).map(|n| o.push(format!("e{}", n), event(n, 0), 0).1).sum();
        assert_eq!(dropped, 7, "push says how many it dropped");
        assert_eq!(o.pending(), 10);
        o.on_answer(&inflight.batch_id, Some(202), None, 0, 0.5, &mut ids);
        let next = o.next_send(0, Some(0), &mut ids).unwrap();
        assert_eq!(
            ids_of(&next),
            (12..17).map(|n| format!("e{n}")).collect::<Vec<_>>(),
            "the in-flight batch is never dropped"
        );
        assert_eq!(
            o.take_report(),
            Report { sent: 5, pending: 5, dropped: 7, dropped_why: Some(DROPPED_FULL), ..Report::default() }
        );
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
        assert_eq!(o.take_report(), Report { dropped: 5, dropped_why: Some(DROPPED_OPT_OUT), ..Report::default() });
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

    /// Storage as the browser layer keeps it: the changes applied in order.
    fn apply(store: &mut std::collections::BTreeMap<String, Record>, o: &mut Outbox) {
        for change in o.take_changes() {
            match change {
                Change::Put(r) => drop(store.insert(format!("{}:{}", r.owner, r.id), r)),
                Change::Delete { owner, id } => drop(store.remove(&format!("{owner}:{id}"))),
            }
        }
    }

    #[test]
    fn storage_holds_exactly_the_unacknowledged_events_with_their_batch() {
        let mut store = Default::default();
        let mut o = Outbox::new(limits(), "pk");
        fill(&mut o, 3, 0, 0);
        assert!(o.take_changes().is_empty(), "nothing is recorded before persist_as");
        o.persist_as("page-a");
        fill(&mut o, 2, 0, 1); // ids e0, e1 again: one record per id
        apply(&mut store, &mut o);
        assert_eq!(store.len(), 3);
        assert!(store.values().all(|r| r.owner == "page-a" && r.batch.is_none()));
        let mut ids = ids();
        let out = o.next_send(10, Some(10), &mut ids).unwrap();
        apply(&mut store, &mut o);
        let mark = store["page-a:e0"].batch.clone().unwrap();
        assert_eq!((mark.id.as_str(), mark.attempt, mark.state), (out.batch_id.as_str(), 1, State::InFlight));
        o.on_answer(&out.batch_id, Some(503), None, 20, 0.5, &mut ids);
        apply(&mut store, &mut o);
        assert_eq!(store["page-a:e1"].batch.as_ref().unwrap().state, State::Waiting { until: 520, firm: false });
        let again = o.next_send(520, None, &mut ids).unwrap();
        o.on_answer(&again.batch_id, Some(202), None, 530, 0.5, &mut ids);
        apply(&mut store, &mut o);
        assert!(store.is_empty(), "acknowledged events are forgotten: {store:?}");
    }

    #[test]
    fn a_later_page_resends_a_stored_batch_with_its_id_and_the_next_attempt() {
        let mut store = Default::default();
        let mut a = Outbox::new(limits(), "pk");
        a.persist_as("page-a");
        fill(&mut a, 3, 0, 0);
        let mut ids = ids();
        let out = a.next_send(0, Some(0), &mut ids).unwrap();
        a.on_answer(&out.batch_id, Some(500), None, 100, 0.5, &mut ids);
        for n in 10..12 {
            a.push(format!("e{n}"), event(n, 0), 200);
        }
        apply(&mut store, &mut a);
        drop(a); // the page is gone

        let mut b = Outbox::new(limits(), "pk");
        b.persist_as("page-b");
        b.push("mine".into(), event(99, 0), 300);
        let mut records: Vec<Record> = store.values().cloned().collect();
        records.push(records[0].clone());
        assert_eq!(b.adopt(records), 5, "a record seen twice is adopted once");
        apply(&mut store, &mut b);
        assert!(store.values().all(|r| r.owner == "page-b"), "adopted events are this page's now");
        assert_eq!(store.len(), 6);
        assert!(b.next_send(599, None, &mut ids).is_none(), "the stored schedule holds: retry due at 600");
        let resent = b.next_send(600, None, &mut ids).unwrap();
        assert_eq!((resent.batch_id.as_str(), resent.attempt), (out.batch_id.as_str(), 2));
        assert_eq!(ids_of(&resent), ids_of(&out), "same events, same ids");
        b.on_answer(&resent.batch_id, Some(202), None, 610, 0.5, &mut ids);
        let rest = b.next_send(610, Some(610), &mut ids).unwrap();
        assert_eq!(ids_of(&rest), ["e10", "e11", "e99"], "then the rest, oldest first");
    }

    #[test]
    fn events_of_one_millisecond_keep_their_order_through_storage() {
        let mut store = Default::default();
        let mut a = Outbox::new(limits(), "pk");
        a.persist_as("page-a");
        fill(&mut a, 12, 0, 7); // ids e0..e11: "e10" sorts before "e2"
        apply(&mut store, &mut a);
        let mut b = Outbox::new(limits(), "pk");
        b.adopt(store.values().cloned().collect());
        let out = b.next_send(8, None, &mut ids()).unwrap();
        assert_eq!(ids_of(&out), (0..12).map(|n| format!("e{n}")).collect::<Vec<_>>());
    }

    /// Page A tracks `count` events and is hidden at `at` (its batches leave
    /// as keepalive requests whose answers it never sees); page B adopts
    /// what A left. Returns B and A's requests.
    fn hidden_then_adopted(count: usize, at: i64, ids: &mut dyn FnMut() -> String) -> (Outbox, Vec<Outgoing>) {
        let mut store = Default::default();
        let mut a = Outbox::new(limits(), "pk");
        a.persist_as("page-a");
        fill(&mut a, count, 0, 0);
        let hidden = a.drain_for_hide(at, 60 * 1024, ids);
        assert!(!hidden.is_empty());
        apply(&mut store, &mut a);
        let mut b = Outbox::new(limits(), "pk");
        b.persist_as("page-b");
        b.adopt(store.values().cloned().collect());
        (b, hidden)
    }

    #[test]
    fn a_batch_stored_in_flight_waits_out_the_lease_before_it_is_sent_again() {
        let mut ids = ids();
        let (mut b, hidden) = hidden_then_adopted(30, 1000, &mut ids);
        let before = 1000 + LEASE_MS - 1;
        assert!(b.next_send(before, Some(before), &mut ids).is_none(), "a flush does not race the lease");
        assert!(
            b.drain_for_hide(before, 60 * 1024, &mut ids).iter().all(|o| o.batch_id != hidden[0].batch_id),
            "nor does hiding the page"
        );
        let resent = b.next_send(1000 + LEASE_MS, None, &mut ids).unwrap();
        assert_eq!((resent.batch_id.as_str(), resent.attempt), (hidden[0].batch_id.as_str(), 2));
    }

    #[test]
    fn a_lease_holds_up_nothing_else_and_is_sent_in_its_place_once_it_runs_out() {
        let mut ids = ids();
        let (mut b, hidden) = hidden_then_adopted(2, 0, &mut ids);
        b.push("mine".into(), event(7, 0), 10);
        assert_eq!(b.next_wakeup(), Some(5010), "this page's flush interval, not the lease");
        let mine = b.next_send(5010, None, &mut ids).unwrap();
        assert_eq!(ids_of(&mine), ["e7"], "the lease does not hold up this page's events");
        assert_eq!(b.next_wakeup(), None, "one request in flight at a time");
        b.on_answer(&mine.batch_id, Some(202), None, 5020, 0.5, &mut ids);
        assert_eq!(b.next_wakeup(), Some(LEASE_MS));
        let again = b.next_send(LEASE_MS, None, &mut ids).unwrap();
        assert_eq!((again.batch_id.as_str(), again.attempt), (hidden[0].batch_id.as_str(), 2));
    }

    #[test]
    fn hiding_the_page_stops_at_a_batch_waiting_for_a_retry_to_keep_the_order() {
        let mut o = Outbox::new(limits(), "pk");
        fill(&mut o, 3, 0, 0);
        let mut ids = ids();
        let first = o.next_send(0, Some(0), &mut ids).unwrap();
        o.on_answer(&first.batch_id, None, None, 10, 0.5, &mut ids);
        for n in 3..6 {
            o.push(format!("e{n}"), event(n, 0), 20);
        }
        assert_eq!(o.drain_for_hide(30, 60 * 1024, &mut ids), vec![], "later events must not overtake e0..e2");
        assert_eq!(o.pending(), 6);
    }

    #[test]
    fn adopted_events_go_before_this_pages_events_and_respect_the_limits() {
        let mut store = Default::default();
        let mut a = Outbox::new(limits(), "pk");
        a.persist_as("page-a");
        fill(&mut a, 8, 0, 0);
        apply(&mut store, &mut a);
        let mut c = Outbox::new(limits(), "pk");
        c.adopt(store.values().cloned().collect());
        assert_eq!(c.next_wakeup(), Some(i64::MIN), "adopted events have waited enough");
        let at_once = c.next_send(1, None, &mut ids()).unwrap();
        assert_eq!(at_once.events, 8);
        let mut b = Outbox::new(Limits { max_queue_events: 10, ..limits() }, "pk");
        b.persist_as("page-b");
        for n in 100..105 {
            b.push(format!("e{n}"), event(n, 0), 50);
        }
        let mut ids = ids();
        let inflight = b.next_send(50, Some(50), &mut ids).unwrap();
        for n in 105..108 {
            b.push(format!("e{n}"), event(n, 0), 60);
        }
        assert_eq!(b.adopt(store.values().cloned().collect()), 8);
        assert_eq!(b.pending(), 10, "16 pending, the oldest 6 not in flight dropped");
        let report = b.take_report();
        assert_eq!((report.dropped, report.dropped_why), (6, Some(DROPPED_FULL)));
        apply(&mut store, &mut b);
        assert!(store.keys().all(|k| k.starts_with("page-b:")), "adopted records move: {store:?}");
        assert!(!store.contains_key("page-b:e0") && store.contains_key("page-b:e6"), "dropped events leave storage");
        b.on_answer(&inflight.batch_id, Some(202), None, 70, 0.5, &mut ids);
        let next = b.next_send(70, Some(70), &mut ids).unwrap();
        assert_eq!(ids_of(&next), ["e6", "e7", "e105", "e106", "e107"], "older events first");
    }

    #[test]
    fn records_read_back_as_written() {
        let mut o = Outbox::new(limits(), "pk");
        o.persist_as("page-a");
        fill(&mut o, 3, 0, 0);
        let mut ids = ids();
        let out = o.next_send(0, Some(0), &mut ids).unwrap();
        o.on_answer(&out.batch_id, Some(429), Some(3000), 5, 0.5, &mut ids);
        fill(&mut o, 1, 0, 9);
        let changes = o.take_changes();
        let records: Vec<&Record> =
            changes.iter().filter_map(|c| if let Change::Put(r) = c { Some(r) } else { None }).collect();
        assert!(records
            .iter()
            .any(|r| r.batch.as_ref().is_some_and(|m| matches!(m.state, State::Waiting { firm: true, .. }))));
        assert!(records.iter().any(|r| r.batch.is_none()));
        for r in records {
            let stored = Json::parse(&r.to_json()).unwrap();
            assert_eq!(Record::from_json(&stored).as_ref(), Some(r));
        }
        assert_eq!(Record::from_json(&Json::parse(r#"{"id": "x", "owner": "p"}"#).unwrap()), None, "not a record");
        // Written by the serde-derived form of earlier versions: still read.
        let old = r#"{"id":"e1","owner":"p","json":"{}","at":5,"seq":2,"batch":{"id":"b1","attempt":2,"first":1,"last":5,"state":{"Waiting":{"until":9,"firm":true}}}}"#;
        let read = Record::from_json(&Json::parse(old).unwrap()).unwrap();
        assert_eq!(read.batch.as_ref().map(|m| &m.state), Some(&State::Waiting { until: 9, firm: true }));
        assert_eq!(read.to_json(), old, "and written the same way");
    }

    #[test]
    fn scopes_separate_relays_and_keys() {
        let a = storage_scope("pk_a", "https://relay.example.com/v1/batch");
        assert_eq!(a.len(), 16);
        assert_eq!(a, storage_scope("pk_a", "https://relay.example.com/v1/batch"));
        assert_ne!(a, storage_scope("pk_b", "https://relay.example.com/v1/batch"));
        assert_ne!(a, storage_scope("pk_a", "https://other.example.com/v1/batch"));
        assert_ne!(storage_scope("ab", "c"), storage_scope("a", "bc"), "the separator counts");
    }

    #[test]
    fn a_page_back_from_the_cache_lets_go_of_events_another_page_took() {
        let mut o = Outbox::new(limits(), "pk");
        o.persist_as("page-a");
        fill(&mut o, 25, 0, 0);
        let mut ids = ids();
        let out = o.next_send(0, Some(0), &mut ids).unwrap();
        let ours: Vec<String> = ["e3", "e21", "e24"].iter().map(|s| s.to_string()).collect();
        o.keep_only(&ours);
        assert_eq!(o.pending(), 20 + 2, "the batch in flight stays: its answer is on its way");
        o.on_answer(&out.batch_id, Some(202), None, 1, 0.5, &mut ids);
        assert_eq!(ids_of(&o.next_send(1, Some(1), &mut ids).unwrap()), ["e21", "e24"]);
    }

    #[test]
    fn the_byte_limit_drops_the_oldest_events() {
        let mut o = Outbox::new(Limits { max_queue_bytes: 40_000, ..limits() }, "pk");
        let size = event(0, 10_000).len() + 1;
        let dropped: usize = (0..5).map(|n| o.push(format!("e{n}"), event(n, 10_000), 0).1).sum();
        assert_eq!(dropped, 5 - 40_000 / size);
        assert!(o.pending_bytes() <= 40_000);
        assert_eq!(o.take_report().dropped_why, Some(DROPPED_FULL));
    }
}
