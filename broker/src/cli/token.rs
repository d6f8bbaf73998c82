//! `herald token`: makes credentials for development and for services. A
//! signed token (JWT, HS256) for an end user, or with `--static` a random
//! token for a service together with the tokens-file entry that holds its
//! hash. In production, end users' JWTs come from the application's own
//! backend (docs/security.md shows how).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use clap::Args;
use herald_broker::auth::jwt::{self, Claims};
use herald_broker::auth::tokens;
use herald_broker::auth::{GrantSpec, Grants};

use super::common::{outln, parse_duration};

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  herald token --secret-file jwt.secret --sub alice --allow-join 'chat.*' --allow-publish 'orders.>' --allow-subscribe 'orders.>' --ttl 1h\n  herald token --secret-file jwt.secret --sub ops --allow-admin --allow-subscribe '>' --ttl 10m\n  herald token --static billing --allow-publish 'invoices.>' --allow-subscribe 'orders.> billing'\n\nPatterns: '.' separates tokens, '*' is one token, '>' (last) is one or more; see docs/security.md."
)]
pub struct TokenArgs {
    /// Sign a JWT (HS256) with the secret in this file (the broker's
    /// --jwt-secret-file).
    #[arg(
        long,
        required_unless_present = "static_name",
        conflicts_with = "static_name"
    )]
    secret_file: Option<PathBuf>,
    /// The JWT's subject: the client id the token is for.
    #[arg(long, required_unless_present = "static_name")]
    sub: Option<String>,
    /// How long the JWT is valid (e.g. 15m, 1h, 7d).
    #[arg(long, value_parser = parse_duration, default_value = "1h")]
    ttl: Duration,
    /// Instead of a JWT, make a random static token for the service NAME
    /// and print it with its tokens-file entry.
    #[arg(long = "static", value_name = "NAME")]
    static_name: Option<String>,
    /// Topics it may publish to (pattern; repeatable).
    #[arg(long, value_name = "PATTERN")]
    allow_publish: Vec<String>,
    /// Topics it may subscribe to: "PATTERN" or "PATTERN GROUP-PATTERN"
    /// (repeatable).
    #[arg(long, value_name = "PATTERN")]
    allow_subscribe: Vec<String>,
    /// Topics it may administer (create, delete, reset groups, repair);
    /// without a value every topic (repeatable).
    #[arg(long, value_name = "PATTERN", num_args = 0..=1, default_missing_value = ">")]
    allow_admin: Vec<String>,
    /// Rooms it may join and list (repeatable).
    #[arg(long, value_name = "PATTERN")]
    allow_join: Vec<String>,
    /// Rooms and client ids it may emit to; '>' also allows emitting to
    /// every client (repeatable).
    #[arg(long, value_name = "PATTERN")]
    allow_emit: Vec<String>,
    /// Client ids (or rooms) it may send requests to and reply to
    /// (repeatable).
    #[arg(long, value_name = "PATTERN")]
    allow_request: Vec<String>,
    /// A cluster node's token: it may make Raft calls to other nodes
    /// (give it to the nodes only; see docs/cluster.md).
    #[arg(long)]
    allow_cluster: bool,
}

impl TokenArgs {
    fn spec(&self) -> GrantSpec {
        GrantSpec {
            publish: self.allow_publish.clone(),
            subscribe: self.allow_subscribe.clone(),
            admin: self.allow_admin.clone(),
            join: self.allow_join.clone(),
            emit: self.allow_emit.clone(),
            request: self.allow_request.clone(),
            cluster: self.allow_cluster,
        }
    }
}

pub fn run(a: TokenArgs) -> anyhow::Result<ExitCode> {
    let spec = a.spec();
    Grants::parse(&spec).context("permissions")?;
    if let Some(name) = &a.static_name {
        return print_static(name, &spec);
    }
    let (Some(path), Some(sub)) = (&a.secret_file, &a.sub) else {
        anyhow::bail!("--secret-file and --sub are needed for a JWT");
    };
    let content =
        std::fs::read(path).with_context(|| format!("reading secret {}", path.display()))?;
    let secret = jwt::secret_from_file_content(&content);
    if secret.len() < jwt::MIN_SECRET_BYTES {
        anyhow::bail!(
            "the secret in {} has {} bytes; use at least {} random bytes (e.g. `head -c 32 /dev/urandom | base64 > {}`)",
            path.display(),
            secret.len(),
            jwt::MIN_SECRET_BYTES,
            path.display()
        );
    }
    let now = jwt::now_secs();
    let claims = Claims {
        sub: sub.clone(),
        exp: now + a.ttl.as_secs().max(1),
        nbf: None,
        iat: Some(now),
        herald: spec,
    };
    outln!("{}", jwt::mint_hs256(secret, &claims)?)?;
    Ok(ExitCode::SUCCESS)
}

fn toml_list(v: &[String]) -> String {
    let items: Vec<String> = v.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", items.join(", "))
}

fn print_static(name: &str, spec: &GrantSpec) -> anyhow::Result<ExitCode> {
    let raw: [u8; 32] = rand::random();
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    outln!("# The token (give it to the service; it is stored nowhere else):")?;
    outln!("{token}")?;
    outln!("# Its entry for the tokens file (--tokens-file):")?;
    outln!("[[token]]")?;
    outln!("name = {name:?}")?;
    outln!("sha256 = {:?}", tokens::to_hex(&tokens::digest(&token)))?;
    for (key, v) in [
        ("publish", &spec.publish),
        ("subscribe", &spec.subscribe),
        ("admin", &spec.admin),
        ("join", &spec.join),
        ("emit", &spec.emit),
        ("request", &spec.request),
    ] {
        if !v.is_empty() {
            outln!("{key} = {}", toml_list(v))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
