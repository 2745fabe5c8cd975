//! `switchboard state HANDLER [AGENT]`: an agent's (or a handler's own) keyed state, one key
//! per line as `key = value`, and with no agent the agents that have state.

use std::io::Write;

use serde::Deserialize;

/// The answer of `GET /v1/state/{handler}`.
#[derive(Deserialize)]
struct StateView {
    handler: String,
    agent: Option<String>,
    entries: Vec<Entry>,
    usage: u64,
    agents: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct Entry {
    key: String,
    json: serde_json::Value,
    size: usize,
}

/// Writes the state for a person.
pub(super) fn answer(body: &serde_json::Value, out: &mut impl Write) -> anyhow::Result<()> {
    let view = StateView::deserialize(body)?;
    let whose = match &view.agent {
        Some(agent) => crate::address::Address::Agent {
            handler: Some(&view.handler),
            id: agent,
        }
        .to_string(),
        None => view.handler.clone(),
    };
    writeln!(
        out,
        "{whose}: {} keys ({} bytes stored by {} in all)",
        view.entries.len(),
        view.usage,
        view.handler
    )?;
    for entry in &view.entries {
        match &entry.json {
            serde_json::Value::Null if entry.size > 4 => {
                writeln!(out, "  {} = ({} bytes, not JSON)", entry.key, entry.size)?
            }
            value => writeln!(out, "  {} = {value}", entry.key)?,
        }
    }
    if let Some(agents) = view.agents.filter(|a| !a.is_empty()) {
        writeln!(out, "agents with state: {}", agents.join(", "))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys print one per line, non-JSON values by size, and the agents after.
    #[test]
    fn state_prints_a_line_per_key() {
        let body = serde_json::json!({
            "handler": "counter", "agent": "alice", "usage": 42,
            "entries": [
                {"key": "count", "json": 3, "size": 1},
                {"key": "blob", "json": null, "size": 9},
            ],
        });
        let mut out = Vec::new();
        answer(&body, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "agent:counter/alice: 2 keys (42 bytes stored by counter in all)\n  count = 3\n  blob = (9 bytes, not JSON)\n"
        );
        let own = serde_json::json!({
            "handler": "counter", "agent": null, "usage": 0, "entries": [], "agents": ["alice", "bob"],
        });
        let mut out = Vec::new();
        answer(&own, &mut out).unwrap();
        assert!(
            String::from_utf8(out)
                .unwrap()
                .ends_with("agents with state: alice, bob\n")
        );
    }
}
