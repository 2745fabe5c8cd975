//! The group committer: one thread that takes every batch queued at the moment, validates
//! each inside one write transaction, applies the valid ones, and commits them all with one
//! fsync. While it commits, the next group queues up, so the more turns finish at once, the
//! fewer fsyncs each costs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;

use redb::{ReadableTable, Table, WriteTransaction};

use super::tables::{
    AGENTS, KEPT, KEPT_BY, KEPT_IDS, KEPT_SEQ, KeptKey, KeptValue, META, STATE, StateKey,
    StateValue, TIMER_COUNT, TIMER_IDS, TIMERS, TimerKey, TimerValue, USAGE, VERSION,
};
use super::{Batch, CommitError, Committed, MAX_KEY_BYTES, Reply, Shared, StateLimits};
use crate::db::DbError;
use crate::metrics::Metrics;

/// Takes groups of batches off `incoming` until every sender is gone.
pub(super) fn run(shared: &Shared, incoming: &Receiver<(Batch, Reply)>, max_group: usize) {
    while let Ok(first) = incoming.recv() {
        let mut group = vec![first];
        #[cfg(test)]
        drop(shared.gate.lock());
        while group.len() < max_group {
            match incoming.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        shared.queued.fetch_sub(group.len(), Ordering::Relaxed);
        // A panic (a bug) aborts that group's transaction and drops its turns' answers (they
        // get `Stopped`); the committer lives on for the next turns.
        let committed =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| commit_group(shared, group)));
        if committed.is_err() {
            tracing::error!("the state committer panicked; that group's turns were not committed");
        }
    }
}

/// Checks a key and value size against the limits.
pub(super) fn check_write(limits: &StateLimits, key: &str, len: usize) -> Result<(), CommitError> {
    if key.len() > MAX_KEY_BYTES {
        return Err(CommitError::KeyTooLong {
            bytes: key.len(),
            limit: MAX_KEY_BYTES,
        });
    }
    if len > limits.value_bytes {
        return Err(CommitError::ValueTooLarge {
            key: key.to_owned(),
            bytes: len,
            limit: limits.value_bytes,
        });
    }
    Ok(())
}

fn commit_group(shared: &Shared, group: Vec<(Batch, Reply)>) {
    let batches: Vec<&Batch> = group.iter().map(|(batch, _)| batch).collect();
    let outcomes = match transaction(shared, &batches) {
        Ok(outcomes) => outcomes,
        // The group's transaction failed: commit each batch alone, so each gets its own
        // error and one bad batch cannot hold the others back.
        Err(_) if group.len() > 1 => batches
            .iter()
            .map(|batch| match transaction(shared, &[batch]) {
                Ok(mut one) => one.pop().expect("one outcome per batch"),
                Err(error) => Err(CommitError::Store(error)),
            })
            .collect(),
        Err(error) => vec![Err(CommitError::Store(error))],
    };
    let metrics = &shared.metrics;
    metrics
        .state_group_commit_batches
        .observe(group.len() as f64);
    let mut scheduled = false;
    for ((batch, reply), outcome) in group.into_iter().zip(outcomes) {
        count(metrics, &batch, &outcome);
        scheduled |= outcome.is_ok() && !batch.schedule.is_empty();
        // A turn that stopped waiting no longer needs its answer.
        let _ = reply.send(outcome);
    }
    if scheduled {
        shared.timers_changed.notify_one();
    }
}

fn count(metrics: &Metrics, batch: &Batch, outcome: &Result<Committed, CommitError>) {
    let handler = || Metrics::handler(&batch.scope.handler);
    match outcome {
        Ok(committed) => {
            metrics.state_commits.inc();
            if !batch.keep.is_empty() {
                metrics.gateway.pushes_kept.inc_by(batch.keep.len() as u64);
            }
            if committed.cancelled > 0 {
                metrics
                    .timers_cancelled
                    .get_or_create(&handler())
                    .inc_by(committed.cancelled as u64);
            }
            for timer in &batch.schedule {
                metrics
                    .timers_scheduled
                    .get_or_create(&Metrics::handler(&timer.handler))
                    .inc();
            }
        }
        Err(CommitError::Conflict { .. }) => {
            metrics.state_conflicts.get_or_create(&handler()).inc();
        }
        Err(
            CommitError::ValueTooLarge { .. }
            | CommitError::KeyTooLong { .. }
            | CommitError::HandlerFull { .. }
            | CommitError::TooManyTimers { .. }
            | CommitError::TooManyKept { .. },
        ) => {
            metrics.state_quota_refused.get_or_create(&handler()).inc();
        }
        Err(CommitError::Store(_) | CommitError::Stopped) => {}
    }
}

/// The tables a commit writes, open in one transaction.
pub(super) struct Tables<'tx> {
    pub(super) state: Table<'tx, StateKey, StateValue>,
    pub(super) agents: Table<'tx, (&'static str, &'static str), u64>,
    pub(super) usage: Table<'tx, &'static str, u64>,
    pub(super) timers: Table<'tx, TimerKey, TimerValue>,
    pub(super) timer_ids: Table<'tx, &'static str, (u64, &'static str)>,
    pub(super) timer_count: Table<'tx, &'static str, u64>,
    pub(super) kept: Table<'tx, KeptKey, KeptValue>,
    pub(super) kept_ids: Table<'tx, (&'static str, &'static str), u64>,
    pub(super) kept_by: Table<'tx, (&'static str, &'static str), u64>,
}

impl<'tx> Tables<'tx> {
    /// Opens every table in `tx`.
    pub(super) fn open(tx: &'tx WriteTransaction) -> Result<Self, DbError> {
        Ok(Self {
            state: tx.open_table(STATE).map_err(DbError::from_redb)?,
            agents: tx.open_table(AGENTS).map_err(DbError::from_redb)?,
            usage: tx.open_table(USAGE).map_err(DbError::from_redb)?,
            timers: tx.open_table(TIMERS).map_err(DbError::from_redb)?,
            timer_ids: tx.open_table(TIMER_IDS).map_err(DbError::from_redb)?,
            timer_count: tx.open_table(TIMER_COUNT).map_err(DbError::from_redb)?,
            kept: tx.open_table(KEPT).map_err(DbError::from_redb)?,
            kept_ids: tx.open_table(KEPT_IDS).map_err(DbError::from_redb)?,
            kept_by: tx.open_table(KEPT_BY).map_err(DbError::from_redb)?,
        })
    }
}

/// Validates and applies `batches` in one durable transaction; an `Err` means nothing
/// committed.
fn transaction(
    shared: &Shared,
    batches: &[&Batch],
) -> Result<Vec<Result<Committed, CommitError>>, DbError> {
    let tx = shared.db.begin_durable()?;
    let outcomes = apply_all(&tx, &shared.limits, batches)?;
    tx.commit().map_err(DbError::from_redb)?;
    shared.transactions.fetch_add(1, Ordering::Relaxed);
    Ok(outcomes)
}

fn apply_all(
    tx: &WriteTransaction,
    limits: &StateLimits,
    batches: &[&Batch],
) -> Result<Vec<Result<Committed, CommitError>>, DbError> {
    let mut meta = tx.open_table(META).map_err(DbError::from_redb)?;
    let mut version = meta
        .get(VERSION)
        .map_err(DbError::from_redb)?
        .map_or(0, |v| v.value());
    let mut kept_seq = meta
        .get(KEPT_SEQ)
        .map_err(DbError::from_redb)?
        .map_or(0, |v| v.value());
    let now_ms = limits.clock.now_millis();
    let mut tables = Tables::open(tx)?;
    let mut outcomes = Vec::with_capacity(batches.len());
    for batch in batches {
        // Each batch sees the ones before it in the group, as if committed one by one.
        outcomes.push(match plan(&tables, limits, batch, now_ms)? {
            Ok(plan) => {
                version += 1;
                apply(&mut tables, batch, &plan, version)?;
                let handler = batch.scope.handler.as_str();
                kept_seq =
                    super::kept::apply(&mut tables, handler, &batch.keep, &plan.expired, kept_seq)?;
                Ok(Committed {
                    version,
                    cancelled: plan.cancels.len(),
                })
            }
            Err(refused) => Err(refused),
        });
    }
    meta.insert(VERSION, version).map_err(DbError::from_redb)?;
    meta.insert(KEPT_SEQ, kept_seq)
        .map_err(DbError::from_redb)?;
    Ok(outcomes)
}

/// What a valid batch changes beyond its own writes.
struct Plan {
    /// The handler's stored bytes after the batch.
    usage: u64,
    /// Keys the agent gains (or loses, negative).
    agent_keys: i64,
    /// Ids of timers to cancel.
    cancels: Vec<String>,
    /// Expired kept pushes removed to make room for the batch's.
    expired: super::kept::Expired,
}

/// Validates `batch` against the tables as they are now: the inner `Err` refuses it.
fn plan(
    t: &Tables<'_>,
    limits: &StateLimits,
    batch: &Batch,
    now_ms: u64,
) -> Result<Result<Plan, CommitError>, DbError> {
    let (handler, agent) = (batch.scope.handler.as_str(), batch.scope.agent.as_deref());
    for (key, value) in &batch.writes {
        if let Err(refused) = check_write(limits, key, value.as_ref().map_or(0, Vec::len)) {
            return Ok(Err(refused));
        }
    }
    for (key, seen) in &batch.reads {
        let now = t
            .state
            .get((handler, agent, key.as_str()))
            .map_err(DbError::from_redb)?
            .map_or(0, |g| g.value().0);
        if now != *seen {
            return Ok(Err(CommitError::Conflict { key: key.clone() }));
        }
    }
    let mut delta: i128 = 0;
    let mut agent_keys = 0;
    for (key, value) in &batch.writes {
        let old = t
            .state
            .get((handler, agent, key.as_str()))
            .map_err(DbError::from_redb)?
            .map(|g| g.value().1.len());
        let size = |len: usize| (key.len() + len) as i128;
        delta += value.as_ref().map_or(0, |v| size(v.len())) - old.map_or(0, size);
        agent_keys += i64::from(value.is_some()) - i64::from(old.is_some());
    }
    // Kept pushes count against the keeping handler's bytes until they are gone.
    delta += batch
        .keep
        .iter()
        .map(|push| i128::from(super::kept::kept_bytes(push)))
        .sum::<i128>();
    let used = read_u64(&t.usage, handler)?;
    let usage = (i128::from(used) + delta).max(0) as u64;
    if delta > 0 && usage > limits.handler_bytes {
        return Ok(Err(CommitError::HandlerFull {
            handler: handler.to_owned(),
            would: usage,
            limit: limits.handler_bytes,
        }));
    }
    let mut cancels = Vec::new();
    for id in batch.cancel.iter().collect::<BTreeSet<_>>() {
        let stored = t.timer_ids.get(id.as_str()).map_err(DbError::from_redb)?;
        let owned = stored.is_some_and(|found| found.value().1 == handler)
            // A timer this very batch schedules can be cancelled by it too.
            || batch
                .schedule
                .iter()
                .any(|timer| timer.id == *id && timer.handler == handler);
        if owned {
            cancels.push(id.clone());
        }
    }
    let mut timers: BTreeMap<&str, i64> = BTreeMap::new();
    for timer in &batch.schedule {
        *timers.entry(&timer.handler).or_default() += 1;
    }
    if let Some(mine) = timers.get_mut(handler) {
        *mine -= cancels.len() as i64;
    }
    for (owner, added) in timers {
        let would = read_u64(&t.timer_count, owner)? as i64 + added;
        if added > 0 && would > limits.timers_per_handler as i64 {
            return Ok(Err(CommitError::TooManyTimers {
                handler: owner.to_owned(),
                would: would as usize,
                limit: limits.timers_per_handler,
            }));
        }
    }
    let expired = match super::kept::plan(t, limits, &batch.scope.handler, &batch.keep, now_ms)? {
        Ok(expired) => expired,
        Err(refused) => return Ok(Err(refused)),
    };
    Ok(Ok(Plan {
        usage,
        agent_keys,
        cancels,
        expired,
    }))
}

/// Writes a validated batch, stamping its keys with `version`.
fn apply(t: &mut Tables<'_>, batch: &Batch, plan: &Plan, version: u64) -> Result<(), DbError> {
    let (handler, agent) = (batch.scope.handler.as_str(), batch.scope.agent.as_deref());
    for (key, value) in &batch.writes {
        let at = (handler, agent, key.as_str());
        match value {
            Some(value) => t.state.insert(at, (version, value.as_slice())).map(drop),
            None => t.state.remove(at).map(drop),
        }
        .map_err(DbError::from_redb)?;
    }
    write_u64(&mut t.usage, handler, plan.usage)?;
    if let (Some(agent), true) = (agent, plan.agent_keys != 0) {
        let keys = t
            .agents
            .get((handler, agent))
            .map_err(DbError::from_redb)?
            .map_or(0, |g| g.value());
        let keys = (keys as i64 + plan.agent_keys).max(0) as u64;
        if keys == 0 {
            t.agents
                .remove((handler, agent))
                .map_err(DbError::from_redb)?;
        } else {
            t.agents
                .insert((handler, agent), keys)
                .map_err(DbError::from_redb)?;
        }
    }
    for timer in &batch.schedule {
        // An id scheduled again replaces its timer.
        remove_timer(t, &timer.id)?;
        t.timers
            .insert(
                (timer.due_ms, timer.id.as_str()),
                (
                    timer.handler.as_str(),
                    timer.scope.handler.as_str(),
                    timer.scope.agent.as_deref(),
                    timer.signal.as_slice(),
                ),
            )
            .map_err(DbError::from_redb)?;
        t.timer_ids
            .insert(timer.id.as_str(), (timer.due_ms, timer.handler.as_str()))
            .map_err(DbError::from_redb)?;
        let n = read_u64(&t.timer_count, &timer.handler)?;
        write_u64(&mut t.timer_count, &timer.handler, n + 1)?;
    }
    for id in &plan.cancels {
        remove_timer(t, id)?;
    }
    Ok(())
}

/// Removes timer `id` from every timer table; the handler that owned it, if it was there.
pub(super) fn remove_timer(t: &mut Tables<'_>, id: &str) -> Result<Option<String>, DbError> {
    let Some((due, owner)) = t
        .timer_ids
        .remove(id)
        .map_err(DbError::from_redb)?
        .map(|g| {
            let (due, owner) = g.value();
            (due, owner.to_owned())
        })
    else {
        return Ok(None);
    };
    t.timers.remove((due, id)).map_err(DbError::from_redb)?;
    let n = read_u64(&t.timer_count, &owner)?;
    write_u64(&mut t.timer_count, &owner, n.saturating_sub(1))?;
    Ok(Some(owner))
}

pub(super) fn read_u64(table: &Table<'_, &'static str, u64>, key: &str) -> Result<u64, DbError> {
    Ok(table
        .get(key)
        .map_err(DbError::from_redb)?
        .map_or(0, |g| g.value()))
}

/// Writes a counter, dropping its row at zero so purged or emptied handlers leave nothing.
pub(super) fn write_u64(
    table: &mut Table<'_, &'static str, u64>,
    key: &str,
    n: u64,
) -> Result<(), DbError> {
    if n == 0 {
        table.remove(key).map_err(DbError::from_redb)?;
    } else {
        table.insert(key, n).map_err(DbError::from_redb)?;
    }
    Ok(())
}
