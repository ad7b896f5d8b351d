//! Where a command writes: stdout and stderr of the process, or buffers in tests; and
//! progress bars when stderr is a terminal.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::progress::{Progress, Unit};

pub struct Output {
    pub out: Box<dyn Write + Send>,
    pub err: Box<dyn Write + Send>,
    terminal: bool,
    captured: Option<(SharedBuf, SharedBuf)>,
}

#[derive(Clone, Default)]
struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("buffer lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Output {
    pub fn process() -> Self {
        Self {
            out: Box::new(std::io::stdout()),
            err: Box::new(std::io::stderr()),
            terminal: std::io::stderr().is_terminal(),
            captured: None,
        }
    }

    /// Buffers for in-process tests; no terminal, so no bars.
    pub fn captured() -> Self {
        let (o, e) = (SharedBuf::default(), SharedBuf::default());
        Self {
            out: Box::new(o.clone()),
            err: Box::new(e.clone()),
            terminal: false,
            captured: Some((o, e)),
        }
    }

    pub fn stdout(&self) -> String {
        self.captured
            .as_ref()
            .map(|(o, _)| String::from_utf8_lossy(&o.0.lock().expect("lock")).into_owned())
            .unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        self.captured
            .as_ref()
            .map(|(_, e)| String::from_utf8_lossy(&e.0.lock().expect("lock")).into_owned())
            .unwrap_or_default()
    }

    pub fn color(&self) -> bool {
        self.terminal
    }

    /// Progress for a long command: bars on a terminal, nothing otherwise.
    pub fn progress(&self) -> Bars {
        let bar = if self.terminal {
            ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        Bars { bar }
    }

    /// Writes a JSON value as one line on stdout.
    pub fn json(&mut self, value: &impl serde::Serialize) -> std::io::Result<()> {
        let text = serde_json::to_string(value).map_err(std::io::Error::other)?;
        writeln!(self.out, "{text}")
    }
}

pub struct Bars {
    bar: ProgressBar,
}

impl Bars {
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Progress for Bars {
    fn stage(&self, name: &str, total: u64, unit: Unit) {
        let template = match (unit, total) {
            (_, 0) => "{spinner} {msg} {elapsed}",
            (Unit::Bytes, _) => {
                "{msg:24} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}"
            }
            (Unit::Items, _) => "{msg:24} [{bar:30}] {pos}/{len} {per_sec} eta {eta}",
        };
        self.bar.set_style(
            ProgressStyle::with_template(template)
                .expect("valid template")
                .progress_chars("=> "),
        );
        self.bar.set_length(total);
        self.bar.set_position(0);
        self.bar.set_message(name.to_string());
        if total == 0 {
            self.bar
                .enable_steady_tick(std::time::Duration::from_millis(120));
        } else {
            self.bar.disable_steady_tick();
        }
    }

    fn advance(&self, amount: u64) {
        self.bar.inc(amount);
    }

    fn note(&self, message: &str) {
        if !self.bar.is_hidden() {
            self.bar.println(message);
        }
    }
}

pub use crate::progress::human_bytes;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_are_binary_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }
}
