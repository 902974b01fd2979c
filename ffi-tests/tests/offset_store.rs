//! At-least-once with the default settings (docs/src/client/delivery.md): the offset after
//! a message is stored only when the application receives that message, never when
//! librdkafka moves it into a batch the consumer buffers. A consumer that received K
//! messages and then closes or is dropped leaves its group's next member starting at K,
//! never past it. (Losing the partition to
//! another member is not shown here: librdkafka's mock coordinator refuses the commit made
//! on revocation, see docs/src/client/delivery.md.)
//!
//! Every combination of `enable.auto.commit` and `enable.auto.offset.store` is run for
//! each ending. With auto-commit off the application commits what was stored
//! (`commit_stored`) before it ends, as such an application does; with the offset store
//! off nothing is stored, so the next member starts from the beginning (0 <= K).

use std::time::Duration;

use anyhow::{bail, ensure, Context as _};
use ffi_tests::{init_tracing, unique_name, wait_for_assignment, Fixture};
use rdkafka_async::{ClientConfig, Consumer, Producer, Record};

/// Records per partition: several of librdkafka's batches.
const RECORDS: usize = 5_000;
/// How many the first member receives before it ends.
const RECEIVED: usize = 10;
const DEADLINE: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug)]
enum Ending {
    Close,
    Drop,
}

async fn fill(fx: &Fixture) -> anyhow::Result<()> {
    let producer = Producer::new(fx.producer_config())?;
    let mut deliveries = Vec::new();
    for partition in 0..fx.partitions {
        for i in 0..RECORDS {
            let value = i.to_string();
            let record = Record::to(&fx.topic).partition(partition).value(&value);
            deliveries.push(producer.send(record).await?);
        }
    }
    for d in deliveries {
        d.await?;
    }
    Ok(())
}

fn config(fx: &Fixture, group: &str, auto_commit: bool, auto_store: bool) -> ClientConfig {
    fx.consumer_config(group)
        .enable_auto_commit(auto_commit)
        .enable_auto_offset_store(auto_store)
}

/// The offset the group's next member starts at on partition 0: the first message it
/// receives (the topic is full, so one always comes).
async fn next_member_starts_at(fx: &Fixture, group: &str) -> anyhow::Result<i64> {
    let mut next = Consumer::new(config(fx, group, false, false))?;
    next.subscribe(&[&fx.topic]).await?;
    let first = tokio::time::timeout(DEADLINE, async {
        loop {
            let m = next.recv().await?;
            if m.partition() == 0 {
                return anyhow::Ok(m.offset());
            }
        }
    })
    .await
    .context("the next member received nothing")??;
    next.close().await?;
    Ok(first)
}

fn expected_start(auto_store: bool, received: usize) -> i64 {
    if auto_store {
        received as i64
    } else {
        0
    }
}

async fn receive_then_end(
    auto_commit: bool,
    auto_store: bool,
    ending: Ending,
) -> anyhow::Result<()> {
    let fx = Fixture::new(1, 1)?;
    fill(&fx).await?;
    let group = unique_name("store");
    let mut consumer = Consumer::new(config(&fx, &group, auto_commit, auto_store))?;
    consumer.subscribe(&[&fx.topic]).await?;
    for expected in 0..RECEIVED {
        let m = tokio::time::timeout(DEADLINE, consumer.recv())
            .await
            .context("recv")??;
        ensure!(
            m.offset() == expected as i64,
            "offset {} at {expected}",
            m.offset()
        );
    }
    if !auto_commit {
        consumer.commit_stored().await?;
    }
    match ending {
        Ending::Close => consumer.close().await?,
        Ending::Drop => drop(consumer),
    }
    let start = next_member_starts_at(&fx, &group).await?;
    println!("auto_commit={auto_commit} auto_store={auto_store} {ending:?}: received {RECEIVED}, next member starts at {start}");
    ensure!(
        start == expected_start(auto_store, RECEIVED),
        "auto_commit={auto_commit} auto_store={auto_store} {ending:?}: received {RECEIVED}, the next member starts at {start}"
    );
    Ok(())
}

/// Every combination of `enable.auto.commit` and `enable.auto.offset.store`.
async fn every_setting(ending: Ending) -> anyhow::Result<()> {
    init_tracing();
    for (auto_commit, auto_store) in [(true, true), (true, false), (false, true), (false, false)] {
        receive_then_end(auto_commit, auto_store, ending).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_resumes_at_the_first_message_not_received() -> anyhow::Result<()> {
    every_setting(Ending::Close).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_resumes_at_the_first_message_not_received() -> anyhow::Result<()> {
    every_setting(Ending::Drop).await
}

/// Messages read through a split partition queue store their offsets the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_queue_resumes_at_the_first_message_not_received() -> anyhow::Result<()> {
    init_tracing();
    let fx = Fixture::new(1, 1)?;
    fill(&fx).await?;
    let group = unique_name("split");
    let mut consumer = Consumer::new(config(&fx, &group, true, true))?;
    consumer.subscribe(&[&fx.topic]).await?;
    wait_for_assignment(&mut consumer, DEADLINE).await?;
    let mut queue = consumer.split_partition_queue(&fx.topic, 0)?;
    for expected in 0..RECEIVED {
        let next = async {
            tokio::select! {
                m = queue.recv() => anyhow::Ok(m?),
                e = consumer.next_event() => bail!("the consumer yielded {:?} while its partition was split", e?),
            }
        };
        let m = tokio::time::timeout(DEADLINE, next)
            .await
            .context("nothing on the partition queue")??;
        ensure!(
            m.offset() == expected as i64,
            "offset {} at {expected}",
            m.offset()
        );
    }
    drop(queue);
    consumer.close().await?;
    let start = next_member_starts_at(&fx, &group).await?;
    println!("partition queue: received {RECEIVED}, next member starts at {start}");
    ensure!(
        start == RECEIVED as i64,
        "received {RECEIVED}, the next member starts at {start}"
    );
    Ok(())
}
