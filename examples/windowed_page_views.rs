//! Page views per page and minute, in a windowed table: tumbling windows of one minute by
//! the time of each view (its record's timestamp), kept 30 s after their end for views that
//! arrive late, then closed: removed, with a callback that prints each minute's final count.
//!
//! `cargo run --example windowed_page_views` runs a short demo on an embedded broker: it
//! sends views with chosen timestamps (some out of order, one too late), prints the windows
//! as they close and those still open at the end. With arguments it is a normal faust-rs
//! app (`cargo run --example windowed_page_views -- worker`, `--help` for more).
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use faust::table::WindowedTable;
use faust::topic::SendOptions;
use faust::App;

/// 2024-01-01 00:00:00 UTC, in ms: the demo's views happen in the minutes after it.
const T0: i64 = 1_704_067_200_000;

/// (page, user, seconds after T0)
const VIEWS: &[(&str, &str, i64)] = &[
    ("/home", "ann", 5),
    ("/about", "bob", 20),
    ("/home", "cid", 40),
    // The next minute; the first one stays open until 01:30.
    ("/home", "ann", 70),
    // Out of order, but its minute is still open: counted.
    ("/home", "dan", 50),
    // 01:45 closes the first minute.
    ("/about", "ann", 105),
    // Too late: the first minute closed.
    ("/home", "eve", 30),
    // 03:00 closes the second minute.
    ("/home", "bob", 180),
];

fn clock(ms: i64) -> String {
    let s = (ms - T0) / 1000;
    format!("{:02}:{:02}", s / 60, s % 60)
}

fn app(processed: Arc<AtomicUsize>) -> (App, WindowedTable<String, u64>) {
    // One partition: event time, and so the closing of windows, moves per partition.
    let app = App::new("windowed-page-views").topic_partitions(1);
    let views = app.topic::<String, String>("page_views");
    let per_minute = app
        .table::<String, u64>("views_per_minute")
        .default(0)
        .tumbling(Duration::from_secs(60), Duration::from_secs(30))
        .on_window_close(|page, window, count| {
            println!(
                "closed  {page:<7} [{} - {}): views {count}",
                clock(window.start),
                clock(window.end)
            );
        });
    let table = per_minute.clone();
    app.agent("count", &views, move |mut stream| {
        let (per_minute, processed) = (table.clone(), processed.clone());
        async move {
            // Events keyed by page: each page's views are on the page's partition.
            while let Some(event) = stream.next_event().await {
                let page = event.key().cloned().unwrap_or_default();
                per_minute.update_current(&page, &event, |n| *n += 1)?;
                processed.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        }
    });
    (app, per_minute)
}

fn main() -> anyhow::Result<()> {
    let processed = Arc::new(AtomicUsize::new(0));
    let (app, per_minute) = app(processed.clone());
    if std::env::args().len() > 1 {
        app.main();
    }
    tokio::runtime::Runtime::new()?.block_on(async {
        let datadir = tempfile::tempdir()?;
        let worker = app.datadir(datadir.path()).without_web().start().await?;
        let views = worker.app().topic::<String, String>("page_views");
        for (page, user, at) in VIEWS {
            let ts = T0 + at * 1000;
            println!("view    {page:<7} by {user} at {}", clock(ts));
            let options = SendOptions::new().timestamp(ts);
            views
                .send_with(Some(&page.to_string()), &user.to_string(), &options)
                .await?;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while processed.load(Ordering::Relaxed) < VIEWS.len() {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the views were not counted in time"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!("open windows:");
        for (page, window, count) in per_minute.partition_items(0)? {
            println!(
                "open    {page:<7} [{} - {}): views {count}",
                clock(window.start),
                clock(window.end)
            );
        }
        println!(
            "windows closed: {}, late views dropped: {}",
            per_minute.closed_windows(),
            per_minute.late_updates()
        );
        worker.shutdown().await?;
        Ok(())
    })
}
