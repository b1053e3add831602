//! Writing to stdout without panicking when the reader goes away (`ftbudget ... | head`).

use std::io::{self, Write};

/// Write `text` and a final newline to stdout. A closed pipe ends output quietly.
pub fn emit(text: &str) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    match writeln!(out, "{}", text.trim_end()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}
