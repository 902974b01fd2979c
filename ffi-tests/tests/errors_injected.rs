//! Produce and commit errors injected through the mock cluster: every delivery future and
//! every commit future resolves exactly once, with the right error code, and no
//! completion slot leaks.
//!
//! - Produce answered NOT_LEADER_FOR_PARTITION (retriable): librdkafka retries and every
//!   delivery succeeds, once, at consecutive offsets.
//! - Produce answered MSG_SIZE_TOO_LARGE or INVALID_RECORD (permanent): each delivery of
//!   the failed request resolves with that code; the producer keeps working.
//! - Delivery futures dropped before their report (delivered or failed) hold their slot
//!   until the report arrives, then free it: `outstanding_slots()` returns to 0.
//! - Every broker down and a short `message.timeout.ms`: deliveries fail with
//!   `_MSG_TIMED_OUT`, awaited or dropped, and the slots return to 0.
//! - `try_send` on a full producer queue (`queue.buffering.max.messages`) fails with
//!   `_QUEUE_FULL` without taking a slot, while `send` waits for room (woken by delivery
//!   reports) and succeeds.
//! - OffsetCommit answered REBALANCE_IN_PROGRESS, ILLEGAL_GENERATION or UNKNOWN_MEMBER_ID:
//!   errors with their code, never flagged fatal; the last two also make the member lose
//!   its partitions, which the consumer reports as a lost revocation, then it rejoins and
//!   commits again. Concurrent commits each get their own answer; commit futures dropped
//!   before their answer free their slot when it arrives.
//! - OffsetCommit answered COORDINATOR_NOT_AVAILABLE: librdkafka looks the coordinator up
//!   again and retries; the commit resolves once (Ok, or with 2.12.1 on the mock usually
//!   UNKNOWN_MEMBER_ID after the session ran out meanwhile), and the consumer recovers.

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
    Consumer, ConsumerEvent, Delivery, DeliveryFuture, Error, MockCluster, Offset, OffsetReset,
    Producer, RebalanceKind, Record, TopicPartitionList,
};

const DEADLINE: Duration = Duration::from_secs(60);

fn quick_retries(cluster: &MockCluster) -> rdkafka_async::ClientConfig {
    base_config(cluster)
        .set("retry.backoff.ms", "10")
        .set("retry.backoff.max.ms", "100")
        .set("reconnect.backoff.ms", "10")
        .set("reconnect.backoff.max.ms", "200")
}

async fn await_all(futures: Vec<DeliveryFuture>) -> Vec<Result<Delivery, Error>> {
    let mut out = Vec::with_capacity(futures.len());
    for f in futures {
        out.push(within("a delivery report", DEADLINE, f).await);
    }
    out
}

async fn send_n(producer: &Producer, topic: &str, n: usize) -> Vec<DeliveryFuture> {
    let mut futures = Vec::with_capacity(n);
    for i in 0..n {
        let value = format!("message {i}");
        let f = within(
            "room in the producer queue",
            DEADLINE,
            producer.send(Record::to(topic).partition(0).value(&value)),
        )
        .await
        .expect("send");
        futures.push(f);
    }
    futures
}

/// Flushes, then checks that nothing is left: no message in flight, no slot taken.
async fn assert_producer_drained(producer: &Producer) {
    within("flush", DEADLINE, producer.flush())
        .await
        .expect("flush");
    assert_eq!(producer.in_flight(), 0, "messages in flight after flush");
    // Slots are freed before `in_flight` drops, in the same pass over the report.
    assert_eq!(
        producer.outstanding_slots(),
        0,
        "completion slots left after flush"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retriable_produce_errors_are_retried_until_delivered() {
    init_tracing();
    let cluster = mock_with_topic(1, "retried", 1);
    let producer = Producer::new(quick_retries(&cluster).linger(Duration::from_millis(5))).unwrap();
    // Metadata known, partition leader found: the injected errors hit Produce requests.
    let first = await_all(send_n(&producer, "retried", 1).await).await;
    assert_eq!(first[0].as_ref().unwrap().offset, 0);

    let not_leader = code(E::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION);
    cluster.push_request_errors(api_key::PRODUCE, &[not_leader; 3]);
    let results = await_all(send_n(&producer, "retried", 20).await).await;
    let offsets: Vec<i64> = results
        .into_iter()
        .map(|r| r.expect("retried delivery succeeds").offset)
        .collect();
    assert_eq!(
        offsets,
        (1..=20).collect::<Vec<i64>>(),
        "each message stored once, in order"
    );

    // The same through the broker's own error stack, whose count shows that the errors
    // were really answered (and so retried).
    cluster
        .push_broker_request_error_rtts(1, api_key::PRODUCE, &[(not_leader, Duration::ZERO); 2])
        .unwrap();
    let results = await_all(send_n(&producer, "retried", 5).await).await;
    let offsets: Vec<i64> = results.into_iter().map(|r| r.unwrap().offset).collect();
    assert_eq!(offsets, (21..=25).collect::<Vec<i64>>());
    assert_eq!(
        cluster
            .broker_error_stack_count(1, api_key::PRODUCE)
            .unwrap(),
        0
    );
    assert_producer_drained(&producer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_produce_errors_fail_each_delivery_once_with_their_code() {
    init_tracing();
    let cluster = mock_with_topic(1, "refused", 1);
    // A long linger puts a burst of messages into one Produce request.
    let producer =
        Producer::new(quick_retries(&cluster).linger(Duration::from_millis(50))).unwrap();
    await_all(send_n(&producer, "refused", 1).await).await[0]
        .as_ref()
        .expect("warm-up delivery");

    for raw in [
        E::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE,
        E::RD_KAFKA_RESP_ERR_INVALID_RECORD,
    ] {
        let expected = code(raw);
        cluster.push_request_errors(api_key::PRODUCE, &[expected]);
        let results = await_all(send_n(&producer, "refused", 10).await).await;
        let failed: Vec<&Error> = results.iter().filter_map(|r| r.as_ref().err()).collect();
        assert!(
            !failed.is_empty(),
            "{expected}: the refused request failed no delivery"
        );
        for err in &failed {
            assert_eq!(code_of(err), expected, "{err}");
            assert!(!err.is_retriable(), "{expected} is not retriable: {err}");
            match err {
                Error::Partition {
                    topic, partition, ..
                } => {
                    assert_eq!((topic.as_str(), *partition), ("refused", 0));
                }
                other => panic!("a delivery error names its partition: {other:?}"),
            }
        }
        // One refused request fails its whole batch; the rest (if the burst was split)
        // were delivered normally.
        let ok: Vec<i64> = results
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .map(|d| d.offset)
            .collect();
        assert!(ok.windows(2).all(|w| w[1] == w[0] + 1), "offsets {ok:?}");
        eprintln!("{expected}: {} of 10 deliveries failed", failed.len());
        assert_producer_drained(&producer).await;
    }

    // The producer still works.
    let after = await_all(send_n(&producer, "refused", 3).await).await;
    assert!(after.iter().all(Result::is_ok), "{after:?}");
    assert_producer_drained(&producer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_delivery_futures_free_their_slots_when_the_report_arrives() {
    init_tracing();
    let cluster = mock_with_topic(1, "abandoned", 1);
    let producer = Producer::new(quick_retries(&cluster).linger(Duration::from_millis(5))).unwrap();
    await_all(send_n(&producer, "abandoned", 1).await).await[0]
        .as_ref()
        .expect("warm-up delivery");

    // Slow answers, so the reports certainly come after the futures are dropped; one
    // retried error on the way.
    cluster
        .set_broker_rtt(1, Duration::from_millis(300))
        .unwrap();
    cluster.push_request_errors(
        api_key::PRODUCE,
        &[code(E::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION)],
    );
    let mut futures = send_n(&producer, "abandoned", 100).await;
    let kept: Vec<DeliveryFuture> = futures
        .drain(..)
        .enumerate()
        .filter_map(|(i, f)| (i % 2 == 0).then_some(f))
        .collect();
    assert_eq!(
        producer.outstanding_slots(),
        100,
        "a dropped future keeps its slot until its report arrives"
    );
    for r in await_all(kept).await {
        r.expect("delivered");
    }
    assert_producer_drained(&producer).await;

    // Failed deliveries whose futures were all dropped.
    cluster.push_request_errors(
        api_key::PRODUCE,
        &[code(E::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE)],
    );
    drop(send_n(&producer, "abandoned", 20).await);
    assert!(producer.outstanding_slots() > 0);
    assert_producer_drained(&producer).await;

    // Dropped without ever being polled, interleaved with awaited ones.
    cluster.set_broker_rtt(1, Duration::ZERO).unwrap();
    let futures = send_n(&producer, "abandoned", 30).await;
    let mut kept = Vec::new();
    for (i, f) in futures.into_iter().enumerate() {
        if i % 3 == 0 {
            kept.push(f);
        }
    }
    for r in await_all(kept).await {
        r.expect("delivered");
    }
    assert_producer_drained(&producer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_time_out_while_every_broker_is_down() {
    init_tracing();
    let cluster = mock_with_topic(1, "unreachable", 1);
    let config = quick_retries(&cluster)
        .linger(Duration::from_millis(5))
        .message_timeout(Duration::from_millis(1500));
    let producer = Producer::new(config.clone()).unwrap();
    await_all(send_n(&producer, "unreachable", 1).await).await[0]
        .as_ref()
        .expect("warm-up delivery");

    cluster.set_broker_down(MockCluster::ALL_BROKERS).unwrap();
    // A second producer that never reached any broker.
    let stranger = Producer::new(config).unwrap();
    let mut kept = Vec::new();
    for (i, f) in send_n(&producer, "unreachable", 20)
        .await
        .into_iter()
        .enumerate()
    {
        if i % 2 == 0 {
            kept.push(f);
        }
    }
    let stranger_futures = send_n(&stranger, "unreachable", 5).await;
    let timed_out = code(E::RD_KAFKA_RESP_ERR__MSG_TIMED_OUT);
    for r in await_all(kept)
        .await
        .into_iter()
        .chain(await_all(stranger_futures).await)
    {
        let err = r.expect_err("no broker, no delivery");
        assert_eq!(code_of(&err), timed_out, "{err}");
    }
    assert_producer_drained(&producer).await;
    assert_producer_drained(&stranger).await;

    // Back up: the same producer delivers again.
    cluster.set_broker_up(MockCluster::ALL_BROKERS).unwrap();
    let mut delivered = false;
    // Messages sent while the connection is still being re-established may time out
    // too; the first one delivered ends the wait.
    within("a delivery after the broker came back", DEADLINE, async {
        while !delivered {
            delivered = await_all(send_n(&producer, "unreachable", 1).await).await[0].is_ok();
        }
    })
    .await;
    assert_producer_drained(&producer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_send_fails_on_a_full_queue_while_send_waits_for_room() {
    init_tracing();
    let cluster = mock_with_topic(1, "narrow", 1);
    cluster
        .set_broker_rtt(1, Duration::from_millis(50))
        .unwrap();
    let producer = Producer::new(
        quick_retries(&cluster)
            .linger(Duration::from_millis(20))
            .queue_buffering_max_messages(2),
    )
    .unwrap();
    let a = producer
        .try_send(&Record::to("narrow").partition(0).value("a"))
        .expect("room for 1");
    let b = producer
        .try_send(&Record::to("narrow").partition(0).value("b"))
        .expect("room for 2");
    let err = producer
        .try_send(&Record::to("narrow").partition(0).value("c"))
        .expect_err("the queue holds 2 messages");
    assert_eq!(
        code_of(&err),
        code(E::RD_KAFKA_RESP_ERR__QUEUE_FULL),
        "{err}"
    );
    assert_eq!(
        producer.outstanding_slots(),
        2,
        "a refused try_send takes no slot"
    );
    assert_eq!(producer.in_flight(), 2);

    // `send` waits for room each time the queue is full: 200 messages through a queue of
    // two, each wait ended by a delivery report.
    let mut futures = Vec::with_capacity(200);
    for i in 0..200 {
        let value = format!("message {i}");
        let record = Record::to("narrow").partition(0).value(&value);
        match tokio::time::timeout(Duration::from_secs(20), producer.send(record.clone())).await {
            Ok(f) => futures.push(f.expect("send")),
            Err(_) => {
                // Lost wake-up or real lack of room? Nothing in flight means nothing
                // will ever wake the waiting `send`.
                let in_flight = producer.in_flight();
                let retry = producer.try_send(&record).map(drop);
                panic!(
                    "send #{i} waited 20 s for room in a queue of 2: {in_flight} message(s) in \
                     flight, {} slot(s) taken; a try_send now gives {retry:?}",
                    producer.outstanding_slots()
                );
            }
        }
    }
    let offsets: Vec<i64> = await_all(futures)
        .await
        .into_iter()
        .map(|r| r.expect("delivered").offset)
        .collect();
    assert_eq!(offsets, (2..202).collect::<Vec<i64>>());
    assert_eq!(within("a", DEADLINE, a).await.unwrap().offset, 0);
    assert_eq!(within("b", DEADLINE, b).await.unwrap().offset, 1);
    assert_producer_drained(&producer).await;
    // Last, so that a failure here does not hide the rest: `try_send`'s documentation
    // promises a retriable error.
    assert!(
        err.is_retriable(),
        "a full queue is a retriable error: {err:?}"
    );
}

/// Polls `fut` once (which starts a commit) and drops it before its answer.
async fn start_and_drop<F: Future>(fut: F) {
    let mut fut = pin!(fut);
    std::future::poll_fn(|cx| {
        assert!(fut.as_mut().poll(cx).is_pending(), "answered at once");
        Poll::Ready(())
    })
    .await;
}

/// Both partitions of "commits" at `offset`.
fn commit_list(offset: i64) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    tpl.add("commits", 0, Offset::At(offset))
        .add("commits", 1, Offset::At(offset));
    tpl
}

/// Commits both partitions at `offset`, with a deadline.
async fn commit(consumer: &Consumer, offset: i64) -> Result<(), Error> {
    within("a commit", DEADLINE, consumer.commit(&commit_list(offset))).await
}

/// Reads until the consumer got a message, applying rebalances.
async fn consume_one(consumer: &mut Consumer) {
    within("a message", DEADLINE, consumer.recv())
        .await
        .expect("a message");
}

/// After an error that costs the member its assignment: the consumer yields a lost
/// revocation, then a new assignment.
async fn expect_lost_then_reassigned(consumer: &mut Consumer) {
    let mut saw_lost = false;
    within("a lost revocation and a new assignment", DEADLINE, async {
        loop {
            match consumer.next_event().await {
                Ok(ConsumerEvent::Rebalance(r)) => {
                    let (kind, lost) = (r.kind(), r.is_lost());
                    r.complete().await.expect("complete the rebalance");
                    match kind {
                        RebalanceKind::Revoke => {
                            assert!(lost, "the revocation after the error is a loss");
                            saw_lost = true;
                        }
                        RebalanceKind::Assign if saw_lost => return,
                        RebalanceKind::Assign => panic!("assigned before the loss"),
                    }
                }
                Ok(ConsumerEvent::Message(_)) => {}
                Err(err) => panic!("consumer error: {err}"),
            }
        }
    })
    .await;
}

/// Reads events, completing rebalances, until the consumer is assigned partitions.
async fn drive_until_assigned(consumer: &mut Consumer) {
    within("a new assignment", DEADLINE, async {
        loop {
            match consumer.next_event().await {
                Ok(ConsumerEvent::Rebalance(r)) => {
                    let kind = r.kind();
                    r.complete().await.expect("complete the rebalance");
                    if kind == RebalanceKind::Assign {
                        return;
                    }
                }
                Ok(ConsumerEvent::Message(_)) => {}
                Err(err) => panic!("consumer error: {err}"),
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_errors_resolve_every_commit_future_once_with_their_code() {
    init_tracing();
    let cluster = mock_with_topic(1, "commits", 2);
    let producer = Producer::new(base_config(&cluster)).unwrap();
    let mut futures = Vec::new();
    for p in 0..2 {
        for i in 0..10 {
            let v = i.to_string();
            futures.push(
                producer
                    .send(Record::to("commits").partition(p).value(&v))
                    .await
                    .unwrap(),
            );
        }
    }
    for r in await_all(futures).await {
        r.expect("delivered");
    }
    let mut consumer = Consumer::new(
        quick_retries(&cluster)
            .group_id("commit-errors")
            .auto_offset_reset(OffsetReset::Earliest)
            .enable_auto_commit(false)
            .session_timeout(Duration::from_millis(3000))
            .set("heartbeat.interval.ms", "300"),
    )
    .unwrap();
    consumer.subscribe(&["commits"]).await.unwrap();
    consume_one(&mut consumer).await;

    let at = commit_list;

    // Refused: the error and its code, and nothing committed.
    let rebalancing = code(E::RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS);
    commit(&consumer, 1).await.expect("plain commit");
    cluster.push_request_errors(api_key::OFFSET_COMMIT, &[rebalancing]);
    let err = commit(&consumer, 2)
        .await
        .expect_err("injected REBALANCE_IN_PROGRESS");
    assert_eq!(code_of(&err), rebalancing, "{err}");
    assert!(!err.is_fatal(), "a refused commit is not fatal: {err:?}");
    let committed = within(
        "committed",
        DEADLINE,
        consumer.committed(&at(0), Duration::from_secs(30)),
    )
    .await
    .unwrap();
    assert!(
        committed.iter().all(|tp| tp.offset == Offset::At(1)),
        "{committed:?}"
    );
    commit(&consumer, 2)
        .await
        .expect("the next commit goes through");
    assert_eq!(consumer.outstanding_slots(), 0);

    // Errors that cost the member its partitions: reported, then lost and rejoined.
    for raw in [
        E::RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION,
        E::RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID,
    ] {
        cluster.push_request_errors(api_key::OFFSET_COMMIT, &[code(raw)]);
        let err = commit(&consumer, 5).await.expect_err("injected error");
        assert_eq!(code_of(&err), code(raw), "{err}");
        assert!(!err.is_fatal(), "a refused commit is not fatal: {err:?}");
        expect_lost_then_reassigned(&mut consumer).await;
        commit(
            &consumer,
            if raw == E::RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION {
                3
            } else {
                4
            },
        )
        .await
        .expect("a commit after rejoining succeeds");
        assert_eq!(consumer.outstanding_slots(), 0);
    }

    // Concurrent commits, the first three refused: each gets its own answer.
    cluster.push_request_errors(api_key::OFFSET_COMMIT, &[rebalancing; 3]);
    let (r1, r2, r3, r4, r5, r6) = tokio::join!(
        commit(&consumer, 5),
        commit(&consumer, 5),
        commit(&consumer, 5),
        commit(&consumer, 5),
        commit(&consumer, 5),
        commit(&consumer, 5)
    );
    let results = [r1, r2, r3, r4, r5, r6];
    let refused: Vec<&Error> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(refused.len(), 3, "{results:?}");
    assert!(
        refused
            .iter()
            .all(|e| code_of(e) == rebalancing && !e.is_fatal()),
        "{results:?}"
    );
    assert_eq!(consumer.outstanding_slots(), 0);

    // Commit futures dropped before their answer (refused or not): their slots are
    // freed when the answers arrive.
    cluster
        .set_broker_rtt(1, Duration::from_millis(200))
        .unwrap();
    cluster.push_request_errors(api_key::OFFSET_COMMIT, &[rebalancing; 2]);
    for offset in 6..10 {
        let tpl = at(offset);
        start_and_drop(consumer.commit(&tpl)).await;
    }
    assert_eq!(
        consumer.outstanding_slots(),
        4,
        "dropped commits wait for their answers"
    );
    wait_until(
        "the answers of the dropped commits",
        DEADLINE,
        || consumer.outstanding_slots() == 0,
        || format!("{} slots", consumer.outstanding_slots()),
    )
    .await;
    cluster.set_broker_rtt(1, Duration::ZERO).unwrap();
    let committed = within(
        "committed",
        DEADLINE,
        consumer.committed(&at(0), Duration::from_secs(30)),
    )
    .await
    .unwrap();
    assert!(
        committed.iter().all(|tp| tp.offset == Offset::At(9)),
        "{committed:?}"
    );

    within("close", DEADLINE, consumer.close())
        .await
        .expect("close");
    assert_producer_drained(&producer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_survives_an_unavailable_coordinator() {
    init_tracing();
    let cluster = mock_with_topic(1, "commits", 2);
    let producer = Producer::new(base_config(&cluster)).unwrap();
    let futures = send_n(&producer, "commits", 5).await;
    for r in await_all(futures).await {
        r.expect("delivered");
    }
    let mut consumer = Consumer::new(
        quick_retries(&cluster)
            .group_id("coordinator-gone")
            .auto_offset_reset(OffsetReset::Earliest)
            .enable_auto_commit(false)
            .session_timeout(Duration::from_millis(3000))
            .set("heartbeat.interval.ms", "300"),
    )
    .unwrap();
    consumer.subscribe(&["commits"]).await.unwrap();
    consume_one(&mut consumer).await;
    commit(&consumer, 1).await.expect("plain commit");

    // librdkafka marks the coordinator dead, looks it up again and retries the commit.
    // With librdkafka 2.12.1 on the mock the retry can fail with a transport error again
    // and again (the coordinator connection is re-established each time) until the
    // member's session times out; the commit then fails with UNKNOWN_MEMBER_ID and the
    // member loses its partitions. Either way the future resolves once, the error has a
    // code that says what happened, and the consumer recovers.
    cluster.push_request_errors(
        api_key::OFFSET_COMMIT,
        &[code(E::RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE)],
    );
    match commit(&consumer, 2).await {
        Ok(()) => eprintln!("commit retried after COORDINATOR_NOT_AVAILABLE: ok"),
        Err(err) => {
            eprintln!("commit retried after COORDINATOR_NOT_AVAILABLE: {err}");
            assert!(!err.is_fatal(), "a refused commit is not fatal: {err:?}");
            let allowed = [
                E::RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE,
                E::RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID,
                E::RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION,
            ];
            assert!(
                allowed.iter().any(|raw| code_of(&err) == code(*raw)),
                "{err:?}"
            );
            if code_of(&err) != code(E::RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE) {
                drive_until_assigned(&mut consumer).await;
            }
        }
    }
    assert_eq!(consumer.outstanding_slots(), 0);
    // The session may still run out after the commit resolved: retry after each
    // rebalance, a few times.
    let mut attempts = 0;
    while let Err(err) = commit(&consumer, 3).await {
        attempts += 1;
        assert!(
            attempts < 4,
            "no commit succeeded after the coordinator came back: {err:?}"
        );
        assert!(!err.is_fatal(), "a refused commit is not fatal: {err:?}");
        eprintln!("commit after the coordinator came back: {err}; waiting for the next assignment");
        drive_until_assigned(&mut consumer).await;
    }
    let committed = within(
        "committed",
        DEADLINE,
        consumer.committed(&commit_list(0), Duration::from_secs(30)),
    )
    .await
    .unwrap();
    assert!(
        committed.iter().all(|tp| tp.offset == Offset::At(3)),
        "{committed:?}"
    );
    within("close", DEADLINE, consumer.close())
        .await
        .expect("close");
    assert_producer_drained(&producer).await;
}
