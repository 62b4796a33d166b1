//! Compressed request bodies and their limits.

use std::io::Write;

use serde_json::Value;
use upstream_sim::TEXT_SCENARIO_ANSWER;

use crate::on_both_backends;
use crate::support::{Backend, Harness, sse_text, text_request};

async fn post_raw(h: &Harness, encoding: &str, bytes: Vec<u8>) -> (u16, String) {
    let r = h
        .http
        .post(h.url("/backend-api/codex/responses"))
        .bearer_auth(&h.info.api_key)
        .header("content-type", "application/json")
        .header("content-encoding", encoding)
        .body(bytes)
        .send()
        .await
        .expect("sent");
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

fn code_of(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

async fn compressed_bodies(backend: Backend) {
    let h = Harness::start_with(backend, 3, |s| {
        s.max_decompressed_bytes = 1024 * 1024;
        s.max_request_bytes = 4 * 1024 * 1024;
    })
    .await;
    let plain = serde_json::to_vec(&text_request("compressed", "zstd")).expect("json");
    let (status, body) = post_raw(&h, "zstd", zstd::encode_all(&plain[..], 3).expect("zstd")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(sse_text(&body), TEXT_SCENARIO_ANSWER);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&plain).expect("gzip");
    let (status, body) = post_raw(&h, "gzip", gz.finish().expect("gzip")).await;
    assert_eq!(status, 200, "{body}");

    let (status, body) = post_raw(&h, "br", plain.clone()).await;
    assert_eq!(
        (status, code_of(&body).as_str()),
        (415, "unsupported_content_encoding")
    );
    let (status, body) = post_raw(&h, "zstd", b"definitely not zstd".to_vec()).await;
    assert_eq!(
        (status, code_of(&body).as_str()),
        (400, "invalid_compressed_body")
    );
    // A bomb trips the ratio limit; merely large content trips the size limit.
    let bomb = zstd::encode_all(&vec![b' '; 8 * 1024 * 1024][..], 19).expect("zstd");
    let (status, body) = post_raw(&h, "zstd", bomb).await;
    assert_eq!(
        (status, code_of(&body).as_str()),
        (413, "decompression_ratio_exceeded")
    );
    let mut state = 0x2545_f491_u64;
    let letters: Vec<u8> = (0..2 * 1024 * 1024)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            b'a' + ((state >> 33) % 26) as u8
        })
        .collect();
    let (status, body) =
        post_raw(&h, "zstd", zstd::encode_all(&letters[..], 3).expect("zstd")).await;
    assert_eq!(
        (status, code_of(&body).as_str()),
        (413, "decompressed_request_too_large")
    );
    let (status, body) = post_raw(&h, "identity", vec![b' '; 5 * 1024 * 1024]).await;
    assert_eq!(
        (status, code_of(&body).as_str()),
        (413, "request_too_large")
    );
    let (status, body) = post_raw(&h, "identity", b"{\"model\": ".to_vec()).await;
    assert_eq!((status, code_of(&body).as_str()), (400, "invalid_request"));
    assert!(body.contains("not valid JSON"));
    h.stop().await;
}
on_both_backends!(compression, compressed_bodies);
