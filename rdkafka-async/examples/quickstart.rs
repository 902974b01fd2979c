//! Produce ten records to an embedded mock cluster, then consume them back.
//!
//! Run with: `cargo run -p rdkafka-async --example quickstart`
use rdkafka_async::{ClientConfig, Consumer, MockCluster, OffsetReset, Producer, Record};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // An in-process Kafka cluster: librdkafka's mock broker, real protocol over loopback.
    let cluster = MockCluster::new(1)?;
    cluster.create_topic("greetings", 3, 1)?;
    let config = ClientConfig::new().bootstrap_servers(cluster.bootstrap_servers());

    let producer = Producer::new(config.clone())?;
    for i in 0..10 {
        let key = format!("user-{}", i % 3);
        let value = format!("hello #{i}");
        // `send` enqueues (waiting if the queue is full); awaiting its result waits for
        // the broker's acknowledgement.
        let delivery = producer
            .send(Record::to("greetings").key(&key).value(&value))
            .await?;
        let d = delivery.await?;
        println!(
            "produced {value:?} -> partition {} offset {}",
            d.partition, d.offset
        );
    }

    let mut consumer = Consumer::new(
        config
            .group_id("quickstart")
            .auto_offset_reset(OffsetReset::Earliest),
    )?;
    consumer.subscribe(&["greetings"]).await?;
    for _ in 0..10 {
        let m = consumer.recv().await?;
        let text = String::from_utf8_lossy(m.payload().unwrap_or_default());
        println!(
            "consumed {text:?} from partition {} offset {}",
            m.partition(),
            m.offset()
        );
        consumer.commit_message(&m).await?;
    }
    consumer.close().await?;
    println!("done: 10 produced, 10 consumed and committed");
    Ok(())
}
