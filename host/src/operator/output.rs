//! Writes the admin API's answers for a person: a line for a deploy or an id, an aligned
//! table for `list`, `key: value` lines for `show`, a reply's payload; or with `--json`
//! the answer itself, indented, keys in the API's order.

use std::io::Write;

use anyhow::Context;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::OperatorCommand;
use super::client::ApiError;
use crate::signal::{Body, Failure};
use crate::wire::WireSignal;

/// How much of a module's sha256 a summary shows.
const SHORT_HASH: usize = 12;
const MIB: u64 = 1 << 20;

/// An answer that says no: the command ran, but exits non-zero.
#[derive(Debug)]
pub(super) enum Refusal {
    /// The API refused the call.
    Api(ApiError),
    /// The handler answered a `request` with an ErrorReply.
    Reply(Failure),
}

/// `PUT /v1/handlers/{name}`'s answer.
#[derive(Deserialize)]
struct Deployed {
    name: String,
    version: u64,
    module: String,
    swapped: bool,
}

/// `GET /v1/handlers`'s answer.
#[derive(Deserialize)]
struct Handlers {
    handlers: Vec<View>,
}

/// One handler as the API shows it.
#[derive(Deserialize)]
struct View {
    name: String,
    address: String,
    kind: String,
    version: u64,
    #[serde(default)]
    versions: Vec<Version>,
    #[serde(default)]
    description: Description,
    limits: Limits,
    #[serde(default)]
    counters: Counters,
}

#[derive(Deserialize)]
struct Version {
    version: u64,
    module: String,
    deployed_at: u64,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct Description {
    /// `any`, `none` or `only`; absent from hosts before contract 0.2 (where empty meant any).
    accepts: Option<String>,
    message_types: Vec<serde_json::Value>,
    /// Absent from hosts before contract 0.3 (where clients could send anything).
    clients: Option<String>,
    client_message_types: Vec<serde_json::Value>,
    events: Vec<serde_json::Value>,
    data_changes: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct Limits {
    memory_bytes: u64,
    cpu_ms: u64,
    /// Absent from hosts older than the per-signal deadline.
    #[serde(default)]
    deadline_ms: Option<u64>,
    concurrency: u32,
    mailbox: u32,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct Counters {
    handled: u64,
    failed: u64,
    traps: u64,
    queued: u64,
}

/// `POST /v1/messages` and `POST /v1/events` without a wait.
#[derive(Deserialize)]
struct Accepted {
    id: String,
}

/// Writes a successful answer to `command`; a `request` answered by an ErrorReply is a
/// [`Refusal`] (with `--json` the reply is written too).
pub(super) fn answer(
    command: &OperatorCommand,
    body: &str,
    out: &mut impl Write,
) -> anyhow::Result<Result<(), Refusal>> {
    let json = command.connection().json;
    if json && !body.trim().is_empty() {
        writeln!(out, "{}", pretty(body)?)?;
    }
    match command {
        OperatorCommand::Request { .. } => {
            let reply: WireSignal = parse(body)?;
            match reply
                .into_body()
                .context("the admin API answered with a bad signal")?
            {
                Body::Reply { payload, .. } if !json => {
                    writeln!(out, "{}", pretty(payload.as_str())?)?
                }
                Body::Reply { .. } => {}
                Body::ErrorReply { error, .. } => return Ok(Err(Refusal::Reply(error))),
                other => anyhow::bail!("the admin API answered with {other:?}, not a reply"),
            }
        }
        _ if json => {}
        OperatorCommand::Deploy { .. } => {
            let deployed: Deployed = parse(body)?;
            let how = if deployed.swapped { "swapped" } else { "new" };
            writeln!(
                out,
                "deployed {} v{} (sha256 {}, {how})",
                deployed.name,
                deployed.version,
                short(&deployed.module)
            )?;
        }
        OperatorCommand::List { .. } => list(&parse::<Handlers>(body)?.handlers, out)?,
        OperatorCommand::Show { .. } => show(&parse(body)?, out)?,
        OperatorCommand::Rollback { name, .. } => {
            let view: View = parse(body)?;
            writeln!(out, "{name} rolled back to v{}", view.version)?;
        }
        OperatorCommand::Delete { name, purge, .. } => {
            let state = if *purge { " and its state" } else { "" };
            writeln!(out, "deleted {name}{state}")?
        }
        OperatorCommand::State { .. } => super::state::answer(&parse(body)?, out)?,
        OperatorCommand::Cluster { .. } => cluster(&parse(body)?, out)?,
        OperatorCommand::Send { .. } | OperatorCommand::Emit { .. } => {
            writeln!(out, "{}", parse::<Accepted>(body)?.id)?
        }
        OperatorCommand::DeadLetters(command) => {
            let body = if body.trim().is_empty() {
                serde_json::Value::Null
            } else {
                parse(body)?
            };
            super::dead_letters::answer(command, &body, out)?
        }
    }
    Ok(Ok(()))
}

/// Writes the cluster as the host sees it: one line for the host and its connection, one per
/// stream, and a table of feeds with their backlogs.
fn cluster(view: &crate::transport::ClusterView, out: &mut impl Write) -> std::io::Result<()> {
    if !view.clustered {
        return writeln!(out, "not in a cluster: every signal stays in this host");
    }
    let or_none = |s: &Option<String>| s.clone().unwrap_or_default();
    writeln!(
        out,
        "host {} of cluster {}: {}",
        or_none(&view.host_id),
        or_none(&view.cluster),
        or_none(&view.connection)
    )?;
    for stream in &view.streams {
        writeln!(
            out,
            "stream {}: {} of {} signals, {} of {} bytes",
            stream.name, stream.messages, stream.max_messages, stream.bytes, stream.max_bytes
        )?;
    }
    writeln!(
        out,
        "{:<10} {:<24} {:>8} {:>8} {:>11}  TAKES",
        "FEED", "HANDLER", "PENDING", "UNACKED", "REDELIVERED"
    )?;
    let feeds = (view.subscribers.iter().map(|f| ("events", f)))
        .chain(view.services.iter().map(|f| ("queue", f)));
    for (kind, feed) in feeds {
        let takes: Vec<&str> = (feed.events.iter().chain(&feed.changes))
            .map(String::as_str)
            .collect();
        writeln!(
            out,
            "{kind:<10} {:<24} {:>8} {:>8} {:>11}  {}",
            feed.handler,
            feed.pending,
            feed.unacknowledged,
            feed.redelivered,
            takes.join(",")
        )?;
    }
    Ok(())
}

/// Writes a refusal for a person: what went wrong and, if known, how to fix it.
pub(super) fn refusal(refusal: &Refusal, err: &mut impl Write) -> std::io::Result<()> {
    let (headline, help) = match refusal {
        Refusal::Api(error) => {
            let help = error.help.clone().or_else(|| {
                (error.status == reqwest::StatusCode::UNAUTHORIZED)
                    .then(|| "pass --token or set SWITCHBOARD_ADMIN_TOKEN".to_owned())
            });
            (format!("error: {error}"), help)
        }
        Refusal::Reply(failure) => (
            format!("error {}: {}", failure.code, failure.description),
            failure.help.clone(),
        ),
    };
    writeln!(err, "{headline}")?;
    if let Some(help) = help {
        writeln!(err, "help: {help}")?;
    }
    Ok(())
}

fn parse<T: DeserializeOwned>(body: &str) -> anyhow::Result<T> {
    serde_json::from_str(body)
        .with_context(|| format!("the admin API answered in an unexpected shape: {body}"))
}

/// The handler table: one row per handler, columns aligned, the last one unpadded.
fn list(handlers: &[View], out: &mut impl Write) -> std::io::Result<()> {
    if handlers.is_empty() {
        return writeln!(out, "no handlers deployed");
    }
    let header = [
        "NAME", "KIND", "ADDRESS", "VERSION", "MODULE", "HANDLED", "FAILED", "TRAPS", "QUEUED",
    ];
    let mut rows = vec![header.map(str::to_owned).to_vec()];
    for view in handlers {
        let c = &view.counters;
        rows.push(vec![
            view.name.clone(),
            view.kind.clone(),
            view.address.clone(),
            format!("v{}", view.version),
            view.current_module().map(short).unwrap_or_default(),
            c.handled.to_string(),
            c.failed.to_string(),
            c.traps.to_string(),
            c.queued.to_string(),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|row| row[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in &rows {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(&widths) {
            line.push_str(&format!("{cell:<width$}  "));
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

/// One handler as `key: value` lines, then its versions oldest first.
fn show(view: &View, out: &mut impl Write) -> std::io::Result<()> {
    let d = &view.description;
    let l = &view.limits;
    let c = &view.counters;
    let memory = match l.memory_bytes % MIB {
        0 => format!("{} MiB", l.memory_bytes / MIB),
        _ => format!("{} bytes", l.memory_bytes),
    };
    let fields = [
        ("name", view.name.clone()),
        ("address", view.address.clone()),
        ("kind", view.kind.clone()),
        ("version", format!("v{}", view.version)),
        (
            "message types",
            match d.accepts.as_deref() {
                Some("none") => "none".to_owned(),
                Some("any") => "any".to_owned(),
                _ => names(&d.message_types),
            },
        ),
        (
            "from clients",
            match d.clients.as_deref() {
                Some("none") | None => "none".to_owned(),
                Some("any") => "any".to_owned(),
                _ => names(&d.client_message_types),
            },
        ),
        ("events", names(&d.events)),
        ("data changes", names(&d.data_changes)),
        ("memory", memory),
        ("cpu time", format!("{} ms per signal", l.cpu_ms)),
        (
            "deadline",
            l.deadline_ms
                .map_or_else(|| "-".to_owned(), |ms| format!("{ms} ms per signal")),
        ),
        ("concurrency", l.concurrency.to_string()),
        ("mailbox", l.mailbox.to_string()),
        ("handled", c.handled.to_string()),
        ("failed", c.failed.to_string()),
        ("traps", c.traps.to_string()),
        ("queued", c.queued.to_string()),
    ];
    let width = fields
        .iter()
        .map(|(key, _)| key.len() + 1)
        .max()
        .unwrap_or(0);
    for (key, value) in fields {
        writeln!(out, "{:<width$} {value}", format!("{key}:"))?;
    }
    writeln!(out, "versions:")?;
    for version in &view.versions {
        let current = if version.version == view.version {
            "  (current)"
        } else {
            ""
        };
        writeln!(
            out,
            "  v{}  sha256 {}  deployed {}{current}",
            version.version,
            short(&version.module),
            utc(version.deployed_at)
        )?;
    }
    Ok(())
}

impl View {
    fn current_module(&self) -> Option<&str> {
        let current = self.versions.iter().find(|v| v.version == self.version)?;
        Some(&current.module)
    }
}

/// A list of names, or `-` for none; entries that are not strings are shown as JSON.
fn names(values: &[serde_json::Value]) -> String {
    if values.is_empty() {
        return "-".to_owned();
    }
    let names: Vec<String> = values
        .iter()
        .map(|value| match value {
            serde_json::Value::String(name) => name.clone(),
            other => other.to_string(),
        })
        .collect();
    names.join(", ")
}

/// The start of a hash, enough to tell versions apart.
fn short(hash: &str) -> String {
    match hash.get(..SHORT_HASH) {
        Some(start) if start.len() < hash.len() => format!("{start}…"),
        _ => hash.to_owned(),
    }
}

/// Milliseconds since the epoch as a UTC date and time to the second; the raw number if
/// it is past the years a calendar can show.
fn utc(ms: u64) -> String {
    match i64::try_from(ms).map(jiff::Timestamp::from_millisecond) {
        Ok(Ok(at)) => at.strftime("%Y-%m-%d %H:%M:%S UTC").to_string(),
        _ => format!("{ms} ms after the epoch"),
    }
}

/// JSON text indented two spaces a level, keys in the order written. `text` must be JSON.
fn pretty(text: &str) -> anyhow::Result<String> {
    let value: serde_json::Value = serde_json::from_str(text)
        .with_context(|| format!("the admin API answered with something not JSON: {text}"))?;
    Ok(serde_json::to_string_pretty(&value)?)
}

#[cfg(test)]
mod tests {
    use reqwest::Url;

    use super::*;
    use crate::operator::{Connection, MessageArgs};
    use crate::signal::Json;

    const VIEW: &str = r#"{"name":"echo","address":"echo","kind":"service","version":2,
        "versions":[{"version":1,"module":"ab12cd34ef56ab12cd34","deployed_at":1718000000000},
                    {"version":2,"module":"99887766554433221100","deployed_at":1718000060000}],
        "description":{"message_types":["Ping","Pong"],"clients":"only","client_message_types":["Ping"],"events":[],"data_changes":["User"]},
        "limits":{"memory_bytes":134217728,"cpu_ms":2000,"deadline_ms":60000,"concurrency":1,"mailbox":1024},
        "counters":{"handled":10,"failed":1,"traps":0,"queued":3}}"#;

    fn connection(json: bool) -> Connection {
        Connection {
            url: Url::parse("http://h:7").unwrap(),
            token: None,
            json,
        }
    }

    fn written(command: &OperatorCommand, body: &str) -> (String, Result<(), Refusal>) {
        let mut out = Vec::new();
        let outcome = answer(command, body, &mut out).unwrap();
        (String::from_utf8(out).unwrap(), outcome)
    }

    fn request(json: bool) -> OperatorCommand {
        OperatorCommand::Request {
            connection: connection(json),
            message: MessageArgs {
                to: "echo".into(),
                message_type: "Ping".into(),
                payload: Json::parse("{}").unwrap(),
            },
            timeout: std::time::Duration::from_secs(1),
        }
    }

    /// `list` is a table whose columns line up, with the current module's short hash.
    #[test]
    fn list_is_an_aligned_table() {
        let other = VIEW.replace(
            r#""name":"echo","address":"echo""#,
            r#""name":"registration","address":"registration""#,
        );
        let body = format!(r#"{{"handlers":[{VIEW},{other}]}}"#);
        let (text, _) = written(
            &OperatorCommand::List {
                connection: connection(false),
            },
            &body,
        );
        let expected = "\
NAME          KIND     ADDRESS       VERSION  MODULE         HANDLED  FAILED  TRAPS  QUEUED
echo          service  echo          v2       998877665544…  10       1       0      3
registration  service  registration  v2       998877665544…  10       1       0      3
";
        assert_eq!(text, expected);
        let (text, _) = written(
            &OperatorCommand::List {
                connection: connection(false),
            },
            r#"{"handlers":[]}"#,
        );
        assert_eq!(text, "no handlers deployed\n");
    }

    /// `show` is aligned `key: value` lines, then the versions with the current one marked.
    #[test]
    fn show_is_key_value_lines() {
        let command = OperatorCommand::Show {
            connection: connection(false),
            name: "echo".into(),
        };
        let (text, _) = written(&command, VIEW);
        let expected = "\
name:          echo
address:       echo
kind:          service
version:       v2
message types: Ping, Pong
from clients:  Ping
events:        -
data changes:  User
memory:        128 MiB
cpu time:      2000 ms per signal
deadline:      60000 ms per signal
concurrency:   1
mailbox:       1024
handled:       10
failed:        1
traps:         0
queued:        3
versions:
  v1  sha256 ab12cd34ef56…  deployed 2024-06-10 06:13:20 UTC
  v2  sha256 998877665544…  deployed 2024-06-10 06:14:20 UTC  (current)
";
        assert_eq!(text, expected);
    }

    /// `--json` writes the answer indented with its keys in the API's order, and it reads
    /// back as the same JSON.
    #[test]
    fn json_is_the_answer_indented() {
        let command = OperatorCommand::List {
            connection: connection(true),
        };
        let body = r#"{"handlers":[],"z":{"b":"a,\"}b","a":[1,{}],"é":-2.5e-3}}"#;
        let (text, _) = written(&command, body);
        let expected = r#"{
  "handlers": [],
  "z": {
    "b": "a,\"}b",
    "a": [
      1,
      {}
    ],
    "é": -0.0025
  }
}
"#;
        assert_eq!(text, expected);
        let read_back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            read_back,
            serde_json::from_str::<serde_json::Value>(body).unwrap()
        );
        let mut out = Vec::new();
        assert!(answer(&command, "{\"handlers\":", &mut out).is_err());
    }

    /// A deploy is one line saying what is live now.
    #[test]
    fn deploy_summary() {
        let command = OperatorCommand::Deploy {
            connection: connection(false),
            name: "echo".into(),
            file: "echo.wasm".into(),
            settings: Default::default(),
        };
        let body = r#"{"name":"echo","version":3,"module":"ab12cd34ef56ab12cd34","swapped":true,
            "kind":"service","address":"echo","description":{},"limits":{}}"#;
        assert_eq!(
            written(&command, body).0,
            "deployed echo v3 (sha256 ab12cd34ef56…, swapped)\n"
        );
    }

    /// A Reply's payload is written; an ErrorReply is a refusal with its code and help.
    #[test]
    fn request_outcomes() {
        let reply = r#"{"id":"r","timestamp":1,"signalType":"REPLY","from":"echo","replyTo":"m","to":"admin","payload":{"n":1}}"#;
        let (text, outcome) = written(&request(false), reply);
        assert_eq!(text, "{\n  \"n\": 1\n}\n");
        assert!(outcome.is_ok());

        let error = r#"{"id":"r","timestamp":1,"signalType":"ERROR_REPLY","from":"host","replyTo":"m","to":"admin","code":404,"description":"no handler at `nobody`","help":"deploy one"}"#;
        let (text, outcome) = written(&request(false), error);
        assert_eq!(text, "");
        let Err(refused) = outcome else {
            panic!("not refused")
        };
        let mut err = Vec::new();
        refusal(&refused, &mut err).unwrap();
        assert_eq!(
            String::from_utf8(err).unwrap(),
            "error 404: no handler at `nobody`\nhelp: deploy one\n"
        );
        let (text, outcome) = written(&request(true), error);
        assert!(text.contains("\"code\": 404"), "{text}");
        assert!(outcome.is_err());
    }

    /// A 401 without help from the API still says how to give a token.
    #[test]
    fn unauthorized_suggests_the_token() {
        let refused = Refusal::Api(ApiError::from_answer(
            reqwest::StatusCode::UNAUTHORIZED,
            r#"{"code":401,"error":"missing bearer token"}"#,
        ));
        let mut err = Vec::new();
        refusal(&refused, &mut err).unwrap();
        assert_eq!(
            String::from_utf8(err).unwrap(),
            "error: 401 Unauthorized: missing bearer token\nhelp: pass --token or set SWITCHBOARD_ADMIN_TOKEN\n"
        );
    }

    /// Dates come out right across leap days and the epoch, to the second; a time past the
    /// calendar shows as the number the API sent.
    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_718_000_000_999), "2024-06-10 06:13:20 UTC");
        assert_eq!(utc(u64::MAX), format!("{} ms after the epoch", u64::MAX));
    }
}
