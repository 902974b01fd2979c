//! Events in, results out, per stream operator, through a real broker (librdkafka's mock
//! cluster): `map`, `filter`, `flat_map`, `enumerate`, `then`, `take(n, within)` (the
//! count bound and the time bound), `through`, `echo`, `group_by` (whose repartition topic
//! the worker creates itself on its embedded broker), the three sinks of `agent_stream`,
//! the three ways to iterate (`next`, `next_item`, `next_event`), and app timers and
//! tasks. Where an operator drops or batches events, it also proves that the source
//! offsets are still committed (filtered events are acknowledged, batches are
//! acknowledged as a whole, a partial batch is flushed at shutdown). Also: a worker whose
//! agents start together subscribes to every one of their topics, and several agents on
//! one topic each get every record.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{produce, produce_json, read_topic, wait_until, Broker, Log, Offsets, Raw};
use faust::codec::{Auto, Codec};
use faust::rdkafka_async::Message;
use faust::App;
use serde::{Deserialize, Serialize};

/// A stored record's key, decoded as the app's topics encode `String` keys by default.
fn key_of(m: &Message) -> String {
    Codec::<String>::decode(&Auto, m.key().expect("a key")).expect("a string key")
}

fn values(range: std::ops::Range<i64>) -> Vec<(Option<String>, i64)> {
    range.map(|v| (None, v)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn map_filter_and_enumerate() {
    let b = Broker::new();
    b.topic("numbers", 1);
    let app = b.app("ops-map");
    let numbers = app.topic::<String, i64>("numbers");
    let out = Log::default();
    let log = out.clone();
    app.agent("evens", &numbers, move |stream| {
        let log = log.clone();
        async move {
            let mut s = stream.filter(|v| v % 2 == 0).map(|v| v * 10).enumerate();
            while let Some((i, v)) = s.next().await {
                log.push((i, v));
            }
            Ok(())
        }
    });
    let worker = app.start().await.unwrap();
    produce_json(&b.bootstrap(), "numbers", &values(0..10)).await;

    let got = out.wait_for(5, "even numbers").await;
    assert_eq!(got, vec![(0, 0), (1, 20), (2, 40), (3, 60), (4, 80)]);
    // The filtered-out events are acknowledged too: the commit covers all ten.
    let offsets = Offsets::new(&b.bootstrap(), "ops-map");
    offsets.wait_all_committed("numbers", 1).await;
    worker.shutdown().await.unwrap();
    assert_eq!(out.len(), 5, "nothing more came");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flat_map_and_then() {
    let b = Broker::new();
    b.topic("sentences", 1);
    let app = b.app("ops-flat-map");
    let sentences = app.topic::<String, String>("sentences");
    let out = Log::default();
    let log = out.clone();
    app.agent("words", &sentences, move |stream| {
        let log = log.clone();
        async move {
            let mut words = stream
                .flat_map(|s: String| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
                .then(|w| async move {
                    tokio::task::yield_now().await;
                    w.to_uppercase()
                });
            while let Some((key, word)) = words.next_item().await {
                log.push((key, word));
            }
            Ok(())
        }
    });
    let worker = app.start().await.unwrap();
    let input = [
        (Some("a".to_string()), "the quick fox".to_string()),
        (Some("b".to_string()), "".to_string()),
        (Some("c".to_string()), "jumps".to_string()),
    ];
    produce_json(&b.bootstrap(), "sentences", &input).await;

    let got = out.wait_for(4, "words").await;
    let want: Vec<(Option<String>, String)> =
        [("a", "THE"), ("a", "QUICK"), ("a", "FOX"), ("c", "JUMPS")]
            .iter()
            .map(|(k, w)| (Some(k.to_string()), w.to_string()))
            .collect();
    assert_eq!(got, want, "each word keeps its sentence's key, in order");
    // A sentence without words yields nothing but is acknowledged.
    Offsets::new(&b.bootstrap(), "ops-flat-map")
        .wait_all_committed("sentences", 1)
        .await;
    worker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn take_flushes_full_batches_and_the_rest_at_shutdown() {
    let b = Broker::new();
    b.topic("numbers", 1);
    let app = b.app("ops-take-count");
    let numbers = app.topic::<String, i64>("numbers");
    let out = Log::default();
    let log = out.clone();
    app.agent("batches", &numbers, move |stream| {
        let log = log.clone();
        async move {
            // The time bound never triggers here: only the count does.
            let mut batches = stream.take(4, Duration::from_secs(3600));
            while let Some(batch) = batches.next().await {
                log.push(batch);
            }
            Ok(())
        }
    });
    let worker = app.start().await.unwrap();
    produce_json(&b.bootstrap(), "numbers", &values(0..10)).await;

    let got = out.wait_for(2, "two full batches").await;
    assert_eq!(got, vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7]]);
    let offsets = Offsets::new(&b.bootstrap(), "ops-take-count");
    wait_until("the worker took all ten records", || {
        worker.monitor().snapshot().messages_in >= 10
    })
    .await;
    // The partial batch [8, 9] waits for more; a graceful stop flushes it to the agent,
    // which processes it, and its offsets are committed.
    worker.shutdown().await.unwrap();
    assert_eq!(out.items().last(), Some(&vec![8, 9]));
    assert_eq!(offsets.committed("numbers", 1).await, vec![Some(10)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn take_flushes_by_time() {
    let b = Broker::new();
    b.topic("numbers", 1);
    let app = b.app("ops-take-time");
    let numbers = app.topic::<String, i64>("numbers");
    let out: Log<(Vec<i64>, Instant)> = Log::default();
    let log = out.clone();
    let within = Duration::from_millis(300);
    app.agent("batches", &numbers, move |stream| {
        let log = log.clone();
        async move {
            // The count bound never triggers here: only the time does.
            let mut batches = stream.take(1000, within);
            while let Some(batch) = batches.next().await {
                log.push((batch, Instant::now()));
            }
            Ok(())
        }
    });
    let worker = app.start().await.unwrap();
    let offsets = Offsets::new(&b.bootstrap(), "ops-take-time");

    let sent = Instant::now();
    produce_json(&b.bootstrap(), "numbers", &values(0..3)).await;
    let got = out.wait_for(1, "a batch flushed by time").await;
    let flat: Vec<i64> = got.iter().flat_map(|(b, _)| b.clone()).collect();
    assert_eq!(flat, vec![0, 1, 2]);
    assert!(
        got[0].1.duration_since(sent) >= within,
        "a batch waits `within` after its first value"
    );
    offsets.wait_all_committed("numbers", 1).await;

    // A second, later batch.
    produce_json(&b.bootstrap(), "numbers", &values(3..5)).await;
    wait_until("the second batch", || {
        out.items().iter().map(|(b, _)| b.len()).sum::<usize>() == 5
    })
    .await;
    let flat: Vec<i64> = out.items().iter().flat_map(|(b, _)| b.clone()).collect();
    assert_eq!(flat, vec![0, 1, 2, 3, 4]);
    offsets.wait_all_committed("numbers", 1).await;
    worker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_a_topic() {
    let b = Broker::new();
    b.topic("numbers", 1).topic("through", 1);
    let app = b.app("ops-through");
    let numbers = app.topic::<String, i64>("numbers");
    let through = app.topic::<String, i64>("through");
    let out = Log::default();
    let log = out.clone();
    app.agent("via", &numbers, move |stream| {
        let (log, through) = (log.clone(), through.clone());
        async move {
            let mut s = stream.map(|v| v + 100).through(&through);
            while let Some(e) = s.next_event().await {
                log.push((
                    e.topic().map(str::to_owned),
                    e.key().cloned().unwrap(),
                    *e.value(),
                ));
            }
            Ok(())
        }
    });
    let worker = app.start().await.unwrap();
    let input: Vec<(Option<String>, i64)> = (0..5).map(|v| (Some(format!("k{v}")), v)).collect();
    produce_json(&b.bootstrap(), "numbers", &input).await;

    let got = out
        .wait_for(5, "events read back from the through topic")
        .await;
    let want: Vec<(Option<String>, String, i64)> = (0..5)
        .map(|v| (Some("through".to_string()), format!("k{v}"), v + 100))
        .collect();
    assert_eq!(
        got, want,
        "read back from the through topic, keys kept, in order"
    );
    // The intermediate topic holds the mapped records, keys kept.
    let stored = read_topic(&b.bootstrap(), "through", 1, 5).await;
    let stored: Vec<(String, i64)> = stored[&0]
        .iter()
        .map(|m| {
            (
                key_of(m),
                serde_json::from_slice(m.payload().unwrap()).unwrap(),
            )
        })
        .collect();
    let want: Vec<(String, i64)> = (0..5).map(|v| (format!("k{v}"), v + 100)).collect();
    assert_eq!(stored, want);
    let offsets = Offsets::new(&b.bootstrap(), "ops-through");
    offsets.wait_all_committed("numbers", 1).await;
    offsets.wait_all_committed("through", 1).await;
    worker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_to_topics() {
    let b = Broker::new();
    b.topic("numbers", 1).topic("copy-a", 1).topic("copy-b", 2);
    let app = b.app("ops-echo");
    let numbers = app.topic::<String, i64>("numbers");
    let copy_a = app.topic::<String, i64>("copy-a");
    let copy_b = app.topic::<String, i64>("copy-b");
    let out = Log::default();
    let log = out.clone();
    app.agent("echo", &numbers, move |stream| {
        let (log, a, b) = (log.clone(), copy_a.clone(), copy_b.clone());
        async move {
            let mut s = stream.echo(&[&a, &b]);
            while let Some(v) = s.next().await {
                log.push(v);
            }
            Ok(())
        }
    });
    let worker = app.start().await.unwrap();
    let input: Vec<(Option<String>, i64)> = (0..6).map(|v| (Some(format!("k{v}")), v)).collect();
    produce_json(&b.bootstrap(), "numbers", &input).await;

    assert_eq!(
        out.wait_for(6, "echoed values").await,
        (0..6).collect::<Vec<_>>()
    );
    for (topic, partitions) in [("copy-a", 1), ("copy-b", 2)] {
        let copies = read_topic(&b.bootstrap(), topic, partitions, 6).await;
        let mut got: Vec<(String, i64)> = copies
            .values()
            .flatten()
            .map(|m| {
                (
                    key_of(m),
                    serde_json::from_slice(m.payload().unwrap()).unwrap(),
                )
            })
            .collect();
        got.sort();
        let want: Vec<(String, i64)> = (0..6).map(|v| (format!("k{v}"), v)).collect();
        assert_eq!(got, want, "{topic} has a copy of every event");
    }
    Offsets::new(&b.bootstrap(), "ops-echo")
        .wait_all_committed("numbers", 1)
        .await;
    worker.shutdown().await.unwrap();
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Order {
    user: String,
    n: u32,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_by_on_the_embedded_broker() {
    common::init_tracing();
    // No broker configured: the worker runs an embedded one and creates every topic,
    // including the repartition topic declared when the agent calls group_by.
    let app = App::new("ops-group-by").without_web().topic_partitions(3);
    let orders = app.topic::<String, Order>("orders");
    let out = Log::default();
    let log = out.clone();
    app.agent("by-user", &orders, move |stream| {
        let log = log.clone();
        async move {
            let mut s = stream.group_by(|o: &Order| o.user.clone(), "user");
            while let Some(e) = s.next_event().await {
                log.push((
                    e.topic().unwrap().to_owned(),
                    e.key().cloned(),
                    e.value().clone(),
                ));
            }
            Ok(())
        }
    });
    let worker = app.start().await.unwrap();
    assert!(worker.is_embedded());
    let orders = worker.app().topic::<String, Order>("orders");
    let mut sent = Vec::new();
    for n in 0..12u32 {
        let order = Order {
            user: format!("u{}", n % 3),
            n,
        };
        // Keyed by something else than the user: group_by moves the events.
        sent.push(
            orders
                .send_soon(Some(&format!("src{}", n % 2)), &order)
                .await
                .unwrap(),
        );
    }
    for d in sent {
        d.await.unwrap();
    }

    let got = out.wait_for(12, "regrouped orders").await;
    for (topic, key, order) in &got {
        assert_eq!(topic, "ops-group-by-user-repartition");
        assert_eq!(key.as_ref(), Some(&order.user), "the new key is the user");
    }
    for u in 0..3 {
        let user = format!("u{u}");
        let ns: Vec<u32> = got
            .iter()
            .filter(|(_, _, o)| o.user == user)
            .map(|(_, _, o)| o.n)
            .collect();
        // Sent from two source partitions, so only each source's order is defined.
        for src in 0..2 {
            let from_src: Vec<u32> = ns.iter().copied().filter(|n| n % 2 == src).collect();
            let mut sorted = from_src.clone();
            sorted.sort();
            assert_eq!(from_src, sorted, "{user}: order kept");
            assert_eq!(from_src.len(), 2, "{user}: every event once");
        }
    }
    worker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_stream_sinks() {
    let b = Broker::new();
    b.topic("numbers", 1)
        .topic("doubled", 1)
        .topic("collect", 1);
    let app = b.app("ops-sinks");
    let numbers = app.topic::<String, i64>("numbers");
    let doubled = app.topic::<String, i64>("doubled");
    let collect = app.topic::<String, i64>("collect");
    let by_agent = Log::default();
    let log = by_agent.clone();
    let collector = app.agent("collector", &collect, move |mut stream| {
        let log = log.clone();
        async move {
            while let Some(item) = stream.next_item().await {
                log.push(item);
            }
            Ok(())
        }
    });
    let by_fn = Log::default();
    let log = by_fn.clone();
    let double = app
        .agent_stream("double", &numbers, |s| s.map(|v| v * 2))
        .sink(&doubled)
        .sink_agent(&collector)
        .sink_fn(move |k, v| {
            let log = log.clone();
            async move { log.push((k, v)) }
        });
    assert_eq!(double.name(), "double");
    let worker = app.start().await.unwrap();
    let input: Vec<(Option<String>, i64)> = (0..5).map(|v| (Some(format!("k{v}")), v)).collect();
    produce_json(&b.bootstrap(), "numbers", &input).await;

    let want: Vec<(Option<String>, i64)> = (0..5).map(|v| (Some(format!("k{v}")), v * 2)).collect();
    assert_eq!(by_fn.wait_for(5, "the fn sink").await, want);
    assert_eq!(by_agent.wait_for(5, "the agent sink").await, want);
    let stored = read_topic(&b.bootstrap(), "doubled", 1, 5).await;
    let stored: Vec<(Option<String>, i64)> = stored[&0]
        .iter()
        .map(|m| {
            (
                Some(key_of(m)),
                serde_json::from_slice(m.payload().unwrap()).unwrap(),
            )
        })
        .collect();
    assert_eq!(stored, want, "the topic sink");
    let offsets = Offsets::new(&b.bootstrap(), "ops-sinks");
    offsets.wait_all_committed("numbers", 1).await;
    offsets.wait_all_committed("collect", 1).await;
    worker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_next_item_and_next_event() {
    let b = Broker::new();
    b.topic("events", 1);
    let app = b.app("ops-iterate");
    let events = app.topic::<String, String>("events");
    let values = Log::default();
    let items = Log::default();
    let whole = Log::default();
    let log = values.clone();
    app.agent("values", &events, move |mut stream| {
        let log = log.clone();
        async move {
            while let Some(v) = stream.next().await {
                log.push(v);
            }
            Ok(())
        }
    });
    let log = items.clone();
    app.agent("items", &events, move |mut stream| {
        let log = log.clone();
        async move {
            while let Some(item) = stream.next_item().await {
                log.push(item);
            }
            Ok(())
        }
    });
    let log = whole.clone();
    app.agent("events", &events, move |mut stream| {
        let log = log.clone();
        async move {
            while let Some(e) = stream.next_event().await {
                log.push((
                    e.topic().map(str::to_owned),
                    e.partition(),
                    e.offset(),
                    e.key().cloned(),
                    e.value().clone(),
                    e.header("trace").map(|h| String::from_utf8(h).unwrap()),
                    e.timestamp().is_some(),
                ));
            }
            Ok(())
        }
    });
    let worker = app.start().await.unwrap();
    let records: Vec<Raw> = (0..3)
        .map(|i| {
            Raw::new("events", format!("\"v{i}\""))
                .key(format!("\"k{i}\""))
                .header("trace", format!("t{i}"))
        })
        .collect();
    produce(&b.bootstrap(), &records).await;

    let want_values: Vec<String> = (0..3).map(|i| format!("v{i}")).collect();
    assert_eq!(values.wait_for(3, "values").await, want_values);
    let want_items: Vec<(Option<String>, String)> = (0..3)
        .map(|i| (Some(format!("k{i}")), format!("v{i}")))
        .collect();
    assert_eq!(items.wait_for(3, "items").await, want_items);
    let got = whole.wait_for(3, "events").await;
    for (i, e) in got.into_iter().enumerate() {
        assert_eq!(
            e,
            (
                Some("events".to_string()),
                Some(0),
                Some(i as i64),
                Some(format!("k{i}")),
                format!("v{i}"),
                Some(format!("t{i}")),
                true
            )
        );
    }
    // Every agent got every record; each record is committed once all three processed it.
    Offsets::new(&b.bootstrap(), "ops-iterate")
        .wait_all_committed("events", 1)
        .await;
    worker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_and_tasks_run() {
    let b = Broker::new();
    b.topic("from-task", 1);
    let app = b.app("ops-timers");
    let from_task = app.topic::<String, String>("from-task");
    let ticks: Log<Instant> = Log::default();
    let log = ticks.clone();
    let every = Duration::from_millis(100);
    app.timer("tick", every, move |_app| {
        let log = log.clone();
        async move {
            log.push(Instant::now());
            Ok(())
        }
    });
    let task_runs = Arc::new(AtomicUsize::new(0));
    let runs = task_runs.clone();
    let topic = from_task.clone();
    app.task("hello", move |app| {
        let (runs, topic) = (runs.clone(), topic.clone());
        async move {
            runs.fetch_add(1, Ordering::SeqCst);
            assert_eq!(app.id(), "ops-timers");
            topic.send(None, &"from the task".to_string()).await?;
            Ok(())
        }
    });
    let received = Log::default();
    let log = received.clone();
    app.agent("receiver", &from_task, move |mut stream| {
        let log = log.clone();
        async move {
            while let Some(v) = stream.next().await {
                log.push(v);
            }
            Ok(())
        }
    });
    let started = Instant::now();
    let worker = app.start().await.unwrap();
    let got = ticks.wait_for(3, "three timer ticks").await;
    assert!(
        got[0].duration_since(started) >= every,
        "the first tick comes after one interval"
    );
    // Ticks keep to a grid of `every` (a late tick makes the gap to the next shorter).
    assert!(
        got[2].duration_since(got[0]) >= every,
        "ticks are spaced, not a burst"
    );
    assert_eq!(
        received.wait_for(1, "the task's record").await,
        vec!["from the task".to_string()]
    );
    assert_eq!(task_runs.load(Ordering::SeqCst), 1, "a task runs once");
    assert_eq!(worker.monitor().snapshot().agent_failures, 0);
    worker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_agents_each_get_their_topic() {
    // Agents start at the same time and each adds its topic to the worker's subscription:
    // however they interleave, the worker ends up subscribed to all of them.
    let b = Broker::new();
    const AGENTS: usize = 12;
    for i in 0..AGENTS {
        b.topic(&format!("topic-{i}"), 1);
    }
    let app = b.app("ops-many");
    let seen = Log::default();
    for i in 0..AGENTS {
        let topic = app.topic::<String, usize>(&format!("topic-{i}"));
        let log = seen.clone();
        app.agent(&format!("agent-{i}"), &topic, move |mut stream| {
            let log = log.clone();
            async move {
                while let Some(v) = stream.next().await {
                    log.push((i, v));
                }
                Ok(())
            }
        })
        .concurrency(2);
    }
    let worker = app.start().await.unwrap();
    let records: Vec<Raw> = (0..AGENTS)
        .map(|i| Raw::new(&format!("topic-{i}"), i.to_string()))
        .collect();
    produce(&b.bootstrap(), &records).await;
    let mut got = seen.wait_for(AGENTS, "one record per agent").await;
    got.sort();
    assert_eq!(got, (0..AGENTS).map(|i| (i, i)).collect::<Vec<_>>());
    worker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_agent_of_a_topic_gets_every_record() {
    // Records already waiting when the worker starts: each of several agents on the same
    // topic gets each of them, including the first ones dispatched.
    let b = Broker::new();
    b.topic("shared", 1);
    const AGENTS: usize = 16;
    let records: Vec<Raw> = (0..3).map(|v| Raw::new("shared", v.to_string())).collect();
    produce(&b.bootstrap(), &records).await;
    let app = b.app("ops-fan-out");
    let shared = app.topic::<String, usize>("shared");
    let seen = Log::default();
    for i in 0..AGENTS {
        let log = seen.clone();
        app.agent(&format!("agent-{i}"), &shared, move |mut stream| {
            let log = log.clone();
            async move {
                while let Some(v) = stream.next().await {
                    log.push((i, v));
                }
                Ok(())
            }
        });
    }
    let worker = app.start().await.unwrap();
    let mut got = seen
        .wait_for(AGENTS * 3, "every record at every agent")
        .await;
    got.sort();
    let want: Vec<(usize, usize)> = (0..AGENTS)
        .flat_map(|i| (0..3).map(move |v| (i, v)))
        .collect();
    assert_eq!(got, want);
    Offsets::new(&b.bootstrap(), "ops-fan-out")
        .wait_all_committed("shared", 1)
        .await;
    worker.shutdown().await.unwrap();
}
