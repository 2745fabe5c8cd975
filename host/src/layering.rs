//! A check that data flows one way between the crate's modules: no module imports one that
//! imports it back, the runtime and the gateway know nothing of the router, and a transport
//! knows only its inbound interface. Test code is left out (it may reach anywhere).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The top-level modules each top-level module of `src` imports through `crate::`.
fn imports(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("reading src") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(src).expect("under src");
            let first = relative.components().next().expect("a component");
            let module = Path::new(first.as_os_str())
                .file_stem()
                .expect("a name")
                .to_string_lossy()
                .into_owned();
            if matches!(module.as_str(), "lib" | "main" | "layering")
                || relative.ends_with("tests.rs")
            {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("reading a source file");
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            let uses = graph.entry(module.clone()).or_default();
            for (at, _) in code.match_indices("crate::") {
                let name: String = code[at + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                if !name.is_empty() && name != module {
                    uses.insert(name);
                }
            }
        }
    }
    graph
}

/// A module that reaches itself again through its imports, if any.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        let here = path.last().expect("a path").clone();
        for next in graph.get(&here).into_iter().flatten() {
            if let Some(at) = path.iter().position(|m| m == next) {
                let mut found = path[at..].to_vec();
                found.push(next.clone());
                return Some(found);
            }
            if done.insert(next.clone()) {
                path.push(next.clone());
                if let Some(found) = visit(graph, path, done) {
                    return Some(found);
                }
                path.pop();
            }
        }
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|start| visit(graph, &mut vec![start.clone()], &mut done))
}

/// Proves the module graph of `host/src` has no cycle, and the layers named in `lib.rs` hold.
#[test]
fn data_flows_one_way() {
    let graph = imports(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(graph.contains_key("router") && graph.contains_key("runtime"));
    assert_eq!(cycle(&graph), None, "an import cycle: {graph:#?}");
    for (lower, upper) in [
        ("runtime", "router"),
        ("transport", "router"),
        ("nats", "router"),
        ("signal", "router"),
        // The gateway talks to the router through its `Routing` interface only.
        ("gateway", "router"),
    ] {
        assert!(
            !graph[lower].contains(upper),
            "`{lower}` must not import `{upper}`: {:?}",
            graph[lower]
        );
    }
}

/// Proves the checker sees a cycle when there is one.
#[test]
fn a_cycle_is_found() {
    let graph: BTreeMap<String, BTreeSet<String>> =
        [("a", &["b"][..]), ("b", &["c"][..]), ("c", &["a"][..])]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.iter().map(|s| (*s).to_owned()).collect()))
            .collect();
    assert_eq!(cycle(&graph).map(|c| c.len()), Some(4));
}
