//! Cascades seedpool knows by name, fetched from their canonical address into its data
//! folder (`seedpool models fetch`), so `--cascade animeface` works without a path.

use std::path::{Path, PathBuf};

use super::cascade::Cascade;

pub struct Model {
    pub name: &'static str,
    pub file: &'static str,
    pub url: &'static str,
    pub about: &'static str,
}

pub const MODELS: &[Model] = &[Model {
    name: "animeface",
    file: "lbpcascade_animeface.xml",
    url: "https://raw.githubusercontent.com/nagadomi/lbpcascade_animeface/master/lbpcascade_animeface.xml",
    about: "nagadomi's LBP cascade for anime faces (MIT licence)",
}];

/// Cascades are small; anything larger is not one.
const MAX_MODEL_BYTES: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("no model named `{0}` (known: {known})", known = MODELS.iter().map(|m| m.name).collect::<Vec<_>>().join(", "))]
    Unknown(String),
    #[error("model `{name}` is not in `{}` yet: run `seedpool models fetch {name}`, or give a path", dir.display())]
    NotFetched { name: String, dir: PathBuf },
    #[error("`{0}`: neither a file nor a model name")]
    Missing(PathBuf),
    #[error(transparent)]
    Http(#[from] crate::http::HttpError),
    #[error("`{url}` is not a usable cascade: {problem}")]
    NotACascade { url: String, problem: String },
    #[error(transparent)]
    File(#[from] crate::files::FileError),
}

/// `$SEEDPOOL_DATA/models`, else `$XDG_DATA_HOME/seedpool/models`, else
/// `~/.local/share/seedpool/models`.
/// `var` returns an environment variable.
pub fn models_dir(var: impl Fn(&str) -> Option<std::ffi::OsString>) -> PathBuf {
    let var = |k: &str| var(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    let base = var("SEEDPOOL_DATA")
        .or_else(|| var("XDG_DATA_HOME").map(|d| d.join("seedpool")))
        .or_else(|| var("HOME").map(|h| h.join(".local/share/seedpool")))
        .unwrap_or_else(|| PathBuf::from(".seedpool-data"));
    base.join("models")
}

fn model(name: &str) -> Option<&'static Model> {
    MODELS.iter().find(|m| m.name == name)
}

/// A `--cascade` argument: an existing file as it is, else a model name resolved in
/// the models folder `dir`.
pub fn resolve(arg: &Path, dir: &Path) -> Result<PathBuf, ModelError> {
    if arg.exists() {
        return Ok(arg.to_path_buf());
    }
    let name = arg.to_string_lossy();
    let Some(m) = model(&name) else {
        return Err(ModelError::Missing(arg.to_path_buf()));
    };
    let path = dir.join(m.file);
    if path.is_file() {
        Ok(path)
    } else {
        Err(ModelError::NotFetched {
            name: m.name.into(),
            dir: dir.to_path_buf(),
        })
    }
}

/// Downloads model `name` (from `from` instead of its canonical address when given),
/// checks that it loads as a cascade, and puts it in `dir` atomically.
pub fn fetch(name: &str, from: Option<&str>, dir: &Path) -> Result<PathBuf, ModelError> {
    let m = model(name).ok_or_else(|| ModelError::Unknown(name.into()))?;
    let url = from.unwrap_or(m.url);
    let bytes = crate::http::get_blocking(url, MAX_MODEL_BYTES)?;
    let text = String::from_utf8(bytes).map_err(|_| ModelError::NotACascade {
        url: url.into(),
        problem: "not text".into(),
    })?;
    Cascade::parse(&text).map_err(|problem| ModelError::NotACascade {
        url: url.into(),
        problem,
    })?;
    std::fs::create_dir_all(dir).map_err(crate::files::file_error("create", dir))?;
    let path = dir.join(m.file);
    crate::files::write_atomically(&path, text.as_bytes())?;
    Ok(path)
}
