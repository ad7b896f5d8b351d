//! `seedpool key`: make and show publisher keys.

use std::io::Write;
use std::path::PathBuf;

use clap::Subcommand;

use super::{CommandResult, Env, Failure};
use crate::signing::{default_key_path, KeyError, PublisherKey};

/// Manage the ed25519 key that signs release manifests.
#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Generate a new publisher key and print its public half.
    Generate {
        /// Where to write the key [default: $XDG_CONFIG_HOME/seedpool/publisher.key].
        #[arg(long, env = "SEEDPOOL_KEY")]
        out: Option<PathBuf>,
        /// Replace an existing key file (its key is lost).
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
    /// Print the public key of a key file.
    Show {
        #[arg(long, env = "SEEDPOOL_KEY")]
        key: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: KeyCommand, env: &mut Env) -> CommandResult {
    let default_key_path = || default_key_path(|k| env.var(k));
    let (path, key, json) = match cmd {
        KeyCommand::Generate {
            out: path,
            force,
            json,
        } => {
            let path = path.unwrap_or_else(default_key_path);
            let key = PublisherKey::generate()?;
            key.save(&path, force).map_err(|e| match e {
                KeyError::Exists { .. } => Failure::Usage(e.into()),
                e => Failure::Data(e.into()),
            })?;
            (path, key, json)
        }
        KeyCommand::Show { key, json } => {
            let path = key.unwrap_or_else(default_key_path);
            let key = PublisherKey::load(&path).map_err(|e| match e {
                KeyError::NoKey { .. } => Failure::Usage(e.into()),
                e => Failure::Data(e.into()),
            })?;
            (path, key, json)
        }
    };
    let out = &mut env.out;
    if json {
        out.json(&serde_json::json!({"path": path, "public_key": key.public_hex()}))?;
    } else {
        writeln!(
            out.out,
            "public key {}\nkey file   {}",
            key.public_hex(),
            path.display()
        )?;
    }
    Ok(())
}
