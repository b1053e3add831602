//! Every byte the CLI writes to stdout goes through here, so that a reader going away
//! (`ftbudget presets | head -1`) ends the command quietly: exit 0, nothing on stderr, no panic.
//! Rust ignores SIGPIPE, so a closed pipe shows up as a `BrokenPipe` write error; it is turned
//! into [`Stop::ClosedPipe`] and the command ends as if it had finished.

use std::io::{self, BufWriter, StdoutLock, Write};

/// Why writing stopped before the end.
pub enum Stop {
    /// The reader went away (`| head`): end quietly.
    ClosedPipe,
    Failed(anyhow::Error),
}

impl From<io::Error> for Stop {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::BrokenPipe {
            Stop::ClosedPipe
        } else {
            Stop::Failed(e.into())
        }
    }
}

impl From<ftbudget_sweep::SweepError> for Stop {
    fn from(e: ftbudget_sweep::SweepError) -> Self {
        Stop::Failed(e.into())
    }
}

/// Buffered stdout for output written in pieces (sweep rows).
pub struct Stdout {
    out: BufWriter<StdoutLock<'static>>,
}

impl Stdout {
    pub fn new() -> Self {
        Stdout {
            out: BufWriter::with_capacity(1 << 20, io::stdout().lock()),
        }
    }

    pub fn write(&mut self, bytes: &[u8]) -> Result<(), Stop> {
        Ok(self.out.write_all(bytes)?)
    }

    /// Flush what is buffered.
    pub fn finish(mut self) -> Result<(), Stop> {
        Ok(self.out.flush()?)
    }
}

/// The command's result once output has stopped: a closed pipe is success.
pub fn ended(result: Result<(), Stop>) -> anyhow::Result<()> {
    match result {
        Ok(()) | Err(Stop::ClosedPipe) => Ok(()),
        Err(Stop::Failed(e)) => Err(e),
    }
}

/// Write `text` and one final newline to stdout.
pub fn emit(text: &str) -> anyhow::Result<()> {
    let mut out = Stdout::new();
    let result = out
        .write(text.trim_end().as_bytes())
        .and_then(|()| out.write(b"\n"));
    ended(result.and_then(|()| out.finish()))
}
