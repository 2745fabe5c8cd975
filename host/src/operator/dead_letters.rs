//! Writes the dead-letter commands' answers for a person: a line per dead letter, the
//! whole record for `show`, one line for a replay, delete or purge.

use std::io::Write;

use serde_json::Value;

use super::DeadLetterCommand;

/// Writes a successful answer to a dead-letter command (not used with `--json`).
pub(super) fn answer(
    command: &DeadLetterCommand,
    body: &Value,
    out: &mut impl Write,
) -> std::io::Result<()> {
    match command {
        DeadLetterCommand::List { .. } => {
            let letters = body["deadLetters"]
                .as_array()
                .map_or(&[][..], Vec::as_slice);
            writeln!(
                out,
                "{:>8}  {:<20}  {:<16}  {:<18}  TYPE",
                "ID", "HANDLER", "REASON", "KIND"
            )?;
            for letter in letters {
                let signal = &letter["signal"];
                let what = ["messageType", "eventType", "objectType", "replyTo"]
                    .iter()
                    .find_map(|key| signal[key].as_str())
                    .unwrap_or("-");
                writeln!(
                    out,
                    "{:>8}  {:<20}  {:<16}  {:<18}  {what}",
                    letter["id"],
                    text(&letter["handler"]),
                    text(&letter["reason"]),
                    text(&signal["signalType"]),
                )?;
            }
            writeln!(
                out,
                "{} shown; {} stored of at most {}",
                letters.len(),
                body["stored"],
                body["capacity"]
            )
        }
        DeadLetterCommand::Show { .. } => {
            let pretty = serde_json::to_string_pretty(body).unwrap_or_else(|_| body.to_string());
            writeln!(out, "{pretty}")
        }
        DeadLetterCommand::Replay { id, .. } => {
            writeln!(out, "replayed {id} to {}", text(&body["handler"]))
        }
        DeadLetterCommand::Delete { id, .. } => writeln!(out, "deleted dead letter {id}"),
        DeadLetterCommand::Purge { .. } => writeln!(out, "purged {}", body["purged"]),
    }
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("-")
}
