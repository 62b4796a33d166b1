//! Canary: prompt text, output text, bearer tokens, raw keys and auth.json
//! contents never reach the database or the metrics.

use upstream_sim::TEXT_SCENARIO_ANSWER;

use crate::support::{Backend, Harness, text_request};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_and_content_never_reach_the_database_or_metrics() {
    let h = Harness::start(Backend::Sqlite).await;
    let canary = "CANARY-PROMPT-7f3a9c";
    let r = h.responses(&text_request(canary, "canary")).await;
    let _ = r.text().await;
    let mut body = text_request(canary, "canary");
    body["stream"] = serde_json::json!(false);
    let _ = h.responses(&body).await.text().await;
    h.flush().await;
    let metrics = h
        .http
        .get(h.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let logs = h.request_logs().await;
    let log_text = serde_json::to_string(&logs).expect("json");
    let mut db = Vec::new();
    for entry in std::fs::read_dir(&h.data_dir).expect("data dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "db" || e == "db-wal")
            || path.to_string_lossy().ends_with(".db-wal")
        {
            db.extend(std::fs::read(&path).expect("read db"));
        }
    }
    assert!(!db.is_empty());
    let key_secret = h.info.api_key["sk-cxp-000000000000-".len()..].to_owned();
    let mut needles = vec![
        canary.to_owned(),
        TEXT_SCENARIO_ANSWER.to_owned(),
        h.info.api_key.clone(),
        key_secret,
        h.info.operator_token.clone(),
    ];
    for a in h.sim.accounts() {
        needles.push(a.access_token.clone());
        needles.push(a.refresh_token.clone());
        needles.push(a.id_token.clone());
    }
    for needle in &needles {
        let n = needle.as_bytes();
        assert!(
            !db.windows(n.len()).any(|w| w == n),
            "database holds a secret or content: {}",
            &needle[..needle.len().min(12)]
        );
        assert!(!metrics.contains(needle.as_str()));
        assert!(!log_text.contains(needle.as_str()));
    }
    h.stop().await;
}
