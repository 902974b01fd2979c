//! Rule (consumer.rs, `Consumer` docs; `ClientConfig::max_poll_interval`): a consumer
//! whose application waits in `recv`/`next_event` stays in its group however long no
//! message comes, even for several times `max.poll.interval.ms`; only an application
//! that stops asking for messages leaves the group.
//!
//! `idle_consumer_stays_in_group`: session timeout = max poll interval = 3 s; the
//! consumer joins, then waits inside `next_event` with no messages for 3 x the interval.
//! That wait must end by our timeout, not by a revocation or a `_MAX_POLL_EXCEEDED` error;
//! the member id and assignment are unchanged, and afterwards a produced message is
//! received and its offset committed (a member that had left would have its commit
//! refused).
//!
//! `consumer_not_polled_leaves_group` (the contrast): a consumer that is not polled at all
//! for longer than the interval is made to leave by librdkafka (member id reset, then
//! `_MAX_POLL_EXCEEDED` and a lost revocation) — so it is the waiting `recv` that keeps a
//! member in, not a lenient broker.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use ffi_tests::{init_tracing, unique_name, wait_for_assignment, wait_until_async, Fixture};
use rdkafka_async::sys::rd_kafka_resp_err_t;
use rdkafka_async::{
    ClientConfig, Consumer, ConsumerEvent, Offset, Producer, RebalanceKind, Record,
    TopicPartitionList,
};

const INTERVAL: Duration = Duration::from_secs(3);

fn idle_config(fx: &Fixture) -> ClientConfig {
    fx.consumer_config(&unique_name("idle"))
        // librdkafka requires max.poll.interval.ms >= session.timeout.ms.
        .session_timeout(INTERVAL)
        .max_poll_interval(INTERVAL)
        // Heartbeats well inside the session (librdkafka's default is 3 s).
        .set("heartbeat.interval.ms", "500")
        .enable_auto_commit(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_consumer_stays_in_group() -> anyhow::Result<()> {
    init_tracing();
    let fx = Fixture::new(1, 2)?;
    let mut consumer = Consumer::new(idle_config(&fx))?;
    consumer.subscribe(&[&fx.topic]).await?;
    let assigned = wait_for_assignment(&mut consumer, Duration::from_secs(30)).await?;
    ensure!(assigned.len() == 2, "assigned {assigned:?}");
    let member = consumer.member_id().await?;
    ensure!(!member.is_empty(), "no member id after joining");

    // Idle inside next_event for 3 x max.poll.interval.ms (+ a margin): letting this
    // time pass is the point of the test.
    let idle = 3 * INTERVAL + Duration::from_secs(1);
    let start = Instant::now();
    match tokio::time::timeout(idle, consumer.next_event()).await {
        Err(_) => {}
        Ok(Ok(ConsumerEvent::Rebalance(r))) => {
            bail!(
                "an idle consumer was rebalanced after {:?}: {r:?}",
                start.elapsed()
            )
        }
        Ok(Ok(ConsumerEvent::Message(m))) => bail!("a message on an empty topic: {m:?}"),
        Ok(Err(err)) => bail!(
            "an idle consumer got an error after {:?}: {err}",
            start.elapsed()
        ),
    }
    println!(
        "idle in next_event for {:?} (max.poll.interval.ms = {INTERVAL:?})",
        start.elapsed()
    );
    ensure!(
        consumer.member_id().await? == member,
        "the member id changed: it left and rejoined"
    );
    let now = consumer.assignment().await?;
    ensure!(
        now.len() == assigned.len(),
        "assignment went from {assigned:?} to {now:?}"
    );

    // Still a working member: receive a new message and commit it.
    let producer = Producer::new(fx.producer_config())?;
    let delivery = producer
        .send(
            Record::to(&fx.topic)
                .key("k")
                .value("after the idle period"),
        )
        .await?
        .await?;
    let m = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
        .await
        .context("no message within 30 s after the idle period")??;
    ensure!(m.payload() == Some(&b"after the idle period"[..]));
    ensure!((m.partition(), m.offset()) == (delivery.partition, delivery.offset));
    tokio::time::timeout(Duration::from_secs(30), consumer.commit_message(&m))
        .await
        .context("commit hung")?
        .context("the commit of a member that idled was refused")?;
    let mut tpl = TopicPartitionList::new();
    tpl.add(&fx.topic, m.partition(), Offset::Invalid);
    let committed = consumer.committed(&tpl, Duration::from_secs(10)).await?;
    ensure!(
        committed.find(&fx.topic, m.partition()).map(|tp| tp.offset)
            == Some(Offset::At(m.offset() + 1)),
        "committed offsets {committed:?}"
    );
    ensure!(
        consumer.member_id().await? == member,
        "the member id changed"
    );
    drop(m);
    tokio::time::timeout(Duration::from_secs(30), consumer.close()).await??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_not_polled_leaves_group() -> anyhow::Result<()> {
    init_tracing();
    let fx = Fixture::new(1, 2)?;
    let mut consumer = Consumer::new(idle_config(&fx))?;
    consumer.subscribe(&[&fx.topic]).await?;
    wait_for_assignment(&mut consumer, Duration::from_secs(30)).await?;
    ensure!(
        !consumer.member_id().await?.is_empty(),
        "no member id after joining"
    );

    // Not polled from now on. librdkafka resets the member id when it makes the member
    // leave for exceeding max.poll.interval.ms.
    let start = Instant::now();
    wait_until_async(
        3 * INTERVAL + Duration::from_secs(5),
        "the unpolled member left",
        || async { consumer.member_id().await.is_ok_and(|id| id.is_empty()) },
    )
    .await?;
    println!(
        "an unpolled consumer left its group after {:?} (max.poll.interval.ms = {INTERVAL:?})",
        start.elapsed()
    );

    // The next poll tells the application: an error, and the partitions lost.
    let (mut max_poll_error, mut lost_revoke) = (false, false);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(max_poll_error && lost_revoke) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, consumer.next_event()).await {
            Err(_) => {
                bail!("after leaving: error seen {max_poll_error}, lost revoke seen {lost_revoke}")
            }
            Ok(Err(err)) => {
                let code = err.code().map(|c| c.raw());
                ensure!(
                    code == Some(rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__MAX_POLL_EXCEEDED),
                    "unexpected error {err:?}"
                );
                max_poll_error = true;
            }
            Ok(Ok(ConsumerEvent::Rebalance(r))) => {
                if r.kind() == RebalanceKind::Revoke {
                    ensure!(r.is_lost(), "the revocation should be a loss: {r:?}");
                    lost_revoke = true;
                }
                r.complete().await?;
            }
            Ok(Ok(ConsumerEvent::Message(m))) => bail!("a message on an empty topic: {m:?}"),
        }
    }
    drop(consumer);
    Ok(())
}
