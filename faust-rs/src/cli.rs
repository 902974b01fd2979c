//! The command line: every app's `main()` and the standalone `faust` program.

use std::collections::BTreeMap;
use std::io::{IsTerminal as _, Write as _};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use rdkafka_async::{ClientConfig, MockCluster, Producer, Record};

use crate::app::App;
use crate::error::{Error, Result};
use crate::settings::{Broker, Settings};
use crate::web::Status;

/// Settings every subcommand takes (they override `FAUST_*` variables).
#[derive(Debug, Args, Clone, Default)]
struct Overrides {
    /// Kafka bootstrap servers, e.g. kafka://localhost:9092 (default: embedded broker)
    #[arg(short = 'b', long, global = true)]
    broker: Option<String>,
    /// Directory for the app's state
    #[arg(long, global = true)]
    datadir: Option<PathBuf>,
    /// Web server port (default 6666)
    #[arg(short = 'p', long, global = true)]
    web_port: Option<u16>,
    /// Web server address (default 127.0.0.1)
    #[arg(long, global = true)]
    web_bind: Option<IpAddr>,
    /// Run the worker without its web server
    #[arg(long, global = true)]
    without_web: bool,
    /// Log level or filter (error, warn, info, debug, trace; or a tracing filter)
    #[arg(short = 'l', long, global = true)]
    loglevel: Option<String>,
}

#[derive(Debug, Subcommand)]
enum AppCommand {
    /// Start a worker: consume, run agents, serve the web API
    #[command(visible_alias = "start")]
    Worker,
    /// Send a record to a topic (VALUE and KEY as text, e.g. JSON)
    Send(SendArgs),
    /// Show a running worker's status (through its web server)
    Status,
    /// Check that a running worker answers
    Ping,
    /// List the app's agents
    Agents,
    /// List the app's tables
    Tables,
}

#[derive(Debug, Args)]
struct SendArgs {
    /// The topic
    topic: String,
    /// The value (none: a tombstone)
    value: Option<String>,
    /// The key
    key: Option<String>,
    /// An explicit partition
    #[arg(long)]
    partition: Option<i32>,
}

#[derive(Debug, Parser)]
#[command(version, about = "A faust-rs app", propagate_version = true)]
struct AppCli {
    #[command(flatten)]
    overrides: Overrides,
    #[command(subcommand)]
    command: AppCommand,
}

fn init_logging(level: Option<&str>) {
    let filter = level
        .map(str::to_owned)
        .or_else(|| std::env::var("FAUST_LOGLEVEL").ok())
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

fn apply(settings: &mut Settings, o: &Overrides) -> Result<()> {
    settings.apply_env(std::env::vars())?;
    if let Some(b) = &o.broker {
        settings.broker = Broker::parse(b)?;
    }
    if let Some(d) = &o.datadir {
        settings.datadir = d.clone();
    }
    if let Some(p) = o.web_port {
        settings.web_port = p;
    }
    if let Some(a) = o.web_bind {
        settings.web_bind = a;
    }
    if o.without_web {
        settings.web_enabled = false;
    }
    Ok(())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn exit_with(result: Result<()>) -> ! {
    match result {
        Ok(()) => std::process::exit(0),
        Err(err) => {
            eprintln!("error: {err}");
            std::process::exit(1)
        }
    }
}

impl App {
    /// The app's command line: parses the arguments and runs the subcommand (`worker`
    /// (alias `start`), `send`, `status`, `ping`, `agents`, `tables`; `--help` lists the
    /// options), then exits the process.
    pub fn main(&self) -> ! {
        let cli = AppCli::parse();
        init_logging(cli.overrides.loglevel.as_deref());
        let mut result = Ok(());
        self.configure(|s| result = apply(s, &cli.overrides));
        if result.is_err() {
            exit_with(result);
        }
        exit_with(runtime().block_on(self.run_command(cli.command)))
    }

    async fn run_command(&self, command: AppCommand) -> Result<()> {
        let settings = self.settings();
        let web = format!(
            "http://{}:{}",
            loopback_for(settings.web_bind),
            settings.web_port
        );
        match command {
            AppCommand::Worker => self.run_worker().await,
            AppCommand::Send(args) => {
                let broker = match &settings.broker {
                    Broker::Kafka(list) => list.clone(),
                    Broker::Embedded => broker_of(&web).await?,
                };
                send(&broker, &settings.kafka, &args).await
            }
            AppCommand::Status => print_status(&web).await,
            AppCommand::Ping => ping(&web).await,
            AppCommand::Agents => {
                let reg = self.registry();
                println!(
                    "{:<24} {:<32} {:>11}  sinks",
                    "agent", "topic", "concurrency"
                );
                for a in &reg.agents {
                    println!(
                        "{:<24} {:<32} {:>11}  {}",
                        a.name(),
                        a.topic(),
                        a.concurrency(),
                        a.sinks().join(", ")
                    );
                }
                Ok(())
            }
            AppCommand::Tables => {
                let tables = self.registry().tables.clone();
                if tables.is_empty() {
                    println!("(this app defines no tables)");
                    return Ok(());
                }
                println!(
                    "{:<24} {:<8} {:<7} {:<40} help",
                    "table", "kind", "public", "changelog"
                );
                for t in tables {
                    println!(
                        "{:<24} {:<8} {:<7} {:<40} {}",
                        t.name(),
                        if t.is_global() { "global" } else { "table" },
                        if t.is_public() { "yes" } else { "no" },
                        t.changelog(),
                        t.help()
                    );
                }
                Ok(())
            }
        }
    }

    /// Runs a worker until SIGTERM or SIGINT (graceful); a second signal exits at once.
    async fn run_worker(&self) -> Result<()> {
        // Listen before starting: a signal while the worker starts must not kill it
        // half-way (the default action), but stop it like any other.
        let mut signals = Signals::new()?;
        let worker = tokio::select! {
            started = self.start() => started?,
            () = signals.recv() => {
                tracing::info!("signal received while starting: not starting the worker");
                return Ok(());
            }
        };
        let stopping = worker.stopping();
        let watcher = tokio::spawn(async move {
            tokio::select! {
                () = signals.recv() => {}
                () = stopping.cancelled() => return,
            }
            tracing::info!("signal received: stopping gracefully (signal again to exit at once)");
            stopping.cancel();
            signals.recv().await;
            tracing::warn!("second signal: exiting at once");
            std::process::exit(130);
        });
        let result = worker.wait().await;
        watcher.abort();
        result
    }
}

/// SIGTERM and SIGINT, as one stream.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// The next SIGTERM or SIGINT.
    ///
    /// Cancel safety: cancel safe.
    async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

fn loopback_for(bind: IpAddr) -> IpAddr {
    if bind.is_unspecified() {
        IpAddr::from([127, 0, 0, 1])
    } else {
        bind
    }
}

/// `http://host:port` from `host:port`, a URL, or a port.
fn normalize_url(app: &str) -> String {
    let app = app.trim().trim_end_matches('/');
    if app.starts_with("http://") || app.starts_with("https://") {
        app.to_owned()
    } else if app.parse::<u16>().is_ok() {
        format!("http://127.0.0.1:{app}")
    } else {
        format!("http://{app}")
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("an HTTP client")
}

fn unreachable(url: &str, err: reqwest::Error) -> Error {
    // reqwest's message names the URL; the reason is at the end of the chain of sources.
    let mut reason: &dyn std::error::Error = &err;
    while let Some(source) = reason.source() {
        reason = source;
    }
    let reason = if err.is_timeout() {
        "no answer in time".to_owned()
    } else if let Some(status) = err.status() {
        format!("it answered {status}")
    } else {
        reason.to_string()
    };
    Error::Lifecycle(format!(
        "no worker answers at {url} ({reason}); is it running, with its web server on that port?"
    ))
}

async fn fetch_status(web: &str) -> Result<Status> {
    let url = format!("{web}/status");
    let resp = http()
        .get(&url)
        .send()
        .await
        .map_err(|e| unreachable(web, e))?;
    resp.error_for_status()
        .map_err(|e| unreachable(web, e))?
        .json()
        .await
        .map_err(|e| Error::Lifecycle(format!("{url} did not answer a status document: {e}")))
}

/// The broker of the worker at `web` (to send through it).
async fn broker_of(web: &str) -> Result<String> {
    match fetch_status(web).await {
        Ok(status) => Ok(status.broker),
        Err(err) => Err(Error::Lifecycle(format!(
            "{err}\n(send asks the running worker for its broker; give --broker to send \
             without one)"
        ))),
    }
}

async fn print_status(web: &str) -> Result<()> {
    let s = fetch_status(web).await?;
    print!("{}", render_status(&s));
    Ok(())
}

/// The `status` report.
fn render_status(s: &Status) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let stat = |path: &[&str]| {
        path.iter()
            .fold(&s.stats, |v, k| &v[*k])
            .as_f64()
            .unwrap_or(0.0)
    };
    let _ = writeln!(out, "app:        {}", s.app);
    let _ = writeln!(out, "state:      {}", s.state);
    let _ = writeln!(
        out,
        "broker:     {}{}",
        s.broker,
        if s.embedded_broker {
            " (embedded in the worker)"
        } else {
            ""
        }
    );
    let _ = writeln!(out, "uptime:     {:.1} s", stat(&["uptime_s"]));
    let _ = writeln!(out, "agents:");
    for a in &s.agents {
        let sinks = if a.sinks.is_empty() {
            String::new()
        } else {
            format!(" -> {}", a.sinks.join(", "))
        };
        let _ = writeln!(
            out,
            "  {} <- {} (x{}){sinks}: {} events",
            a.name,
            a.topic,
            a.concurrency,
            stat(&["events_by_agent", &a.name])
        );
    }
    if s.partitions.is_empty() {
        let _ = writeln!(
            out,
            "partitions: none yet (no event consumed since the last assignment)"
        );
    } else {
        let _ = writeln!(out, "partitions:");
    }
    let offset = |o: Option<i64>| o.map_or_else(|| "-".to_owned(), |o| o.to_string());
    for p in &s.partitions {
        let _ = writeln!(
            out,
            "  {}[{}]: committed {}, commit point {}, in progress {}",
            p.topic,
            p.partition,
            offset(p.committed),
            offset(p.commit_point),
            p.in_progress
        );
    }
    let _ = writeln!(
        out,
        "counters:   {} records in, {} commits (avg {:.1} ms), {} decode errors, \
         {} agent failures, {} agent restarts, {} send errors",
        stat(&["messages_in"]),
        stat(&["commit", "count"]),
        stat(&["commit", "avg_ms"]),
        stat(&["decode_errors"]),
        stat(&["agent_failures"]),
        stat(&["agent_restarts"]),
        stat(&["send_errors"]),
    );
    out
}

async fn ping(web: &str) -> Result<()> {
    let started = Instant::now();
    let url = format!("{web}/ping");
    let body = http()
        .get(&url)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| unreachable(web, e))?
        .text()
        .await
        .map_err(|e| unreachable(web, e))?;
    println!(
        "{body} from {web} in {:.1} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );
    Ok(())
}

/// Sends one record through a producer configured like the worker's clients (`kafka`:
/// librdkafka properties).
async fn send(broker: &str, kafka: &BTreeMap<String, String>, args: &SendArgs) -> Result<()> {
    let mut config = ClientConfig::new().bootstrap_servers(broker);
    for (name, value) in kafka {
        config = config.set(name, value);
    }
    let producer = Producer::new(config)?;
    let mut record = Record::to(&args.topic);
    if let Some(v) = &args.value {
        record = record.value(v);
    }
    if let Some(k) = &args.key {
        record = record.key(k);
    }
    if let Some(p) = args.partition {
        record = record.partition(p);
    }
    let delivery = tokio::time::timeout(Duration::from_secs(30), async {
        producer.send(record).await?.await
    })
    .await
    .map_err(|_| Error::Lifecycle(format!("no delivery from {broker} within 30 s")))??;
    println!(
        "sent to {}[{}]@{}",
        args.topic, delivery.partition, delivery.offset
    );
    Ok(())
}

/// The standalone `faust` program.
#[derive(Debug, Parser)]
#[command(
    name = "faust",
    version,
    about = "Talk to running faust-rs apps, or run a development broker"
)]
struct FaustCli {
    /// The app's web address (host:port or URL); also FAUSTAPP
    #[arg(
        short = 'A',
        long = "app",
        env = "FAUSTAPP",
        default_value = "127.0.0.1:6666",
        global = true
    )]
    app: String,
    /// Log level or filter
    #[arg(short = 'l', long, global = true)]
    loglevel: Option<String>,
    #[command(subcommand)]
    command: FaustCommand,
}

#[derive(Debug, Subcommand)]
enum FaustCommand {
    /// Show a running app's status
    Status,
    /// Check that a running app answers
    Ping,
    /// Send a record through a running app's broker (or --broker)
    Send {
        #[command(flatten)]
        args: SendArgs,
        /// Kafka bootstrap servers (default: ask the app)
        #[arg(short = 'b', long)]
        broker: Option<String>,
    },
    /// Run a development broker (librdkafka's mock cluster) on loopback until SIGTERM
    Broker {
        /// The first broker's port; broker N listens on port + N - 1
        #[arg(long, default_value_t = 9092)]
        port: u16,
        /// Number of brokers
        #[arg(long, default_value_t = 1)]
        brokers: i32,
        /// Topics to create, as NAME or NAME:PARTITIONS
        #[arg(long = "topic")]
        topics: Vec<String>,
    },
}

/// Entry point of the `faust` binary.
#[doc(hidden)]
pub fn faust_main() -> ! {
    let cli = FaustCli::parse();
    init_logging(cli.loglevel.as_deref());
    let web = normalize_url(&cli.app);
    exit_with(runtime().block_on(async move {
        match cli.command {
            FaustCommand::Status => print_status(&web).await,
            FaustCommand::Ping => ping(&web).await,
            FaustCommand::Send { args, broker } => {
                let broker = match broker {
                    Some(b) => match Broker::parse(&b)? {
                        Broker::Kafka(list) => list,
                        Broker::Embedded => broker_of(&web).await?,
                    },
                    None => broker_of(&web).await?,
                };
                // The client properties a worker would use (FAUST_KAFKA_*): TLS, SASL, the
                // partitioner, ...
                let mut settings = Settings::new("faust");
                settings.apply_env(
                    std::env::vars().filter(|(name, _)| name.starts_with("FAUST_KAFKA_")),
                )?;
                send(&broker, &settings.kafka, &args).await
            }
            FaustCommand::Broker {
                port,
                brokers,
                topics,
            } => run_broker(port, brokers, &topics).await,
        }
    }))
}

async fn run_broker(port: u16, brokers: i32, topics: &[String]) -> Result<()> {
    let cluster = MockCluster::new(brokers)?;
    for t in topics {
        let (name, partitions) = match t.split_once(':') {
            Some((n, p)) => (
                n,
                p.parse::<i32>().map_err(|_| Error::Setting {
                    name: "--topic".into(),
                    reason: format!("{t:?}: partitions must be a number"),
                })?,
            ),
            None => (t.as_str(), 1),
        };
        cluster.create_topic(name, partitions, brokers.min(3))?;
    }
    // Listen for signals before announcing the address: whoever reads it may stop the
    // broker at once.
    let mut signals = Signals::new()?;
    let listener = cluster.listen_on(port).await?;
    println!("bootstrap.servers={}", listener.bootstrap_servers());
    let _ = std::io::stdout().flush();
    tracing::info!(servers = %listener.bootstrap_servers(), "development broker running; SIGTERM or Ctrl-C stops it");
    signals.recv().await;
    tracing::info!("signal received: stopping the broker");
    drop(listener);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_urls_are_normalized() {
        assert_eq!(normalize_url("127.0.0.1:6066"), "http://127.0.0.1:6066");
        assert_eq!(normalize_url("http://h:1/"), "http://h:1");
        assert_eq!(normalize_url("6066"), "http://127.0.0.1:6066");
    }

    #[test]
    fn cli_parses_the_faust_subcommands() {
        let cli = AppCli::try_parse_from(["app", "start", "--web-port", "7000"]).unwrap();
        assert!(matches!(cli.command, AppCommand::Worker));
        assert_eq!(cli.overrides.web_port, Some(7000));
        let cli = AppCli::try_parse_from(["app", "send", "t", "{\"a\":1}", "k"]).unwrap();
        let AppCommand::Send(args) = cli.command else {
            panic!()
        };
        assert_eq!((args.topic.as_str(), args.key.as_deref()), ("t", Some("k")));
        assert!(AppCli::try_parse_from(["app", "bogus"]).is_err());
        let f =
            FaustCli::try_parse_from(["faust", "-A", "h:1", "broker", "--port", "9999"]).unwrap();
        assert!(matches!(f.command, FaustCommand::Broker { port: 9999, .. }));
    }
}
