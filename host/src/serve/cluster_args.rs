//! `switchboard serve`'s cluster settings: the NATS servers a host joins, as whom, and the
//! cluster's name. Flags and environment win over the config file's `[cluster]` table.
//! Without a server URL the host runs alone, on the in-process transport.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use serde::Deserialize;

use crate::nats::{NatsOptions, StreamSettings};

/// The cluster's name when none is given.
pub const DEFAULT_CLUSTER_NAME: &str = "switchboard";

/// How a host joins a cluster over NATS; also the config file's `[cluster]` table.
#[derive(Clone, Debug, Default, PartialEq, Eq, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterArgs {
    /// Join a cluster through the NATS servers at these URLs (comma-separated, like
    /// nats://10.0.0.1:4222). Until agents, keyed state, timers and users are cluster-wide,
    /// such a host refuses agent handlers, state, timers and kept pushes with 409, and the
    /// client gateway.
    #[arg(
        long = "nats",
        env = "SWITCHBOARD_NATS",
        value_name = "URL",
        value_delimiter = ','
    )]
    #[serde(default)]
    pub nats: Vec<String>,
    /// The cluster's name: the prefix of its NATS subjects, so that clusters can share a
    /// NATS account (letters, digits, `-`, `_`) [default: switchboard].
    #[arg(long, env = "SWITCHBOARD_CLUSTER_NAME")]
    pub cluster_name: Option<String>,
    /// This host's id in the cluster, unique among its hosts [default: a random one at each
    /// start].
    #[arg(long, env = "SWITCHBOARD_HOST_ID")]
    pub host_id: Option<String>,
    /// A NATS credentials file (a user JWT and its NKey seed).
    #[arg(long, env = "SWITCHBOARD_NATS_CREDS", value_name = "FILE")]
    pub nats_creds: Option<PathBuf>,
    /// An NKey seed to authenticate to NATS with.
    #[arg(long, env = "SWITCHBOARD_NATS_NKEY", hide_env_values = true)]
    pub nats_nkey: Option<String>,
    /// A NATS user (with --nats-password).
    #[arg(long, env = "SWITCHBOARD_NATS_USER")]
    pub nats_user: Option<String>,
    /// The NATS user's password.
    #[arg(long, env = "SWITCHBOARD_NATS_PASSWORD", hide_env_values = true)]
    pub nats_password: Option<String>,
    /// A NATS token.
    #[arg(long, env = "SWITCHBOARD_NATS_TOKEN", hide_env_values = true)]
    pub nats_token: Option<String>,
    /// CA certificates (PEM) to verify the NATS servers with; TLS is then required.
    #[arg(long, env = "SWITCHBOARD_NATS_TLS_CA", value_name = "FILE")]
    pub nats_tls_ca: Option<PathBuf>,
    /// A client certificate (PEM) for NATS servers that verify clients (with
    /// --nats-tls-key).
    #[arg(long, env = "SWITCHBOARD_NATS_TLS_CERT", value_name = "FILE")]
    pub nats_tls_cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long, env = "SWITCHBOARD_NATS_TLS_KEY", value_name = "FILE")]
    pub nats_tls_key: Option<PathBuf>,
    /// How long a host may hold an event or a message nobody awaits, taken from the
    /// cluster's streams, without acknowledging it before another host is offered it, in
    /// seconds; a longer turn keeps it with in-progress acknowledgements [default: 30].
    #[arg(long, env = "SWITCHBOARD_NATS_ACK_WAIT", value_name = "SECONDS")]
    pub nats_ack_wait: Option<u64>,
    /// How many times such a signal is offered before it is kept as a dead letter instead
    /// of being handled again (a turn that kills its host) [default: 5].
    #[arg(long, env = "SWITCHBOARD_NATS_MAX_DELIVER", value_name = "N")]
    pub nats_max_deliver: Option<u32>,
    /// Each of the cluster's streams holds at most this many bytes; past it new signals are
    /// refused with 503, old ones never dropped [default: 1073741824].
    #[arg(long, env = "SWITCHBOARD_NATS_STREAM_MAX_BYTES", value_name = "BYTES")]
    pub nats_stream_max_bytes: Option<i64>,
    /// Each of the cluster's streams holds at most this many signals [default: 1000000].
    #[arg(long, env = "SWITCHBOARD_NATS_STREAM_MAX_MESSAGES", value_name = "N")]
    pub nats_stream_max_messages: Option<i64>,
    /// Copies the NATS servers keep of each stream: 1 on one server, 3 in production
    /// [default: 1].
    #[arg(long, env = "SWITCHBOARD_NATS_REPLICAS", value_name = "N")]
    pub nats_replicas: Option<usize>,
}

impl ClusterArgs {
    /// These settings where given, else `file`'s (the config file's `[cluster]` table).
    pub fn or(self, file: Self) -> Self {
        Self {
            nats: if self.nats.is_empty() {
                file.nats
            } else {
                self.nats
            },
            cluster_name: self.cluster_name.or(file.cluster_name),
            host_id: self.host_id.or(file.host_id),
            nats_creds: self.nats_creds.or(file.nats_creds),
            nats_nkey: self.nats_nkey.or(file.nats_nkey),
            nats_user: self.nats_user.or(file.nats_user),
            nats_password: self.nats_password.or(file.nats_password),
            nats_token: self.nats_token.or(file.nats_token),
            nats_tls_ca: self.nats_tls_ca.or(file.nats_tls_ca),
            nats_tls_cert: self.nats_tls_cert.or(file.nats_tls_cert),
            nats_tls_key: self.nats_tls_key.or(file.nats_tls_key),
            nats_ack_wait: self.nats_ack_wait.or(file.nats_ack_wait),
            nats_max_deliver: self.nats_max_deliver.or(file.nats_max_deliver),
            nats_stream_max_bytes: self.nats_stream_max_bytes.or(file.nats_stream_max_bytes),
            nats_stream_max_messages: (self.nats_stream_max_messages)
                .or(file.nats_stream_max_messages),
            nats_replicas: self.nats_replicas.or(file.nats_replicas),
        }
    }

    /// How to join NATS, or `None` to run alone; an error for settings that cannot go
    /// together.
    pub fn options(self) -> anyhow::Result<Option<NatsOptions>> {
        let servers: Vec<String> = self
            .nats
            .into_iter()
            .map(|url| url.trim().to_owned())
            .filter(|url| !url.is_empty())
            .collect();
        if servers.is_empty() {
            let cluster_only = [
                (self.cluster_name.is_some(), "--cluster-name"),
                (self.host_id.is_some(), "--host-id"),
                (self.nats_creds.is_some(), "--nats-creds"),
                (self.nats_nkey.is_some(), "--nats-nkey"),
                (self.nats_user.is_some(), "--nats-user"),
                (self.nats_password.is_some(), "--nats-password"),
                (self.nats_token.is_some(), "--nats-token"),
                (self.nats_tls_ca.is_some(), "--nats-tls-ca"),
                (self.nats_tls_cert.is_some(), "--nats-tls-cert"),
                (self.nats_tls_key.is_some(), "--nats-tls-key"),
                (self.nats_ack_wait.is_some(), "--nats-ack-wait"),
                (self.nats_max_deliver.is_some(), "--nats-max-deliver"),
                (
                    self.nats_stream_max_bytes.is_some(),
                    "--nats-stream-max-bytes",
                ),
                (
                    self.nats_stream_max_messages.is_some(),
                    "--nats-stream-max-messages",
                ),
                (self.nats_replicas.is_some(), "--nats-replicas"),
            ];
            if let Some((_, flag)) = cluster_only.iter().find(|(given, _)| *given) {
                bail!("{flag} is a cluster setting: give --nats URL too, or leave it out");
            }
            return Ok(None);
        }
        let user = match (self.nats_user, self.nats_password) {
            (Some(user), Some(password)) => Some((user, password)),
            (None, None) => None,
            _ => bail!("--nats-user and --nats-password go together"),
        };
        let tls_cert = match (self.nats_tls_cert, self.nats_tls_key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => bail!("--nats-tls-cert and --nats-tls-key go together"),
        };
        // The last 12 hex digits of a v7 UUID are random (its first ones are the time).
        let host_id = self
            .host_id
            .unwrap_or_else(|| uuid::Uuid::now_v7().simple().to_string()[20..].to_owned());
        if host_id.is_empty() || host_id.len() > 64 {
            bail!("--host-id must have 1 to 64 characters");
        }
        let defaults = StreamSettings::default();
        let streams = StreamSettings {
            ack_wait: (self.nats_ack_wait).map_or(defaults.ack_wait, Duration::from_secs),
            max_deliver: self.nats_max_deliver.unwrap_or(defaults.max_deliver),
            max_bytes: self.nats_stream_max_bytes.unwrap_or(defaults.max_bytes),
            max_messages: (self.nats_stream_max_messages).unwrap_or(defaults.max_messages),
            replicas: self.nats_replicas.unwrap_or(defaults.replicas),
        };
        if streams.ack_wait.is_zero() {
            bail!("--nats-ack-wait must be at least 1 second");
        }
        if streams.max_deliver == 0 {
            bail!("--nats-max-deliver must be at least 1");
        }
        if streams.max_bytes <= 0 || streams.max_messages <= 0 {
            bail!("--nats-stream-max-bytes and --nats-stream-max-messages must be above 0");
        }
        if !(1..=5).contains(&streams.replicas) {
            bail!("--nats-replicas must be 1 to 5 (JetStream's most)");
        }
        Ok(Some(NatsOptions {
            servers,
            cluster: self
                .cluster_name
                .unwrap_or_else(|| DEFAULT_CLUSTER_NAME.to_owned()),
            host_id,
            creds: self.nats_creds,
            nkey: self.nats_nkey,
            user,
            token: self.nats_token,
            tls_ca: self.nats_tls_ca,
            tls_cert,
            streams,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(nats: &[&str]) -> ClusterArgs {
        ClusterArgs {
            nats: nats.iter().map(|s| s.to_string()).collect(),
            ..ClusterArgs::default()
        }
    }

    /// Proves no URL means no cluster, a URL gives the defaults, and flags win over the file.
    #[test]
    fn urls_make_a_cluster_and_flags_win_over_the_file() {
        assert_eq!(args(&[]).options().unwrap(), None);
        let options = args(&["nats://127.0.0.1:4222"]).options().unwrap().unwrap();
        assert_eq!(options.cluster, DEFAULT_CLUSTER_NAME);
        assert_eq!(options.host_id.len(), 12);
        let file = ClusterArgs {
            cluster_name: Some("blue".into()),
            host_id: Some("h1".into()),
            ..args(&["nats://file:4222"])
        };
        let merged = args(&["nats://flag:4222"])
            .or(file)
            .options()
            .unwrap()
            .unwrap();
        assert_eq!(merged.servers, ["nats://flag:4222"]);
        assert_eq!(
            (merged.cluster.as_str(), merged.host_id.as_str()),
            ("blue", "h1")
        );
    }

    /// Proves the streams' settings reach the transport, default when not given, and are
    /// refused out of range with the flag to fix.
    #[test]
    fn stream_settings_are_taken_or_refused() {
        let given = ClusterArgs {
            nats_ack_wait: Some(2),
            nats_max_deliver: Some(1),
            nats_replicas: Some(3),
            ..args(&["nats://x:4222"])
        };
        let streams = given.options().unwrap().unwrap().streams;
        assert_eq!(streams.ack_wait, Duration::from_secs(2));
        assert_eq!((streams.max_deliver, streams.replicas), (1, 3));
        assert_eq!(streams.max_bytes, StreamSettings::default().max_bytes);
        for (bad, flag) in [
            (
                ClusterArgs {
                    nats_ack_wait: Some(0),
                    ..args(&["nats://x:4222"])
                },
                "--nats-ack-wait",
            ),
            (
                ClusterArgs {
                    nats_replicas: Some(7),
                    ..args(&["nats://x:4222"])
                },
                "--nats-replicas",
            ),
            (
                ClusterArgs {
                    nats_max_deliver: Some(3),
                    ..ClusterArgs::default()
                },
                "--nats-max-deliver",
            ),
        ] {
            let error = bad.options().unwrap_err().to_string();
            assert!(error.contains(flag), "{error}");
        }
    }

    /// Proves settings that cannot go together are refused with the flag to fix.
    #[test]
    fn half_settings_are_refused() {
        let lone = ClusterArgs {
            cluster_name: Some("blue".into()),
            ..ClusterArgs::default()
        };
        let error = lone.options().unwrap_err().to_string();
        assert!(
            error.contains("--cluster-name") && error.contains("--nats"),
            "{error}"
        );
        let key_alone = ClusterArgs {
            nats_tls_key: Some("key.pem".into()),
            ..ClusterArgs::default()
        };
        let error = key_alone.options().unwrap_err().to_string();
        assert!(error.contains("--nats-tls-key"), "{error}");
        let half = ClusterArgs {
            nats_user: Some("u".into()),
            ..args(&["nats://x:4222"])
        };
        assert!(
            half.options()
                .unwrap_err()
                .to_string()
                .contains("--nats-password")
        );
        let long = ClusterArgs {
            host_id: Some("x".repeat(65)),
            ..args(&["nats://x:4222"])
        };
        assert!(
            long.options()
                .unwrap_err()
                .to_string()
                .contains("--host-id")
        );
    }
}
