//! Uploads cannot starve the host: a component that does not fit is refused before it is
//! compiled; compiles run in a bounded pool, stop when their client hangs up or their time
//! budget runs out; a slow deploy holds up nobody; compiled code is shared by module hash;
//! and the data directory keeps only what some version uses. Each attack ends with a
//! neighbour handler still answering.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use switchboard::registry::{DeployOptions, Registry, RegistryError};
use switchboard::runtime::LoadError;
use switchboard::serve::{RunOptions, run};
use switchboard::store::DataDir;
use switchboard::{Compiler, DeployError, Host, HostConfig, Limits};
use switchboard_tests::daemon::{Daemon, binary, data_dir, metric_at};
use switchboard_tests::guest;
use tokio::net::TcpListener;

/// Longest a test waits for a condition it polls.
const BOUND: Duration = Duration::from_secs(30);
const TOKEN: &str = "uploads-token";

/// A component that would compile fine but imports `wasi:http`, which no handler gets.
fn http_component() -> Vec<u8> {
    component_importing("wasi:http/outgoing-handler@0.2.0")
}

/// A component with the handler exports that imports `interface` (an instance exporting a
/// function `handle`).
fn component_importing(interface: &str) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(component
            (import "{interface}" (instance (export "handle" (func))))
            (core module $m (func (export "f")))
            (core instance $i (instantiate $m))
            (func $f (canon lift (core func $i "f")))
            (export "describe" (func $f))
            (export "handle-message" (func $f))
            (export "handle-event" (func $f))
            (export "handle-data-change" (func $f))
            (export "handle-reply" (func $f)))"#
    ))
    .unwrap()
}

/// Every file under `dir`, as paths relative to it.
fn files(dir: &Path) -> BTreeSet<PathBuf> {
    let mut found = BTreeSet::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(at) = stack.pop() {
        for entry in std::fs::read_dir(&at).unwrap().map(Result::unwrap) {
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            } else {
                found.insert(entry.path().strip_prefix(dir).unwrap().to_owned());
            }
        }
    }
    found
}

/// Polls `condition` every 10 ms until it holds; panics with `what` after [`BOUND`].
async fn until(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + BOUND;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn open_registry(tag: &str, config: HostConfig) -> (Arc<Registry>, PathBuf) {
    let dir = data_dir(&format!("uploads-{tag}"));
    let host = Host::new(config).unwrap();
    let registry = Registry::open(host, DataDir::open(&dir).unwrap()).unwrap();
    (Arc::new(registry), dir)
}

async fn echo_answers(host: &Host, to: &str) {
    let reply = switchboard_tests::call(host, to, "ping", json!({"n": 1})).await;
    assert_eq!(reply.unwrap(), json!({"n": 1}), "{to} answers");
}

/// The wasi:http component is refused with the import named before any compiling (the
/// compilations counter does not move), nothing is written, and a neighbour still answers;
/// so is a component built against contract 0.1, naming both versions.
#[tokio::test]
async fn a_wasi_http_component_is_refused_before_compiling() {
    let dir = data_dir("uploads-http");
    let daemon = Daemon::start(&dir);
    let (status, body) = daemon.deploy("echo", guest("echo")).await;
    assert_eq!(status, 201, "{body}");
    let compiled = daemon.metric("switchboard_compilations ").await.unwrap();
    let before = files(&dir);

    let (status, body) = daemon.deploy("fetcher", http_component()).await;
    assert_eq!(status, 400, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("`wasi:http/outgoing-handler@0.2.0`"),
        "{error}"
    );
    assert!(error.contains("sending signals"), "{error}");

    let old = component_importing("switchboard:signal/host@0.1.0");
    let (status, body) = daemon.deploy("old", old).await;
    assert_eq!(status, 400, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("built against switchboard:signal@0.1.0")
            && error.contains("this host speaks switchboard:signal@0.3.0")
            && error.contains("rebuild it with switchboard-sdk 0.3.0"),
        "{error}"
    );

    assert_eq!(
        daemon.metric("switchboard_compilations ").await.unwrap(),
        compiled,
        "a refused upload never reaches the compiler"
    );
    assert_eq!(files(&dir), before, "a refused upload writes nothing");
    let (status, reply) = daemon.call("echo", "ping", json!({"n": 1})).await;
    assert_eq!((status, &reply["payload"]), (200, &json!({"n": 1})));
}

/// A past-the-budget compile is stopped and the upload refused with 422; the in-progress
/// gauge returns to 0 and a neighbour restored from its artifact still answers.
#[tokio::test]
async fn the_time_budget_refuses_a_compile() {
    let dir = data_dir("uploads-budget");
    {
        let daemon = Daemon::start(&dir);
        assert_eq!(daemon.deploy("echo", guest("echo")).await.0, 201);
    }
    let daemon = Daemon::start_with(&dir, &["--compile-timeout", "1ms"]);
    let (status, body) = daemon.deploy("counter", guest("counter")).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("longer than"),
        "{body}"
    );
    until("no compile is in progress", async || {
        daemon.metric("switchboard_compilations_in_progress").await == Some(0.0)
    })
    .await;
    let (status, reply) = daemon.call("echo", "ping", json!({"n": 2})).await;
    assert_eq!((status, &reply["payload"]), (200, &json!({"n": 2})));
    assert!(
        !files(&dir)
            .iter()
            .any(|f| f.to_string_lossy().contains(".tmp")),
        "nothing half-written is left"
    );
}

/// A compiler that waits for `go` in `dir` before compiling: a gate the test opens.
fn gated_compiler(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let script = dir.join("gated-compiler.sh");
    let text = format!(
        "#!/bin/sh\necho $$ > '{pid}'\nwhile [ ! -e '{go}' ]; do sleep 0.02; done\nexec '{bin}' \"$@\"\n",
        pid = dir.join("pid").display(),
        go = dir.join("go").display(),
        bin = binary().display(),
    );
    std::fs::write(&script, text).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

/// Whether process `pid` has exited (gone, or a zombie nobody reaped yet).
fn exited(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .is_none_or(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
}

/// A client that hangs up while its upload compiles leaves no compile running: the child
/// compiler is killed and the in-progress gauge returns to 0; the next upload compiles and
/// answers.
#[tokio::test]
async fn a_client_that_hangs_up_stops_its_compile() {
    let dir = data_dir("uploads-hangup");
    let gate = dir.with_extension("gate");
    let _ = std::fs::remove_dir_all(&gate);
    let mut options = RunOptions::new(&dir, TOKEN);
    options.host_config = HostConfig {
        compiler: Compiler::Subprocess(gated_compiler(&gate)),
        ..HostConfig::default()
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(run(listener, options, async {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    until("the host answers", async || {
        metric_at(&client, &url, "switchboard_compilations_in_progress ").await == Some(0.0)
    })
    .await;

    let upload = {
        let request = client
            .put(format!("{url}/v1/handlers/echo"))
            .bearer_auth(TOKEN)
            .body(guest("echo"));
        tokio::spawn(request.send())
    };
    // The script's pid file exists before its number is written: wait for the number.
    let pid_of = || {
        std::fs::read_to_string(gate.join("pid"))
            .ok()
            .and_then(|text| text.trim().parse::<u32>().ok())
    };
    until("the compile is running", async || {
        pid_of().is_some()
            && metric_at(&client, &url, "switchboard_compilations_in_progress ").await == Some(1.0)
    })
    .await;
    let pid = pid_of().expect("the compiler's pid").to_string();
    upload.abort();
    let _ = upload.await;
    until("the compile stopped", async || {
        metric_at(&client, &url, "switchboard_compilations_in_progress ").await == Some(0.0)
    })
    .await;
    until("the compiler process is gone", async || exited(&pid)).await;

    std::fs::write(gate.join("go"), b"").unwrap();
    let deployed = client
        .put(format!("{url}/v1/handlers/echo"))
        .bearer_auth(TOKEN)
        .body(guest("echo"))
        .send()
        .await
        .unwrap();
    assert_eq!(deployed.status().as_u16(), 201);
    let reply: serde_json::Value = client
        .post(format!("{url}/v1/messages?wait=5s"))
        .bearer_auth(TOKEN)
        .json(&json!({"to": "echo", "messageType": "ping", "payload": {"n": 3}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reply["payload"], json!({"n": 3}));
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

/// While a deploy sits in a `describe` that never returns, listing answers at once, again
/// and again; the abandoned deploy leaves no file behind.
#[tokio::test]
async fn listing_answers_while_a_deploy_sits_in_describe() {
    let (registry, dir) = open_registry("describe", HostConfig::default());
    registry
        .deploy("echo", guest("echo"), DeployOptions::default())
        .await
        .unwrap();
    let before = files(&dir);
    let slow = guest("slow_describe");
    let hash = DataDir::hash(&slow);
    let deploy = {
        let registry = registry.clone();
        tokio::spawn(async move {
            registry
                .deploy("slow", slow, DeployOptions::default())
                .await
        })
    };
    let runtime = registry.host().runtime().clone();
    until("the slow module is compiled", async || {
        runtime.code_holders(&hash) > 0
    })
    .await;
    // Sampled over a second of its `describe` (which sleeps for an hour, up to the
    // host's describe timeout): each listing answers within 2 s.
    for _ in 0..10 {
        let listed = tokio::time::timeout(Duration::from_secs(2), registry.list())
            .await
            .expect("listing waits for nobody's deploy");
        assert_eq!(listed.len(), 1);
        assert!(!deploy.is_finished(), "the deploy is still in `describe`");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    deploy.abort();
    assert!(deploy.await.unwrap_err().is_cancelled());
    until("the abandoned upload's files are gone", async || {
        files(&dir) == before
    })
    .await;
    echo_answers(registry.host(), "echo").await;
}

/// One module deployed under ten names is compiled once and held as one shared copy; a
/// further deploy of it reads neither the compiler nor the artifact cache (the artifact on
/// disk is made garbage to prove it).
#[tokio::test]
async fn one_module_under_ten_names_compiles_once() {
    let (registry, dir) = open_registry("shared", HostConfig::default());
    let bytes = guest("echo");
    let hash = DataDir::hash(&bytes);
    for n in 0..10 {
        let name = format!("echo{n}");
        registry
            .deploy(&name, bytes.clone(), DeployOptions::default())
            .await
            .unwrap();
    }
    assert_eq!(registry.compilations(), 1);
    let runtime = registry.host().runtime().clone();
    assert_eq!(
        runtime.code_holders(&hash),
        10,
        "ten versions, one copy of the code"
    );
    let artifact = DataDir::open(&dir)
        .unwrap()
        .artifact_path(&hash, &runtime.engine_key());
    std::fs::write(&artifact, b"not an artifact").unwrap();
    registry
        .deploy("echo10", bytes.clone(), DeployOptions::default())
        .await
        .unwrap();
    assert_eq!(registry.compilations(), 1, "no compile");
    assert_eq!(
        std::fs::read(&artifact).unwrap(),
        b"not an artifact",
        "the artifact was not read (a bad one is dropped when read)"
    );
    for n in 0..=10 {
        echo_answers(registry.host(), &format!("echo{n}")).await;
    }
}

/// A refused upload (its `describe` panics, after compiling) leaves the data directory as
/// it was; deleting a handler takes its module and artifact along unless another handler
/// runs the same module; a rolled-back-to module stays.
#[tokio::test]
async fn files_live_exactly_as_long_as_a_version_uses_them() {
    let (registry, dir) = open_registry("tidy", HostConfig::default());
    registry
        .deploy("echo", guest("echo"), DeployOptions::default())
        .await
        .unwrap();
    let before = files(&dir);
    let error = registry
        .deploy("broken", guest("broken"), DeployOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            RegistryError::Deploy(DeployError::Load(LoadError::Describe(_)))
        ),
        "{error}"
    );
    assert_eq!(registry.compilations(), 2, "it was compiled, then refused");
    assert_eq!(files(&dir), before, "a refused upload leaves nothing");

    let data = DataDir::open(&dir).unwrap();
    let counter = DataDir::hash(&guest("counter"));
    let echo = DataDir::hash(&guest("echo"));
    registry
        .deploy("twin", guest("echo"), DeployOptions::default())
        .await
        .unwrap();
    registry
        .deploy("twin", guest("counter"), DeployOptions::default())
        .await
        .unwrap();
    registry.delete("echo").await.unwrap();
    assert!(
        data.modules().contains(&echo),
        "twin's version 1 still uses it"
    );
    registry.delete("twin").await.unwrap();
    assert!(data.modules().is_empty(), "{:?}", data.modules());
    assert!(data.artifacts().is_empty(), "{:?}", data.artifacts());
    assert!(!data.modules().contains(&counter));

    let (neighbour, _) = open_registry("tidy-neighbour", HostConfig::default());
    neighbour
        .deploy("echo", guest("echo"), DeployOptions::default())
        .await
        .unwrap();
    echo_answers(neighbour.host(), "echo").await;
}

/// At start-up, temp files a crash left mid-write and modules no version refers to are
/// removed; what the registry uses stays and restores.
#[tokio::test]
async fn opening_removes_what_a_crash_left_behind() {
    let (registry, dir) = open_registry("crash", HostConfig::default());
    registry
        .deploy("echo", guest("echo"), DeployOptions::default())
        .await
        .unwrap();
    let kept = files(&dir);
    drop(registry);
    for stray in [
        "x.tmp",
        "modules/.abc.wasm.1.2.tmp",
        "cache/.abc-e.cwasm.1.3.tmp",
        "modules/0000.wasm",
        "cache/0000-0123.cwasm",
    ] {
        std::fs::write(dir.join(stray), b"left over").unwrap();
    }
    let host = Host::new(HostConfig::default()).unwrap();
    let registry = Arc::new(Registry::open(host, DataDir::open(&dir).unwrap()).unwrap());
    assert_eq!(files(&dir), kept);
    assert!(registry.restore().await.is_empty());
    assert_eq!(registry.compilations(), 0, "restored from its artifact");
    echo_answers(registry.host(), "echo").await;
}

/// Limits pass through a deploy made without the registry lock (regression guard for the
/// renumbering at commit): two concurrent deploys of one handler get versions 1 and 2.
#[tokio::test]
async fn concurrent_deploys_of_one_handler_are_numbered_in_commit_order() {
    let (registry, _) = open_registry("numbering", HostConfig::default());
    let options = DeployOptions {
        limits: Some(Limits {
            concurrency: 2,
            ..Limits::default()
        }),
        ..DeployOptions::default()
    };
    let (a, b) = tokio::join!(
        registry.deploy("pair", guest("echo"), options.clone()),
        registry.deploy("pair", guest("counter"), options)
    );
    let mut numbers = vec![a.unwrap().handler.version, b.unwrap().handler.version];
    numbers.sort();
    assert_eq!(numbers, [1, 2]);
    let view = registry.view("pair").await.unwrap();
    assert_eq!(view.versions.len(), 2);
    assert_eq!(view.limits.concurrency, 2);
}

/// The check admits every real handler (Rust SDK builds import WASI and the signal host
/// interface, and `use` the signal types): what it trusts is what handlers need.
#[test]
fn every_example_guest_passes_the_check() {
    let dir = switchboard_tests::guests_dir();
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "wasm") {
            let bytes = std::fs::read(&path).unwrap();
            switchboard::runtime::check::check(&bytes)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            checked += 1;
        }
    }
    assert!(checked >= 10, "checked {checked} guests");
}

/// A handler deleted while its backlog drains still holds its compiled code, so deploying
/// the same module again reuses that code without compiling; the module file must be
/// written anyway, or the handler would be lost at the next restart.
#[tokio::test]
async fn a_redeploy_onto_code_still_draining_keeps_its_module_on_disk() {
    let (registry, dir) = open_registry("redeploy-draining", HostConfig::default());
    registry
        .deploy("s", guest("sleeper"), DeployOptions::default())
        .await
        .unwrap();
    // A backlog of about 1.5 s at concurrency 1: the deleted handler drains it afterwards.
    for _ in 0..5 {
        let host = registry.host().clone();
        tokio::spawn(async move {
            let _ = switchboard_tests::call(&host, "s", "Sleep", json!({"ms": 300})).await;
        });
    }
    until("the backlog is queued", async || {
        let handlers = registry.host().handlers();
        handlers.iter().any(|h| h.name == "s" && h.queued >= 4)
    })
    .await;
    let compiled = registry.compilations();
    registry.delete("s").await.unwrap();
    registry
        .deploy("s", guest("sleeper"), DeployOptions::default())
        .await
        .unwrap();
    assert_eq!(
        registry.compilations(),
        compiled,
        "the redeploy reused the code the draining version still holds"
    );
    let module = DataDir::hash(&guest("sleeper"));
    let data = DataDir::open(&dir).unwrap();
    assert!(data.modules().contains(&module), "the module is on disk");

    // A restart restores the handler from what is on disk.
    let host = Host::new(HostConfig::default()).unwrap();
    let reopened = Arc::new(Registry::open(host, DataDir::open(&dir).unwrap()).unwrap());
    let failed = reopened.restore().await;
    assert!(failed.is_empty(), "restored everything: {failed:?}");
    let reply = switchboard_tests::call(reopened.host(), "s", "Ping", json!({})).await;
    assert_eq!(reply.unwrap()["version"], json!("sleeper"));
}

/// A compile child dies with the process that started it, whatever it is doing: here it
/// waits for its component on a pipe its parent never finishes when the parent is killed
/// with SIGKILL, and it is gone at once instead of going on alone (a child outlived a
/// killed daemon by 5.5 s, compiling). So the compile limit holds even then.
#[tokio::test]
async fn a_compile_child_dies_with_its_daemon() {
    let dir = data_dir("uploads-orphan");
    std::fs::create_dir_all(&dir).unwrap();
    let pid_file = dir.join("child-pid");
    // A stand-in daemon: a shell whose compile child reads the shell's stdin, which the test
    // holds open and never writes to. Like a daemon, it names itself to the child, which
    // may only get to ask to die with its parent after the test has killed the shell.
    let script = format!(
        "exec 3<&0; {env}=$$ '{bin}' compile-artifact --max-instances 1 --memory-bytes 1048576 \
         --max-wasm-stack 1048576 --cpu-seconds 60 <&3 & echo $! > '{pid}'; wait",
        env = switchboard::runtime::compile::PARENT_ENV,
        bin = binary().display(),
        pid = pid_file.display(),
    );
    let mut parent = std::process::Command::new("sh")
        .args(["-c", &script])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("starting a shell");
    let _held_open = parent.stdin.take();
    until("the compile child started", async || {
        std::fs::read_to_string(&pid_file).is_ok_and(|p| p.ends_with('\n'))
    })
    .await;
    let pid = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .to_owned();
    assert!(!exited(&pid), "the child waits for its component");
    parent.kill().unwrap();
    parent.wait().unwrap();
    until("the compile child is gone with its parent", async || {
        exited(&pid)
    })
    .await;
}

/// A restart does not run any handler's `describe` again: what each said at deploy time is
/// kept with its version in the registry (12 handlers sleeping 9 s in `describe` kept
/// `/readyz` at 503 for 27 s). The restored handlers say the same and answer.
#[tokio::test]
async fn a_restart_keeps_each_description_instead_of_describing_again() {
    /// Each handler's name, kind and description, as listed.
    async fn descriptions(registry: &Registry) -> Vec<(String, &'static str, serde_json::Value)> {
        let handlers = registry.list().await.into_iter();
        handlers
            .map(|h| (h.name, h.kind, serde_json::to_value(h.description).unwrap()))
            .collect()
    }

    let (registry, dir) = open_registry("describe-once", HostConfig::default());
    for name in ["echo", "audit", "counter"] {
        registry
            .deploy(name, guest(name), DeployOptions::default())
            .await
            .unwrap();
    }
    assert_eq!(registry.host().runtime().describes(), 3);
    let described = descriptions(&registry).await;
    drop(registry);
    let host = Host::new(HostConfig::default()).unwrap();
    let registry = Arc::new(Registry::open(host, DataDir::open(&dir).unwrap()).unwrap());
    assert!(registry.restore().await.is_empty());
    assert_eq!(
        registry.host().runtime().describes(),
        0,
        "nothing described"
    );
    let restored = descriptions(&registry).await;
    assert_eq!(restored, described);
    echo_answers(registry.host(), "echo").await;
    let count = switchboard_tests::call(
        registry.host(),
        "agent:counter/a",
        "Increment",
        json!({"by": 2}),
    )
    .await
    .unwrap();
    assert_eq!(count["count"], 2, "{count}");
}
