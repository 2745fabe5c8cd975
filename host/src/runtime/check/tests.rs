use super::*;

/// A component with `imports` as empty instance imports, exporting `exports`.
fn component(imports: &[&str], exports: &[&str]) -> Vec<u8> {
    let imports: String = imports
        .iter()
        .map(|name| format!("(import \"{name}\" (instance))\n"))
        .collect();
    component_with(&imports, exports)
}

/// A component starting with the text `prelude` (imports, types, nested components) and
/// exporting `exports`, all bound to one core function: enough for the check, which never
/// runs them.
fn component_with(prelude: &str, exports: &[&str]) -> Vec<u8> {
    let exports: String = exports
        .iter()
        .map(|name| format!("(export \"{name}\" (func $f))\n"))
        .collect();
    wat::parse_str(format!(
        r#"(component
            {prelude}
            (core module $m (func (export "f")))
            (core instance $i (instantiate $m))
            (func $f (canon lift (core func $i "f")))
            {exports})"#
    ))
    .expect("valid component text")
}

fn handler(imports: &[&str]) -> Vec<u8> {
    component(imports, HANDLER_EXPORTS)
}

/// A component importing wasi:http is refused, naming the import and the way out.
#[test]
fn an_http_import_is_refused_by_name() {
    let bytes = handler(&[
        "wasi:cli/environment@0.2.0",
        "wasi:http/outgoing-handler@0.2.3",
    ]);
    let error = check(&bytes).unwrap_err();
    let text = error.to_string();
    assert!(
        matches!(error, LoadError::UnsupportedImport { .. }),
        "{text}"
    );
    assert!(
        text.contains("`wasi:http/outgoing-handler@0.2.3`"),
        "names the import: {text}"
    );
    assert!(text.contains("sending signals"), "says what to do: {text}");
    assert!(
        text.contains("JavaScript"),
        "speaks to other languages: {text}"
    );
}

/// Every offending import is named, not only the first.
#[test]
fn every_unknown_import_is_named() {
    let bytes = handler(&["wasi:http/types@0.2.0", "acme:kv/store@1.0.0"]);
    let text = check(&bytes).unwrap_err().to_string();
    assert!(text.contains("`wasi:http/types@0.2.0`"), "{text}");
    assert!(text.contains("`acme:kv/store@1.0.0`"), "{text}");
}

/// A component without `handle-reply` is refused, naming the missing export.
#[test]
fn a_missing_export_is_refused_by_name() {
    let bytes = component(&[], &HANDLER_EXPORTS[..4]);
    let error = check(&bytes).unwrap_err();
    match &error {
        LoadError::MissingExports { missing } => assert_eq!(missing, &["handle-reply"]),
        other => panic!("expected MissingExports, got {other}"),
    }
    assert!(error.to_string().contains("`handle-reply`"));
}

/// What the host provides passes, at any semver-compatible version; other versions do not.
#[test]
fn provided_interfaces_pass_at_compatible_versions() {
    let signal = format!("switchboard:signal/host@{}", signal_version());
    let ok = handler(&[
        "wasi:cli/environment@0.2.0",
        "wasi:io/streams@0.2.9",
        "wasi:clocks/monotonic-clock@0.2.99",
        &signal,
    ]);
    check(&ok).unwrap();
    // A world's `use` imports types equal to ones the component defines: nothing to provide.
    let with_type = component_with(
        r#"(type $t (record (field "a" u32)))
           (import "message" (type (eq $t)))"#,
        HANDLER_EXPORTS,
    );
    check(&with_type).unwrap();
    for wrong in [
        "wasi:cli/environment@0.3.0",
        "wasi:cli/environment",
        "wasi:cli/environment@0.2.0-rc-2023-10-18",
        "plain-name",
    ] {
        let error = check(&handler(&[wrong])).unwrap_err();
        assert!(error.to_string().contains(wrong), "{wrong}: {error}");
    }
}

/// A component built against another version of the contract (0.1, or a future 9.0) is
/// refused before compiling, naming both versions and what to rebuild with.
#[test]
fn another_contract_version_is_refused_naming_both() {
    for (import, found) in [
        ("switchboard:signal/types@0.1.0", "0.1.0"),
        ("switchboard:signal/host@9.0.0", "9.0.0"),
    ] {
        let error = check(&handler(&["wasi:cli/environment@0.2.0", import])).unwrap_err();
        let text = error.to_string();
        assert!(matches!(error, LoadError::WrongContract { .. }), "{text}");
        assert!(
            text.contains(&format!("built against switchboard:signal@{found}")),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "this host speaks switchboard:signal@{}",
                signal_version()
            )),
            "{text}"
        );
        assert!(text.contains("rebuild it with switchboard-sdk"), "{text}");
    }
    assert_eq!(signal_version(), "0.3.0");
    let current = format!("switchboard:signal/state@{}", signal_version());
    check(&handler(&[&current])).unwrap();
}

/// Imports of a nested component are its own business: only the outer ones count.
#[test]
fn nested_imports_are_not_the_hosts_business() {
    let bytes = component_with(
        r#"(component $inner (import "wasi:http/types@0.2.0" (instance)))"#,
        HANDLER_EXPORTS,
    );
    assert!(surface(&bytes).unwrap().imports.is_empty());
    check(&bytes).unwrap();
}

/// Core modules and garbage are told apart from components, without a panic.
#[test]
fn not_a_component_is_refused() {
    let core = wat::parse_str("(module)").unwrap();
    assert!(matches!(check(&core), Err(LoadError::CoreModule)));
    let mut truncated = handler(&[]);
    truncated.truncate(truncated.len() / 2);
    assert!(matches!(check(&truncated), Err(LoadError::Invalid(_))));
    assert!(check(b"\0asm\x0d\0\x01\0garbage").is_err());
}
