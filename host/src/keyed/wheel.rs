//! The timer loop: a task that sleeps until the earliest timer is due (or a commit schedules
//! an earlier one), hands each due timer to the host, and removes it once the host took it.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::timers::Skip;
use super::{StateStore, StoredTimer};

/// How long a timer the host could not take waits before it is offered again.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Most due timers handled per wake-up; more are taken at once after.
const BATCH: usize = 256;
/// Least time between two looks woken by commits while some handler waits for its rate.
const RESCAN_PAUSE: Duration = Duration::from_millis(100);
/// Longest sleep without a look at the store: a safety net, not the way timers are found.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// How the host fires a due timer: resolves, once the delivery's outcome is known, to whether
/// the host took it.
pub type Fire =
    Arc<dyn Fn(StoredTimer) -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;

/// Starts the timer loop on the current tokio runtime. `fire` gets each due timer and says,
/// once the outcome of its delivery is known, whether the host took it: `true` removes the
/// timer, `false` offers it again after [`RETRY_AFTER`]. A timer is never removed before
/// then, however late a transport learns the outcome. Timers already past due fire at once,
/// at most the store's `timer_fires_per_second` of one handler's a second. The loop ends
/// when the store is dropped.
pub fn spawn_timer_loop(store: Weak<StateStore>, fire: Fire) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(store, fire))
}

/// How many timers each handler fired in the current second: past the host's
/// `timer_fires_per_second`, a handler's timers wait for the next second (late, never
/// lost), so a hundred thousand due timers cannot take the host from the others.
#[derive(Debug, Default)]
struct FireRate {
    /// The second (since the Unix epoch) being counted.
    second: u64,
    fired: HashMap<String, u32>,
}

impl FireRate {
    /// Starts a new count when `now_ms` is in a later second than the one counted.
    fn roll(&mut self, now_ms: u64, skip: &mut Skip) {
        let second = now_ms / 1000;
        if second != self.second {
            self.second = second;
            self.fired.clear();
            skip.handlers.clear();
        }
    }

    /// Counts one firing of `handler`'s, if it has not fired `cap` this second; a handler
    /// reaching the cap is skipped until the next.
    fn admit(&mut self, handler: &str, cap: u32, skip: &mut Skip) -> bool {
        let fired = self.fired.entry(handler.to_owned()).or_default();
        if *fired >= cap {
            skip.handlers.insert(handler.to_owned());
            return false;
        }
        *fired += 1;
        if *fired >= cap {
            skip.handlers.insert(handler.to_owned());
        }
        true
    }

    /// When the next second starts, in milliseconds since the Unix epoch.
    fn next_second_ms(&self) -> u64 {
        (self.second + 1) * 1000
    }
}

async fn run(store: Weak<StateStore>, fire: Fire) {
    // Timers the host refused and when to offer them again; handlers at their rate.
    let mut skip = Skip::default();
    let mut rate = FireRate::default();
    loop {
        let Some(strong) = store.upgrade() else {
            return;
        };
        let changed = strong.shared.timers_changed.clone();
        // Registered before looking, so a commit between the look and the sleep still wakes us.
        let notified = changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let now = strong.limits().clock.now_millis();
        skip.ids.retain(|_, at| *at > now);
        rate.roll(now, &mut skip);
        let cap = strong.limits().timer_fires_per_second.max(1);
        let sleep = match strong.due_except(now, BATCH, &skip) {
            Ok(due) => {
                let full = due.len() >= BATCH;
                let mut taken = Vec::new();
                for timer in due {
                    if !rate.admit(&timer.handler, cap, &mut skip) {
                        continue;
                    }
                    let id = timer.id.clone();
                    // One at a time: an in-process delivery is known at once; a network
                    // transport's batch could be awaited together once one exists.
                    if fire(timer).await {
                        taken.push(id);
                    } else {
                        skip.ids.insert(id, now + RETRY_AFTER.as_millis() as u64);
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
                let waiting = (!skip.handlers.is_empty()).then(|| rate.next_second_ms());
                let next = strong
                    .next_due_except(&skip)
                    .into_iter()
                    .chain(skip.ids.values().copied())
                    .chain(waiting)
                    .min();
                next.map_or(MAX_SLEEP, |at| {
                    Duration::from_millis(at.saturating_sub(strong.limits().clock.now_millis()))
                        .min(MAX_SLEEP)
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
            () = &mut notified => if !skip.handlers.is_empty() {
                // Commits of the timers' own turns wake the loop; while a backlog waits for
                // its rate, each look passes over it, so looks are spaced out.
                tokio::time::sleep(RESCAN_PAUSE).await;
            }
        }
    }
}
