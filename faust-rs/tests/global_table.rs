//! A global table: every worker holds every key, whichever worker wrote it.

mod common;

use common::{wait_until, Broker, Raw, RawProducer};
use faust::{App, Table};

const APP: &str = "global-test";

fn app(broker: &Broker, dir: &std::path::Path) -> (App, Table<String, String>) {
    let app = broker.app(APP).datadir(dir).topic_partitions(4);
    let names = app.global_table::<String, String>("names");
    let updates = app.topic::<String, String>("updates");
    let t = names.clone();
    app.agent("store", &updates, move |mut stream| {
        let t = t.clone();
        async move {
            while let Some((key, value)) = stream.next_item().await {
                t.set(&key.unwrap_or_default(), value)?;
            }
            Ok(())
        }
    });
    (app, names)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_worker_reads_every_key_of_a_global_table() {
    let broker = Broker::new();
    broker
        .topic("updates", 4)
        .topic("global-test-names-changelog", 4);
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (app_a, names_a) = app(&broker, dir_a.path());
    let (app_b, names_b) = app(&broker, dir_b.path());
    let a = app_a.start().await.unwrap();
    let b = app_b.start().await.unwrap();
    wait_until("both workers process tasks", || {
        !a.active_tasks().is_empty() && !b.active_tasks().is_empty()
    })
    .await;
    let records: Vec<Raw> = (0..40)
        .map(|i| Raw::new("updates", format!("\"name-{i}\"")).key(format!("k{i}")))
        .collect();
    RawProducer::new(&broker.bootstrap()).send(&records).await;
    let all_there = |t: &Table<String, String>| {
        (0..40).all(|i| t.get(&format!("k{i}")).ok().flatten() == Some(format!("name-{i}")))
    };
    wait_until("worker A holds every key", || all_there(&names_a)).await;
    wait_until("worker B holds every key", || all_there(&names_b)).await;
    // Worker B starts again from an empty directory: it reads the whole changelog
    // before it processes anything.
    b.shutdown().await.unwrap();
    let dir_c = tempfile::tempdir().unwrap();
    let (app_c, names_c) = app(&broker, dir_c.path());
    let c = app_c.start().await.unwrap();
    assert!(all_there(&names_c), "restored before start() returned");
    c.shutdown().await.unwrap();
    a.shutdown().await.unwrap();
}
