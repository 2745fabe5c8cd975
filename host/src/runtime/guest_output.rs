//! A guest's standard output and error, written to the host's log a line at a time: a
//! Python traceback or a Rust panic message is where an operator looks, tagged with the
//! handler and version, never more than [`MAX_LOG_LINE`] bytes a line, and through the same
//! per-handler rate limit as the guest's `log` calls, so a guest printing in a loop cannot
//! flood the log.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

use super::host_api::MAX_LOG_LINE;
use crate::log_limit::LogLimiter;

/// Which of the guest's streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// Logged at info.
    Stdout,
    /// Logged at warn.
    Stderr,
}

/// The stdout or stderr a guest's WASI context hands out.
#[derive(Clone)]
pub struct GuestOutput {
    handler: Arc<str>,
    version: u64,
    limit: Arc<LogLimiter>,
    stream: Stream,
}

impl GuestOutput {
    /// The `stream` of `handler` at `version`, rate-limited by `limit`.
    pub fn new(handler: Arc<str>, version: u64, limit: Arc<LogLimiter>, stream: Stream) -> Self {
        Self {
            handler,
            version,
            limit,
            stream,
        }
    }

    /// Writes one complete line to the log, if the rate limit lets it through.
    fn emit(&self, line: &[u8]) {
        if line.is_empty() || !self.limit.admit(&self.handler) {
            return;
        }
        let text = String::from_utf8_lossy(line);
        let (handler, version) = (&*self.handler, self.version);
        match self.stream {
            Stream::Stdout => tracing::info!(handler, version, stream = "stdout", "{text}"),
            Stream::Stderr => tracing::warn!(handler, version, stream = "stderr", "{text}"),
        }
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(Writer {
            output: self.clone(),
            line: Vec::new(),
        })
    }
}

/// Adds `bytes` to the `line` being written, handing every line they complete to `emit`;
/// a line is cut at [`MAX_LOG_LINE`] bytes.
fn split_lines(line: &mut Vec<u8>, bytes: &[u8], mut emit: impl FnMut(&[u8])) {
    for piece in bytes.split_inclusive(|&b| b == b'\n') {
        let (text, complete) = match piece.strip_suffix(b"\n") {
            Some(text) => (text, true),
            None => (piece, false),
        };
        let room = MAX_LOG_LINE.saturating_sub(line.len());
        line.extend_from_slice(&text[..text.len().min(room)]);
        if complete {
            emit(line);
            line.clear();
        }
    }
}

/// The writer WASI drives for one guest stream; a last line without a newline is written
/// when the stream closes.
struct Writer {
    output: GuestOutput,
    line: Vec<u8>,
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.output.emit(&self.line);
    }
}

impl AsyncWrite for Writer {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let output = &this.output;
        split_lines(&mut this.line, buf, |line| output.emit(line));
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        this.output.emit(&std::mem::take(&mut this.line));
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(writes: &[&[u8]]) -> Vec<String> {
        let mut out = Vec::new();
        let mut line = Vec::new();
        for w in writes {
            split_lines(&mut line, w, |l| {
                out.push(String::from_utf8_lossy(l).into())
            });
        }
        out.push(String::from_utf8_lossy(&line).into());
        out
    }

    /// Proves writes are split into lines however they arrive (the unfinished last line is
    /// kept for later) and a long line is cut at the cap.
    #[test]
    fn writes_become_bounded_lines() {
        assert_eq!(collect(&[b"a\nb", b"c\n\nd"]), ["a", "bc", "", "d"]);
        let long = vec![b'x'; MAX_LOG_LINE * 3];
        let lines = collect(&[&long, b"\nafter\n"]);
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].len(), MAX_LOG_LINE);
        assert_eq!(lines[1], "after");
        assert_eq!(lines[2], "", "nothing left over");
    }
}
