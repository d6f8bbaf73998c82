//! Broker settings: one struct, filled from defaults, a TOML file and flags
//! (in that order of precedence, lowest first).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use herald_protocol::FsyncPolicy;
use serde::Deserialize;

use crate::auth::tokens::TokenEntry;
use crate::auth::AuthConfig;
use crate::tls::TlsConfig;

/// Everything `herald serve` can be told. Every bound the broker enforces is
/// named here, so that memory per connection and per subscription is
/// predictable.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Default durability for topics that do not override it.
    pub fsync: FsyncPolicy,
    /// Connections beyond this wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Connections one source address may hold at once; further ones are
    /// closed right after accept, so one host cannot take every
    /// connection. A reverse proxy on the same host counts as one address.
    pub max_connections_per_address: usize,
    /// Who may connect and what they may do (docs/security.md). Off by
    /// default, and then only a loopback address may be served (see
    /// [`crate::auth::check_exposure`]).
    pub auth: AuthConfig,
    /// TLS on both listeners, TCP and HTTP (`None`: plaintext).
    pub tls: Option<TlsConfig>,
    /// Largest frame accepted, header included. Also bounds a connection's
    /// read buffer.
    pub max_frame_bytes: usize,
    /// Publishing to a missing topic creates it (with defaults) when true.
    /// False disables every creation on a client's behalf (publish and
    /// subscribe); the broker's own topics (dead letters, inboxes) are still
    /// created.
    pub auto_create_topics: bool,
    /// Subscribing to a missing topic creates it too (needs
    /// `auto_create_topics`). Off by default: a typo in a subscriber's
    /// topic would create an empty topic and wait on it forever.
    pub auto_create_on_subscribe: bool,
    /// Topics the broker holds at most, inboxes and room logs included;
    /// creating one more (a publish to a new topic, a direct emit to a
    /// client id that has no inbox yet, a join of a new room) is refused
    /// with `Busy`. Each topic keeps a file open: without a bound, one
    /// client emitting to made-up client ids took every file descriptor of
    /// the process in seconds. `None`: half the open-files limit, at most
    /// 100,000 ([`default_max_topics`]).
    pub max_topics: Option<usize>,
    /// A connection must complete its Hello within this.
    pub handshake_timeout: Duration,
    /// Ping an idle peer after this; close it after three of them.
    pub heartbeat: Duration,
    /// Publishes awaiting their confirm, per connection. Past it the broker
    /// stops reading that connection until confirms go out.
    pub max_inflight_publishes: usize,
    /// Replies queued for a connection's writer; past it the reader waits.
    pub write_queue_frames: usize,
    /// A peer that has not taken our bytes for this long is cut off.
    pub write_stall_timeout: Duration,
    /// Subscriptions one connection may hold.
    pub max_subscriptions_per_connection: usize,
    /// Upper bounds on a subscription's prefetch window.
    pub max_prefetch_messages: u32,
    pub max_prefetch_bytes: u32,
    /// Defaults for groups.
    pub ack_timeout: Duration,
    pub max_deliveries: u32,
    /// Delays before the 1st, 2nd, ... redelivery after a deadline passes;
    /// the last one repeats.
    pub redelivery_backoff: Vec<Duration>,
    /// Suffix of a topic's dead-letter topic.
    pub dlq_suffix: String,
    /// Default segment size of new topics.
    pub segment_bytes: u64,
    /// How often retention runs.
    pub retention_interval: Duration,
    /// Per-log in-memory tail cache.
    pub tail_cache_bytes: usize,
    /// Under `always`, append with `O_DIRECT` where the filesystem allows
    /// (false: through the page cache, like the other policies).
    pub direct_io: bool,
    /// A client whose last session ended and that reconnects (same client
    /// id) within this keeps its rooms, and its rooms see no
    /// disconnect/leave (nor connect) presence events.
    pub presence_grace: Duration,
    /// Rooms one client id may be a member of (its own id room not
    /// counted). Past it Join fails with `Busy`.
    pub max_rooms_per_connection: usize,
    /// Members one room may have. Past it Join fails with `Busy`.
    pub max_members_per_room: usize,
    /// Rooms with more members than this get no presence records (join,
    /// leave, connect, disconnect): each is delivered to every member.
    pub presence_max_members: usize,
    /// Events an inbox may hold unacknowledged. A direct emit or reply to a
    /// full inbox fails with `Busy`; room emits skip full inboxes and count
    /// them in `EmitOk.skipped`.
    pub max_inbox_pending: u64,
    /// Retention of inbox topics (`_inbox.<client id>`): what a client that
    /// never comes back costs at most.
    pub inbox_retention: Duration,
    pub inbox_retention_bytes: u64,
    /// Retention of room logs (`_room.<room>`): how long an offline durable
    /// member can be away without missing anything (one that falls behind
    /// is told how much it missed).
    pub room_retention: Duration,
    pub room_retention_bytes: u64,
    /// Bytes of record data the broker may hold in memory at once (pending
    /// publishes, tail caches, deliveries queued for sockets); see
    /// [`crate::memory`]. Past it, producers are slowed and the slowest
    /// readers paused instead of the broker growing.
    pub max_memory: usize,
    /// The HTTP listener: WebSocket sessions at `/ws`, the JavaScript
    /// client at `/herald.js`, the chat page at `/`, `/healthz`. `None`:
    /// off (the library's default, so that an embedded broker opens no
    /// port it was not asked for; `herald serve` turns it on at
    /// [`DEFAULT_HTTP`]).
    pub http: Option<SocketAddr>,
    /// The HTTP address was not asked for: if it is busy the broker warns
    /// and serves without it instead of failing to start.
    pub http_optional: bool,
    /// Origins (`scheme://host[:port]`) whose pages may open `/ws`, besides
    /// pages served by this listener and clients that send no `Origin`
    /// (not a browser). `*` allows every origin. A browser sends the
    /// page's origin, and a page from anywhere could otherwise act as any
    /// client id this broker serves.
    pub http_allowed_origins: Vec<String>,
    /// `/metrics` labels its per-topic and per-group series with the topic
    /// and group names. False: one series per metric, summed over topics
    /// and groups, for brokers with very many topics (each label value is
    /// a time series to Prometheus). Inbox topics and room members' groups
    /// are always summed (one per client; see docs/operations.md).
    pub metrics_topic_labels: bool,
    /// Membership of a cluster (`--node-id`, `--peers`; docs/cluster.md).
    /// `None`: the broker runs alone.
    pub cluster: Option<crate::cluster::ClusterConfig>,
}

/// Where `herald serve` listens for HTTP and WebSocket unless told.
pub const DEFAULT_HTTP: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    7480,
));

impl BrokerConfig {
    /// The biggest record batch a Deliver frame can carry within the frame
    /// limit, which clients enforce on what they read: the limit less the
    /// frame header and the Deliver prefix.
    pub fn max_deliverable_batch(&self) -> usize {
        self.max_frame_bytes.saturating_sub(
            herald_protocol::HEADER_LEN + herald_protocol::message::DELIVER_PREFIX_LEN,
        )
    }
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7400)),
            data_dir: PathBuf::from("herald-data"),
            fsync: FsyncPolicy::Always,
            max_connections: 10_000,
            max_connections_per_address: 4096,
            auth: AuthConfig::default(),
            tls: None,
            max_frame_bytes: herald_protocol::DEFAULT_MAX_FRAME,
            auto_create_topics: true,
            auto_create_on_subscribe: false,
            max_topics: None,
            handshake_timeout: Duration::from_secs(10),
            heartbeat: Duration::from_secs(10),
            max_inflight_publishes: 1024,
            write_queue_frames: 1024,
            write_stall_timeout: Duration::from_secs(30),
            max_subscriptions_per_connection: 256,
            max_prefetch_messages: 100_000,
            max_prefetch_bytes: 64 << 20,
            ack_timeout: Duration::from_secs(30),
            max_deliveries: 10,
            redelivery_backoff: vec![
                Duration::from_millis(0),
                Duration::from_millis(100),
                Duration::from_secs(1),
                Duration::from_secs(5),
            ],
            dlq_suffix: ".dlq".into(),
            segment_bytes: 64 << 20,
            retention_interval: Duration::from_secs(30),
            tail_cache_bytes: 8 << 20,
            direct_io: true,
            presence_grace: Duration::from_secs(5),
            max_rooms_per_connection: 128,
            max_members_per_room: 10_000,
            presence_max_members: 1_000,
            max_inbox_pending: 100_000,
            inbox_retention: Duration::from_secs(7 * 24 * 3600),
            inbox_retention_bytes: 256 << 20,
            room_retention: Duration::from_secs(7 * 24 * 3600),
            room_retention_bytes: 1 << 30,
            max_memory: crate::memory::default_budget(),
            http: None,
            http_optional: false,
            http_allowed_origins: Vec::new(),
            metrics_topic_labels: true,
            cluster: None,
        }
    }
}

/// The TOML file's shape: every field optional, same names as the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub fsync: Option<String>,
    pub max_connections: Option<usize>,
    pub max_frame_bytes: Option<usize>,
    pub no_auto_create: Option<bool>,
    pub auto_create_on_subscribe: Option<bool>,
    pub buffered_io: Option<bool>,
    pub log_format: Option<String>,
    pub ack_timeout_ms: Option<u64>,
    pub max_deliveries: Option<u32>,
    pub heartbeat_ms: Option<u64>,
    pub presence_grace_ms: Option<u64>,
    pub max_rooms_per_connection: Option<usize>,
    pub max_members_per_room: Option<usize>,
    pub presence_max_members: Option<usize>,
    pub max_inbox_pending: Option<u64>,
    /// A size: `512MiB`, `2GiB`, or bytes.
    pub max_memory: Option<String>,
    pub max_connections_per_address: Option<usize>,
    pub max_topics: Option<usize>,
    /// Authentication settings.
    pub auth: Option<FileAuth>,
    /// TLS on both listeners, TCP and HTTP.
    pub tls: Option<FileTls>,
    /// The HTTP listener's address.
    pub http: Option<SocketAddr>,
    pub no_http: Option<bool>,
    pub http_allowed_origins: Option<Vec<String>>,
    /// `/metrics` without topic and group labels.
    pub metrics_no_topic_labels: Option<bool>,
    pub node_id: Option<u64>,
    pub peers: Option<String>,
    pub join: Option<bool>,
    pub cluster_token_file: Option<PathBuf>,
}

/// The `[auth]` section: same names as the flags, plus static tokens
/// inline as `[[auth.token]]` entries (the tokens file's shape, see
/// [`crate::auth::tokens`]).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileAuth {
    pub tokens_file: Option<PathBuf>,
    #[serde(default)]
    pub token: Vec<TokenEntry>,
    pub jwt_secret_file: Option<PathBuf>,
    pub jwt_public_key_file: Option<PathBuf>,
    pub jwt_leeway_ms: Option<u64>,
    pub jwt_audience: Option<String>,
    pub jwt_issuer: Option<String>,
    pub allow_anonymous: Option<bool>,
}

/// The `[tls]` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileTls {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub client_ca: Option<PathBuf>,
}

/// Parses `always`, `never` or `interval:<ms>`.
pub fn parse_fsync(s: &str) -> Result<FsyncPolicy, String> {
    match s {
        "always" => Ok(FsyncPolicy::Always),
        "never" => Ok(FsyncPolicy::Never),
        _ => {
            let ms = s
                .strip_prefix("interval:")
                .and_then(|v| v.trim_end_matches("ms").parse::<u32>().ok())
                .filter(|ms| *ms > 0);
            match ms {
                Some(ms) => Ok(FsyncPolicy::Interval { ms }),
                None => Err(format!(
                    "invalid fsync policy {s:?}: expected always, never or interval:<ms> (e.g. interval:100)"
                )),
            }
        }
    }
}

/// The inverse of [`parse_fsync`], for display.
pub fn fsync_name(p: FsyncPolicy) -> String {
    match p {
        FsyncPolicy::Always => "always".into(),
        FsyncPolicy::Never => "never".into(),
        FsyncPolicy::Interval { ms } => format!("interval:{ms}"),
    }
}

/// The topic limit when none is set: half of `open_files_limit` (the
/// process's soft `RLIMIT_NOFILE`, which `herald serve` raises to the hard
/// one), leaving the other half to connections and the files a topic opens
/// for a while (a new segment, group state); at least 1,000, at most
/// 100,000.
pub fn default_max_topics(open_files_limit: Option<u64>) -> usize {
    let half = open_files_limit.map_or(100_000, |n| n / 2);
    half.clamp(1_000, 100_000) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_topic_limit_is_half_the_open_files_within_bounds() {
        assert_eq!(default_max_topics(Some(20_000)), 10_000);
        assert_eq!(default_max_topics(Some(1 << 20)), 100_000);
        assert_eq!(default_max_topics(Some(1024)), 1_000);
        assert_eq!(default_max_topics(None), 100_000);
    }

    #[test]
    fn fsync_policies_parse() {
        assert_eq!(parse_fsync("always"), Ok(FsyncPolicy::Always));
        assert_eq!(parse_fsync("never"), Ok(FsyncPolicy::Never));
        assert_eq!(
            parse_fsync("interval:100"),
            Ok(FsyncPolicy::Interval { ms: 100 })
        );
        assert!(parse_fsync("interval:0").is_err());
        assert!(parse_fsync("sometimes").is_err());
        assert_eq!(fsync_name(FsyncPolicy::Interval { ms: 5 }), "interval:5");
    }
}
