//! `gzip`: a `POST /v1/batch` body through the relay's own gzip layer
//! (`cuecast_relay::decompression`) and body reader (`ingest::read_body`).
//! The first byte's high bit picks the default limit (512 KB) or the one in
//! the next two bytes (1 B to 64 KB); its other bits pick what the rest is:
//! - 0: a raw gzip stream (hostile headers, truncation, bad checksums);
//! - 1: a payload repeated (up to the limit plus 4 KB) and then gzipped,
//!   which makes bombs that inflate past the limit;
//! - otherwise: an unencoded body.
//! Invariants: no panic; never more than the limit comes out; a body within
//! the limit comes out exactly as it went in; one past it is
//! `BodyTooLarge`; a well-formed single gzip member that flate2 inflates
//! within the limit comes out as flate2 inflates it.
#![no_main]

use std::io::{Read, Write};
use std::sync::{Arc, LazyLock, Mutex};

use axum::body::{Body, Bytes};
use axum::http::{header, Request, Response};
use cuecast_relay::config::Limits;
use cuecast_relay::{ingest, Error};
use libfuzzer_sys::fuzz_target;
use tower::{Layer, ServiceExt};

static RUNTIME: LazyLock<tokio::runtime::Runtime> =
    LazyLock::new(|| tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap());

/// What the relay reads from `body` sent with `encoding`.
fn read(body: Vec<u8>, encoding: Option<&str>, limit: usize) -> Result<Bytes, Error> {
    let out = Arc::new(Mutex::new(None));
    let seen = out.clone();
    let inner = tower::service_fn(move |req: Request<_>| {
        let seen = seen.clone();
        async move {
            let read = ingest::read_body(Body::new(req.into_body()), limit).await;
            *seen.lock().unwrap() = Some(read);
            Ok::<_, std::convert::Infallible>(Response::new(Body::empty()))
        }
    });
    let mut req = Request::post("/v1/batch");
    if let Some(encoding) = encoding {
        req = req.header(header::CONTENT_ENCODING, encoding);
    }
    let req = req.body(Body::from(body)).unwrap();
    RUNTIME.block_on(cuecast_relay::decompression().layer(inner).oneshot(req)).unwrap();
    let read = out.lock().unwrap().take();
    read.expect("the body reader ran")
}

fn gzip(plain: &[u8], level: u32) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level.min(9)));
    enc.write_all(plain).unwrap();
    enc.finish().unwrap()
}

/// flate2's reading of one gzip member, when `raw` is exactly one well-formed
/// member and inflates to at most `limit` bytes.
fn reference(raw: &[u8], limit: usize) -> Option<Vec<u8>> {
    let mut dec = flate2::bufread::GzDecoder::new(raw);
    let mut plain = Vec::new();
    (&mut dec).take(limit as u64 + 1).read_to_end(&mut plain).ok()?;
    (plain.len() <= limit && dec.into_inner().is_empty()).then_some(plain)
}

fn expect_exact(got: Result<Bytes, Error>, plain: &[u8], limit: usize) {
    match got {
        Ok(b) => assert_eq!(&b[..], plain, "the body changed on the way in"),
        Err(Error::BodyTooLarge { .. }) => assert!(plain.len() > limit, "{} bytes refused as too large", plain.len()),
        Err(e) => panic!("a well-formed body of {} bytes was refused: {e}", plain.len()),
    }
}

fuzz_target!(|data: &[u8]| {
    // The limit is a setting (`limits.max_body_bytes`): mostly a small one from the input, so
    // that bombs cross it quickly, and the default (512 KB) when the mode byte's high bit is set.
    let Some((&mode, rest)) = data.split_first() else { return };
    let Some((&[lo, hi], rest)) = rest.split_first_chunk::<2>() else { return };
    let limit =
        if mode & 0x80 != 0 { Limits::default().max_body_bytes } else { 1 + usize::from(u16::from_le_bytes([lo, hi])) };
    match mode & 0x7f {
        0 => {
            let got = read(rest.to_vec(), Some("gzip"), limit);
            if let Ok(b) = &got {
                assert!(b.len() <= limit, "{} bytes out, over the limit", b.len());
            }
            if let Some(plain) = reference(rest, limit) {
                expect_exact(got, &plain, limit);
            }
        }
        1 if rest.len() >= 3 => {
            // Up to the limit plus 4 KB: enough to cross it, small enough to gzip quickly
            // (2 MB at level 9 took 12 s under the sanitizer and tripped libFuzzer's timeout).
            let pattern = rest.len().max(4) - 3;
            let times = (u16::from_le_bytes([rest[0], rest[1]]) as usize).min((limit + 4096) / pattern);
            let level = u32::from(rest[2] % 7);
            let plain = rest[3..].repeat(times);
            expect_exact(read(gzip(&plain, level), Some("gzip"), limit), &plain, limit);
        }
        _ => expect_exact(read(rest.to_vec(), None, limit), rest, limit),
    }
});
