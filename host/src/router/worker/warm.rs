//! A worker's warm instance: started in a slot of the instance pool, and released when it
//! has waited [`HostConfig::instance_idle`](crate::config::HostConfig) for a signal, or when
//! its slot is owed to a handler deployed while the pool was fully in use. So warm instances
//! track traffic, not deployed handlers.

use std::sync::Weak;

use super::Running;
use super::call::{Watch, guarded};
use crate::config::INSTANCE_SLOT_WAIT;
use crate::metrics::Metrics;
use crate::runtime::{Identity, Instance, Outbound, PoolFull, Version};
use crate::signal::{Failure, code};

impl Running {
    /// The next signal from the mailbox, or `None` once it is closed and drained. A warm
    /// instance is dropped while the worker waits, once idle or owed.
    pub(super) async fn next_signal(&mut self) -> Option<super::Queued> {
        let idle = self.worker.runtime.config().instance_idle;
        while let Some(warm) = &self.warm {
            tokio::select! {
                biased;
                received = self.worker.mailbox.recv() => return received.ok(),
                () = tokio::time::sleep(idle) => {
                    tracing::debug!(handler = %self.worker.slot.name, "released an idle instance");
                }
                () = warm.slot().owed() => {
                    tracing::debug!(handler = %self.worker.slot.name, "gave a shared instance slot back");
                }
            }
            self.set_warm(None);
        }
        self.worker.mailbox.recv().await.ok()
    }

    /// Drops the warm instance if its shared slot is owed to a newly deployed handler.
    pub(super) fn give_back_if_owed(&mut self) {
        if self.warm.as_ref().is_some_and(|w| w.slot().should_yield()) {
            self.set_warm(None);
        }
    }

    /// Starts a warm instance of `version` in a pool slot, waiting up to
    /// [`INSTANCE_SLOT_WAIT`] for one, and starting it within the version's deadline unless
    /// `watch` sees the handler deleted; the failure answers the signal that needed it.
    pub(super) async fn start(
        &mut self,
        version: &Version,
        identity: Identity,
        watch: &Watch,
    ) -> Result<(), Failure> {
        let slot = &self.worker.slot;
        let metrics = &self.worker.metrics;
        let labels = Metrics::handler(&slot.name);
        let gauge = metrics.instances.get_or_create(&labels).clone();
        let pool = self.worker.runtime.pool();
        let taken = match pool.acquire(&slot.name, gauge, INSTANCE_SLOT_WAIT).await {
            Ok(taken) => taken,
            Err(full) => {
                metrics.pool_refusals.get_or_create(&labels).inc();
                tracing::debug!(%full, "no instance slot");
                return Err(pool_full(&full));
            }
        };
        let outbound = self.worker.router.clone() as Weak<dyn Outbound>;
        let started = Instance::new(&self.worker.runtime, version, identity, outbound, taken);
        match guarded(started, version.limits.deadline, watch).await {
            Err(cut) => Err(cut.failure(&slot.name)),
            Ok(Ok(instance)) => {
                self.set_warm(Some(instance));
                Ok(())
            }
            Ok(Err(error)) => {
                if self.may_warn() {
                    tracing::error!(handler = %slot.name, error = format!("{error:#}"), "could not start an instance");
                }
                Err(Failure::new(
                    code::OVERLOADED,
                    format!(
                        "handler `{}` could not start an instance: {error:#}",
                        slot.name
                    ),
                ))
            }
        }
    }

    /// Replaces the warm instance; the instances gauge moves with the instance's slot.
    pub(super) fn set_warm(&mut self, instance: Option<Instance>) {
        self.warm = instance;
    }
}

/// The 503 a signal gets when no instance slot came free in time.
fn pool_full(full: &PoolFull) -> Failure {
    Failure::new(code::OVERLOADED, full.to_string()).with_help(full.help())
}
