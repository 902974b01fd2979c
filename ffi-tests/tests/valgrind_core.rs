//! Small, quick tests of the client's core paths, written to run under valgrind memcheck
//! (`ffi-tests/valgrind.sh`): few messages, generous deadlines, one mock cluster each.
//! Natively each takes a few seconds at most; under valgrind (20-50x slower) they still
//! fit the script's budget. Together they exercise every native object the client owns:
//!
//! - `produce_consume_commit_round_trip`: produce (with headers) and await deliveries,
//!   consume in a group, commit per message and per list, read the commit back, close.
//! - `injected_errors_resolve_every_future`: a produce request refused with
//!   MSG_SIZE_TOO_LARGE, commits refused with REBALANCE_IN_PROGRESS (error events on
//!   the reply queue), a dropped delivery future and a dropped commit future.
//! - `eager_rebalance_light`: a second member joins an eager (range) group; each member
//!   commits on revocation; both close.
//! - `drop_paths`: a producer dropped with messages in flight, a consumer dropped without
//!   `close`, messages read after their consumer is gone, a split partition queue.
//!
//! Every test also checks that no completion slot is left.

mod common_rebalance;

use std::future::Future;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use common_rebalance::{
    base_config, code, code_of, init_tracing, mock_with_topic, wait_until, within,
};
use rdkafka_async::mock::api_key;
use rdkafka_async::sys::rd_kafka_resp_err_t as E;
use rdkafka_async::{
    AssignmentStrategy, ClientConfig, Consumer, ConsumerEvent, Message, MockCluster, Offset,
    OffsetReset, Producer, RebalanceKind, Record, TopicPartitionList,
};

/// Generous: valgrind slows everything down, librdkafka's timers do not.
const DEADLINE: Duration = Duration::from_secs(120);

fn group_config(cluster: &MockCluster, group: &str) -> ClientConfig {
    base_config(cluster)
        .group_id(group)
        .auto_offset_reset(OffsetReset::Earliest)
        .enable_auto_commit(false)
        .session_timeout(Duration::from_millis(6000))
        .set("heartbeat.interval.ms", "500")
}

async fn produce(producer: &Producer, topic: &str, partitions: i32, per_partition: usize) {
    let mut futures = Vec::new();
    for p in 0..partitions {
        for i in 0..per_partition {
            let value = format!("{topic}-{p}-{i}");
            let record = Record::to(topic)
                .partition(p)
                .key("k")
                .value(&value)
                .header("n", &value);
            futures.push(
                within("send", DEADLINE, producer.send(record))
                    .await
                    .expect("send"),
            );
        }
    }
    for f in futures {
        within("delivery", DEADLINE, f).await.expect("delivered");
    }
}

async fn recv_n(consumer: &mut Consumer, n: usize) -> Vec<Message> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        out.push(
            within("a message", DEADLINE, consumer.recv())
                .await
                .expect("message"),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_consume_commit_round_trip() {
    init_tracing();
    let cluster = mock_with_topic(1, "round-trip", 2);
    let producer = Producer::new(base_config(&cluster).linger(Duration::from_millis(5))).unwrap();
    produce(&producer, "round-trip", 2, 5).await;

    let mut consumer = Consumer::new(group_config(&cluster, "round-trip")).unwrap();
    consumer.subscribe(&["round-trip"]).await.unwrap();
    let messages = recv_n(&mut consumer, 10).await;
    for m in &messages {
        let expected = format!("round-trip-{}-{}", m.partition(), m.offset());
        assert_eq!(m.payload(), Some(expected.as_bytes()));
        assert_eq!(m.headers().last("n"), Some(Some(expected.as_bytes())));
        assert_eq!(m.key(), Some(&b"k"[..]));
    }
    let last = messages.last().unwrap();
    within("commit_message", DEADLINE, consumer.commit_message(last))
        .await
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_range("round-trip", 0..2, Offset::At(5));
    within("commit", DEADLINE, consumer.commit(&tpl))
        .await
        .unwrap();
    let committed = within(
        "committed",
        DEADLINE,
        consumer.committed(&tpl, Duration::from_secs(60)),
    )
    .await
    .unwrap();
    assert!(
        committed.iter().all(|tp| tp.offset == Offset::At(5)),
        "{committed:?}"
    );
    assert_eq!(consumer.outstanding_slots(), 0);
    drop(messages);
    within("close", DEADLINE, consumer.close()).await.unwrap();
    within("flush", DEADLINE, producer.flush()).await.unwrap();
    assert_eq!(producer.outstanding_slots(), 0);
}

/// Polls `fut` once (which starts its operation) and drops it.
async fn start_and_drop<F: Future>(fut: F) {
    let mut fut = pin!(fut);
    std::future::poll_fn(|cx| {
        let _ = fut.as_mut().poll(cx);
        Poll::Ready(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_errors_resolve_every_future() {
    init_tracing();
    let cluster = mock_with_topic(1, "errors", 1);
    let producer = Producer::new(base_config(&cluster).linger(Duration::from_millis(20))).unwrap();
    produce(&producer, "errors", 1, 1).await;

    // One refused Produce request: every delivery in it fails with the code.
    let too_large = code(E::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE);
    cluster.push_request_errors(api_key::PRODUCE, &[too_large]);
    let kept = within(
        "send",
        DEADLINE,
        producer.send(Record::to("errors").partition(0).value("a")),
    )
    .await
    .unwrap();
    let dropped = within(
        "send",
        DEADLINE,
        producer.send(Record::to("errors").partition(0).value("b")),
    )
    .await
    .unwrap();
    drop(dropped);
    let err = within("refused delivery", DEADLINE, kept)
        .await
        .expect_err("refused");
    assert_eq!(code_of(&err), too_large);
    within("flush", DEADLINE, producer.flush()).await.unwrap();
    assert_eq!(producer.outstanding_slots(), 0);

    let mut consumer = Consumer::new(group_config(&cluster, "errors")).unwrap();
    consumer.subscribe(&["errors"]).await.unwrap();
    recv_n(&mut consumer, 1).await;
    let mut tpl = TopicPartitionList::new();
    tpl.add("errors", 0, Offset::At(1));
    let rebalancing = code(E::RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS);
    cluster.push_request_errors(api_key::OFFSET_COMMIT, &[rebalancing, rebalancing]);
    let err = within("refused commit", DEADLINE, consumer.commit(&tpl))
        .await
        .expect_err("refused");
    assert_eq!(code_of(&err), rebalancing);
    assert!(!err.is_fatal(), "{err:?}");
    // The second refusal goes to a commit nobody waits for.
    start_and_drop(consumer.commit(&tpl)).await;
    wait_until(
        "the dropped commit's answer",
        DEADLINE,
        || consumer.outstanding_slots() == 0,
        || format!("{} slots", consumer.outstanding_slots()),
    )
    .await;
    within("commit", DEADLINE, consumer.commit(&tpl))
        .await
        .expect("commit");
    within("close", DEADLINE, consumer.close()).await.unwrap();
}

/// Applies one event of a member: counts what it owns, commits on revocation.
async fn on_event(consumer: &mut Consumer, owned: &mut usize, event: ConsumerEvent) {
    let ConsumerEvent::Rebalance(r) = event else {
        return;
    };
    let n = r.partitions().len();
    match r.kind() {
        RebalanceKind::Assign => *owned += n,
        RebalanceKind::Revoke => {
            *owned -= n;
            let mut tpl = TopicPartitionList::new();
            for tp in r.partitions() {
                tpl.add(&tp.topic, tp.partition, Offset::At(1));
            }
            // The mock may refuse it (REBALANCE_IN_PROGRESS); either way the future
            // resolves.
            let _ = consumer.commit(&tpl).await;
        }
    }
    r.complete().await.expect("complete");
}

/// Runs a member until it has been assigned `want` partitions.
async fn member_until(consumer: &mut Consumer, owned: &mut usize, want: usize) {
    while *owned != want {
        let event = consumer.next_event().await.expect("event");
        on_event(consumer, owned, event).await;
    }
}

/// Runs two members until each owns `want` partitions, polling both all the while. A
/// member that stopped polling once it had its share would never apply the revocation of
/// a further round (the group takes one whenever a member answers late, which a slow
/// run under valgrind makes likely), and the other member would wait for that round
/// until `max.poll.interval.ms`.
async fn members_until(
    (a, a_owned): (&mut Consumer, &mut usize),
    (b, b_owned): (&mut Consumer, &mut usize),
    want: usize,
) {
    while *a_owned != want || *b_owned != want {
        tokio::select! {
            event = a.next_event() => on_event(a, a_owned, event.expect("event")).await,
            event = b.next_event() => on_event(b, b_owned, event.expect("event")).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eager_rebalance_light() {
    init_tracing();
    let cluster = mock_with_topic(1, "light", 2);
    let producer = Producer::new(base_config(&cluster)).unwrap();
    produce(&producer, "light", 2, 2).await;
    let config = group_config(&cluster, "light")
        .assignment_strategy(AssignmentStrategy::Range)
        .session_timeout(Duration::from_millis(3000));
    let mut a = Consumer::new(config.clone()).unwrap();
    a.subscribe(&["light"]).await.unwrap();
    let mut a_owned = 0;
    within(
        "A to own both partitions",
        DEADLINE,
        member_until(&mut a, &mut a_owned, 2),
    )
    .await;
    let mut b = Consumer::new(config).unwrap();
    b.subscribe(&["light"]).await.unwrap();
    let mut b_owned = 0;
    within(
        "A and B to own one partition each",
        DEADLINE,
        members_until((&mut a, &mut a_owned), (&mut b, &mut b_owned), 1),
    )
    .await;
    assert_eq!(a.outstanding_slots() + b.outstanding_slots(), 0);
    within("close B", DEADLINE, b.close()).await.unwrap();
    within("close A", DEADLINE, a.close()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_paths() {
    init_tracing();
    let cluster = mock_with_topic(1, "dropped", 1);
    let producer = Producer::new(base_config(&cluster)).unwrap();
    produce(&producer, "dropped", 1, 3).await;

    // Messages outlive their consumer, which is dropped without `close`.
    let mut consumer = Consumer::new(group_config(&cluster, "dropped")).unwrap();
    consumer.subscribe(&["dropped"]).await.unwrap();
    let kept = recv_n(&mut consumer, 3).await;
    let queue = consumer.split_partition_queue("dropped", 0).unwrap();
    drop(consumer);
    drop(queue);
    for (i, m) in kept.iter().enumerate() {
        assert_eq!(m.payload(), Some(format!("dropped-0-{i}").as_bytes()));
    }
    drop(kept);

    // A producer dropped with messages in flight (slow broker) and their futures dropped.
    cluster
        .set_broker_rtt(1, Duration::from_millis(200))
        .unwrap();
    for i in 0..5 {
        let value = i.to_string();
        drop(
            producer
                .send(Record::to("dropped").partition(0).value(&value))
                .await
                .unwrap(),
        );
    }
    assert!(producer.outstanding_slots() > 0);
    drop(producer);

    // The same with a fresh producer whose futures are kept past its drop: they still
    // resolve.
    let producer = Producer::new(base_config(&cluster)).unwrap();
    let mut futures = Vec::new();
    for i in 0..3 {
        let value = i.to_string();
        futures.push(
            producer
                .send(Record::to("dropped").partition(0).value(&value))
                .await
                .unwrap(),
        );
    }
    drop(producer);
    for f in futures {
        within("a delivery after the producer's drop", DEADLINE, f)
            .await
            .expect("delivered");
    }
}
