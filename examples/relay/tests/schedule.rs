//! The default retry schedule, run under paused time: eight attempts over
//! about 33 virtual hours take a moment of real time.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(start_paused = true)]
async fn the_default_schedule_spaces_attempts_with_jitter_then_dead_letters() {
    let receiver = Receiver::start(|_, _| Reply::status(503)).await;
    // The sweep would wake every 2 virtual seconds; the timeout must outlast the
    // clock's jumps while an attempt waits for the writer thread.
    let relay = TestRelay::start(
        Backend::Sqlite,
        &format!(
            "[limits]\nsweep_interval = \"1h\"\nshutdown_grace = \"1s\"\n{SOURCES}{}",
            hook("down", &receiver.url("/down"), "timeout = \"100h\"")
        ),
    )
    .await;
    assert_eq!(relay.post(&batch(vec![nps(3)])).await.0, 202);
    let got = tokio::time::timeout(Duration::from_secs(48 * 3600), receiver.wait_quietly("/down", 8))
        .await
        .expect("eight attempts within 48 virtual hours");
    let gaps: Vec<Duration> = got.windows(2).map(|w| w[1].at_tokio - w[0].at_tokio).collect();
    let schedule = [5, 300, 1800, 7200, 18000, 36000, 36000];
    assert_eq!(gaps.len(), schedule.len());
    for (gap, secs) in gaps.iter().zip(schedule) {
        let base = Duration::from_secs(secs);
        // ±20 % jitter, plus a little for the attempt itself.
        assert!(
            *gap >= base.mul_f64(0.8) && *gap <= base.mul_f64(1.2) + Duration::from_secs(1),
            "gap {gap:?} for {base:?}: {gaps:?}"
        );
    }
    // Jitter really varies the delays (all seven at exactly the base would be a bug).
    assert!(gaps
        .iter()
        .zip(schedule)
        .any(|(g, s)| g.as_secs_f64() / s as f64 > 1.01 || g.as_secs_f64() / (s as f64) < 0.99));
    // The eighth failure dead-letters it; results are written by the writer thread.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let d = relay.deliveries();
        if d[0].2 == "dead" {
            assert_eq!(d[0].3, 8);
            assert_eq!(relay.attempts(d[0].0).len(), 8);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{d:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(receiver.on("/down").len(), 8, "no ninth attempt");
    relay.stop().await;
}
