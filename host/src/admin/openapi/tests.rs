use std::collections::BTreeSet;

use serde_json::Value;

use super::serve;
use crate::admin::{Route, open_routes, v1_routes};

/// The document as JSON, the form clients read.
fn document() -> Value {
    super::document()
}

/// Every route `app()` serves, as (method, path): `app()` registers routes only from these
/// tables, so this cannot fall behind the router the way a list kept here could.
fn served() -> BTreeSet<(String, String)> {
    let key = |r: Route| (r.method.as_str().to_lowercase(), r.path.to_owned());
    v1_routes()
        .into_iter()
        .chain(open_routes())
        .map(key)
        .collect()
}

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "patch", "head", "options", "trace",
];

/// The (method, path) of every operation in the document.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let paths = doc["paths"].as_object().expect("the document has paths");
    paths
        .iter()
        .flat_map(|(path, item)| {
            let item = item.as_object().expect("a path item is an object");
            item.keys()
                .filter(|k| METHODS.contains(&k.as_str()))
                .map(|method| (method.clone(), path.clone()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The status codes an operation documents.
fn statuses(doc: &Value, method: &str, path: &str) -> BTreeSet<String> {
    doc["paths"][path][method]["responses"]
        .as_object()
        .unwrap_or_else(|| panic!("{method} {path} has no responses"))
        .keys()
        .cloned()
        .collect()
}

/// The document describes exactly the routes the router serves, method by method: a route
/// added to the tables without a `#[utoipa::path]` in `ApiDoc` fails here, and so does a
/// documented route nothing serves.
#[test]
fn every_served_route_is_documented_and_no_other() {
    let doc = document();
    let served = served();
    let documented = documented(&doc);
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty(),
        "served but not documented: {undocumented:?}"
    );
    assert!(
        unserved.is_empty(),
        "documented but not served: {unserved:?}"
    );
    assert_eq!(served.len(), 18, "the tables list every route once");
    let ids: BTreeSet<_> = served
        .iter()
        .map(|(method, path)| doc["paths"][path][method]["operationId"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), served.len(), "operation ids are unique: {ids:?}");
}

/// Each route documents the errors its handler can return: every /v1 route needs the bearer
/// token (401), signals can be malformed (400) or refused for room (503), and routes on one
/// handler or dead letter can name one that does not exist (404).
#[test]
fn routes_document_their_errors_and_security() {
    let doc = document();
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer",
        "the bearer scheme is declared"
    );
    for (method, path) in served() {
        let codes = statuses(&doc, &method, &path);
        let has = |code: &str| codes.contains(code);
        let what = format!("{method} {path}: {codes:?}");
        let operation = &doc["paths"][&path][&method];
        if path.starts_with("/v1/") {
            assert!(has("401"), "{what}");
            assert_eq!(
                operation["security"],
                serde_json::json!([{ "bearer": [] }]),
                "{what}"
            );
        } else {
            assert!(operation.get("security").is_none(), "{what} is open");
        }
        if path == "/v1/messages" || path == "/v1/events" {
            for code in ["400", "413", "503"] {
                assert!(has(code), "{what} lacks {code}");
            }
            assert!(
                operation["requestBody"]["content"]["application/json"].is_object(),
                "{what}"
            );
        }
        if path.starts_with("/v1/handlers/{name}") && method != "put" {
            assert!(has("404"), "{what}");
        }
        if path.starts_with("/v1/dead-letters/{id}") {
            assert!(has("404") && has("400"), "{what}");
        }
        for code in codes
            .iter()
            .filter(|c| c.starts_with('4') || c.starts_with('5'))
        {
            let body = &operation["responses"][code]["content"]["application/json"]["schema"];
            if path.starts_with("/v1/") && body.is_object() {
                assert_eq!(
                    body["$ref"], "#/components/schemas/ErrorBody",
                    "{what} {code}"
                );
            }
        }
    }
    assert!(statuses(&doc, "post", "/v1/messages").contains("504"));
    let deploy = &doc["paths"]["/v1/handlers/{name}"]["put"];
    assert!(deploy["requestBody"]["content"]["application/wasm"].is_object());
    for code in ["400", "409", "413", "500"] {
        assert!(
            statuses(&doc, "put", "/v1/handlers/{name}").contains(code),
            "deploy lacks {code}"
        );
    }
}

/// `GET /openapi.json` serves the generated document as JSON.
#[tokio::test]
async fn serves_the_generated_document() {
    let response = serve().await;
    assert_eq!(response.headers()["content-type"], "application/json");
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let served: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(served, document());
    assert!(served["openapi"].as_str().unwrap().starts_with("3.1"));
    assert!(served["components"]["schemas"]["WireSignal"].is_object());
    assert_eq!(
        served["components"]["schemas"]["MessageRequest"]["required"],
        serde_json::json!(["to", "messageType"])
    );
}

/// Each signal route has its own precise body, and parameters carry the ranges and patterns
/// the routes check (host/tests/openapi_conformance.rs holds the API to them).
#[test]
fn bodies_and_parameters_are_precise() {
    let doc = document();
    let schemas = &doc["components"]["schemas"];
    let body = |path: &str| {
        doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            .clone()
    };
    assert_eq!(body("/v1/messages"), "#/components/schemas/MessageRequest");
    assert_eq!(body("/v1/events"), "#/components/schemas/EmitRequest");
    let message = &schemas["MessageRequest"];
    assert_eq!(message["additionalProperties"], false);
    assert_eq!(
        message["required"],
        serde_json::json!(["to", "messageType"])
    );
    for host_set in ["id", "from", "timestamp", "depth", "deadline", "paced"] {
        assert!(message["properties"].get(host_set).is_none(), "{host_set}");
    }
    assert_eq!(schemas["EmitRequest"]["oneOf"].as_array().unwrap().len(), 2);
    for kind in ["EventRequest", "DataChangeRequest"] {
        assert_eq!(schemas[kind]["additionalProperties"], false, "{kind}");
    }
    let parameter = |method: &str, path: &str, name: &str| {
        doc["paths"][path][method]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{method} {path} has no parameter {name}"))["schema"]
            .clone()
    };
    for (method, path) in served() {
        for name in ["name", "handler"] {
            if path.contains(&format!("{{{name}}}")) {
                let schema = parameter(&method, &path, name);
                assert_eq!(
                    schema["pattern"], "^[a-z][a-z0-9_-]{0,63}$",
                    "{method} {path}"
                );
            }
        }
        if path.contains("{id}") {
            assert_eq!(
                parameter(&method, &path, "id")["maximum"],
                i64::MAX,
                "{path}"
            );
        }
    }
    assert_eq!(
        parameter("get", "/v1/dead-letters", "after")["maximum"],
        i64::MAX
    );
    assert!(parameter("post", "/v1/messages", "wait")["pattern"].is_string());
    // Every error is an ErrorBody, path rejections included.
    let show = &doc["paths"]["/v1/dead-letters/{id}"]["get"]["responses"]["400"];
    assert_eq!(
        show["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/ErrorBody"
    );
}
