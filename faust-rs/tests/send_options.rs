//! `Topic::send_with` stores the partition, timestamp and headers it is given, and an agent
//! sees them on the event; `Topic::send` keys by the default key codec (strings raw).

mod common;

use std::time::Duration;

use common::{wait_until, Broker, Log};
use faust::topic::SendOptions;

/// What the agent saw of one note: key, partition, timestamp, `source` header, value.
type Seen = (Option<String>, i32, Option<i64>, Option<Vec<u8>>, String);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_timestamp_and_headers_reach_the_agent() {
    let b = Broker::new();
    b.topic("notes", 4);
    let app = b.app("send-options");
    let notes = app.topic::<String, String>("notes");
    let seen: Log<Seen> = Log::default();
    let log = seen.clone();
    app.agent("read", &notes, move |mut stream| {
        let log = log.clone();
        async move {
            while let Some(e) = stream.next_event().await {
                log.push((
                    e.key().cloned(),
                    e.partition().unwrap(),
                    e.timestamp(),
                    e.header("source"),
                    e.value().clone(),
                ));
            }
            Ok(())
        }
    });
    let worker = app.start().await.unwrap();
    let options = SendOptions::new()
        .partition(3)
        .timestamp(1_700_000_000_123)
        .header("source", "web");
    let d = notes
        .send_with(Some(&"alice".to_string()), &"hi".to_string(), &options)
        .await
        .unwrap();
    assert_eq!(d.partition, 3);
    notes.send(None, &"plain".to_string()).await.unwrap();
    wait_until("both notes are read", || seen.len() >= 2).await;
    let items = seen.items();
    let hi = items.iter().find(|n| n.4 == "hi").unwrap();
    assert_eq!(hi.0.as_deref(), Some("alice"));
    assert_eq!(hi.1, 3);
    assert_eq!(hi.2, Some(1_700_000_000_123));
    assert_eq!(hi.3.as_deref(), Some(&b"web"[..]));
    let plain = items.iter().find(|n| n.4 == "plain").unwrap();
    assert_eq!((plain.0.as_deref(), plain.3.as_deref()), (None, None));
    tokio::time::timeout(Duration::from_secs(60), worker.shutdown())
        .await
        .unwrap()
        .unwrap();
}
