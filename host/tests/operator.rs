//! The operator CLI end to end: a real `switchboard serve` on port 0, driven by the
//! `switchboard` binary as an operator would, reading what it prints and how it exits.

use std::process::Output;

use serde_json::{Value, json};
use switchboard_tests::daemon::{Daemon, TOKEN, cli, data_dir};
use switchboard_tests::guests_dir;

/// Runs `switchboard ARGS --url URL --token TOKEN` against `daemon`.
fn run(daemon: &Daemon, args: &[&str]) -> Output {
    daemon.cli(args)
}

fn run_with_token(daemon: &Daemon, args: &[&str], token: &str) -> Output {
    cli(&[args, &["--url", &daemon.url, "--token", token]].concat())
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts the command succeeded and returns what it printed.
fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status,
        stdout(&output),
        stderr(&output)
    );
    stdout(&output)
}

/// Asserts the command failed and returns what it said on stderr.
fn refused(output: Output) -> String {
    assert!(
        !output.status.success(),
        "expected a failure, got stdout: {}",
        stdout(&output)
    );
    stderr(&output)
}

fn guest_file(name: &str) -> String {
    guests_dir()
        .join(format!("{name}.wasm"))
        .to_string_lossy()
        .into_owned()
}

/// A handler's whole life through the CLI: deploy, hot swap, list, request, rollback,
/// send, emit, delete; each command's output is what an operator would read.
#[test]
fn operator_drives_a_handler_through_its_life() {
    let daemon = Daemon::start(&data_dir("operator"));
    let (echo, inventory) = (guest_file("echo"), guest_file("inventory"));

    let deployed = ok(run(&daemon, &["deploy", "echo", &echo]));
    assert!(
        deployed.starts_with("deployed echo v1 (sha256 "),
        "{deployed}"
    );
    assert!(deployed.trim_end().ends_with(", new)"), "{deployed}");

    let swapped = ok(run(
        &daemon,
        &["deploy", "echo", &inventory, "--mailbox", "10"],
    ));
    assert!(swapped.starts_with("deployed echo v2 "), "{swapped}");
    assert!(swapped.trim_end().ends_with(", swapped)"), "{swapped}");

    let listed: Value = serde_json::from_str(&ok(run(&daemon, &["list", "--json"]))).unwrap();
    assert_eq!(listed["handlers"][0]["name"], "echo");
    assert_eq!(listed["handlers"][0]["version"], 2);
    assert_eq!(listed["handlers"][0]["limits"]["mailbox"], 10);
    let table = ok(run(&daemon, &["list"]));
    let mut rows = table.lines();
    assert!(rows.next().unwrap().starts_with("NAME"), "{table}");
    assert!(rows.next().unwrap().starts_with("echo "), "{table}");

    // Version 2 is the inventory handler: it does not take Ping.
    let error = refused(run(&daemon, &["request", "echo", "Ping", "{}"]));
    assert!(error.contains("404"), "{error}");

    let rolled = ok(run(&daemon, &["rollback", "echo"]));
    assert_eq!(rolled.trim_end(), "echo rolled back to v1");
    let reply = ok(run(
        &daemon,
        &["request", "echo", "Ping", r#"{"n":1}"#, "--timeout", "5s"],
    ));
    assert_eq!(
        serde_json::from_str::<Value>(&reply).unwrap(),
        json!({"n": 1})
    );
    let shown = ok(run(&daemon, &["show", "echo"]));
    assert!(shown.lines().any(|l| l == "version:       v1"), "{shown}");
    assert!(shown.contains("(current)"), "{shown}");

    let id = ok(run(&daemon, &["send", "echo", "Ping"]));
    assert!(!id.trim().is_empty() && !id.contains(' '), "{id}");
    ok(run(
        &daemon,
        &["emit", "UserRegistered", r#"{"user_id":"u1"}"#],
    ));
    let id = ok(run(
        &daemon,
        &["emit", "User", r#"{"id":"u1"}"#, "--data-change", "created"],
    ));
    assert!(!id.trim().is_empty(), "{id}");

    assert_eq!(
        ok(run(&daemon, &["delete", "echo"])).trim_end(),
        "deleted echo"
    );
    let error = refused(run(&daemon, &["show", "echo"]));
    assert!(error.contains("404"), "{error}");
    let error = refused(run(&daemon, &["rollback", "nobody"]));
    assert!(error.starts_with("error: 404"), "{error}");
}

/// Refusals and failures exit non-zero and say what to do: a wrong token, a payload that is
/// not JSON (refused before any request), a URL where nothing listens.
#[test]
fn failures_exit_non_zero_with_a_reason() {
    let daemon = Daemon::start(&data_dir("operator-errors"));

    let error = refused(run_with_token(&daemon, &["list"], "wrong"));
    assert!(
        error.contains("401") || error.to_lowercase().contains("unauthorized"),
        "{error}"
    );
    assert!(error.contains("--token"), "{error}");

    let error = refused(run(&daemon, &["send", "echo", "Ping", "{n:1}"]));
    assert!(error.contains("not JSON"), "{error}");

    let error = refused(run(&daemon, &["deploy", "echo", "/nonexistent/echo.wasm"]));
    assert!(error.contains("/nonexistent/echo.wasm"), "{error}");

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let error = refused(cli(&["list", "--url", &url, "--token", TOKEN]));
    assert!(error.contains(&url), "{error}");
}
