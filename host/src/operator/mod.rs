//! The operator commands of the `switchboard` binary (`deploy`, `list`, `show`, `rollback`,
//! `delete`, `send`, `request`, `emit`, `dead-letters`): a client of a running
//! `switchboard serve`'s admin API.
//!
//! Data flows one way: `api` turns a command into the request it makes (no I/O, so it is
//! tested without a server), `client` sends it and sorts the answer into success or a
//! refusal, and `output` writes the answer for a person, or verbatim with `--json`.

mod api;
mod client;
mod dead_letters;
mod output;
mod state;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use reqwest::Url;

use crate::config::duration_arg;
use crate::signal::Json;

pub use api::{ApiBody, ApiRequest, format_duration, parse_payload};
pub use client::{ApiError, Client, ClientError};

/// Where the admin API listens unless `--url` or `SWITCHBOARD_URL` says otherwise.
pub const DEFAULT_URL: &str = "http://127.0.0.1:7070";
/// How long `request` waits for a reply unless `--timeout` says otherwise.
pub const DEFAULT_REQUEST_WAIT: &str = "5s";

/// Where the admin API is and how to talk to it; every operator command takes these.
#[derive(Args, Clone, Debug)]
pub struct Connection {
    /// Base URL of a running `switchboard serve`'s admin API.
    #[arg(long, env = "SWITCHBOARD_URL", default_value = DEFAULT_URL)]
    pub url: Url,
    /// Admin token, sent as `Authorization: Bearer TOKEN`.
    #[arg(long, env = "SWITCHBOARD_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the API's JSON answer instead of a summary.
    #[arg(long)]
    pub json: bool,
}

/// The commands that operate a running host through its admin API.
#[derive(Subcommand, Clone, Debug)]
pub enum OperatorCommand {
    /// Upload a handler component and put it live under NAME (a hot swap if NAME exists).
    Deploy {
        #[command(flatten)]
        connection: Connection,
        /// The name the handler is deployed under (its address, for a service).
        name: String,
        /// The handler component (a .wasm file built for wasm32-wasip2).
        file: PathBuf,
        #[command(flatten)]
        settings: DeploySettings,
    },
    /// List the deployed handlers with their versions and counters.
    List {
        #[command(flatten)]
        connection: Connection,
    },
    /// Show one handler: versions, description, limits and counters.
    Show {
        #[command(flatten)]
        connection: Connection,
        /// The handler's name.
        name: String,
    },
    /// Put a handler back on its previous version.
    Rollback {
        #[command(flatten)]
        connection: Connection,
        /// The handler's name.
        name: String,
    },
    /// Remove a handler and all its versions. Its keyed state and timers are kept unless
    /// `--purge` is given.
    Delete {
        #[command(flatten)]
        connection: Connection,
        /// The handler's name.
        name: String,
        /// Also remove its keyed state and timers.
        #[arg(long)]
        purge: bool,
    },
    /// Show keyed state: one agent's (`switchboard state counter agent:counter/alice`, or
    /// just `alice`), or with no agent the handler's own keys and its agents with state.
    State {
        #[command(flatten)]
        connection: Connection,
        /// The handler's name.
        handler: String,
        /// The agent: its id, or its address.
        agent: Option<String>,
    },
    /// Send a message without waiting for its reply; prints the message's id.
    Send {
        #[command(flatten)]
        connection: Connection,
        #[command(flatten)]
        message: MessageArgs,
    },
    /// Send a message and wait for its reply; prints the reply's payload.
    Request {
        #[command(flatten)]
        connection: Connection,
        #[command(flatten)]
        message: MessageArgs,
        /// How long to wait for the reply (500ms, 5s, 1m).
        #[arg(long, default_value = DEFAULT_REQUEST_WAIT, value_parser = duration_arg)]
        timeout: Duration,
    },
    /// Emit an event, or a data change, to its subscribers; prints the signal's id.
    Emit {
        #[command(flatten)]
        connection: Connection,
        /// The event type (with --data-change, the object type).
        #[arg(value_name = "TYPE")]
        event_type: String,
        /// The payload (with --data-change, the object) as JSON text.
        #[arg(default_value = "{}", value_parser = parse_payload)]
        payload: Json,
        /// Emit a data change of this kind instead of an event.
        #[arg(long, value_name = "CHANGE")]
        data_change: Option<DataChange>,
    },
    /// List, inspect, replay or purge the signals a mailbox or client refused.
    #[command(subcommand)]
    DeadLetters(DeadLetterCommand),
    /// Show the cluster the host joins: its connection, the cluster's streams, and every
    /// subscribing handler and queued service with its backlog.
    Cluster {
        #[command(flatten)]
        connection: Connection,
    },
}

/// What to do with dead letters.
#[derive(Subcommand, Clone, Debug)]
pub enum DeadLetterCommand {
    /// List dead letters, oldest first.
    List {
        #[command(flatten)]
        connection: Connection,
        /// Only those meant for this handler (or `user:<id>` client).
        #[arg(long)]
        handler: Option<String>,
        /// Only those with an id above this one (the next page).
        #[arg(long, value_name = "ID")]
        after: Option<u64>,
        /// At most this many (1 to 1000).
        #[arg(long, value_name = "N", default_value_t = 100)]
        limit: usize,
    },
    /// Show one dead letter with its signal.
    Show {
        #[command(flatten)]
        connection: Connection,
        /// The dead letter's id.
        id: u64,
    },
    /// Offer one dead letter again to the handler it was meant for (never re-broadcast);
    /// it leaves the store once that handler's mailbox takes it.
    Replay {
        #[command(flatten)]
        connection: Connection,
        /// The dead letter's id.
        id: u64,
    },
    /// Remove one dead letter.
    Delete {
        #[command(flatten)]
        connection: Connection,
        /// The dead letter's id.
        id: u64,
    },
    /// Remove every dead letter, or those meant for one handler.
    Purge {
        #[command(flatten)]
        connection: Connection,
        /// Only those meant for this handler.
        #[arg(long)]
        handler: Option<String>,
    },
}

impl DeadLetterCommand {
    /// The connection flags the command was given.
    pub fn connection(&self) -> &Connection {
        match self {
            Self::List { connection, .. }
            | Self::Show { connection, .. }
            | Self::Replay { connection, .. }
            | Self::Delete { connection, .. }
            | Self::Purge { connection, .. } => connection,
        }
    }
}

/// Deploy-time choices; each is sent only when given, so the host's defaults apply otherwise.
#[derive(Args, Clone, Debug, Default, PartialEq, Eq)]
pub struct DeploySettings {
    /// Whether the handler is a service (at its name) or an agent (at `agent:<id>`).
    #[arg(long)]
    pub kind: Option<HandlerKind>,
    /// Memory an instance may grow to, in MiB.
    #[arg(long, value_name = "N")]
    pub memory_mb: Option<u64>,
    /// CPU time per signal, in milliseconds.
    #[arg(long, value_name = "N")]
    pub cpu_ms: Option<u64>,
    /// Wall-clock time per signal, in milliseconds; past it the call is abandoned (504).
    #[arg(long, value_name = "N")]
    pub deadline_ms: Option<u64>,
    /// Signals handled at once.
    #[arg(long, value_name = "N")]
    pub concurrency: Option<u32>,
    /// Signals that may wait in the mailbox.
    #[arg(long, value_name = "N")]
    pub mailbox: Option<u32>,
}

/// A message as `send` and `request` take it.
#[derive(Args, Clone, Debug)]
pub struct MessageArgs {
    /// The address the message goes to (a handler's name, `agent:<id>`, `user:<id>`).
    pub to: String,
    /// The message type.
    #[arg(value_name = "TYPE")]
    pub message_type: String,
    /// The payload as JSON text.
    #[arg(default_value = "{}", value_parser = parse_payload)]
    pub payload: Json,
}

/// How a handler is addressed.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandlerKind {
    Service,
    Agent,
}

/// What happened to the object of a data change.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataChange {
    Created,
    Updated,
    Deleted,
}

impl OperatorCommand {
    /// The connection flags the command was given.
    pub fn connection(&self) -> &Connection {
        match self {
            Self::Deploy { connection, .. }
            | Self::List { connection }
            | Self::Show { connection, .. }
            | Self::Rollback { connection, .. }
            | Self::Delete { connection, .. }
            | Self::State { connection, .. }
            | Self::Send { connection, .. }
            | Self::Request { connection, .. }
            | Self::Emit { connection, .. }
            | Self::Cluster { connection } => connection,
            Self::DeadLetters(command) => command.connection(),
        }
    }
}

/// Runs one operator command against the admin API, writing its result to `out` and a
/// refusal (an API error, or an ErrorReply to `request`) to `err`.
///
/// A refusal is an answer, not a failure of the command: it returns `ExitCode::FAILURE`.
/// Failing to reach the API or to read the component is an `Err`.
pub async fn run(
    command: OperatorCommand,
    out: &mut impl Write,
    err: &mut impl Write,
) -> anyhow::Result<ExitCode> {
    let client = Client::new(command.connection())?;
    let outcome = match client.send(&command.api_request()).await {
        Ok(body) => output::answer(&command, &body, out)?,
        Err(ClientError::Refused(refusal)) => Err(output::Refusal::Api(refusal)),
        Err(other) => return Err(other.into()),
    };
    out.flush()?;
    match outcome {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(refusal) => {
            output::refusal(&refusal, err)?;
            err.flush()?;
            Ok(ExitCode::FAILURE)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// The binary's shape: operator commands flattened next to others.
    #[derive(Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        command: OperatorCommand,
    }

    fn parse(args: &[&str]) -> Result<OperatorCommand, clap::Error> {
        Cli::try_parse_from(std::iter::once("switchboard").chain(args.iter().copied()))
            .map(|cli| cli.command)
    }

    /// Connection flags are accepted on every command, after its positional arguments.
    #[test]
    fn connection_flags_follow_any_command() {
        let command = parse(&["list", "--url", "http://h:1", "--token", "T", "--json"]).unwrap();
        let connection = command.connection();
        assert_eq!(connection.url.as_str(), "http://h:1/");
        assert_eq!(connection.token.as_deref(), Some("T"));
        assert!(connection.json);

        let command = parse(&["show", "echo", "--token", "T"]).unwrap();
        assert!(!command.connection().json);
        assert!(matches!(command, OperatorCommand::Show { name, .. } if name == "echo"));
    }

    /// Deploy takes its name, file and only the settings given.
    #[test]
    fn deploy_parses_settings() {
        let command = parse(&[
            "deploy",
            "echo",
            "echo.wasm",
            "--kind",
            "agent",
            "--memory-mb",
            "64",
            "--mailbox",
            "10",
        ])
        .unwrap();
        let OperatorCommand::Deploy {
            name,
            file,
            settings,
            ..
        } = command
        else {
            panic!("not a deploy: {command:?}")
        };
        assert_eq!((name.as_str(), file), ("echo", PathBuf::from("echo.wasm")));
        assert_eq!(
            settings,
            DeploySettings {
                kind: Some(HandlerKind::Agent),
                memory_mb: Some(64),
                mailbox: Some(10),
                ..DeploySettings::default()
            }
        );
        assert!(parse(&["deploy", "echo", "echo.wasm", "--kind", "robot"]).is_err());
    }

    /// A payload that is not JSON is refused while parsing, before any request is made.
    #[test]
    fn bad_payload_is_refused_locally() {
        let error = parse(&["send", "echo", "Ping", "{n:1}"]).unwrap_err();
        assert!(error.to_string().contains("not JSON"), "{error}");
        let command = parse(&["send", "echo", "Ping"]).unwrap();
        let OperatorCommand::Send { message, .. } = command else {
            panic!("not a send")
        };
        assert_eq!(message.payload.as_str(), "{}");
    }

    /// Request takes a wait written as a duration; emit takes a change kind.
    #[test]
    fn request_and_emit_options() {
        let command = parse(&[
            "request",
            "echo",
            "Ping",
            r#"{"n":1}"#,
            "--timeout",
            "500ms",
        ]);
        assert!(matches!(
            command.unwrap(),
            OperatorCommand::Request { timeout, .. } if timeout == Duration::from_millis(500)
        ));
        assert!(parse(&["request", "echo", "Ping", "--timeout", "5 parsecs"]).is_err());
        let command = parse(&["emit", "User", r#"{"id":"u1"}"#, "--data-change", "deleted"]);
        assert!(matches!(
            command.unwrap(),
            OperatorCommand::Emit {
                data_change: Some(DataChange::Deleted),
                ..
            }
        ));
    }

    /// Dead-letter subcommands take their connection flags after their own arguments.
    #[test]
    fn dead_letter_commands_parse() {
        let command = parse(&["dead-letters", "list", "--handler", "audit", "--json"]).unwrap();
        assert!(command.connection().json);
        assert!(matches!(
            command,
            OperatorCommand::DeadLetters(DeadLetterCommand::List { handler: Some(h), limit: 100, .. }) if h == "audit"
        ));
        let command = parse(&["dead-letters", "replay", "7", "--token", "T"]).unwrap();
        assert!(matches!(
            command,
            OperatorCommand::DeadLetters(DeadLetterCommand::Replay { id: 7, .. })
        ));
        assert!(parse(&["dead-letters", "replay", "seven"]).is_err());
    }
}
