//! Shared helpers for the examples.
//!
//! Every example finds its broker the way the `herald` command line does:
//! `--server HOST:PORT`, else the `HERALD_SERVER` environment variable, else
//! 127.0.0.1:7400.

use anyhow::bail;

/// Where a broker started with `herald serve` listens by default.
pub const DEFAULT_SERVER: &str = "127.0.0.1:7400";

/// The broker address and the remaining arguments of this process.
///
/// # Errors
/// `--server` without a value.
pub fn args() -> anyhow::Result<(String, Vec<String>)> {
    split_server(
        std::env::args().skip(1),
        std::env::var("HERALD_SERVER").ok(),
    )
}

/// Takes `--server ADDR` (or `--server=ADDR`) out of `args`; without it the
/// address is `env` (the value of `HERALD_SERVER`), else [`DEFAULT_SERVER`].
///
/// # Errors
/// `--server` without a value.
pub fn split_server(
    args: impl IntoIterator<Item = String>,
    env: Option<String>,
) -> anyhow::Result<(String, Vec<String>)> {
    let mut server = None;
    let mut rest = Vec::new();
    let mut args = args.into_iter();
    while let Some(a) = args.next() {
        if a == "--server" {
            let Some(v) = args.next() else {
                bail!("--server needs an address, HOST:PORT");
            };
            server = Some(v);
        } else if let Some(v) = a.strip_prefix("--server=") {
            server = Some(v.to_owned());
        } else {
            rest.push(a);
        }
    }
    let server = server
        .or(env.filter(|e| !e.is_empty()))
        .unwrap_or_else(|| DEFAULT_SERVER.to_owned());
    Ok((server, rest))
}

/// `1 message`, `2 messages`: a count with its noun.
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(args: &[&str], env: Option<&str>) -> (String, Vec<String>) {
        split_server(args.iter().map(|s| s.to_string()), env.map(str::to_owned)).unwrap()
    }

    #[test]
    fn server_from_flag_then_env_then_default() {
        assert_eq!(
            split(&["lobby", "--server", "h:1", "alice"], Some("e:2")),
            ("h:1".into(), vec!["lobby".into(), "alice".into()])
        );
        assert_eq!(
            split(&["--server=h:1", "produce"], None),
            ("h:1".into(), vec!["produce".into()])
        );
        assert_eq!(
            split(&["consume", "30"], Some("e:2")),
            ("e:2".into(), vec!["consume".into(), "30".into()])
        );
        assert_eq!(split(&[], None), (DEFAULT_SERVER.into(), vec![]));
        assert_eq!(split(&[], Some("")), (DEFAULT_SERVER.into(), vec![]));
        assert!(split_server(["--server".to_string()], None).is_err());
    }

    #[test]
    fn counts_agree_in_number() {
        assert_eq!(count(1, "message"), "1 message");
        assert_eq!(count(30, "message"), "30 messages");
    }
}
