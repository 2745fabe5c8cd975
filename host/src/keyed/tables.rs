//! The redb tables of keyed state and timers, and the operations that touch several at once.

use redb::{TableDefinition, TableHandle, WriteTransaction};

use crate::db::{Db, DbError};

/// A state key: `(handler, agent, key)`.
pub(super) type StateKey = (&'static str, Option<&'static str>, &'static str);
/// A stored value: `(version, value)`.
pub(super) type StateValue = (u64, &'static [u8]);
/// A timer's place in firing order: `(due_ms, id)`.
pub(super) type TimerKey = (u64, &'static str);
/// A stored timer: `(handler, scope handler, scope agent, signal)`.
pub(super) type TimerValue = (
    &'static str,
    &'static str,
    Option<&'static str>,
    &'static [u8],
);

/// `(handler, agent, key)` to `(version, value)`.
pub(super) const STATE: TableDefinition<StateKey, StateValue> = TableDefinition::new("state");
/// `(handler, agent)` to how many keys the agent has: the agents with state, listed in order.
pub(super) const AGENTS: TableDefinition<(&str, &str), u64> = TableDefinition::new("state_agents");
/// Handler to bytes of keys and values it stores.
pub(super) const USAGE: TableDefinition<&str, u64> = TableDefinition::new("state_usage");
/// Counters; [`VERSION`] is the last version stamped.
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("state_meta");
/// The meta key of the commit counter.
pub(super) const VERSION: &str = "version";
/// `(due_ms, id)` to `(handler, scope handler, scope agent, signal)`: timers in firing order.
pub(super) const TIMERS: TableDefinition<TimerKey, TimerValue> = TableDefinition::new("timers");
/// Timer id to `(due_ms, handler)`: finds a timer to cancel or remove.
pub(super) const TIMER_IDS: TableDefinition<&str, (u64, &str)> = TableDefinition::new("timer_ids");
/// Handler to its pending timers.
pub(super) const TIMER_COUNT: TableDefinition<&str, u64> = TableDefinition::new("timer_count");

/// A kept push's place in its user's order: `(user, seq)`.
pub(super) type KeptKey = (&'static str, u64);
/// A kept push: `(expires_ms, id, handler that kept it, signal)`.
pub(super) type KeptValue = (u64, &'static str, &'static str, &'static [u8]);
/// `(user, seq)` to `(expires_ms, id, handler, signal)`: each user's kept pushes in order.
pub(super) const KEPT: TableDefinition<KeptKey, KeptValue> = TableDefinition::new("kept");
/// `(user, push id)` to its seq: finds a push to remove when it is acknowledged.
pub(super) const KEPT_IDS: TableDefinition<(&str, &str), u64> = TableDefinition::new("kept_ids");
/// `(user, handler)` to how many pushes the handler keeps for the user: the limit is per
/// handler, so one handler cannot use up what another may keep for the same user.
pub(super) const KEPT_BY: TableDefinition<(&str, &str), u64> =
    TableDefinition::new("kept_by_handler");
/// User to how many pushes were kept for it, in a store written before [`KEPT_BY`]: counted
/// into [`KEPT_BY`] when such a store opens, then removed.
pub(super) const KEPT_PER_USER: TableDefinition<&str, u64> = TableDefinition::new("kept_count");
/// The meta key of the last kept push's seq.
pub(super) const KEPT_SEQ: &str = "kept_seq";

/// Creates every table, so reads can open them; counts the pushes kept in a store written
/// before [`KEPT_BY`] into it.
pub(super) fn create(db: &Db) -> Result<(), DbError> {
    let tx = db.begin_durable()?;
    let counted = tx
        .list_tables()
        .map_err(DbError::from_redb)?
        .any(|table| table.name() == KEPT_BY.name());
    if !counted {
        super::kept::count_by_handler(&tx)?;
        tx.delete_table(KEPT_PER_USER).map_err(DbError::from_redb)?;
    }
    tx.open_table(STATE).map_err(DbError::from_redb)?;
    tx.open_table(AGENTS).map_err(DbError::from_redb)?;
    tx.open_table(USAGE).map_err(DbError::from_redb)?;
    tx.open_table(META).map_err(DbError::from_redb)?;
    tx.open_table(TIMERS).map_err(DbError::from_redb)?;
    tx.open_table(TIMER_IDS).map_err(DbError::from_redb)?;
    tx.open_table(TIMER_COUNT).map_err(DbError::from_redb)?;
    tx.open_table(KEPT).map_err(DbError::from_redb)?;
    tx.open_table(KEPT_IDS).map_err(DbError::from_redb)?;
    tx.open_table(KEPT_BY).map_err(DbError::from_redb)?;
    tx.commit().map_err(DbError::from_redb)
}

/// The smallest string greater than `handler`: a range over tuples whose first element is
/// `handler` ends before `(after(handler), ..)`.
fn after(handler: &str) -> String {
    format!("{handler}\0")
}

/// Removes every key, agent row, usage row, timer and kept push of `handler` in `tx`.
pub(super) fn purge(tx: &WriteTransaction, handler: &str) -> Result<(), DbError> {
    // First what it kept for users: their removal gives bytes back to its usage row.
    super::kept::purge(tx, handler)?;
    let end = after(handler);
    tx.open_table(STATE)
        .map_err(DbError::from_redb)?
        .retain_in::<(&str, Option<&str>, &str), _>(
            (handler, None, "")..(end.as_str(), None, ""),
            |_, _| false,
        )
        .map_err(DbError::from_redb)?;
    tx.open_table(AGENTS)
        .map_err(DbError::from_redb)?
        .retain_in::<(&str, &str), _>((handler, "")..(end.as_str(), ""), |_, _| false)
        .map_err(DbError::from_redb)?;
    tx.open_table(USAGE)
        .map_err(DbError::from_redb)?
        .remove(handler)
        .map_err(DbError::from_redb)?;
    let had_timers = tx
        .open_table(TIMER_COUNT)
        .map_err(DbError::from_redb)?
        .remove(handler)
        .map_err(DbError::from_redb)?
        .is_some();
    if had_timers {
        // Timers are indexed by due time and id; a purge is rare enough to scan them.
        let mut ids = tx.open_table(TIMER_IDS).map_err(DbError::from_redb)?;
        let mut timers = tx.open_table(TIMERS).map_err(DbError::from_redb)?;
        let mut gone = Vec::new();
        ids.retain(|id, (due, owner)| {
            let mine = owner == handler;
            if mine {
                gone.push((due, id.to_owned()));
            }
            !mine
        })
        .map_err(DbError::from_redb)?;
        for (due, id) in gone {
            timers
                .remove((due, id.as_str()))
                .map_err(DbError::from_redb)?;
        }
    }
    Ok(())
}
