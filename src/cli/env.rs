//! Everything a command takes from the world around it: its arguments, working folder,
//! environment variables, clock and output. `Env::process()` is the real process; tests
//! build one with `Env::new` and run the CLI in-process, with their own variables and
//! folder, in parallel threads, without touching the process's environment.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use super::Output;

pub struct Env {
    pub(super) args: Vec<OsString>,
    /// Relative paths in arguments resolve against this folder; `None` is the process's
    /// working folder, where paths are left as the user typed them.
    dir: Option<PathBuf>,
    /// `None` reads the process's environment.
    vars: Option<BTreeMap<OsString, OsString>>,
    clock: Clock,
    /// Whether long-running commands (seed, sync) stop on SIGINT and SIGTERM. A test
    /// process must not take over its runner's signals.
    pub(super) signals: bool,
    pub out: Output,
}

/// Where "now" comes from.
#[derive(Debug, Clone, Copy)]
pub enum Clock {
    System,
    /// Unix seconds, for tests that compare what a command wrote.
    Fixed(u64),
}

impl Env {
    /// The running process: its arguments, folder, variables, clock, stdout and stderr.
    pub fn process() -> Self {
        Self {
            args: std::env::args_os().collect(),
            dir: None,
            vars: None,
            clock: Clock::System,
            signals: true,
            out: Output::process(),
        }
    }

    /// An isolated environment for running the CLI in-process: `args` (the first is the
    /// program name), no environment variables, relative paths under `dir`, output
    /// captured in buffers.
    pub fn new<I, T>(args: I, dir: impl Into<PathBuf>) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        Self {
            args: args.into_iter().map(Into::into).collect(),
            dir: Some(dir.into()),
            vars: Some(BTreeMap::new()),
            clock: Clock::System,
            signals: false,
            out: Output::captured(),
        }
    }

    /// Sets an environment variable of an isolated environment.
    pub fn var_set(mut self, name: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.vars
            .get_or_insert_with(BTreeMap::new)
            .insert(name.into(), value.into());
        self
    }

    pub fn clock_set(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// An environment variable; empty counts as unset, as for `SOURCE_DATE_EPOCH`.
    pub fn var(&self, name: &str) -> Option<OsString> {
        let value = match &self.vars {
            Some(vars) => vars.get(OsStr::new(name)).cloned(),
            None => std::env::var_os(name),
        };
        value.filter(|v| !v.is_empty())
    }

    /// An environment variable as text; one that is not UTF-8 counts as unset.
    pub fn var_str(&self, name: &str) -> Option<String> {
        self.var(name).and_then(|v| v.into_string().ok())
    }

    /// `path` as the command must open it: relative paths resolve against the
    /// environment's folder.
    pub fn path(&self, path: &Path) -> PathBuf {
        match &self.dir {
            Some(dir) => dir.join(path),
            None => path.to_path_buf(),
        }
    }

    /// The clock as a function, for work that reads it later (a server's syncs).
    pub fn clock_fn(&self) -> std::sync::Arc<dyn Fn() -> u64 + Send + Sync> {
        match self.clock {
            Clock::Fixed(t) => std::sync::Arc::new(move || t),
            Clock::System => std::sync::Arc::new(crate::manifest::unix_now),
        }
    }

    /// Unix seconds now.
    pub fn now(&self) -> u64 {
        match self.clock {
            Clock::Fixed(t) => t,
            Clock::System => crate::manifest::unix_now(),
        }
    }

    /// Whether the environment is the process's own (clap may read its variables).
    pub(super) fn is_process(&self) -> bool {
        self.vars.is_none()
    }
}
