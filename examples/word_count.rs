//! Word count: sentences in, a running count per word out.
//!
//! `cargo run --example word_count` runs a short demo on an embedded broker and prints the
//! counts; `cargo run --example word_count -- worker` runs a real worker (`--help` for
//! more), fed with e.g. `cargo run --example word_count -- send sentences '"to be or not"'`.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use faust::App;

const DEMO: &[&str] = &[
    "the quick brown fox jumps over the lazy dog",
    "the dog barks",
    "a fox is quick and a dog is lazy",
];

fn app(counts: Arc<Mutex<HashMap<String, u64>>>) -> App {
    let app = App::new("word-count").topic_partitions(4);
    let sentences = app.topic::<String, String>("sentences");
    // Split sentences into words; each word goes to the partition of its key, so one
    // worker counts all occurrences of a word.
    app.agent("count", &sentences, move |stream| {
        let counts = counts.clone();
        async move {
            let mut words = stream
                .flat_map(|s: String| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
                .group_by(|word: &String| word.clone(), "words");
            while let Some(word) = words.next().await {
                *counts.lock().unwrap().entry(word).or_default() += 1;
            }
            Ok(())
        }
    });
    app
}

fn main() -> anyhow::Result<()> {
    let counts = Arc::new(Mutex::new(HashMap::new()));
    let app = app(counts.clone());
    if std::env::args().len() > 1 {
        app.main();
    }
    // Demo: start a worker in this process, send the sentences, print the counts.
    tokio::runtime::Runtime::new()?.block_on(async {
        let worker = app.web_port(0).without_web().start().await?;
        let sentences = worker.app().topic::<String, String>("sentences");
        for s in DEMO {
            sentences.send(None, &s.to_string()).await?;
        }
        let total: u64 = DEMO
            .iter()
            .map(|s| s.split_whitespace().count() as u64)
            .sum();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while counts.lock().unwrap().values().sum::<u64>() < total {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the words were not counted in time"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut sorted: Vec<(String, u64)> = counts.lock().unwrap().clone().into_iter().collect();
        sorted.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        println!("{} words counted:", total);
        for (word, n) in sorted {
            println!("  {word:<8} {n}");
        }
        worker.shutdown().await?;
        Ok(())
    })
}
