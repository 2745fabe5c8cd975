//! Telling a peer that reads slowly from one that stopped reading: a write to it is stalled
//! when no byte of it moves for a while (the gateway's `--gateway-write-stall`). A byte
//! moves when the socket takes it from the host (the accept loop's [`super::Watched`]
//! counts those) or, on Linux, when the kernel's queue of bytes the peer has not
//! acknowledged shrinks: a slow reader draining a few KiB at a time moves bytes long before
//! the socket has room for the host's next write. Every request carries its connection's
//! [`WriteProgress`] as an extension, for a client it may upgrade to.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use tokio::time::Instant;

/// Shortest and longest wait between two looks at a blocked write's progress.
const MIN_LOOK: Duration = Duration::from_millis(10);
const MAX_LOOK: Duration = Duration::from_millis(250);

/// How far the writes to one connection have got; shared between the socket and the
/// connection that writes to it.
#[derive(Clone, Debug)]
pub struct WriteProgress {
    written: Arc<AtomicU64>,
    /// The socket's descriptor, to ask the kernel what it still holds; read only while the
    /// connection that owns the socket writes to it, so it is open.
    #[cfg(target_os = "linux")]
    fd: std::os::fd::RawFd,
}

/// What a look at a connection's writes found.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Mark {
    written: u64,
    /// Bytes the kernel holds that the client has not acknowledged, if known.
    unacknowledged: Option<u64>,
}

impl Mark {
    /// Whether some byte moved between `earlier` and this look.
    fn moved_since(&self, earlier: &Mark) -> bool {
        self.written != earlier.written
            || matches!((self.unacknowledged, earlier.unacknowledged), (Some(now), Some(then)) if now < then)
    }
}

impl WriteProgress {
    /// The progress of writes to `stream`, counted in `written`.
    pub(super) fn of(stream: &tokio::net::TcpStream, written: Arc<AtomicU64>) -> Self {
        #[cfg(not(target_os = "linux"))]
        let _ = stream;
        Self {
            written,
            #[cfg(target_os = "linux")]
            fd: std::os::fd::AsRawFd::as_raw_fd(stream),
        }
    }
}

impl WriteProgress {
    fn mark(&self) -> Mark {
        Mark {
            written: self.written.load(Ordering::Relaxed),
            unacknowledged: self.unacknowledged(),
        }
    }

    /// Bytes in the socket's send queue: not yet sent, or sent and not acknowledged.
    #[cfg(target_os = "linux")]
    fn unacknowledged(&self) -> Option<u64> {
        let mut queued: libc::c_int = 0;
        // SAFETY: TIOCOUTQ writes one int through the pointer, which is valid; see `fd`.
        let rc = unsafe { libc::ioctl(self.fd, libc::TIOCOUTQ, &mut queued) };
        (rc == 0).then(|| u64::try_from(queued).unwrap_or(0))
    }

    #[cfg(not(target_os = "linux"))]
    fn unacknowledged(&self) -> Option<u64> {
        None
    }

    /// Drives `write` to its end, or gives up (`None`) once no byte has moved for `stall`.
    /// A write that finishes at once (the socket had room) costs no look and no timer.
    pub async fn within<T>(&self, stall: Duration, write: impl Future<Output = T>) -> Option<T> {
        tokio::pin!(write);
        let first = std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await;
        if let Poll::Ready(done) = first {
            return Some(done);
        }
        let look = (stall / 8).clamp(MIN_LOOK, MAX_LOOK);
        let mut seen = self.mark();
        let mut moved_at = Instant::now();
        loop {
            tokio::select! {
                biased;
                done = &mut write => return Some(done),
                () = tokio::time::sleep(look) => {
                    let now = self.mark();
                    if now.moved_since(&seen) {
                        moved_at = Instant::now();
                    } else if moved_at.elapsed() >= stall {
                        return None;
                    }
                    seen = now;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A pair of connected sockets, the first watched.
    async fn pair() -> (super::super::Watched, WriteProgress, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        let watched = super::super::Watched::new(accepted.unwrap().0, super::super::Tracker::new());
        let progress = watched.progress();
        (watched, progress, client.unwrap())
    }

    /// A write the peer never reads stalls once the socket's buffers are full; one the peer
    /// keeps reading, however slowly, does not.
    #[tokio::test]
    async fn a_write_stalls_only_when_no_byte_moves() {
        let stall = Duration::from_millis(300);
        let (mut watched, progress, never_reads) = pair().await;
        let flood = vec![0u8; 64 << 20];
        let stalled = progress.within(stall, watched.write_all(&flood)).await;
        assert!(stalled.is_none(), "64 MiB fit in a socket nobody reads");
        drop(never_reads);

        let (mut watched, progress, mut slow) = pair().await;
        let reader = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut buffer = vec![0u8; 32 << 10];
            let mut total = 0;
            while total < 8 << 20 {
                let n = slow.read(&mut buffer).await.unwrap();
                assert!(n > 0);
                total += n;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        let sent = progress
            .within(stall, watched.write_all(&vec![0u8; 8 << 20]))
            .await;
        assert!(matches!(sent, Some(Ok(()))), "a slow reader is not stalled");
        reader.await.unwrap();
    }
}
