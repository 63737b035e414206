//! Load generator for `cargo xtask bench`: runs a relay and a receiver in
//! this process (each on its own runtime) on loopback and prints one JSON
//! object with what it measured:
//!
//! 1. `ingest`: sustained durable ingest, batches of 20, no webhooks
//!    (every 202 means the batch is committed to SQLite), with ack latency.
//! 2. `delivery`: deliveries/s to a local receiver, measured by letting a
//!    backlog pile up (the webhook rate-limited to 1/h), restarting the relay
//!    without the limit and timing the drain.
//! 3. `pipeline`: ingest and delivery at once (every event to one webhook
//!    while 32 clients keep posting), for half the ingest time.
//! 4. `latency`: event-to-webhook latency at a steady 1,000 events/s
//!    (50 batches of 20 per second), from the POST to the receiver.
//!
//! 5. `scale`: the same ingest and drain measurements against `cuecast-relay`
//!    *processes*: one on the embedded SQLite file, then 1, 2 and 3 sharing
//!    one PostgreSQL database (`--postgres`, default the local server; the
//!    rows are skipped with a note when it is unreachable). Each row also
//!    reports how many cores the machine was busy with (relays, database and
//!    this load generator together, from `/proc/stat`), how many of those
//!    the relay processes and the PostgreSQL backends serving them used
//!    (`/proc/PID/stat`), and the throughput per busy core and per core used
//!    by relays and database.
//!
//! 6. `reference`: the physical references, right after `ingest`: a bare
//!    hyper server answering 202 to the same requests from the same clients
//!    (nothing parsed or stored), and raw SQLite and PostgreSQL inserts of
//!    the same rows into the relay's own schema; with cuecast / reference
//!    ratios.
//! 7. `fanout` and `stored`: ingest events/s, ack latency and deliveries/s
//!    with 1, 10 and 100 webhooks matching every event, and with one webhook
//!    on a file already holding `--stored` events (10⁶); on that file also
//!    the event-to-webhook latency of 4. at the same fixed load.
//!
//! `--quick` runs tiny versions of all of them (a smoke test).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use clap::Parser;
use cuecast_relay::config::Config;
use serde_json::{json, Value};

#[derive(Parser, Clone)]
#[command(about = "Measures cuecast-relay ingest, delivery throughput and event-to-webhook latency")]
struct Args {
    /// Seconds of sustained ingest.
    #[arg(long, default_value_t = 10)]
    ingest_secs: u64,
    /// Concurrent ingest clients.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Deliveries in the drain measurement.
    #[arg(long, default_value_t = 50_000)]
    deliveries: usize,
    /// Events per second in the latency measurement.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Seconds of the latency measurement.
    #[arg(long, default_value_t = 10)]
    latency_secs: u64,
    /// Tiny numbers: checks that everything works, measures nothing useful.
    #[arg(long)]
    quick: bool,
    /// Where the SQLite files go (default: a fresh directory under the system temp dir).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    /// The PostgreSQL server for the scale rows; each row creates and drops its own database on it.
    #[arg(long, default_value = "postgres://root@127.0.0.1:5432")]
    postgres: String,
    /// Leave out the scale rows.
    #[arg(long)]
    no_scale: bool,
    /// Events already in the file for the `stored` row.
    #[arg(long, default_value_t = 1_000_000)]
    stored: usize,
}

const BATCH: usize = 20;

fn main() {
    let mut args = Args::parse();
    if args.quick {
        args = Args {
            ingest_secs: 1,
            clients: 4,
            deliveries: 500,
            rate: 200,
            latency_secs: 1,
            quick: true,
            dir: args.dir,
            postgres: args.postgres,
            no_scale: args.no_scale,
            stored: 10_000,
        };
    }
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("cuecast-loadgen-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let load = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let result = load.block_on(measure(&args, &dir));
    let _ = std::fs::remove_dir_all(&dir);
    println!("{}", serde_json::to_string_pretty(&result).unwrap());
}

/// A relay on its own runtime, so its work and the load's are scheduled apart.
struct RelayProc {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RelayProc {
    fn start(toml: String) -> RelayProc {
        let config = Config::parse(&toml, &|_| None).unwrap_or_else(|e| panic!("{e:?}"));
        RelayProc::on_own_runtime(move |listener, stop| async move {
            cuecast_relay::run(config, listener, stop).await.expect("relay runs")
        })
    }

    /// The physical reference for ingest: hyper (through axum's router, one
    /// route) reads each `POST /v1/batch` body and answers 202 with an ack of
    /// the relay's shape, without parsing or storing anything.
    fn bare() -> RelayProc {
        RelayProc::on_own_runtime(|listener, stop| async move {
            let app = axum::Router::new()
                .route(
                    "/v1/batch",
                    axum::routing::post(|_body: Bytes| async {
                        (axum::http::StatusCode::ACCEPTED, axum::Json(json!({"accepted": BATCH, "duplicates": 0})))
                    }),
                )
                .route("/readyz", axum::routing::get(|| async { "ok" }));
            axum::serve(listener, app).with_graceful_shutdown(stop).await.expect("bare server runs")
        })
    }

    fn on_own_runtime<F, Fut>(serve: F) -> RelayProc
    where
        F: FnOnce(tokio::net::TcpListener, std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>) -> Fut
            + Send
            + 'static,
        Fut: std::future::Future<Output = ()>,
    {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", std_listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
                serve(
                    listener,
                    Box::pin(async move {
                        let _ = rx.await;
                    }),
                )
                .await
            });
        });
        RelayProc { url, stop: Some(tx), thread: Some(thread) }
    }

    async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        for _ in 0..500 {
            if matches!(client.get(format!("{}/readyz", self.url)).send().await, Ok(r) if r.status() == 200) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("relay not ready");
    }

    fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.thread.take().unwrap().join().unwrap();
    }
}

fn config(dir: &std::path::Path, name: &str, hooks: &str) -> String {
    format!(
        r#"storage = "sqlite://{}"
[limits]
key_rate = "1000000/s"
ip_rate = "1000000/s"
backlog_high_water = 10000000
shutdown_grace = "2s"
[egress]
allow_cidrs = ["127.0.0.0/8"]
[[source]]
write_key = "pk_bench"
origins = ["*"]
{hooks}"#,
        dir.join(name).display()
    )
}

/// Micros since `epoch`, stamped into each event so the receiver can compute latency.
fn batch_body(epoch: Instant, seq: &AtomicU64) -> Vec<u8> {
    let sent = epoch.elapsed().as_micros() as u64;
    let events: Vec<Value> = (0..BATCH)
        .map(|_| {
            let n = seq.fetch_add(1, Ordering::Relaxed);
            json!({
                "id": format!("019aea5c-0000-7000-8000-{n:012}"),
                "event": "survey.submitted",
                "timestamp": "2026-12-04T15:16:52.001Z",
                "anonymousId": "4f1c2a7e-0b39-4d8e-9a51-2f0c6f3d9b11",
                "userId": "user-42",
                "properties": {"surveyId": "nps-q3", "kind": "nps", "score": n % 11, "comment": "bench", "sentUs": sent},
                "context": {"page": {"url": "https://app.example.com/reports", "path": "/reports", "referrer": "", "title": "Reports"},
                            "locale": "en-US", "userAgent": "Mozilla/5.0 (X11; Linux x86_64) loadgen"},
            })
        })
        .collect();
    serde_json::to_vec(&json!({
        "v": 1, "writeKey": "pk_bench", "batchId": format!("b-{sent}-{}", seq.load(Ordering::Relaxed)),
        "sentAt": "2026-12-04T15:16:59.500Z", "attempt": 1,
        "sdk": {"name": "cuecast", "version": "0.1.0"}, "events": events,
    }))
    .unwrap()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    (sorted[i] * 100.0).round() / 100.0
}

fn summary(mut ms: Vec<f64>) -> Value {
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    json!({"p50": percentile(&ms, 0.5), "p99": percentile(&ms, 0.99), "max": percentile(&ms, 1.0), "n": ms.len()})
}

/// A receiver that answers 200 at once and records arrival times and each event's stamp.
struct Sink {
    addr: SocketAddr,
    count: Arc<AtomicU64>,
    first_last: Arc<Mutex<(Option<Instant>, Option<Instant>)>>,
    latencies: Arc<Mutex<Vec<f64>>>,
}

async fn sink(epoch: Instant, record_latency: bool) -> Sink {
    let count = Arc::new(AtomicU64::new(0));
    let first_last: Arc<Mutex<(Option<Instant>, Option<Instant>)>> = Arc::default();
    let latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
    let (c, fl, lat) = (count.clone(), first_last.clone(), latencies.clone());
    let app = axum::Router::new().fallback(move |body: Bytes| {
        let (c, fl, lat) = (c.clone(), fl.clone(), lat.clone());
        async move {
            let now = Instant::now();
            if record_latency {
                if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                    if let Some(sent) = v["data"]["properties"]["sentUs"].as_u64() {
                        let ms = (now - epoch).as_micros().saturating_sub(sent as u128) as f64 / 1000.0;
                        lat.lock().unwrap().push(ms);
                    }
                }
            }
            c.fetch_add(1, Ordering::Relaxed);
            let mut fl = fl.lock().unwrap();
            fl.0.get_or_insert(now);
            fl.1 = Some(now);
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Sink { addr, count, first_last, latencies }
}

async fn measure(args: &Args, dir: &std::path::Path) -> Value {
    let epoch = Instant::now();
    let seq = Arc::new(AtomicU64::new(0));
    let http = reqwest::Client::builder().pool_max_idle_per_host(256).tcp_nodelay(true).build().unwrap();

    // 1. Sustained ingest, no webhooks.
    let relay = RelayProc::start(config(dir, "ingest.db", ""));
    relay.wait_ready().await;
    let load =
        post_for(&http, &[format!("{}/v1/batch", relay.url)], args.clients, args.ingest_secs as f64, epoch, &seq).await;
    relay.stop();
    // Every acknowledged event must be in the file: count them.
    let stored: i64 = rusqlite::Connection::open(dir.join("ingest.db"))
        .and_then(|c| c.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0)))
        .unwrap_or(-1);
    let ingest = json!({
        "stored_events": stored,
        "batch_size": BATCH,
        "clients": args.clients,
        "seconds": round2(load.seconds),
        "batches": load.acks_ms.len(),
        "events": load.events(),
        "events_per_s": load.events_per_s(),
        "errors": load.errors,
        "ack_ms": summary(load.acks_ms),
    });

    // 1b. The physical references, right after, with the same client and bodies.
    let bare = RelayProc::bare();
    bare.wait_ready().await;
    let load =
        post_for(&http, &[format!("{}/v1/batch", bare.url)], args.clients, args.ingest_secs as f64, epoch, &seq).await;
    bare.stop();
    let bare = json!({
        "what": "hyper (axum, one route) reading each POST /v1/batch body and answering 202, nothing parsed or stored; same client, bodies and concurrency as `ingest`",
        "seconds": round2(load.seconds),
        "events_per_s": load.events_per_s(),
        "errors": load.errors,
        "ack_ms": summary(load.acks_ms),
    });
    let rows = Arc::new(Rows::new(epoch, &seq));
    let raw_secs = (args.ingest_secs as f64 / 2.0).max(1.0);
    let sqlite_ref = raw_sqlite(dir, &rows, &seq, args.clients * BATCH, raw_secs, false);
    let sqlite_delivery_ref = raw_sqlite(dir, &rows, &seq, args.clients * BATCH, raw_secs, true);
    let postgres_ref = raw_postgres(&args.postgres, &rows, &seq, raw_secs).await;

    // 2. Delivery throughput: build a backlog, then drain it.
    let drain_sink = sink(epoch, false).await;
    let hook = |limit: &str| {
        format!(
            "[[webhook]]\nid = \"bench\"\nevents = [\"*\"]\nurl = \"http://{}/hook\"\nconcurrency = 128\n{limit}\n",
            drain_sink.addr
        )
    };
    let relay = RelayProc::start(config(dir, "deliver.db", &hook("rate_limit = \"1/h\"")));
    relay.wait_ready().await;
    let url = format!("{}/v1/batch", relay.url);
    let batches = args.deliveries.div_ceil(BATCH);
    post_batches(&http, &url, args.clients, batches, epoch, &seq).await;
    relay.stop();
    let backlog = (batches * BATCH) as u64;
    let already = drain_sink.count.load(Ordering::Relaxed);
    *drain_sink.first_last.lock().unwrap() = (None, None);
    let restarted = Instant::now();
    let relay = RelayProc::start(config(dir, "deliver.db", &hook("")));
    let wait_until = Instant::now() + Duration::from_secs(300);
    while drain_sink.count.load(Ordering::Relaxed) < backlog && Instant::now() < wait_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drained = drain_sink.count.load(Ordering::Relaxed) - already;
    let (first, last) = *drain_sink.first_last.lock().unwrap();
    let span = match (first, last) {
        (Some(f), Some(l)) if l > f => (l - f).as_secs_f64(),
        _ => f64::NAN,
    };
    relay.stop();
    let delivery = json!({
        "backlog": backlog - already,
        "delivered": drained,
        "concurrency": 128,
        "first_delivery_after_restart_ms": first.map(|f| ((f - restarted).as_secs_f64() * 1000.0).round()),
        "drain_seconds": (span * 100.0).round() / 100.0,
        "deliveries_per_s": (drained as f64 / span).round(),
    });

    // 3. Ingest and delivery at once: every event goes to one webhook while
    //    the clients keep posting (the relay's two halves share the cores).
    let both_sink = sink(epoch, false).await;
    let relay = RelayProc::start(config(
        dir,
        "pipeline.db",
        &format!(
            "[[webhook]]\nid = \"bench\"\nevents = [\"*\"]\nurl = \"http://{}/hook\"\nconcurrency = 128\n",
            both_sink.addr
        ),
    ));
    relay.wait_ready().await;
    let secs = (args.ingest_secs / 2).max(1);
    let started = Instant::now();
    let load = post_for(&http, &[format!("{}/v1/batch", relay.url)], args.clients, secs as f64, epoch, &seq).await;
    let acked = load.events();
    let ingest_s = started.elapsed().as_secs_f64();
    let delivered_meanwhile = both_sink.count.load(Ordering::Relaxed);
    let wait_until = Instant::now() + Duration::from_secs(300);
    while both_sink.count.load(Ordering::Relaxed) < acked as u64 && Instant::now() < wait_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let all_s = started.elapsed().as_secs_f64();
    relay.stop();
    let pipeline = json!({
        "seconds": secs,
        "events_acked": acked,
        "events_per_s": (acked as f64 / ingest_s).round(),
        "delivered_while_ingesting": delivered_meanwhile,
        "delivered": both_sink.count.load(Ordering::Relaxed),
        "all_delivered_after_s": (all_s * 100.0).round() / 100.0,
        "deliveries_per_s_overall": (both_sink.count.load(Ordering::Relaxed) as f64 / all_s).round(),
    });

    // 4. Event-to-webhook latency at a steady rate.
    let (latency, latencies) = latency_row(args, dir, "latency.db", epoch, &seq, &http).await;
    let scale = if args.no_scale { Value::Null } else { scale(args, dir, epoch, &seq, &http).await };

    // 7. How cost grows: webhooks per event, and events already stored. The
    //    stored row runs right after the one-webhook row it is compared with.
    let prefill_s = prefill(&dir.join("stored.db"), &rows, &seq, args.stored);
    let mut fanout = serde_json::Map::new();
    fanout.insert(
        "what".into(),
        json!("N webhooks match every event. Ingest: clients post for half the ingest time while the webhooks are rate-limited to 1/h (nothing sent), so each event costs one event row and N delivery rows. Deliveries: a backlog of about `--deliveries` built behind that limit, drained by a restarted relay to a local receiver (128 sends in flight in all, at least 2 per webhook)."),
    );
    let mut with_stored = Value::Null;
    let mut stored_latency = Value::Null;
    for hooks in [1, 10, 100] {
        let row = webhook_row(args, dir, &format!("fanout-{hooks}.db"), hooks, epoch, &seq, &http).await;
        fanout.insert(format!("webhooks_{hooks}"), row);
        if hooks == 1 {
            // Latency first, at a fixed load on the file as pre-filled; then
            // the same row as `webhooks_1` (which leaves deliveries pending
            // behind its rate limit, that would drain into a later latency run).
            stored_latency = latency_row(args, dir, "stored.db", epoch, &seq, &http).await.0;
            with_stored = webhook_row(args, dir, "stored.db", 1, epoch, &seq, &http).await;
        }
    }
    let empty = &fanout["webhooks_1"];
    let ack = with_stored["ack_ms"].take();
    let stored = json!({
        "what": "`fanout.webhooks_1` again, on a file that already holds the stored events (each with one delivered delivery); before it, event-to-webhook latency at the fixed load of `latency` on that file as pre-filled",
        "stored_events": args.stored,
        "prefill_seconds": prefill_s,
        "ingest_events_per_s": with_stored["ingest_events_per_s"],
        "ack_ms": ack,
        "deliveries_per_s": with_stored["deliveries_per_s"],
        "delivered": with_stored["delivered"],
        "backlog": with_stored["backlog"],
        "ingest_errors": with_stored["ingest_errors"],
        "latency_events_per_s": stored_latency["events_per_s"],
        "latency_delivered": stored_latency["delivered"],
        "latency_expected": stored_latency["expected"],
        "event_to_webhook_ms": stored_latency["event_to_webhook_ms"],
        "ratio_to_empty_file": {
            "event_to_webhook_p50": ratio(&stored_latency["event_to_webhook_ms"]["p50"], &latency["event_to_webhook_ms"]["p50"]),
            "event_to_webhook_p99": ratio(&stored_latency["event_to_webhook_ms"]["p99"], &latency["event_to_webhook_ms"]["p99"]),
            "ingest_events_per_s": ratio(&with_stored["ingest_events_per_s"], &empty["ingest_events_per_s"]),
            "ack_p99": ratio(&ack["p99"], &empty["ack_ms"]["p99"]),
            "deliveries_per_s": ratio(&with_stored["deliveries_per_s"], &empty["deliveries_per_s"]),
        },
    });
    let p99 = summary(latencies)["p99"].as_f64().unwrap_or(f64::NAN);
    let ingest_rate = ingest["events_per_s"].as_f64().unwrap_or(0.0);
    let delivery_rate = delivery["deliveries_per_s"].as_f64().unwrap_or(0.0);
    json!({
        "quick": args.quick,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "ingest": ingest,
        "delivery": delivery,
        "pipeline": pipeline,
        "latency": latency,
        "scale": scale,
        "reference": {
            "bare_server": bare,
            "raw_sqlite": sqlite_ref,
            "raw_sqlite_one_delivery": sqlite_delivery_ref,
            "raw_postgres": postgres_ref,
            "ratio_cuecast_to_reference": {
                "ingest_events_per_s_to_bare_server": ratio(&ingest["events_per_s"], &bare["events_per_s"]),
                "ingest_ack_p50_to_bare_server": ratio(&ingest["ack_ms"]["p50"], &bare["ack_ms"]["p50"]),
                "ingest_ack_p99_to_bare_server": ratio(&ingest["ack_ms"]["p99"], &bare["ack_ms"]["p99"]),
                "ingest_events_per_s_to_raw_sqlite": ratio(&ingest["events_per_s"], &sqlite_ref["events_per_s"]),
                "fanout_webhooks_1_ingest_events_per_s_to_raw_sqlite_one_delivery":
                    ratio(&fanout["webhooks_1"]["ingest_events_per_s"], &sqlite_delivery_ref["events_per_s"]),
                "sqlite_1_process_ingest_events_per_s_to_raw_sqlite":
                    ratio(&scale["sqlite_1"]["ingest_events_per_s"], &sqlite_ref["events_per_s"]),
                "postgres_1_ingest_events_per_s_to_raw_postgres":
                    ratio(&scale["postgres_1"]["ingest_events_per_s"], &postgres_ref["events_per_s"]),
            },
        },
        "fanout": fanout,
        "stored": stored,
        "targets": {
            "ingest_events_per_s": {"target": 50000, "measured": ingest_rate, "met": ingest_rate >= 50000.0},
            "deliveries_per_s": {"target": 10000, "measured": delivery_rate, "met": delivery_rate >= 10000.0},
            "event_to_webhook_p99_ms": {"target": 50, "measured": p99, "met": p99 <= 50.0},
        },
    })
}

// ---- 5. scale: relay processes on SQLite and on a shared PostgreSQL ----

/// `cuecast-relay` next to this binary (`cargo build -p cuecast-relay --bins` puts both there).
fn relay_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("own path");
    let dir = exe.parent().expect("a directory");
    // Integration tests run from target/*/deps; the binaries sit one level up.
    [dir.join("cuecast-relay"), dir.join("../cuecast-relay")]
        .into_iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("cuecast-relay is not built next to {}", exe.display()))
}

/// A relay process; SIGTERM (graceful: it releases its leases) when stopped, SIGKILL if dropped.
struct Proc {
    child: std::process::Child,
    url: String,
}

impl Proc {
    fn start(config: &std::path::Path) -> Proc {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = std::process::Command::new(relay_binary())
            .args(["serve", "--config"])
            .arg(config)
            .env("CUECAST_LISTEN", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "error")
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("cuecast-relay starts");
        Proc { child, url: format!("http://127.0.0.1:{port}") }
    }

    async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        for _ in 0..1000 {
            if matches!(client.get(format!("{}/readyz", self.url)).send().await, Ok(r) if r.status() == 200) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("relay process not ready");
    }

    fn stop(mut self) {
        let _ = std::process::Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// (busy, total) jiffies of the whole machine.
fn cpu_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> =
        stat.lines().next().unwrap_or_default().split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// CPU jiffies (user + system) a process has used so far.
fn process_jiffies(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) are space-separated; utime and stime are the 14th and 15th.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
    let fields: Vec<u64> = after.split_whitespace().skip(11).take(2).filter_map(|f| f.parse().ok()).collect();
    fields.iter().sum()
}

/// CPU jiffies used so far by the PostgreSQL backends serving database `db`
/// (the relays' pooled connections, opened when the relays start).
async fn backends_jiffies(db: Option<(&str, &str)>) -> u64 {
    let Some((server, name)) = db else { return 0 };
    let Ok((client, connection)) = tokio_postgres::connect(&format!("{server}/test"), tokio_postgres::NoTls).await
    else {
        return 0;
    };
    tokio::spawn(connection);
    let pids = client.query("SELECT pid FROM pg_stat_activity WHERE datname = $1", &[&name]).await.unwrap_or_default();
    pids.iter().map(|r| process_jiffies(r.get::<_, i32>(0) as u32)).sum()
}

fn relays_jiffies(procs: &[Proc]) -> u64 {
    procs.iter().map(|p| process_jiffies(p.child.id())).sum()
}

/// Cores the relay processes kept busy over `secs` (jiffies are 1/100 s on Linux).
fn relay_cores(before: u64, after: u64, secs: f64) -> f64 {
    ((after - before) as f64 / 100.0 / secs.max(0.001) * 100.0).round() / 100.0
}

/// Cores busy between two [`cpu_jiffies`] readings.
fn busy_cores(before: (u64, u64), after: (u64, u64)) -> f64 {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
    let total = (after.1 - before.1).max(1) as f64;
    ((after.0 - before.0) as f64 / total * cores * 100.0).round() / 100.0
}

fn scale_config(storage: &str, hooks: &str) -> String {
    format!(
        r#"storage = "{storage}"
[limits]
key_rate = "1000000/s"
ip_rate = "1000000/s"
backlog_high_water = 10000000
shutdown_grace = "2s"
sweep_interval = "100ms"
[egress]
allow_cidrs = ["127.0.0.0/8"]
[[source]]
write_key = "pk_bench"
origins = ["*"]
{hooks}"#
    )
}

/// Ingest for `secs` through `relays` (clients spread over them), then
/// drain a backlog of `backlog` deliveries with the same number of relays.
#[allow(clippy::too_many_arguments)]
async fn scale_row(
    args: &Args,
    dir: &std::path::Path,
    storage: &str,
    pg_db: Option<(&str, &str)>,
    relays: usize,
    epoch: Instant,
    seq: &Arc<AtomicU64>,
    http: &reqwest::Client,
) -> Value {
    let write = |name: &str, hooks: &str| {
        let path = dir.join(name);
        std::fs::write(&path, scale_config(storage, hooks)).unwrap();
        path
    };
    // Ingest, no webhooks.
    let plain = write("plain.toml", "");
    let procs: Vec<Proc> = (0..relays).map(|_| Proc::start(&plain)).collect();
    for p in &procs {
        p.wait_ready().await;
    }
    let urls: Vec<String> = procs.iter().map(|p| format!("{}/v1/batch", p.url)).collect();
    let cpu = cpu_jiffies();
    let relay_cpu = relays_jiffies(&procs);
    let load = post_for(http, &urls, args.clients, args.ingest_secs as f64, epoch, seq).await;
    let elapsed = load.seconds;
    let ingest_cores = busy_cores(cpu, cpu_jiffies());
    let ingest_relay_cores = relay_cores(relay_cpu, relays_jiffies(&procs), elapsed);
    let ingest_db_cores = relay_cores(0, backends_jiffies(pg_db).await, elapsed);
    for p in procs {
        p.stop();
    }
    let ingest_rate = load.events_per_s();

    // Drain: a backlog built behind a 1/h limit by one relay, then sent by `relays` relays.
    let drain = sink(epoch, false).await;
    let hook = |limit: &str| {
        format!(
            "[[webhook]]\nid = \"bench\"\nevents = [\"*\"]\nurl = \"http://{}/hook\"\nconcurrency = 128\n{limit}\n",
            drain.addr
        )
    };
    let filling = Proc::start(&write("limited.toml", &hook("rate_limit = \"1/h\"")));
    filling.wait_ready().await;
    let batches = args.deliveries.div_ceil(BATCH);
    post_batches(http, &format!("{}/v1/batch", filling.url), args.clients, batches, epoch, seq).await;
    filling.stop();
    let backlog = (batches * BATCH) as u64 - drain.count.load(Ordering::Relaxed);
    let already = drain.count.load(Ordering::Relaxed);
    *drain.first_last.lock().unwrap() = (None, None);
    let free = write("free.toml", &hook(""));
    let cpu = cpu_jiffies();
    let drain_started = Instant::now();
    let procs: Vec<Proc> = (0..relays).map(|_| Proc::start(&free)).collect();
    let wait_until = Instant::now() + Duration::from_secs(300);
    while drain.count.load(Ordering::Relaxed) - already < backlog && Instant::now() < wait_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain_cores = busy_cores(cpu, cpu_jiffies());
    let drain_secs = drain_started.elapsed().as_secs_f64();
    let drain_relay_cores = relay_cores(0, relays_jiffies(&procs), drain_secs);
    let drain_db_cores = relay_cores(0, backends_jiffies(pg_db).await, drain_secs);
    let drained = drain.count.load(Ordering::Relaxed) - already;
    let (first, last) = *drain.first_last.lock().unwrap();
    let span = match (first, last) {
        (Some(f), Some(l)) if l > f => (l - f).as_secs_f64(),
        _ => f64::NAN,
    };
    for p in procs {
        p.stop();
    }
    let delivery_rate = (drained as f64 / span).round();
    let per_core = |rate: f64, cores: f64| if cores > 0.0 { (rate / cores).round() } else { f64::NAN };
    json!({
        "relays": relays,
        "ingest_events_per_s": ingest_rate,
        "ingest_errors": load.errors,
        "ack_ms": summary(load.acks_ms),
        "ingest_busy_cores": ingest_cores,
        "ingest_relay_cores": ingest_relay_cores,
        "ingest_db_cores": ingest_db_cores,
        "ingest_events_per_s_per_busy_core": per_core(ingest_rate, ingest_cores),
        "ingest_events_per_s_per_relay_and_db_core": per_core(ingest_rate, ingest_relay_cores + ingest_db_cores),
        "backlog": backlog,
        "delivered": drained,
        "deliveries_per_s": delivery_rate,
        "drain_busy_cores": drain_cores,
        "drain_relay_cores": drain_relay_cores,
        "drain_db_cores": drain_db_cores,
        "deliveries_per_s_per_busy_core": per_core(delivery_rate, drain_cores),
        "deliveries_per_s_per_relay_and_db_core": per_core(delivery_rate, drain_relay_cores + drain_db_cores),
    })
}

/// Runs `sql` on the server's maintenance database `test`.
async fn pg_admin(server: &str, sql: &str) -> Result<(), String> {
    let (client, connection) =
        tokio_postgres::connect(&format!("{server}/test"), tokio_postgres::NoTls).await.map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    client.batch_execute(sql).await.map_err(|e| e.to_string())
}

async fn scale(
    args: &Args,
    dir: &std::path::Path,
    epoch: Instant,
    seq: &Arc<AtomicU64>,
    http: &reqwest::Client,
) -> Value {
    let mut rows = serde_json::Map::new();
    let sqlite_dir = dir.join("scale-sqlite");
    std::fs::create_dir_all(&sqlite_dir).unwrap();
    let sqlite = format!("sqlite://{}", sqlite_dir.join("relay.db").display());
    rows.insert("sqlite_1".into(), scale_row(args, &sqlite_dir, &sqlite, None, 1, epoch, seq, http).await);
    for relays in 1..=3 {
        let name = format!("cuecast_bench_{}_{relays}", std::process::id());
        if let Err(e) = pg_admin(&args.postgres, &format!("CREATE DATABASE {name}")).await {
            rows.insert("postgres".into(), json!(format!("skipped: PostgreSQL at {} unreachable: {e}", args.postgres)));
            break;
        }
        let url = format!("{}/{name}", args.postgres);
        let row_dir = dir.join(&name);
        std::fs::create_dir_all(&row_dir).unwrap();
        let migrated =
            cuecast_relay::storage::migrate(&cuecast_relay::config::Storage::Postgres(url.clone()), None).await;
        let row = match migrated {
            Ok(_) => scale_row(args, &row_dir, &url, Some((&args.postgres, &name)), relays, epoch, seq, http).await,
            Err(e) => json!(format!("migration failed: {e}")),
        };
        rows.insert(format!("postgres_{relays}"), row);
        let _ = pg_admin(&args.postgres, &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
    }
    Value::Object(rows)
}

// ---- shared load loops ----

/// What `clients` concurrent clients got from posting batches to `urls` for `secs`.
struct Load {
    acks_ms: Vec<f64>,
    errors: u64,
    seconds: f64,
}

impl Load {
    fn events(&self) -> usize {
        self.acks_ms.len() * BATCH
    }

    fn events_per_s(&self) -> f64 {
        (self.events() as f64 / self.seconds).round()
    }
}

/// Clients post batches back to back (spread over `urls`) until `secs` have passed.
async fn post_for(
    http: &reqwest::Client,
    urls: &[String],
    clients: usize,
    secs: f64,
    epoch: Instant,
    seq: &Arc<AtomicU64>,
) -> Load {
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (http, url, seq) = (http.clone(), urls[c % urls.len()].clone(), seq.clone());
        tasks.push(tokio::spawn(async move {
            let (mut acks, mut errors) = (Vec::new(), 0u64);
            while Instant::now() < deadline {
                let body = batch_body(epoch, &seq);
                let t = Instant::now();
                match http.post(&url).header("content-type", "text/plain").body(body).send().await {
                    Ok(r) if r.status() == 202 => {
                        let _ = r.bytes().await;
                        acks.push(t.elapsed().as_secs_f64() * 1000.0);
                    }
                    _ => errors += 1,
                }
            }
            (acks, errors)
        }));
    }
    let (mut acks_ms, mut errors) = (Vec::new(), 0);
    for t in tasks {
        let (a, e) = t.await.unwrap();
        acks_ms.extend(a);
        errors += e;
    }
    Load { acks_ms, errors, seconds: started.elapsed().as_secs_f64() }
}

/// Clients post exactly `batches` batches to `url` (each must be acknowledged).
async fn post_batches(
    http: &reqwest::Client,
    url: &str,
    clients: usize,
    batches: usize,
    epoch: Instant,
    seq: &Arc<AtomicU64>,
) {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (http, url, seq, next) = (http.clone(), url.to_string(), seq.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < batches as u64 {
                let r = http.post(&url).body(batch_body(epoch, &seq)).send().await.unwrap();
                assert_eq!(r.status(), 202);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// `a / b` to two decimals, or null when either is missing.
fn ratio(a: &Value, b: &Value) -> Value {
    match (a.as_f64(), b.as_f64()) {
        (Some(a), Some(b)) if b > 0.0 && a.is_finite() => json!(round2(a / b)),
        _ => Value::Null,
    }
}

// ---- 6. physical references: the same requests and rows without the relay ----

/// One event as the relay stores it (`events.body`: the wire event re-serialised
/// after validation), with a fresh id per row taken from the shared counter.
struct Rows {
    template: String,
    template_id: String,
    name: String,
}

impl Rows {
    fn new(epoch: Instant, seq: &AtomicU64) -> Rows {
        let batch = cuecast::wire::decode_batch(&batch_body(epoch, seq)).expect("the load generator's batch is valid");
        let event = &batch.events[0];
        Rows {
            template: serde_json::to_value(event).unwrap().to_string(),
            template_id: event.id.clone(),
            name: event.event.clone(),
        }
    }

    /// (id, body) of the next row.
    fn next(&self, seq: &AtomicU64) -> (String, String) {
        let id = format!("019aea5c-0000-7000-8000-{:012}", seq.fetch_add(1, Ordering::Relaxed));
        let body = self.template.replace(&self.template_id, &id);
        (id, body)
    }
}

/// Inserts `n` events in one transaction, with the relay's statement; with
/// `delivered`, each also gets a delivered delivery row for webhook `bench-0`
/// (what a relay leaves behind once it has delivered an event).
fn sqlite_tx(conn: &rusqlite::Connection, rows: &Rows, seq: &AtomicU64, n: usize, delivered: bool) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    conn.execute_batch("BEGIN IMMEDIATE").unwrap();
    {
        let mut event = conn
            .prepare_cached(
                "INSERT INTO events (id, name, write_key, received_at, body) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (id) DO NOTHING",
            )
            .unwrap();
        let mut delivery = conn
            .prepare_cached(
                "INSERT INTO deliveries (event_id, webhook_id, msg_id, status, attempts, next_attempt_at, created_at, updated_at)
                 VALUES (?1, 'bench-0', ?2, 'delivered', 1, NULL, ?3, ?3)",
            )
            .unwrap();
        for _ in 0..n {
            let (id, body) = rows.next(seq);
            event.execute(rusqlite::params![id, rows.name, "pk_bench", now, body]).unwrap();
            if delivered {
                delivery.execute(rusqlite::params![id, format!("msg_{}", uuid::Uuid::new_v4().simple()), now]).unwrap();
            }
        }
    }
    conn.execute_batch("COMMIT").unwrap();
}

/// A SQLite file with the relay's schema (its own migrations) and its pragmas.
fn sqlite_file(path: &std::path::Path, synchronous: &str) -> rusqlite::Connection {
    cuecast_relay::storage::sqlite::migrate_file(path, cuecast_relay::storage::SCHEMA_VERSION).expect("migrations");
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", synchronous).unwrap();
    conn.pragma_update(None, "foreign_keys", "ON").unwrap();
    conn
}

/// Raw SQLite: the relay's event rows inserted by one thread in WAL mode with
/// `synchronous = FULL`, `per_tx` rows per transaction (what the relay's group
/// commit reaches at best: every client's batch in one commit).
/// With `delivery`, each event also gets one delivery row (the reference for
/// `fanout.webhooks_1`).
fn raw_sqlite(dir: &std::path::Path, rows: &Rows, seq: &AtomicU64, per_tx: usize, secs: f64, delivery: bool) -> Value {
    let conn = sqlite_file(&dir.join(format!("raw-{delivery}.db")), "FULL");
    let started = Instant::now();
    let mut events = 0;
    while started.elapsed().as_secs_f64() < secs {
        sqlite_tx(&conn, rows, seq, per_tx, delivery);
        events += per_tx;
    }
    let seconds = started.elapsed().as_secs_f64();
    let what = if delivery {
        "as `raw_sqlite`, and one delivery row per event (the deliveries table and its three indexes)"
    } else {
        "the relay's event rows (same table, indexes, pragmas and INSERT) from one thread, no HTTP, no JSON"
    };
    json!({
        "what": what,
        "rows_per_transaction": per_tx,
        "seconds": round2(seconds),
        "events": events,
        "events_per_s": (events as f64 / seconds).round(),
    })
}

/// Raw PostgreSQL: the relay's event rows, 20 per `INSERT … SELECT FROM
/// UNNEST` statement (one commit each, as the relay does per batch) from 16
/// connections (the relay's pool size), into a database migrated by the relay.
async fn raw_postgres(server: &str, rows: &Arc<Rows>, seq: &Arc<AtomicU64>, secs: f64) -> Value {
    let name = format!("cuecast_ref_{}", std::process::id());
    if let Err(e) = pg_admin(server, &format!("CREATE DATABASE {name}")).await {
        return json!(format!("skipped: PostgreSQL at {server} unreachable: {e}"));
    }
    let url = format!("{server}/{name}");
    let result = async {
        cuecast_relay::storage::migrate(&cuecast_relay::config::Storage::Postgres(url.clone()), None)
            .await
            .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs_f64(secs);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (client, connection) =
                tokio_postgres::connect(&url, tokio_postgres::NoTls).await.map_err(|e| e.to_string())?;
            tokio::spawn(connection);
            let (rows, seq) = (rows.clone(), seq.clone());
            tasks.push(tokio::spawn(async move {
                let stmt = client
                    .prepare(
                        "INSERT INTO events (id, name, write_key, received_at, body)
                         SELECT id, name, write_key, $5::bigint, body
                         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[]) AS t(id, name, write_key, body)
                         ON CONFLICT (id) DO NOTHING",
                    )
                    .await
                    .unwrap();
                let mut events = 0u64;
                while Instant::now() < deadline {
                    let (ids, bodies): (Vec<String>, Vec<String>) = (0..BATCH).map(|_| rows.next(&seq)).unzip();
                    let names = vec![rows.name.as_str(); BATCH];
                    let keys = vec!["pk_bench"; BATCH];
                    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
                        as i64;
                    events += client.execute(&stmt, &[&ids, &names, &keys, &bodies, &now]).await.unwrap();
                }
                events
            }));
        }
        let mut events = 0;
        for t in tasks {
            events += t.await.map_err(|e| e.to_string())?;
        }
        let seconds = started.elapsed().as_secs_f64();
        Ok::<_, String>(json!({
            "what": "the relay's event rows, 20 per multi-row INSERT (UNNEST, one commit each) from 16 connections, no HTTP, no JSON",
            "connections": 16,
            "rows_per_statement": BATCH,
            "seconds": round2(seconds),
            "events": events,
            "events_per_s": (events as f64 / seconds).round(),
        }))
    }
    .await;
    let _ = pg_admin(server, &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
    result.unwrap_or_else(|e| json!(format!("failed: {e}")))
}

// ---- 7. fan-out and stored events ----

fn hooks_toml(sink: SocketAddr, hooks: usize, limit: &str) -> String {
    // 128 sends in flight in all, as in the single-webhook drain (at least 2 per webhook).
    let concurrency = (128 / hooks).max(2);
    (0..hooks)
        .map(|i| {
            format!(
                "[[webhook]]\nid = \"bench-{i}\"\nevents = [\"*\"]\nurl = \"http://{sink}/hook/{i}\"\nconcurrency = {concurrency}\n{limit}\n"
            )
        })
        .collect()
}

/// With `hooks` webhooks matching every event, on the SQLite file `db` (fresh
/// or pre-filled): deliveries/s (a backlog of about `args.deliveries` built
/// behind a `1/h` limit, then drained by a restarted relay), then ingest
/// events/s and ack latency for half the ingest time with the webhooks
/// rate-limited again, so that ingest (one event row and `hooks` delivery rows
/// per event) is measured alone.
async fn webhook_row(
    args: &Args,
    dir: &std::path::Path,
    db: &str,
    hooks: usize,
    epoch: Instant,
    seq: &Arc<AtomicU64>,
    http: &reqwest::Client,
) -> Value {
    let drain = sink(epoch, false).await;
    let limited = hooks_toml(drain.addr, hooks, "rate_limit = \"1/h\"");
    let relay = RelayProc::start(config(dir, db, &limited));
    relay.wait_ready().await;
    let batches = args.deliveries.div_ceil(hooks * BATCH);
    post_batches(http, &format!("{}/v1/batch", relay.url), args.clients, batches, epoch, seq).await;
    relay.stop();
    let already = drain.count.load(Ordering::Relaxed);
    let backlog = (batches * BATCH * hooks) as u64 - already;
    *drain.first_last.lock().unwrap() = (None, None);
    let relay = RelayProc::start(config(dir, db, &hooks_toml(drain.addr, hooks, "")));
    let wait_until = Instant::now() + Duration::from_secs(300);
    while drain.count.load(Ordering::Relaxed) - already < backlog && Instant::now() < wait_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    relay.stop();
    let drained = drain.count.load(Ordering::Relaxed) - already;
    let (first, last) = *drain.first_last.lock().unwrap();
    let span = match (first, last) {
        (Some(f), Some(l)) if l > f => (l - f).as_secs_f64(),
        _ => f64::NAN,
    };

    let relay = RelayProc::start(config(dir, db, &limited));
    relay.wait_ready().await;
    let load =
        post_for(http, &[format!("{}/v1/batch", relay.url)], args.clients, args.ingest_secs as f64 / 2.0, epoch, seq)
            .await;
    relay.stop();
    json!({
        "webhooks": hooks,
        "ingest_events_per_s": load.events_per_s(),
        "ingest_delivery_rows_per_s": (load.events_per_s() * hooks as f64).round(),
        "ingest_errors": load.errors,
        "ack_ms": summary(load.acks_ms),
        "backlog": backlog,
        "delivered": drained,
        "concurrency_per_webhook": (128 / hooks).max(2),
        "deliveries_per_s": (drained as f64 / span).round(),
    })
}

/// Event-to-webhook latency at a steady `args.rate` events/s for
/// `args.latency_secs`, on the SQLite file `db` (fresh or pre-filled), one
/// webhook (`bench-0`, the id the pre-filled rows carry) to a receiver that
/// stamps arrivals. Returns the row and the raw latencies (ms).
async fn latency_row(
    args: &Args,
    dir: &std::path::Path,
    db: &str,
    epoch: Instant,
    seq: &Arc<AtomicU64>,
    http: &reqwest::Client,
) -> (Value, Vec<f64>) {
    let lat_sink = sink(epoch, true).await;
    let relay = RelayProc::start(config(
        dir,
        db,
        &format!("[[webhook]]\nid = \"bench-0\"\nevents = [\"*\"]\nurl = \"http://{}/hook\"\n", lat_sink.addr),
    ));
    relay.wait_ready().await;
    let url = format!("{}/v1/batch", relay.url);
    let per_s = (args.rate as usize).div_ceil(BATCH) as u64;
    let total = per_s * args.latency_secs;
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / per_s));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sends = Vec::new();
    for _ in 0..total {
        ticker.tick().await;
        let (http, url, body) = (http.clone(), url.clone(), batch_body(epoch, seq));
        sends.push(tokio::spawn(async move {
            let t = Instant::now();
            let ok = matches!(http.post(&url).body(body).send().await, Ok(r) if r.status() == 202);
            (ok, t.elapsed().as_secs_f64() * 1000.0)
        }));
    }
    let mut ack_ms = Vec::new();
    for s in sends {
        let (ok, ms) = s.await.unwrap();
        assert!(ok, "latency phase: a batch was refused");
        ack_ms.push(ms);
    }
    let expected = total * BATCH as u64;
    let wait_until = Instant::now() + Duration::from_secs(60);
    while lat_sink.count.load(Ordering::Relaxed) < expected && Instant::now() < wait_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    relay.stop();
    let latencies = lat_sink.latencies.lock().unwrap().clone();
    let row = json!({
        "events_per_s": per_s * BATCH as u64,
        "batch_size": BATCH,
        "seconds": args.latency_secs,
        "delivered": latencies.len(),
        "expected": expected,
        "event_to_webhook_ms": summary(latencies.clone()),
        "ack_ms": summary(ack_ms),
    });
    (row, latencies)
}

/// A SQLite file holding `n` events, each with one delivered delivery, in the
/// relay's schema: written directly (50,000 rows per transaction,
/// `synchronous = OFF`: only the result matters, not how it got there).
fn prefill(path: &std::path::Path, rows: &Rows, seq: &AtomicU64, n: usize) -> f64 {
    let started = Instant::now();
    let conn = sqlite_file(path, "OFF");
    let mut left = n;
    while left > 0 {
        let chunk = left.min(50_000);
        sqlite_tx(&conn, rows, seq, chunk, true);
        left -= chunk;
    }
    round2(started.elapsed().as_secs_f64())
}
