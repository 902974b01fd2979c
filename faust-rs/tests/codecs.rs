//! Per codec (`Json`, `Binary`, `Raw` for `String` and for `Vec<u8>`): a record sent
//! through a typed topic reaches an agent equal to what was sent, the bytes on the wire are
//! the codec's encoding (for `Raw`: the bytes themselves), and what the agent yields to a
//! topic sink with the same codec decodes back to the same record.

mod common;

use std::fmt::Debug;

use common::{read_topic, Broker, Log, Offsets};
use faust::codec::{Binary, Codec, Json, Raw};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Payment {
    user: String,
    amount: i64,
    tags: Vec<String>,
    note: Option<String>,
}

fn payments() -> Vec<Payment> {
    (0..4)
        .map(|i| Payment {
            user: format!("u{i}"),
            amount: i * 1000 - 1500,
            tags: (0..i).map(|t| format!("t{t}")).collect(),
            note: (i % 2 == 0).then(|| "héllo \"quoted\"".to_string()),
        })
        .collect()
}

/// Sends `values` (keyed `k<i>`, keys through `Raw`) through topic `in` with `codec`, to an
/// agent that logs them and yields them unchanged to `out` (same codec); checks all three.
async fn round_trip<V, C>(app_id: &str, codec: C, values: Vec<V>)
where
    V: Serialize + DeserializeOwned + Clone + PartialEq + Debug + Send + Sync + 'static,
    C: Codec<V> + Clone,
{
    let b = Broker::new();
    b.topic("in", 1).topic("out", 1);
    let app = b.app(app_id);
    let input = app
        .topic::<String, V>("in")
        .key_codec(Raw)
        .value_codec(codec.clone());
    let output = app
        .topic::<String, V>("out")
        .key_codec(Raw)
        .value_codec(codec.clone());
    let seen = Log::default();
    let log = seen.clone();
    app.agent_stream("copy", &input, move |stream| {
        let log = log.clone();
        stream.map(move |v: V| {
            log.push(v.clone());
            v
        })
    })
    .sink(&output);
    let worker = app.start().await.unwrap();
    for (i, v) in values.iter().enumerate() {
        input.send(Some(&format!("k{i}")), v).await.unwrap();
    }

    assert_eq!(
        seen.wait_for(values.len(), "records at the agent").await,
        values,
        "{app_id}: the agent got what was sent"
    );
    for topic in ["in", "out"] {
        let stored = read_topic(&b.bootstrap(), topic, 1, values.len()).await;
        for (i, (m, v)) in stored[&0].iter().zip(&values).enumerate() {
            assert_eq!(
                m.key(),
                Some(format!("k{i}").as_bytes()),
                "{app_id}: raw key"
            );
            let bytes = m.payload().unwrap_or_default();
            assert_eq!(
                bytes,
                codec.encode(v).unwrap(),
                "{app_id}: {topic} holds the encoding"
            );
            assert_eq!(
                &codec.decode(bytes).unwrap(),
                v,
                "{app_id}: {topic} decodes back"
            );
        }
    }
    Offsets::new(&b.bootstrap(), app_id)
        .wait_all_committed("in", 1)
        .await;
    worker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_round_trips() {
    round_trip("codec-json", Json, payments()).await;
    // JSON is what other languages read: check the text itself once.
    assert_eq!(
        Codec::<Payment>::encode(&Json, &payments()[1]).unwrap(),
        br#"{"user":"u1","amount":-500,"tags":["t0"],"note":null}"#
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_round_trips() {
    round_trip("codec-binary", Binary, payments()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_strings_round_trip() {
    let texts = vec![
        "plain".to_string(),
        String::new(),
        "{not json".to_string(),
        "ünïcödé ✓".to_string(),
    ];
    round_trip("codec-raw-string", Raw, texts.clone()).await;
    assert_eq!(
        Codec::<String>::encode(&Raw, &texts[3]).unwrap(),
        texts[3].as_bytes()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_bytes_round_trip() {
    let blobs = vec![
        vec![0u8, 1, 2, 255],
        vec![],
        b"\xff\xfe not utf-8".to_vec(),
        vec![7; 1000],
    ];
    round_trip("codec-raw-bytes", Raw, blobs.clone()).await;
    assert_eq!(Codec::<Vec<u8>>::encode(&Raw, &blobs[0]).unwrap(), blobs[0]);
}
