//! The command line: clap definitions, turning arguments into validated plans, and
//! printing results. No logic lives here; each verb's work is in its library module.
//!
//! Exit codes: 0 success, 1 a verification or data error, 2 a usage error. A closed
//! stdout (`seedpool ... | head`) counts as success.

mod demo;
mod detect;
mod env;
mod extract;
mod follow;
mod ingest;
mod key;
mod merge;
mod mine;
mod models;
mod output;
mod publish;
mod query;
mod serve;
mod swarm;
mod tags;
mod verify;

use std::io::Write;

use clap::{Parser, Subcommand};

pub use env::{Clock, Env};
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
    Follow(follow::FollowArgs),
    #[command(subcommand)]
    Feed(follow::FeedCommand),
    Merge(merge::MergeArgs),
    Query(query::QueryArgs),
    #[command(subcommand)]
    Mine(mine::MineCommand),
    Extract(extract::ExtractArgs),
    Export(extract::ExportArgs),
    Serve(serve::ServeArgs),
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

/// Runs seedpool in `env` and returns the exit code.
pub fn run(env: &mut Env) -> i32 {
    crate::tune_sqlite();
    let parsed = if env.is_process() {
        Cli::try_parse_from(&env.args)
    } else {
        parse_isolated(env)
    };
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) => {
            let out = &mut env.out;
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
        Command::Demo(a) => demo::run(a, env),
        Command::Ingest(a) => ingest::run(a, env),
        Command::Detect(a) => detect::run(a, env),
        Command::Publish(a) => publish::run(a, env),
        Command::Verify(a) => verify::run(a, env),
        Command::Seed(a) => swarm::run_seed(a, env),
        Command::Sync(a) => swarm::run_sync(a, env),
        Command::Follow(a) => follow::run_follow(a, env),
        Command::Feed(a) => follow::run_feed(a, env),
        Command::Merge(a) => merge::run(a, env),
        Command::Query(a) => query::run(a, env),
        Command::Mine(a) => mine::run(a, env),
        Command::Extract(a) => extract::run_extract(a, env),
        Command::Export(a) => extract::run_export(a, env),
        Command::Serve(a) => serve::run(a, env),
        Command::Tags(a) => tags::run(a, env),
        Command::Key(a) => key::run(a, env),
        Command::Models(a) => models::run(a, env),
    };
    let out = &mut env.out;
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

/// Parses the arguments of an isolated environment: clap reads `env = ...` defaults
/// from the process, so each such argument gets its value from `env` instead.
fn parse_isolated(env: &Env) -> Result<Cli, clap::Error> {
    use clap::builder::TypedValueParser;
    use clap::{CommandFactory, FromArgMatches};
    fn from_env(cmd: clap::Command, env: &Env) -> clap::Command {
        cmd.mut_args(|arg| {
            let arg = match arg.get_env().and_then(|n| n.to_str()).map(str::to_owned) {
                Some(name) => match env.var(&name) {
                    // As clap does for a variable that is set: it stands in for the
                    // argument, which then is not required.
                    Some(value) => arg.env(None).default_value(value).required(false),
                    None => arg.env(None),
                },
                None => arg,
            };
            // clap gives every `PathBuf` argument this hint; `--cascade`, a file or a
            // model's name, opts out and is resolved by the command.
            if arg.get_value_hint() == clap::ValueHint::AnyPath {
                let dir = env.path(std::path::Path::new(""));
                arg.value_parser(clap::builder::PathBufValueParser::new().map(move |p| dir.join(p)))
            } else {
                arg
            }
        })
        .mut_subcommands(|sub| from_env(sub, env))
    }
    let matches = from_env(Cli::command(), env).try_get_matches_from(&env.args)?;
    Cli::from_arg_matches(&matches)
}

/// The binary's entry point.
pub fn main() -> ! {
    let mut env = Env::process();
    let code = run(&mut env);
    let _ = env.out.out.flush();
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
    fn a_command_takes_its_folder_variables_and_clock_from_its_env() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("rel")).unwrap();
        std::fs::write(t.path().join("rel/item-1.txt"), "payload").unwrap();
        crate::signing::PublisherKey::from_seed([3; 32])
            .save(&t.path().join("home/.config/seedpool/publisher.key"), false)
            .unwrap();
        let publish = |version: &'static str| {
            let args = [
                "seedpool",
                "publish",
                "rel",
                "--dataset",
                "ds",
                "--version",
                version,
            ];
            Env::new(args, t.path())
        };
        let with_store = |env: Env| {
            env.var_set("SEEDPOOL_STORE", "store")
                .var_set("HOME", t.path().join("home"))
        };
        let mut env = with_store(publish("1")).clock_set(Clock::Fixed(1_700_000_000));
        assert_eq!(run(&mut env), 0, "{}", env.out.stderr());
        let manifest = t.path().join("store/ds-1.manifest.json");
        let (m, _) = crate::manifest::Manifest::load(&manifest).unwrap();
        assert_eq!(m.created, "2023-11-14T22:13:20Z");
        assert_eq!(
            m.public_key(),
            Some(
                crate::signing::PublisherKey::from_seed([3; 32])
                    .public_hex()
                    .as_str()
            )
        );

        // SOURCE_DATE_EPOCH comes before the clock, and a variable of the process is
        // not seen: the store is required again without SEEDPOOL_STORE.
        let mut env = with_store(publish("2")).var_set("SOURCE_DATE_EPOCH", "86400");
        assert_eq!(run(&mut env), 0, "{}", env.out.stderr());
        let (m, _) =
            crate::manifest::Manifest::load(&t.path().join("store/ds-2.manifest.json")).unwrap();
        assert_eq!(m.created, "1970-01-02T00:00:00Z");
        let mut env = publish("2");
        assert_eq!(run(&mut env), 2);
        assert!(env.out.stderr().contains("--store"), "{}", env.out.stderr());
    }

    #[test]
    fn usage_errors_exit_2() {
        let mut env = Env::new(["seedpool", "publish"], ".");
        assert_eq!(run(&mut env), 2);
        assert!(
            env.out.stderr().contains("--dataset"),
            "{}",
            env.out.stderr()
        );
        let mut env = Env::new(
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
            ".",
        );
        assert_eq!(run(&mut env), 2);
        assert!(
            env.out.stderr().contains("dataset name `a/b` contains `/`"),
            "{}",
            env.out.stderr()
        );
    }
}
