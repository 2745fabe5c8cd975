//! The admin API against its own OpenAPI document: schemathesis generates requests from
//! `GET /openapi.json` (valid ones and invalid ones) and sends them to a real daemon with
//! `echo` and `counter` deployed. It fails on any status the document does not list for the
//! route, any answer that does not match its documented schema, any schema-valid request
//! refused with 400 or 422, any invalid one accepted, and any 5xx the route does not
//! document (a 503 while shutting down, a 504 for a `wait` that ran out are documented).
//!
//! Needs schemathesis in `<target>/python-venv`, which `tests/setup.sh` installs (pinned,
//! only when missing).

use std::process::Command;
use std::time::Instant;

use switchboard_tests::daemon::{Daemon, TOKEN, data_dir};
use switchboard_tests::{guest, target_dir};

/// The seed of every run, so a failure reproduces.
const SEED: &str = "15";
/// Test cases per operation and phase: enough to reach every status, in about 20 s.
const EXAMPLES: &str = "100";
const CHECKS: &str = "not_a_server_error,status_code_conformance,response_schema_conformance,\
                      negative_data_rejection,positive_data_acceptance";

/// The schemathesis configuration: per operation, the 5xx statuses it documents are not
/// server errors (`not_a_server_error` would flag every 5xx otherwise).
fn config(document: &serde_json::Value) -> String {
    let mut config = String::new();
    for item in document["paths"].as_object().expect("paths").values() {
        for operation in item.as_object().expect("a path item").values() {
            let Some(id) = operation["operationId"].as_str() else {
                continue;
            };
            let mut expected = vec!["2XX".to_owned(), "3XX".to_owned(), "4XX".to_owned()];
            let responses = operation["responses"].as_object().expect("responses");
            expected.extend(
                responses
                    .keys()
                    .filter(|code| code.starts_with('5'))
                    .cloned(),
            );
            config.push_str(&format!(
                "[[operations]]\ninclude-operation-id = \"{id}\"\n\
                 checks.not_a_server_error.expected-statuses = {}\n\n",
                serde_json::to_string(&expected).unwrap()
            ));
        }
    }
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_conforms_to_its_openapi_document() {
    let schemathesis = target_dir().join("python-venv/bin/schemathesis");
    assert!(
        schemathesis.exists(),
        "{} is missing: run tests/setup.sh first",
        schemathesis.display()
    );
    let dir = data_dir("openapi-conformance");
    let daemon = Daemon::start(&dir);
    for name in ["echo", "counter"] {
        let (status, body) = daemon.deploy(name, guest(name)).await;
        assert_eq!(status, 201, "deploying {name}: {body}");
    }
    let (status, document) = daemon.get("/openapi.json").await;
    assert_eq!(status, 200);
    std::fs::create_dir_all(&dir).unwrap();
    let config_file = dir.join("schemathesis.toml");
    std::fs::write(&config_file, config(&document)).unwrap();

    let started = Instant::now();
    let output = Command::new(&schemathesis)
        .arg("--config-file")
        .arg(&config_file)
        .args(["run", &format!("{}/openapi.json", daemon.url)])
        .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
        .args([
            "--seed",
            SEED,
            "--max-examples",
            EXAMPLES,
            "--checks",
            CHECKS,
        ])
        // An upload's body is bytes the document can only call bytes, so a schema-valid
        // upload is still not a component (400): the deploy route is left to the tests of
        // uploads (host/tests/uploads.rs).
        .args(["--exclude-operation-id", "deployHandler"])
        .args(["--generation-database", "none", "--no-color"])
        .args(["--request-timeout", "30", "--workers", "2"])
        .current_dir(&dir)
        // tests/schemathesis/hooks.py: a work-around for a CPython 3.11 bug in Hypothesis'
        // reports, nothing that changes what is generated or checked.
        .env(
            "PYTHONPATH",
            switchboard_tests::root().join("tests/schemathesis"),
        )
        .env("SCHEMATHESIS_HOOKS", "hooks")
        .output()
        .expect("running schemathesis");
    let report = String::from_utf8_lossy(&output.stdout);
    eprintln!(
        "schemathesis ran for {:.1}s:\n{report}{}",
        started.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "schemathesis found the API and its document disagree ({}); the report is above",
        output.status
    );
    drop(daemon);
    let _ = std::fs::remove_dir_all(&dir);
}
