//! `seedpool models`: the cascades seedpool knows by name.

use std::io::Write;
use std::path::PathBuf;

use clap::Subcommand;
use serde_json::json;

use super::{CommandResult, Failure, Output};
use crate::detect::models::{self, ModelError, MODELS};

/// Fetch and list the face cascades seedpool knows by name (`--cascade animeface`).
#[derive(Subcommand, Debug)]
pub enum ModelsCommand {
    /// Download a model from its canonical address into the models folder
    /// ($SEEDPOOL_DATA/models, else $XDG_DATA_HOME/seedpool/models, else
    /// ~/.local/share/seedpool/models), after checking that it loads.
    Fetch {
        /// The model's name (see `seedpool models list`).
        name: String,
        /// Download from this URL instead (a mirror).
        #[arg(long, value_name = "URL")]
        from: Option<String>,
        /// Put it in this folder instead.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// List the models, their canonical addresses and whether they are fetched.
    List {
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: ModelsCommand, out: &mut Output) -> CommandResult {
    match cmd {
        ModelsCommand::Fetch {
            name,
            from,
            dir,
            json,
        } => {
            let dir = dir.unwrap_or_else(models::models_dir);
            let path = models::fetch(&name, from.as_deref(), &dir).map_err(|e| match e {
                ModelError::Unknown(_) => Failure::Usage(e.into()),
                e => Failure::Data(e.into()),
            })?;
            if json {
                out.json(&json!({"name": name, "path": path}))?;
            } else {
                writeln!(out.out, "{name}: {}", path.display())?;
            }
        }
        ModelsCommand::List { json } => {
            let dir = models::models_dir();
            let rows: Vec<_> = MODELS
                .iter()
                .map(|m| {
                    let path = dir.join(m.file);
                    json!({"name": m.name, "about": m.about, "url": m.url,
                           "path": path, "fetched": path.is_file()})
                })
                .collect();
            if json {
                out.json(&rows)?;
            } else {
                for (m, r) in MODELS.iter().zip(&rows) {
                    let state = if r["fetched"] == true {
                        format!("fetched: {}", dir.join(m.file).display())
                    } else {
                        "not fetched".to_string()
                    };
                    writeln!(
                        out.out,
                        "{}  {} ({})\n    {}",
                        m.name, m.about, state, m.url
                    )?;
                }
            }
        }
    }
    Ok(())
}

/// A `--cascade` argument as a path: a file, or a fetched model's name.
pub fn cascade_path(arg: &std::path::Path) -> Result<PathBuf, Failure> {
    models::resolve(arg).map_err(|e| Failure::Usage(e.into()))
}
