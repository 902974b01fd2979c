//! `rdkafka-mock`: runs librdkafka's mock Kafka cluster on fixed loopback ports until
//! SIGTERM or SIGINT.
//!
//! ```text
//! rdkafka-mock [--port 9092] [--brokers 1] [--topic name[:partitions]]...
//! ```
//!
//! Broker `i` listens on `127.0.0.1:(port + i - 1)`. When the cluster is ready, one line
//! `bootstrap.servers=127.0.0.1:9092,...` is printed on stdout. Exit status: 0 after a
//! signal, 1 if the cluster cannot start, 2 for bad arguments.

use std::io::Write;
use std::process::ExitCode;

use rdkafka_async::MockCluster;
use tokio::signal::unix::{signal, SignalKind};

const USAGE: &str = "\
usage: rdkafka-mock [--port PORT] [--brokers N] [--topic NAME[:PARTITIONS]]...

Runs librdkafka's mock Kafka cluster on 127.0.0.1 until SIGTERM or SIGINT.

options:
  --port PORT                  port of broker 1; broker i listens on PORT + i - 1
                               (default 9092; 0 lets the system pick free ports)
  --brokers N                  number of brokers (default 1)
  --topic NAME[:PARTITIONS]    create a topic (default 1 partition; replication
                               factor min(N, 3)); may be repeated
  -h, --help                   print this help

Prints `bootstrap.servers=127.0.0.1:PORT,...` on stdout once the cluster is ready.";

/// The parsed command line.
#[derive(Debug)]
struct Args {
    port: u16,
    brokers: i32,
    topics: Vec<(String, i32)>,
}

/// What the command line asks for.
#[derive(Debug)]
enum Command {
    Run(Args),
    Help,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Command, String> {
    let mut parsed = Args {
        port: 9092,
        brokers: 1,
        topics: Vec::new(),
    };
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(Command::Help);
        }
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_owned(), Some(value.to_owned()))
            }
            _ => (arg, None),
        };
        let mut value = || match inline.clone() {
            Some(value) => Ok(value),
            None => args.next().ok_or_else(|| format!("{flag} needs a value")),
        };
        match flag.as_str() {
            "--port" => {
                let v = value()?;
                parsed.port = v
                    .parse()
                    .map_err(|_| format!("--port: `{v}` is not a port number (0-65535)"))?;
            }
            "--brokers" => {
                let v = value()?;
                parsed.brokers = match v.parse::<i32>() {
                    Ok(n) if n >= 1 => n,
                    _ => return Err(format!("--brokers: `{v}` is not a number of at least 1")),
                };
            }
            "--topic" => {
                let v = value()?;
                let (name, partitions) = match v.rsplit_once(':') {
                    Some((name, p)) => match p.parse::<i32>() {
                        Ok(n) if n >= 1 => (name, n),
                        _ => {
                            return Err(format!(
                                "--topic `{v}`: `{p}` is not a partition count of at least 1"
                            ))
                        }
                    },
                    None => (v.as_str(), 1),
                };
                if name.is_empty() || name.contains('\0') {
                    return Err(format!("--topic `{v}`: invalid topic name"));
                }
                if parsed.topics.iter().any(|(t, _)| t == name) {
                    return Err(format!("--topic `{name}` is given twice"));
                }
                parsed.topics.push((name.to_owned(), partitions));
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    let last = u32::from(parsed.port) + parsed.brokers as u32 - 1;
    if parsed.port != 0 && last > u32::from(u16::MAX) {
        return Err(format!(
            "{} brokers from port {} need ports up to {last}, past 65535",
            parsed.brokers, parsed.port
        ));
    }
    Ok(Command::Run(parsed))
}

/// Runs the cluster until a signal; the error is for stderr.
async fn run(args: Args) -> Result<(), String> {
    // Handle the signals before announcing readiness, so that none is missed.
    let mut terminate =
        signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM handler: {e}"))?;
    let mut interrupt =
        signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT handler: {e}"))?;

    let cluster = MockCluster::new(args.brokers).map_err(|e| e.to_string())?;
    let replication_factor = args.brokers.min(3);
    for (topic, partitions) in &args.topics {
        cluster
            .create_topic(topic, *partitions, replication_factor)
            .map_err(|e| format!("topic `{topic}`: {e}"))?;
    }
    let listener = cluster
        .listen_on(args.port)
        .await
        .map_err(|e| e.to_string())?;

    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "bootstrap.servers={}", listener.bootstrap_servers())
        .and_then(|()| stdout.flush())
        .map_err(|e| format!("stdout: {e}"))?;
    drop(stdout);

    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    // Close the ports first, then stop the brokers.
    drop(listener);
    drop(cluster);
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Command::Run(args)) => args,
        Ok(Command::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("rdkafka-mock: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("rdkafka-mock: could not start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("rdkafka-mock: {message}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, String> {
        parse_args(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn defaults_and_values() {
        let Ok(Command::Run(args)) = parse(&[]) else {
            panic!()
        };
        assert_eq!((args.port, args.brokers, args.topics.len()), (9092, 1, 0));
        let Ok(Command::Run(args)) = parse(&[
            "--port",
            "19092",
            "--brokers=3",
            "--topic",
            "a:4",
            "--topic=b",
        ]) else {
            panic!()
        };
        assert_eq!((args.port, args.brokers), (19092, 3));
        assert_eq!(args.topics, [("a".to_owned(), 4), ("b".to_owned(), 1)]);
        assert!(matches!(
            parse(&["--brokers", "2", "--help"]),
            Ok(Command::Help)
        ));
    }

    #[test]
    fn bad_arguments() {
        for bad in [
            &["--port"][..],
            &["--port", "65536"],
            &["--port", "x"],
            &["--brokers", "0"],
            &["--brokers", "-1"],
            &["--topic", "a:0"],
            &["--topic", ":3"],
            &["--topic", "a", "--topic", "a:2"],
            &["--port", "65535", "--brokers", "2"],
            &["--what"],
            &["9092"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
