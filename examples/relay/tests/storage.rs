//! The storage interface, run against both backends (a SQLite file and a
//! fresh PostgreSQL database): dedupe, dead letters, replay, retention,
//! migrations from empty and from the previous version, and (PostgreSQL)
//! leases shared by two relays.

#[macro_use]
mod common;

use std::time::Duration;

use common::*;
use cuecast_relay::storage::admin::DeliveryFilter;
use cuecast_relay::storage::{
    self, now_ms, AttemptRecord, NewDelivery, NewEvent, Options, Replay, Status, Storage, SCHEMA_VERSION,
};

fn event(id: &str, hooks: &[&str]) -> NewEvent {
    NewEvent {
        id: id.into(),
        name: "x".into(),
        write_key: "k".into(),
        user_id: None,
        body: "{}".into(),
        deliveries: hooks
            .iter()
            .map(|h| NewDelivery { webhook_id: h.to_string(), status: Status::Pending, error: None })
            .collect(),
    }
}

fn hooks(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

async fn open(db: &TestDb, lease: Duration) -> Storage {
    Storage::open(&db.storage(), Options { migrate: true, lease, wait: Duration::ZERO }).await.unwrap()
}

fn record(id: i64, status: Status) -> AttemptRecord {
    AttemptRecord {
        delivery_id: id,
        at: now_ms(),
        http_status: Some(500),
        duration_ms: 3,
        response: Some("oops".into()),
        error: None,
        new_status: status,
        attempts: 1,
        next_attempt_at: None,
    }
}

both_backends! {
    async fn duplicates_create_no_deliveries_and_migrations_are_idempotent(b) {
        let db = TestDb::new(b);
        let s = open(&db, Duration::from_secs(30)).await;
        let (x, y) = tokio::join!(
            s.ingest(vec![event("e1", &["a", "b"])]),
            s.ingest(vec![event("e2", &["a"]), event("e1", &["a", "b"]), event("e2", &["a"])])
        );
        let (x, y) = (x.unwrap(), y.unwrap());
        let all: Vec<_> = x.iter().chain(&y).collect();
        // Whichever commits first stores e1; everything else is a duplicate.
        assert_eq!(all.iter().filter(|e| !e.duplicate).count(), 2, "{all:?}");
        assert_eq!(all.iter().map(|e| e.pending.len()).sum::<usize>(), 3);
        assert!(y[2].duplicate, "the second copy of an id in one batch is a duplicate");
        assert_eq!(s.counts().await.unwrap(), [("pending".to_string(), 3)]);
        // A stored id before a new one: the new one's deliveries come back with their own ids.
        let z = s.ingest(vec![event("e1", &["a", "b"]), event("e3", &["b"])]).await.unwrap();
        assert!(z[0].duplicate && z[0].pending.is_empty() && !z[1].duplicate);
        let stored = db.query(&format!("SELECT msg_id, webhook_id, event_id FROM deliveries WHERE id = {}", z[1].pending[0].id));
        assert_eq!(stored[0], [Some(z[1].pending[0].msg_id.clone()), Some("b".into()), Some("e3".into())]);
        s.ready().await.unwrap();
        assert_eq!(storage::migrate(&db.storage(), None).await.unwrap(), (SCHEMA_VERSION, SCHEMA_VERSION));
    }

    async fn dead_letters_replay_and_retention(b) {
        let db = TestDb::new(b);
        let s = open(&db, Duration::from_secs(30)).await;
        let stored = s.ingest(vec![event("e1", &["a"]), event("e2", &["a"]), event("e3", &["a"])]).await.unwrap();
        let (d1, d2) = (stored[0].pending[0].id, stored[1].pending[0].id);
        s.record(record(d1, Status::Dead), || ());
        s.record(record(d2, Status::Delivered), || ());
        s.flush().await.unwrap();
        let filter = DeliveryFilter {
            webhook: Some("a".into()),
            status: Some(Status::Dead),
            updated: Some((0, i64::MAX)),
            ..DeliveryFilter::default()
        };
        let dead = s.list_deliveries(filter.clone(), None, 100).await.unwrap();
        assert_eq!(dead.iter().map(|d| d.id).collect::<Vec<_>>(), [d1]);
        let long_ago = DeliveryFilter { updated: Some((0, 1)), ..filter };
        assert!(s.list_deliveries(long_ago, None, 100).await.unwrap().is_empty(), "outside the window");
        assert_eq!(s.attempts(d1).await.unwrap()[0].response.as_deref(), Some("oops"));
        // Retention: e2 is finished: pruned with its delivery and attempt;
        // e1 is a dead letter and e3 still pending: both kept.
        assert_eq!(s.prune(now_ms() + 1, 1000).await.unwrap(), 1);
        assert_eq!(db.query("SELECT event_id FROM deliveries ORDER BY id").len(), 2);
        assert!(s.attempts(d2).await.unwrap().is_empty());
        assert_eq!(s.prune(now_ms() + 1, 1000).await.unwrap(), 0);
        // Nothing younger than the cut-off goes.
        s.record(record(stored[2].pending[0].id, Status::Delivered), || ());
        s.flush().await.unwrap();
        assert_eq!(s.prune(now_ms() - 60_000, 1000).await.unwrap(), 0);
        // A replayed dead letter is pending again, and a sweep hands it out.
        assert_eq!(s.replay(Replay::One(d1)).await.unwrap(), 1);
        let work = s.claim(&hooks(&["a"]), 100).await.unwrap();
        assert!(work.pending.iter().any(|p| p.id == d1), "{work:?}");
    }

    async fn migrating_from_the_previous_version_keeps_data_and_a_newer_schema_is_refused(b) {
        let db = TestDb::new(b);
        let url = db.storage();
        assert_eq!(storage::migrate(&url, Some(SCHEMA_VERSION - 1)).await.unwrap(), (0, SCHEMA_VERSION - 1));
        // A relay of the previous version left an event with a pending delivery.
        let insert = [
            "INSERT INTO events (id, name, write_key, received_at, body) VALUES ('old', 'x', 'k', 1, '{\"a\":1}')",
            "INSERT INTO deliveries (event_id, webhook_id, msg_id, status, attempts, next_attempt_at, created_at, updated_at) VALUES ('old', 'a', 'msg_old', 'pending', 0, 1, 1, 1)",
        ];
        for sql in insert {
            db.execute(sql);
        }
        // Without --migrate the old schema is refused with a hint.
        let refused = Storage::open(&url, Options { migrate: false, ..Options::default() }).await;
        assert!(matches!(&refused, Err(e) if e.to_string().contains("cuecast-relay migrate")), "{:?}", refused.err());
        assert_eq!(storage::migrate(&url, None).await.unwrap(), (SCHEMA_VERSION - 1, SCHEMA_VERSION));
        let s = Storage::open(&url, Options { migrate: false, ..Options::default() }).await.unwrap();
        s.ready().await.unwrap();
        let work = s.claim(&hooks(&["a"]), 100).await.unwrap();
        assert_eq!(work.pending.len(), 1);
        assert_eq!((&*work.pending[0].msg_id, &*work.pending[0].event_body), ("msg_old", "{\"a\":1}"));
        drop(s);
        // A schema newer than this relay is refused.
        match b {
            Backend::Sqlite => db.execute("PRAGMA user_version = 99"),
            Backend::Postgres => db.execute("INSERT INTO cuecast_schema (version) VALUES (99)"),
        }
        let newer = Storage::open(&url, Options::default()).await;
        assert!(matches!(&newer, Err(e) if e.to_string().contains("newer")), "{:?}", newer.err());
    }
}

/// Two relays on one database: a lease keeps the other away, runs out
/// after the lease, and fences the late relay's writes.
#[tokio::test]
async fn leases_are_exclusive_expire_and_fence_the_late_owner() {
    if !pg_available() {
        return;
    }
    let db = TestDb::new(Backend::Postgres);
    let lease = Duration::from_millis(600);
    let (a, b) = (open(&db, lease).await, open(&db, lease).await);
    let stored = a.ingest(vec![event("e1", &["h"]), event("e2", &["h"])]).await.unwrap();
    let ids: Vec<i64> = stored.iter().map(|s| s.pending[0].id).collect();
    // Ingest leased both to A: B finds nothing to take.
    assert!(b.claim(&hooks(&["h"]), 100).await.unwrap().pending.is_empty());
    // A renews one of them; the other runs out and B takes it over.
    tokio::time::sleep(lease / 2).await;
    assert_eq!(a.renew(vec![ids[0]]).await.unwrap(), [ids[0]]);
    tokio::time::sleep(lease / 2 + Duration::from_millis(200)).await;
    let taken = b.claim(&hooks(&["h"]), 100).await.unwrap().pending;
    assert_eq!(taken.iter().map(|p| p.id).collect::<Vec<_>>(), [ids[1]]);
    // A learns it lost it, and its late result does not overwrite B's.
    assert_eq!(a.renew(ids.clone()).await.unwrap(), [ids[0]]);
    a.record(record(ids[1], Status::Delivered), || ());
    a.flush().await.unwrap();
    let status = |id: i64| db.query(&format!("SELECT status FROM deliveries WHERE id = {id}"))[0][0].clone().unwrap();
    assert_eq!(status(ids[1]), "pending", "fenced: the delivery belongs to B now");
    assert_eq!(a.attempts(ids[1]).await.unwrap().len(), 1, "the attempt A made is still logged");
    b.record(record(ids[1], Status::Delivered), || ());
    b.flush().await.unwrap();
    assert_eq!(status(ids[1]), "delivered");
    // Released leases are free at once.
    a.release(vec![ids[0]]).await.unwrap();
    assert_eq!(b.claim(&hooks(&["h"]), 100).await.unwrap().pending.len(), 1);
    // Only configured webhooks are claimed.
    a.ingest(vec![event("e3", &["other"])]).await.unwrap();
    a.release(vec![ids[1] + 1]).await.unwrap();
    assert!(b.claim(&hooks(&["h"]), 100).await.unwrap().pending.is_empty());
}

/// The per-webhook limit is one token bucket for all relays.
#[tokio::test]
async fn the_shared_rate_limit_counts_every_relays_attempts() {
    if !pg_available() {
        return;
    }
    let db = TestDb::new(Backend::Postgres);
    let (a, b) = (open(&db, Duration::from_secs(30)).await, open(&db, Duration::from_secs(30)).await);
    let rate = cuecast_relay::policy::Rate { count: 10, per: Duration::from_secs(3600) };
    let (mut la, mut lb) = (a.rate_limiter("h", rate), b.rate_limiter("h", rate));
    let mut granted = 0;
    for _ in 0..10 {
        granted += la.take().await.is_ok() as u32;
        granted += lb.take().await.is_ok() as u32;
    }
    assert_eq!(granted, 10, "a burst of ten across both relays, then one per six minutes");
    let wait = la.take().await.unwrap_err();
    assert!(wait > Duration::from_secs(300) && wait <= Duration::from_secs(360), "{wait:?}");
    // Another webhook has its own bucket.
    assert!(a.rate_limiter("other", rate).take().await.is_ok());
}
