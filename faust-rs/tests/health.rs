//! `/health` answers as long as the worker runs; `/ready` once its tables are restored
//! and its consumer lag is known and small.

mod common;

use common::{wait_until_async, Broker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_at_once_ready_once_restored() {
    let broker = Broker::new();
    broker
        .topic("health-in", 2)
        .topic("health-test-counts-changelog", 2);
    let dir = tempfile::tempdir().unwrap();
    let app = broker
        .app("health-test")
        .datadir(dir.path())
        .topic_partitions(2)
        .web_port(0);
    app.configure(|s| s.web_enabled = true);
    let _counts = app.table::<String, i64>("counts").default(0);
    let topic = app.topic::<String, i64>("health-in");
    app.agent("noop", &topic, |mut s| async move {
        while s.next().await.is_some() {}
        Ok(())
    });
    let worker = app.start().await.unwrap();
    let base = format!("http://{}", worker.web_addr().unwrap());
    let client = reqwest::Client::new();
    let health = client.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    wait_until_async("the worker is ready", || {
        let client = client.clone();
        let url = format!("{base}/ready");
        async move {
            match client.get(url).send().await {
                Ok(r) if r.status() == 200 => {
                    let body: serde_json::Value = r.json().await.unwrap();
                    body["ready"] == true && body["restoring_tasks"] == 0
                }
                Ok(r) => {
                    assert_eq!(r.status(), 503, "not ready is a 503");
                    assert!(r.headers().contains_key("retry-after"));
                    false
                }
                Err(_) => false,
            }
        }
    })
    .await;
    worker.shutdown().await.unwrap();
}
