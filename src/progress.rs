//! Progress reporting for long work. The library reports stages and amounts through the
//! `Progress` trait; the CLI draws bars on a terminal and stays quiet when piped.

/// Receives progress from long operations. Implementations must be cheap to call often.
pub trait Progress: Sync {
    /// A new stage starts; `total` is in `unit`s (bytes or items), 0 when unknown.
    fn stage(&self, name: &str, total: u64, unit: Unit);
    fn advance(&self, amount: u64);
    /// A line for the log (shown above the bars, or on stderr when piped).
    fn note(&self, _message: &str) {}
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Bytes,
    Items,
}

/// Reports nothing: for tests and for library users that do not care.
pub struct Silent;

impl Progress for Silent {
    fn stage(&self, _: &str, _: u64, _: Unit) {}
    fn advance(&self, _: u64) {}
}

/// A byte count in binary units, as the CLI prints sizes.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
