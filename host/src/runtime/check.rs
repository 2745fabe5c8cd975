//! Reads an upload's imports and exports before anything compiles it: a component that
//! imports what the host does not provide, or lacks an export of the `handler` world, is
//! refused in milliseconds, with the offending name and what to change, rather than after
//! seconds of compiling.
//!
//! Only the outer component's own imports and exports count: nested modules and components
//! are wired up inside it and never reach the host. Names match the way wasmtime's linker
//! matches them: an interface at a version is satisfied by any semver-compatible one
//! (`0.2.0` and `0.2.12` are the same track, `0.3.0` is not).

use wasmparser::{
    Chunk, ComponentExternalKind, ComponentTypeRef, Encoding, Parser, Payload, TypeBounds,
};

use super::LoadError;

/// The WIT package every handler is written against, read from the WIT the host is built
/// with, so that a bump of the contract is checked without touching this file.
const SIGNAL_WIT: &str = include_str!("../../../wit/signal.wit");

/// The WASI 0.2 interfaces `wasmtime_wasi::p2::add_to_linker_async` defines (each behind a
/// deny-by-default context), as `package/interface`.
const WASI_INTERFACES: &[&str] = &[
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:clocks/wall-clock",
    "wasi:clocks/monotonic-clock",
    "wasi:filesystem/types",
    "wasi:filesystem/preopens",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:cli/exit",
    "wasi:cli/environment",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:sockets/network",
    "wasi:sockets/instance-network",
    "wasi:sockets/ip-name-lookup",
    "wasi:sockets/tcp",
    "wasi:sockets/tcp-create-socket",
    "wasi:sockets/udp",
    "wasi:sockets/udp-create-socket",
];

/// The WASI version the linker defines; any 0.2.x import resolves to it.
const WASI_VERSION: &str = "0.2.12";

/// The interfaces of the signal package a handler may import.
const SIGNAL_INTERFACES: &[&str] = &["types", "host", "state", "timers", "users"];

/// The functions the `handler` world exports.
pub const HANDLER_EXPORTS: &[&str] = &[
    "describe",
    "handle-message",
    "handle-event",
    "handle-data-change",
    "handle-reply",
];

/// The version of `switchboard:signal` this host speaks, from its WIT.
pub fn signal_version() -> &'static str {
    SIGNAL_WIT
        .lines()
        .find_map(|line| line.trim().strip_prefix("package switchboard:signal@"))
        .map_or("0.0.0", |rest| rest.trim_end_matches(';').trim())
}

/// Every interface the host provides, as `name@version`.
pub fn provided_interfaces() -> Vec<String> {
    let signal = signal_version();
    WASI_INTERFACES
        .iter()
        .map(|name| format!("{name}@{WASI_VERSION}"))
        .chain(
            SIGNAL_INTERFACES
                .iter()
                .map(|name| format!("switchboard:signal/{name}@{signal}")),
        )
        .collect()
}

/// What the outer component imports and exports.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Surface {
    /// Names of the imports the host must provide, in order (a type import equal to a type
    /// defined in the component, as a world's `use` makes, needs nothing from the host).
    pub imports: Vec<String>,
    /// Names of exported functions.
    pub exported_functions: Vec<String>,
}

/// Reads the outer component's import and export names without compiling anything.
pub fn surface(bytes: &[u8]) -> Result<Surface, LoadError> {
    let invalid = |e: wasmparser::BinaryReaderError| LoadError::Invalid(wasmtime::Error::new(e));
    let mut surface = Surface::default();
    let mut parser = Parser::new(0);
    let mut data = bytes;
    loop {
        let (payload, consumed) = match parser.parse(data, true).map_err(invalid)? {
            Chunk::Parsed { consumed, payload } => (payload, consumed),
            // With `eof` set the parser reports truncation as an error instead; stay safe.
            Chunk::NeedMoreData(_) => {
                return Err(LoadError::Invalid(wasmtime::Error::msg(
                    "the component is truncated",
                )));
            }
        };
        data = &data[consumed..];
        match payload {
            Payload::Version { encoding, .. } if encoding != Encoding::Component => {
                return Err(LoadError::CoreModule);
            }
            // A nested module or component is wired up inside this one: skip its bytes.
            Payload::ModuleSection {
                unchecked_range, ..
            }
            | Payload::ComponentSection {
                unchecked_range, ..
            } => {
                data = data.get(unchecked_range.len()..).ok_or_else(|| {
                    LoadError::Invalid(wasmtime::Error::msg(
                        "a nested module runs past the end of the component",
                    ))
                })?;
            }
            Payload::ComponentImportSection(reader) => {
                for import in reader {
                    let import = import.map_err(invalid)?;
                    if !matches!(import.ty, ComponentTypeRef::Type(TypeBounds::Eq(_))) {
                        surface.imports.push(import.name.name.to_owned());
                    }
                }
            }
            Payload::ComponentExportSection(reader) => {
                for export in reader {
                    let export = export.map_err(invalid)?;
                    if export.kind == ComponentExternalKind::Func {
                        surface.exported_functions.push(export.name.name.to_owned());
                    }
                }
            }
            Payload::End(_) => return Ok(surface),
            _ => {}
        }
    }
}

/// Checks a component's imports and exports against what the host provides and the
/// `handler` world requires, before it is compiled.
pub fn check(bytes: &[u8]) -> Result<(), LoadError> {
    let surface = surface(bytes)?;
    if let Some(found) = other_contract(&surface.imports) {
        return Err(LoadError::WrongContract {
            found,
            speaks: signal_version().to_owned(),
        });
    }
    let provided = provided_interfaces();
    let unknown: Vec<&String> = surface
        .imports
        .iter()
        .filter(|import| !provided.iter().any(|p| compatible(import, p)))
        .collect();
    if let Some(first) = unknown.first() {
        return Err(LoadError::UnsupportedImport {
            import: (*first).clone(),
            advice: advice(first),
            others: unknown[1..].iter().map(|s| (*s).clone()).collect(),
        });
    }
    let missing: Vec<String> = HANDLER_EXPORTS
        .iter()
        .filter(|name| !surface.exported_functions.iter().any(|e| e == *name))
        .map(|name| (*name).to_owned())
        .collect();
    if !missing.is_empty() {
        return Err(LoadError::MissingExports { missing });
    }
    Ok(())
}

/// The `switchboard:signal` version a component was built against, if it is not one this
/// host speaks (another semver track).
fn other_contract(imports: &[String]) -> Option<String> {
    let ours = format!("switchboard:signal@{}", signal_version());
    imports.iter().find_map(|import| {
        let (interface, version) = import.split_once('@')?;
        let (package, _) = interface.split_once('/')?;
        if package != "switchboard:signal" {
            return None;
        }
        let theirs = format!("{package}@{version}");
        (track(&theirs) != track(&ours)).then(|| version.to_owned())
    })
}

/// Whether an import named `import` resolves to the definition `provided`, as wasmtime's
/// linker resolves it.
fn compatible(import: &str, provided: &str) -> bool {
    if import == provided {
        return true;
    }
    match (track(import), track(provided)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// `name@1.2.3` → `name@1`, `name@0.2.3` → `name@0.2`; `None` for an unversioned name, a
/// pre-release or `0.0.x` (each compatible only with itself).
fn track(name: &str) -> Option<String> {
    let (base, version) = name.split_once('@')?;
    let version = version.split('+').next()?;
    if version.contains('-') {
        return None;
    }
    let mut parts = version.split('.').map(str::parse::<u64>);
    let (major, minor, _patch) = (
        parts.next()?.ok()?,
        parts.next()?.ok()?,
        parts.next()?.ok()?,
    );
    match (major, minor) {
        (0, 0) => None,
        (0, minor) => Some(format!("{base}@0.{minor}")),
        (major, _) => Some(format!("{base}@{major}")),
    }
}

/// What an author should change to drop an import, in words for any language.
fn advice(import: &str) -> String {
    let interface = import.split('@').next().unwrap_or(import);
    let package = interface.split('/').next().unwrap_or(interface);
    let signal = signal_version();
    match package {
        "wasi:http" => "handlers reach other services only by sending signals (`send`, `request`, \
             `emit` of switchboard:signal/host); remove the dependency on wasi:http (in \
             JavaScript, Python or Go builds, disable the HTTP feature of your toolchain's WASI \
             adapter or build against a world without wasi:http, e.g. `jco componentize \
             --disable http`)"
            .to_owned(),
        "switchboard:signal" if SIGNAL_INTERFACES.iter().any(|i| interface.ends_with(i)) => {
            format!(
                "this host speaks switchboard:signal@{signal}; rebuild the handler against the \
                 wit/ directory (or SDK) of this Switchboard version"
            )
        }
        "wasi:io" | "wasi:clocks" | "wasi:filesystem" | "wasi:random" | "wasi:cli"
        | "wasi:sockets"
            if WASI_INTERFACES.contains(&interface) =>
        {
            format!(
                "this host provides WASI {WASI_VERSION} (any 0.2.x import works); build for \
                 WASI 0.2 (`wasm32-wasip2`, or your toolchain's preview-2 adapter)"
            )
        }
        _ => format!(
            "a handler may import only switchboard:signal/host@{signal} and the WASI 0.2 \
             interfaces cli, clocks, filesystem, io, random and sockets (all of them denied \
             unless granted); remove the dependency, or in JavaScript, Python or Go builds \
             disable the toolchain feature or library that pulls it in"
        ),
    }
}

#[cfg(test)]
mod tests;
