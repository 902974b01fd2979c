//! `faust-testapp`: a small faust-rs app driven by the process-level tests in
//! `examples/tests/`, configured by environment variables.
//!
//! It reads JSON events `{"id": <u64>, "delay_ms": <u64, optional>}` from the topic
//! `TESTAPP_INPUT` (default `events`) in the agent `process`, spends `delay_ms` (default
//! `TESTAPP_DELAY_MS`) on each, and writes `{"id": <id>, "worker":
//! "<TESTAPP_TAG>"}` to the topic `TESTAPP_OUTPUT` (default `processed`), keyed like the
//! input. Consuming the output topic tells a test which events were processed, and by which
//! run of the worker.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `TESTAPP_ID` | the app id (consumer group) | `faust-testapp` |
//! | `TESTAPP_INPUT` / `TESTAPP_OUTPUT` | the topics | `events` / `processed` |
//! | `TESTAPP_TAG` | written into every output record | the process id |
//! | `TESTAPP_DELAY_MS` | time spent on each event without a `delay_ms` | 0 |
//! | `TESTAPP_MAX_DELAY_MS` | caps the time spent on any event | none |
//! | `TESTAPP_MODE` | `sink`: the agent yields its outputs to a topic sink (each input is acked once its output is delivered); `send`: the agent awaits each send itself | `sink` |
//! | `TESTAPP_CONCURRENCY` | agent instances | 1 |
//!
//! Everything else is the usual faust-rs command line and `FAUST_*` settings
//! (`faust-testapp --help`).
use std::time::Duration;

use faust::App;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An input event; other fields are ignored.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Input {
    id: u64,
    /// Time to spend on this event instead of `TESTAPP_DELAY_MS`.
    #[serde(default)]
    delay_ms: Option<u64>,
}

/// What the agent writes for each event it processed.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Processed {
    id: u64,
    worker: String,
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v.parse().unwrap_or_else(|_| {
            eprintln!("error: {name}={v:?} is not a number");
            std::process::exit(2)
        }),
        Err(_) => default,
    }
}

/// How long events take.
#[derive(Clone, Copy)]
struct Delays {
    default: Duration,
    max: Duration,
}

/// Spends the event's time on it.
async fn pause(event: &Input, delays: Delays) {
    let delay = event
        .delay_ms
        .map_or(delays.default, Duration::from_millis)
        .min(delays.max);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

fn main() {
    let app = App::new(env_or("TESTAPP_ID", "faust-testapp"));
    let input = app.topic::<Value, Input>(&env_or("TESTAPP_INPUT", "events"));
    let output = app.topic::<Value, Processed>(&env_or("TESTAPP_OUTPUT", "processed"));
    let tag = env_or("TESTAPP_TAG", &std::process::id().to_string());
    let delay = Delays {
        default: Duration::from_millis(env_number("TESTAPP_DELAY_MS", 0)),
        max: Duration::from_millis(env_number("TESTAPP_MAX_DELAY_MS", u64::MAX)),
    };
    let concurrency = env_number("TESTAPP_CONCURRENCY", 1) as usize;
    match env_or("TESTAPP_MODE", "sink").as_str() {
        "sink" => {
            app.agent_stream("process", &input, move |stream| {
                let tag = tag.clone();
                stream.then(move |event: Input| {
                    let worker = tag.clone();
                    async move {
                        pause(&event, delay).await;
                        Processed {
                            id: event.id,
                            worker,
                        }
                    }
                })
            })
            .concurrency(concurrency)
            .sink(&output);
        }
        "send" => {
            app.agent("process", &input, move |mut stream| {
                let (tag, output) = (tag.clone(), output.clone());
                async move {
                    while let Some((key, event)) = stream.next_item().await {
                        pause(&event, delay).await;
                        let processed = Processed {
                            id: event.id,
                            worker: tag.clone(),
                        };
                        output.send(key.as_ref(), &processed).await?;
                    }
                    Ok(())
                }
            })
            .concurrency(concurrency);
        }
        other => {
            eprintln!("error: TESTAPP_MODE={other:?}: expected sink or send");
            std::process::exit(2)
        }
    }
    app.main()
}
