//! `herald serve`: the broker daemon.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use herald_broker::config::{parse_fsync, BrokerConfig, FileConfig, DEFAULT_HTTP};

use super::common::outln;

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  herald serve\n  herald serve --listen 127.0.0.1:0 --data-dir /tmp/h --fsync never\n  HERALD_FSYNC=interval:50 herald serve --config herald.toml\n  herald serve --listen 0.0.0.0:7400 --jwt-secret-file jwt.secret --tokens-file tokens.toml --tls-cert cert.pem --tls-key key.pem\n  herald serve --http 0.0.0.0:8080 --http-allowed-origins https://app.example.com --jwt-secret-file jwt.secret"
)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port and prints it).
    #[arg(long, env = "HERALD_LISTEN")]
    listen: Option<SocketAddr>,
    /// Folder for topics and group state.
    #[arg(long, env = "HERALD_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Durability: always (fsync before confirming, the default), interval:<ms>, never.
    #[arg(long, env = "HERALD_FSYNC", value_parser = parse_fsync)]
    fsync: Option<herald_protocol::FsyncPolicy>,
    /// Most simultaneous connections.
    #[arg(long, env = "HERALD_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Most topics, inboxes and room logs included (default: half the
    /// open-files limit, at most 100000); creating more is refused with Busy.
    #[arg(long, env = "HERALD_MAX_TOPICS")]
    max_topics: Option<usize>,
    /// Largest frame accepted, in bytes.
    #[arg(long, env = "HERALD_MAX_FRAME_BYTES")]
    max_frame_bytes: Option<usize>,
    /// Never create a topic on a client's behalf (publish or subscribe);
    /// only `herald topics create` does.
    #[arg(long, env = "HERALD_NO_AUTO_CREATE")]
    no_auto_create: bool,
    /// Also create a missing topic when a client subscribes to it (by
    /// default only a publish creates one, and subscribing to a missing
    /// topic fails with UnknownTopic).
    #[arg(long, env = "HERALD_AUTO_CREATE_ON_SUBSCRIBE")]
    auto_create_on_subscribe: bool,
    /// Under fsync always, write through the page cache instead of with
    /// O_DIRECT (which Herald uses where the filesystem allows it).
    #[arg(long, env = "HERALD_BUFFERED_IO")]
    buffered_io: bool,
    /// Log format.
    #[arg(long, env = "HERALD_LOG_FORMAT", value_parser = ["text", "json"])]
    log_format: Option<String>,
    /// Default ack timeout of groups, in milliseconds.
    #[arg(long, env = "HERALD_ACK_TIMEOUT_MS")]
    ack_timeout_ms: Option<u64>,
    /// Heartbeat interval, in milliseconds.
    #[arg(long, env = "HERALD_HEARTBEAT_MS")]
    heartbeat_ms: Option<u64>,
    /// Bytes of record data the broker may hold in memory (e.g. 512MiB,
    /// 4GiB); default a quarter of the machine's memory. At the budget,
    /// producers are slowed and the slowest readers paused.
    #[arg(long, env = "HERALD_MAX_MEMORY", value_parser = super::common::parse_size)]
    max_memory: Option<u64>,
    /// Address of the HTTP listener: the chat page at /, the JavaScript
    /// client at /herald.js, WebSocket sessions at /ws, /healthz. Default:
    /// the --listen host, port 7480 (a free port when --listen has port 0);
    /// if that default is busy the broker warns and serves without it.
    #[arg(long, env = "HERALD_HTTP")]
    http: Option<SocketAddr>,
    /// No HTTP listener.
    #[arg(long, env = "HERALD_NO_HTTP", conflicts_with = "http")]
    no_http: bool,
    /// Origins whose pages may open WebSocket sessions, comma-separated
    /// (e.g. https://app.example.com,http://localhost:3000); * allows any.
    /// Pages served by this listener and clients that send no Origin (not
    /// browsers) are always allowed.
    #[arg(long, env = "HERALD_HTTP_ALLOWED_ORIGINS", value_delimiter = ',')]
    http_allowed_origins: Vec<String>,
    /// /metrics without per-topic and per-group labels (one series per
    /// metric, summed): for brokers with very many topics.
    #[arg(long, env = "HERALD_METRICS_NO_TOPIC_LABELS")]
    metrics_no_topic_labels: bool,
    /// This node's id in a cluster (needs --peers; docs/cluster.md).
    #[arg(long, env = "HERALD_NODE_ID", requires = "peers")]
    node_id: Option<u64>,
    /// Every node of the cluster, this one included, as
    /// ID=HOST:PORT,... (their broker listeners).
    #[arg(long, env = "HERALD_PEERS", requires = "node_id")]
    peers: Option<String>,
    /// Join a running cluster instead of forming one: the node waits until
    /// `herald cluster add ID HOST:PORT` makes it a member (docs/cluster.md).
    /// Needed on a new node's first start only.
    #[arg(long, env = "HERALD_JOIN", requires = "node_id")]
    join: bool,
    /// The token this node presents to the others when authentication is
    /// on (made with `herald token --allow-cluster`).
    #[arg(long, env = "HERALD_CLUSTER_TOKEN_FILE")]
    cluster_token_file: Option<PathBuf>,
    /// A TOML file with the same settings (kebab-case keys); flags win.
    #[arg(long, env = "HERALD_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    security: super::security::ServeSecurity,
}

fn build_config(a: &ServeArgs) -> anyhow::Result<(BrokerConfig, String)> {
    let file: FileConfig = match &a.config {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading config file {}", p.display()))?;
            toml::from_str(&text).with_context(|| format!("parsing config file {}", p.display()))?
        }
        None => FileConfig::default(),
    };
    let mut c = BrokerConfig::default();
    if let Some(v) = file.listen {
        c.listen = v;
    }
    if let Some(v) = file.data_dir {
        c.data_dir = v;
    }
    if let Some(v) = &file.fsync {
        c.fsync = parse_fsync(v).map_err(anyhow::Error::msg)?;
    }
    if let Some(v) = file.max_connections {
        c.max_connections = v;
    }
    if let Some(v) = file.max_topics {
        c.max_topics = Some(v);
    }
    if let Some(v) = file.max_frame_bytes {
        c.max_frame_bytes = v;
    }
    if file.no_auto_create == Some(true) {
        c.auto_create_topics = false;
    }
    if let Some(v) = file.auto_create_on_subscribe {
        c.auto_create_on_subscribe = v;
    }
    if file.buffered_io == Some(true) {
        c.direct_io = false;
    }
    if file.metrics_no_topic_labels == Some(true) || a.metrics_no_topic_labels {
        c.metrics_topic_labels = false;
    }
    if let Some(v) = file.ack_timeout_ms {
        c.ack_timeout = Duration::from_millis(v);
    }
    if let Some(v) = file.max_deliveries {
        c.max_deliveries = v;
    }
    if let Some(v) = file.heartbeat_ms {
        c.heartbeat = Duration::from_millis(v);
    }
    if let Some(v) = file.presence_grace_ms {
        c.presence_grace = Duration::from_millis(v);
    }
    if let Some(v) = file.max_rooms_per_connection {
        c.max_rooms_per_connection = v;
    }
    if let Some(v) = file.max_members_per_room {
        c.max_members_per_room = v;
    }
    if let Some(v) = file.presence_max_members {
        c.presence_max_members = v;
    }
    if let Some(v) = file.max_inbox_pending {
        c.max_inbox_pending = v;
    }
    if let Some(v) = &file.max_memory {
        c.max_memory = super::common::parse_size(v).map_err(anyhow::Error::msg)? as usize;
    }
    if let Some(v) = file.max_connections_per_address {
        c.max_connections_per_address = v;
    }
    let (auth, tls, per_address) = a.security.build(file.auth.as_ref(), file.tls.as_ref())?;
    c.auth = auth;
    c.tls = tls;
    if let Some(v) = per_address {
        c.max_connections_per_address = v;
    }
    if c.max_connections_per_address == 0 {
        anyhow::bail!("--max-connections-per-address must be at least 1");
    }
    if let Some(v) = a.listen {
        c.listen = v;
    }
    if let Some(v) = &a.data_dir {
        c.data_dir = v.clone();
    }
    if let Some(v) = a.fsync {
        c.fsync = v;
    }
    if let Some(v) = a.max_connections {
        c.max_connections = v;
    }
    if let Some(v) = a.max_topics {
        c.max_topics = Some(v);
    }
    if let Some(v) = a.max_frame_bytes {
        c.max_frame_bytes = v;
    }
    if a.no_auto_create {
        c.auto_create_topics = false;
    }
    if a.auto_create_on_subscribe {
        c.auto_create_on_subscribe = true;
    }
    if c.auto_create_on_subscribe && !c.auto_create_topics {
        anyhow::bail!("--auto-create-on-subscribe contradicts --no-auto-create (no-auto-create covers subscribe too)");
    }
    if a.buffered_io {
        c.direct_io = false;
    }
    if let Some(v) = a.ack_timeout_ms {
        c.ack_timeout = Duration::from_millis(v);
    }
    if let Some(v) = a.heartbeat_ms {
        c.heartbeat = Duration::from_millis(v.max(10));
    }
    if let Some(v) = a.max_memory {
        c.max_memory = v as usize;
    }
    if c.max_memory < herald_broker::memory::MIN_BUDGET {
        anyhow::bail!(
            "--max-memory must be at least {} MiB",
            herald_broker::memory::MIN_BUDGET >> 20
        );
    }
    if !(4096..=(256 << 20)).contains(&c.max_frame_bytes) {
        anyhow::bail!("--max-frame-bytes must be between 4096 and 268435456");
    }
    if c.max_connections == 0 {
        anyhow::bail!("--max-connections must be at least 1");
    }
    if c.max_topics == Some(0) {
        anyhow::bail!("--max-topics must be at least 1");
    }
    let node_id = a.node_id.or(file.node_id);
    let peers = a.peers.clone().or(file.peers.clone());
    c.cluster = match (node_id, peers) {
        (Some(id), Some(peers)) => {
            let mut cc = herald_broker::cluster::ClusterConfig::parse(id, &peers)
                .map_err(|e| anyhow::anyhow!("--peers: {e}"))?;
            if let Some(p) = a
                .cluster_token_file
                .clone()
                .or(file.cluster_token_file.clone())
            {
                let t = std::fs::read_to_string(&p)
                    .with_context(|| format!("reading cluster token file {}", p.display()))?;
                cc.token = Some(t.trim().to_owned());
            }
            cc.join = a.join || file.join.unwrap_or(false);
            Some(cc)
        }
        (None, None) => None,
        _ => anyhow::bail!("a cluster node needs both node-id and peers"),
    };
    apply_http(
        a,
        (file.http, file.no_http, file.http_allowed_origins),
        &mut c,
    );
    let format = a
        .log_format
        .clone()
        .or(file.log_format)
        .unwrap_or_else(|| "text".into());
    if format != "text" && format != "json" {
        anyhow::bail!("log-format must be text or json, not {format:?}");
    }
    Ok((c, format))
}

/// The HTTP listener's settings: flags, then the file, then the default
/// (the --listen host on port 7480, or on a free port when --listen asks
/// for one, so that brokers started on free ports by scripts and tests do
/// not compete for 7480).
fn apply_http(
    a: &ServeArgs,
    (file_http, file_no_http, file_origins): (
        Option<SocketAddr>,
        Option<bool>,
        Option<Vec<String>>,
    ),
    c: &mut BrokerConfig,
) {
    let default = || {
        let port = if c.listen.port() == 0 {
            0
        } else {
            DEFAULT_HTTP.port()
        };
        SocketAddr::new(c.listen.ip(), port)
    };
    (c.http, c.http_optional) = if a.no_http {
        (None, false)
    } else if let Some(v) = a.http {
        (Some(v), false)
    } else if file_no_http == Some(true) {
        (None, false)
    } else if let Some(v) = file_http {
        (Some(v), false)
    } else {
        (Some(default()), true)
    };
    c.http_allowed_origins = if a.http_allowed_origins.is_empty() {
        file_origins.unwrap_or_default()
    } else {
        a.http_allowed_origins.clone()
    };
    c.http_allowed_origins.retain(|o| !o.trim().is_empty());
}

/// Logs go to stderr, coloured only when stderr is a terminal: escape codes
/// in a log file or a pipe to a collector are noise.
fn init_logging(format: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("HERALD_LOG")
        // openraft reports every unreachable peer and lost election at
        // WARN/ERROR, over and over while a node is down: what matters of
        // it Herald logs itself. HERALD_LOG=info,openraft=info shows it.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=off"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if format == "json" {
        b.json().init();
    } else {
        b.init();
    }
}

/// Lifts the soft limit on open files to the hard one. Every topic holds
/// its segment files open (and an `O_DIRECT` handle on its active one once
/// it takes big writes), and a connection is a descriptor too; the soft
/// limit is often 1024, which would cap the broker at a few hundred topics
/// while the hard limit allows far more.
fn raise_fd_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(limit = n, "open files limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open files limit"),
    }
}

pub fn run(a: ServeArgs) -> anyhow::Result<ExitCode> {
    let (config, format) = build_config(&a)?;
    init_logging(&format);
    raise_fd_limit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let data_dir = config.data_dir.clone();
        let (web, ws) = match config.tls {
            Some(_) => ("https", "wss"),
            None => ("http", "ws"),
        };
        let broker = herald_broker::server::start(config)
            .await
            .with_context(|| format!("starting the broker (data folder {})", data_dir.display()))?;
        // Scripts and tests read this line to learn the real port. Nobody
        // reading stdout (closed) is no reason to stop serving.
        let _ = outln!("listening on {}", broker.local_addr());
        if let Some(http) = broker.http_addr() {
            let _ = outln!(
                "http listening on {http} (chat page {web}://{http}/, WebSocket {ws}://{http}/ws, metrics {web}://{http}/metrics)"
            );
        }
        wait_for_signal().await?;
        tracing::info!("shutting down (a second signal exits at once)");
        tokio::spawn(async {
            if wait_for_signal().await.is_ok() {
                eprintln!("herald: second signal, exiting now");
                std::process::exit(130);
            }
        });
        broker.shutdown().await;
        Ok(ExitCode::SUCCESS)
    })
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
