//! The command line: clap definitions, turning arguments into validated plans, and
//! printing results. No logic lives here; each verb's work is in its library module.
//!
//! Exit codes: 0 success, 1 a verification or data error, 2 a usage error. A closed
//! stdout (`seedpool ... | head`) counts as success.

mod demo;
mod detect;
mod extract;
mod ingest;
mod key;
mod merge;
mod models;
mod output;
mod publish;
mod query;
mod swarm;
mod tags;
mod verify;

use std::ffi::OsString;
use std::io::Write;

use clap::{Parser, Subcommand};

pub use output::Output;

#[derive(Parser, Debug)]
#[command(
    name = "seedpool",
    version,
    about = "Publish datasets as torrents of content-addressed shards, and sync them incrementally",
    long_about = "seedpool packs dataset items into reproducible, content-addressed tar shards with a \
SQLite index, a BitTorrent v1 .torrent (BEP 47 padded, so a shard has the same pieces in every \
release) and a signed JSON manifest that names its parent release. A new release reuses every \
unchanged shard, so downloaders fetch only what is new.\n\nStart with `seedpool demo`."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    Demo(demo::DemoArgs),
    Ingest(ingest::IngestArgs),
    Detect(detect::DetectArgs),
    Publish(publish::PublishArgs),
    Verify(verify::VerifyArgs),
    Seed(swarm::SeedArgs),
    Sync(swarm::SyncArgs),
    Merge(merge::MergeArgs),
    Query(query::QueryArgs),
    Extract(extract::ExtractArgs),
    Export(extract::ExportArgs),
    #[command(subcommand)]
    Tags(tags::TagsCommand),
    #[command(subcommand)]
    Key(key::KeyCommand),
    #[command(subcommand)]
    Models(models::ModelsCommand),
}

/// How a command failed, which decides the exit code.
#[derive(Debug)]
pub enum Failure {
    /// Bad arguments or setup: exit 2.
    Usage(anyhow::Error),
    /// Bad data or failed verification: exit 1.
    Data(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Data(e.into())
    }
}

pub type CommandResult = Result<(), Failure>;

/// Runs seedpool with `args` (the first is the program name) and returns the exit code.
pub fn run<I, T>(args: I, out: &mut Output) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let code = e.exit_code();
            let text = if out.color() {
                e.render().ansi().to_string()
            } else {
                e.render().to_string()
            };
            if e.use_stderr() {
                let _ = write!(out.err, "{text}");
            } else {
                let _ = write!(out.out, "{text}");
            }
            return code;
        }
    };
    let result = match cli.command {
        Command::Demo(a) => demo::run(a, out),
        Command::Ingest(a) => ingest::run(a, out),
        Command::Detect(a) => detect::run(a, out),
        Command::Publish(a) => publish::run(a, out),
        Command::Verify(a) => verify::run(a, out),
        Command::Seed(a) => swarm::run_seed(a, out),
        Command::Sync(a) => swarm::run_sync(a, out),
        Command::Merge(a) => merge::run(a, out),
        Command::Query(a) => query::run(a, out),
        Command::Extract(a) => extract::run_extract(a, out),
        Command::Export(a) => extract::run_export(a, out),
        Command::Tags(a) => tags::run(a, out),
        Command::Key(a) => key::run(a, out),
        Command::Models(a) => models::run(a, out),
    };
    match result {
        Ok(()) => 0,
        Err(failure) => {
            let (code, error) = match failure {
                Failure::Usage(e) => (2, e),
                Failure::Data(e) => (1, e),
            };
            if error
                .chain()
                .filter_map(|c| c.downcast_ref::<std::io::Error>())
                .any(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            {
                return 0;
            }
            // Messages quote names from manifests, indexes and peers: escape sequences
            // in them must not reach the terminal.
            let _ = writeln!(
                out.err,
                "error: {}",
                crate::name::shown_lines(&format!("{error:#}"))
            );
            code
        }
    }
}

/// The binary's entry point.
pub fn main() -> ! {
    crate::tune_sqlite();
    let mut out = Output::process();
    let code = run(std::env::args_os(), &mut out);
    let _ = out.out.flush();
    std::process::exit(code)
}

/// seedpool's own limits on what a release may make it read, for the verbs that read
/// releases from elsewhere.
#[derive(clap::Args, Debug, Clone)]
pub struct LimitArgs {
    /// Largest unpacked release index to accept, e.g. `16GiB`. The default is 64 MiB
    /// plus 64 KiB per item of the release: seedpool's ceiling, whatever the manifest
    /// declares, since a signature proves who made an index, not that it is safe to
    /// unpack. Raise it for releases with unusually large records.
    #[arg(long, value_name = "SIZE", value_parser = parse_size, env = "SEEDPOOL_INDEX_LIMIT")]
    pub index_limit: Option<u64>,
}

impl LimitArgs {
    pub fn index_limit(&self) -> crate::index::IndexLimit {
        crate::index::IndexLimit {
            fixed: self.index_limit,
            ..Default::default()
        }
    }
}

/// Parses a size with an optional binary suffix: `262144`, `256K`, `256KiB`, `4MiB`.
fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, suffix) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a size"))?;
    let mult = match suffix.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" | "kb" => 1 << 10,
        "m" | "mib" | "mb" => 1 << 20,
        "g" | "gib" | "gb" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size suffix `{other}` (use KiB, MiB or GiB)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{text}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_definitions_are_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_size("256KiB"), Ok(262144));
        assert_eq!(parse_size("4M"), Ok(4 << 20));
        assert_eq!(parse_size("16384"), Ok(16384));
        assert!(parse_size("4 parsecs").is_err());
    }

    #[test]
    fn usage_errors_exit_2() {
        let mut out = Output::captured();
        assert_eq!(run(["seedpool", "publish"], &mut out), 2);
        assert!(out.stderr().contains("--dataset"), "{}", out.stderr());
        let mut out = Output::captured();
        let code = run(
            [
                "seedpool",
                "publish",
                "x",
                "--dataset",
                "a/b",
                "--version",
                "1",
                "--store",
                "s",
            ],
            &mut out,
        );
        assert_eq!(code, 2);
        assert!(
            out.stderr().contains("dataset name `a/b` contains `/`"),
            "{}",
            out.stderr()
        );
    }
}
