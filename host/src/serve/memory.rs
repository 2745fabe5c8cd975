//! Giving memory back to the system after load. glibc's allocator keeps what a burst freed
//! (a flood of queued signals, large turns that failed) in its arenas, and raises its mmap
//! threshold after freeing a large block, so later large blocks come from the heap too: a
//! daemon stayed at 920 MiB after a 1 GiB mailbox flood had drained. The daemon pins the
//! threshold (blocks of 128 KiB and up are mapped, and unmapped when freed) and trims the
//! arenas every few seconds. Other allocators and platforms need nothing here.

use std::time::Duration;

/// How often freed heap memory is returned to the system.
pub const TRIM_EVERY: Duration = Duration::from_secs(5);

/// Blocks at least this large are mapped on their own, and returned when freed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 128 * 1024;

/// Pins the allocator's mmap threshold; call once, early, before threads allocate much.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; any value is accepted or refused.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, MMAP_THRESHOLD);
    }
}

/// A task returning free heap memory to the system every [`TRIM_EVERY`], stopped when
/// this drops.
pub struct Trimmer(tokio::task::JoinHandle<()>);

impl Trimmer {
    /// Starts the task on the current runtime.
    pub fn start() -> Self {
        Self(tokio::spawn(trim_periodically()))
    }
}

impl Drop for Trimmer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn trim_periodically() {
    let mut every = tokio::time::interval(TRIM_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let _ = tokio::task::spawn_blocking(trim).await;
    }
}

/// Returns free heap memory to the system now.
fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}
