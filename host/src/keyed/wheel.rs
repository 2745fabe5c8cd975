//! The timer loop: a task that sleeps until the earliest timer is due (or a commit schedules
//! an earlier one), hands each due timer to the host, and removes it once the host took it.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::{StateStore, StoredTimer};

/// How long a timer the host could not take waits before it is offered again.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Most due timers handled per wake-up; more are taken at once after.
const BATCH: usize = 256;
/// Longest sleep without a look at the store: a safety net, not the way timers are found.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// Starts the timer loop on the current tokio runtime. `fire` gets each due timer and returns
/// whether it took it: `true` removes the timer, `false` offers it again after
/// [`RETRY_AFTER`]. Timers already past due fire at once. The loop ends when the store is
/// dropped.
pub fn spawn_timer_loop(
    store: Weak<StateStore>,
    fire: Arc<dyn Fn(StoredTimer) -> bool + Send + Sync>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(store, fire))
}

async fn run(store: Weak<StateStore>, fire: Arc<dyn Fn(StoredTimer) -> bool + Send + Sync>) {
    // Timers the host refused, and when to offer them again.
    let mut retry: HashMap<String, u64> = HashMap::new();
    loop {
        let Some(strong) = store.upgrade() else {
            return;
        };
        let changed = strong.shared.timers_changed.clone();
        // Registered before looking, so a commit between the look and the sleep still wakes us.
        let notified = changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let now = now_ms();
        retry.retain(|_, at| *at > now);
        let sleep = match strong.due(now, BATCH + retry.len()) {
            Ok(due) => {
                let full = due.len() >= BATCH + retry.len();
                let mut taken = Vec::new();
                for timer in due {
                    if retry.contains_key(&timer.id) {
                        continue;
                    }
                    let id = timer.id.clone();
                    if fire(timer) {
                        taken.push(id);
                    } else {
                        retry.insert(id, now + RETRY_AFTER.as_millis() as u64);
                    }
                }
                let store = strong.clone();
                let removed = tokio::task::spawn_blocking(move || {
                    let ids: Vec<&str> = taken.iter().map(String::as_str).collect();
                    if ids.is_empty() {
                        Ok(())
                    } else {
                        store.fired_all(&ids)
                    }
                })
                .await;
                match removed {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => {
                        tracing::error!(%error, "could not remove fired timers; they fire again")
                    }
                    Err(error) => tracing::error!(%error, "removing fired timers failed"),
                }
                if full {
                    continue;
                }
                let next = strong
                    .next_due_except(&retry)
                    .into_iter()
                    .chain(retry.values().copied())
                    .min();
                next.map_or(MAX_SLEEP, |at| {
                    Duration::from_millis(at.saturating_sub(now_ms())).min(MAX_SLEEP)
                })
            }
            Err(error) => {
                tracing::error!(%error, "could not read due timers");
                RETRY_AFTER
            }
        };
        drop(strong);
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            () = &mut notified => {}
        }
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
