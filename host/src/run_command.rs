//! The `switchboard run` command: a host on the embedded in-process transport, loaded with a
//! directory of handler components and driven by JSON signals, one per line.
//!
//! Each input line is a signal in the wire format; the host stamps the envelope, so a line
//! carrying `id`, `from` or `timestamp` is refused.
//! A message is sent and its Reply or ErrorReply written out; an event or data change is
//! emitted and written out as sent. Signals arriving for connected clients (`user:<id>`)
//! are written out too. A bad line gets an `{"error": ...}` line and changes nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Mutex;

use crate::clock::Clock;
use crate::config::duration_arg;
use crate::signal::{Body, Envelope, HOST_ADDRESS, Signal};
use crate::wire::WireSignal;
use crate::{Deployed, Host, HostConfig};

/// Flags of `switchboard run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Directory of handler components (*.wasm); each is deployed under its file name.
    #[arg(
        long,
        env = "SWITCHBOARD_HANDLERS",
        default_value = "target/wasm32-wasip2/release"
    )]
    pub handlers: PathBuf,
    /// Connect a client at this address (e.g. user:u1) and print what it receives.
    #[arg(long = "client", value_name = "ADDRESS")]
    pub clients: Vec<String>,
    /// How long to wait for each reply.
    #[arg(long, default_value = "10s", value_parser = duration_arg)]
    pub timeout: Duration,
    /// How long to keep running after input ends, for broadcasts still in flight.
    #[arg(long, default_value = "200ms", value_parser = duration_arg)]
    pub linger: Duration,
}

/// Runs a host with the handlers in `args.handlers`, driven by stdin, answering on stdout.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let host = Host::new(HostConfig::default()).context("starting the host")?;
    let deployed = deploy_dir(&host, &args.handlers).await?;
    let names: Vec<_> = deployed.iter().map(|d| d.name.as_str()).collect();
    tracing::info!(handlers = ?names, "ready: reading signals from stdin");
    let out = Arc::new(Mutex::new(tokio::io::stdout()));
    watch_clients(&host, &args.clients, out.clone());
    let input = tokio::io::BufReader::new(tokio::io::stdin());
    drive(&host, input, out, args.timeout).await?;
    tokio::time::sleep(args.linger).await;
    Ok(())
}

/// The `*.wasm` files in `dir`, sorted, each with the handler name it deploys as
/// (`my_handler.wasm` serves as `my-handler`).
pub async fn wasm_files(dir: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut entries = tokio::fs::read_dir(dir)
        .await
        .with_context(|| format!("reading handler directory {}", dir.display()))?;
    let mut files = Vec::new();
    while let Some(entry) = entries.next_entry().await? {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "wasm") {
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default();
            files.push((stem.replace('_', "-"), path));
        }
    }
    if files.is_empty() {
        bail!("no .wasm handlers in {}: build them first", dir.display());
    }
    files.sort();
    Ok(files)
}

/// Deploys every `*.wasm` file in `dir` to `host`.
pub async fn deploy_dir(host: &Host, dir: &Path) -> anyhow::Result<Vec<Deployed>> {
    let mut deployed = Vec::new();
    for (name, path) in wasm_files(dir).await? {
        let bytes = tokio::fs::read(&path)
            .await
            .with_context(|| format!("reading {}", path.display()))?;
        let done = host
            .deploy(&name, bytes, None)
            .await
            .with_context(|| format!("deploying {}", path.display()))?;
        deployed.push(done);
    }
    Ok(deployed)
}

/// Shared output: whole lines, never interleaved.
type Output<W> = Arc<Mutex<W>>;

async fn write_line<W: AsyncWrite + Unpin>(out: &Output<W>, value: &impl serde::Serialize) {
    let mut line =
        serde_json::to_vec(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}").into_bytes());
    line.push(b'\n');
    let mut out = out.lock().await;
    if let Err(error) = out.write_all(&line).await.and(out.flush().await) {
        tracing::warn!(%error, "could not write output");
    }
}

/// Connects clients at `addresses` and copies what they receive to `out`.
pub fn watch_clients<W>(host: &Host, addresses: &[String], out: Output<W>)
where
    W: AsyncWrite + Unpin + Send + 'static,
{
    for address in addresses {
        let mut rx = host.connect(address);
        let out = out.clone();
        tokio::spawn(async move {
            while let Some(signal) = rx.recv().await {
                write_line(&out, &signal).await;
            }
        });
    }
}

/// Reads signals line by line from `input` until it ends, answering each on `out`.
pub async fn drive<R, W>(
    host: &Host,
    input: R,
    out: Output<W>,
    timeout: Duration,
) -> anyhow::Result<()>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut lines = input.lines();
    while let Some(line) = lines.next_line().await.context("reading input")? {
        if line.trim().is_empty() {
            continue;
        }
        match parse(&line, host.router().clock()) {
            Ok(signal) if matches!(signal.body, Body::Message(_)) => {
                let answer = host.router().request(signal, timeout).await;
                match answer {
                    Ok(reply) => write_line(&out, &reply).await,
                    Err(failure) => {
                        write_line(&out, &serde_json::json!({ "error": failure })).await
                    }
                }
            }
            Ok(signal) => {
                write_line(&out, &signal).await;
                host.send(signal);
            }
            Err(error) => write_line(&out, &serde_json::json!({ "error": error })).await,
        }
    }
    Ok(())
}

/// A line of input as a signal from the host, or why it is not one.
fn parse(line: &str, clock: &Clock) -> Result<Signal, String> {
    let wire = WireSignal::from_json(line.as_bytes()).map_err(|e| format!("not a signal: {e}"))?;
    let headers = wire.headers.clone();
    let body = wire.into_client_body(None).map_err(|e| e.to_string())?;
    if matches!(body, Body::Reply { .. } | Body::ErrorReply { .. }) {
        return Err(
            "replies cannot be sent from here; send a message, event or data change".into(),
        );
    }
    Ok(Signal {
        envelope: Envelope::new(HOST_ADDRESS, headers, clock),
        body,
    })
}

#[cfg(test)]
mod tests {
    use crate::clock::Clock;

    fn parse(line: &str) -> Result<crate::signal::Signal, String> {
        super::parse(line, &Clock::system())
    }

    #[test]
    fn input_lines_are_checked() {
        assert!(parse(r#"{"to":"echo","messageType":"Ping","payload":{"n":1}}"#).is_ok());
        assert!(parse(r#"{"signalType":"EVENT","eventType":"X"}"#).is_ok());
        assert!(parse("{").unwrap_err().contains("not a signal"));
        assert!(
            parse(r#"{"to":"echo"}"#)
                .unwrap_err()
                .contains("messageType")
        );
        assert!(parse(r#"{"signalType":"REPLY","replyTo":"a","to":"b"}"#).is_err());
        assert!(
            parse(r#"{"to":"echo","messageType":"Ping","from":"me"}"#)
                .unwrap_err()
                .contains("`from`")
        );
    }
}
