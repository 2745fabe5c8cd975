//! What all turns in flight hold at once, host-wide. A turn's state writes, and the signals
//! and timers it holds until it commits, live in host memory outside any instance's memory
//! limit; each turn is bounded on its own, but a handler at concurrency 8 (or 8 agents)
//! could hold eight times that. Every turn charges what it holds to one [`HeldBudget`]
//! (the host setting `turn_write_budget`); a turn that would go past it fails with 507 and
//! keeps nothing, and what it held is given back when it commits or is discarded.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::signal::{Failure, code};

/// The bytes all turns may hold at once.
#[derive(Debug)]
pub struct HeldBudget {
    capacity: u64,
    used: AtomicU64,
}

impl HeldBudget {
    /// A budget of `capacity` bytes.
    pub fn new(capacity: u64) -> Arc<Self> {
        Arc::new(Self {
            capacity,
            used: AtomicU64::new(0),
        })
    }

    /// Bytes held now by all turns.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }
}

/// What one turn has charged to the budget; given back when it drops. A turn outside any
/// budget (an instance's start, `describe`) charges nothing.
#[derive(Debug, Default)]
pub struct Charge {
    budget: Option<Arc<HeldBudget>>,
    bytes: u64,
}

impl Charge {
    /// Nothing charged yet, to `budget`.
    pub fn to(budget: &Arc<HeldBudget>) -> Self {
        Self {
            budget: Some(budget.clone()),
            bytes: 0,
        }
    }

    /// Charges `bytes` more, or refuses them (507) when all turns together would hold more
    /// than the budget.
    pub fn grow(&mut self, bytes: u64) -> Result<(), Failure> {
        let Some(budget) = &self.budget else {
            return Ok(());
        };
        let taken = budget
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes)
                    .filter(|total| *total <= budget.capacity)
            });
        if taken.is_err() {
            return Err(Failure::new(
                code::LIMIT,
                format!(
                    "the host's turns in flight would hold more than {} bytes of uncommitted writes and held signals (the host setting `turn_write_budget`)",
                    budget.capacity
                ),
            )
            .with_help("write less per signal, or retry when the host is less busy"));
        }
        self.bytes += bytes;
        Ok(())
    }

    /// Gives back `bytes` of what was charged (a key written again, or deleted).
    pub fn shrink(&mut self, bytes: u64) {
        let bytes = bytes.min(self.bytes);
        if let Some(budget) = &self.budget {
            budget.used.fetch_sub(bytes, Ordering::AcqRel);
        }
        self.bytes -= bytes;
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.shrink(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves two turns share one budget: the second is refused past it with 507 naming the
    /// setting, and what a turn held comes back when it drops.
    #[test]
    fn turns_share_one_budget_and_give_it_back() {
        let budget = HeldBudget::new(100);
        let mut first = Charge::to(&budget);
        let mut second = Charge::to(&budget);
        first.grow(60).unwrap();
        let refused = second.grow(41).unwrap_err();
        assert_eq!(refused.code, 507);
        assert!(refused.description.contains("turn_write_budget"));
        second.grow(40).unwrap();
        first.shrink(10);
        assert_eq!(budget.used(), 90);
        drop(first);
        assert_eq!(budget.used(), 40);
        drop(second);
        assert_eq!(budget.used(), 0);
        assert!(
            Charge::default().grow(u64::MAX).is_ok(),
            "outside any budget"
        );
    }
}
