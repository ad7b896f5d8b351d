//! Names that reach the filesystem: dataset names, release versions, item keys and
//! member names. Each is a newtype parsed once at the boundary, so the rest of the code
//! cannot mix a key up with a version or build a path from an unchecked string.
//!
//! The one idea: every name here becomes part of a path (a torrent path, a tar member, a
//! file in the store), so none may contain a separator, start with a dot, or hold control
//! characters, and each has a length limit that keeps tar headers in the plain ustar form.

use std::fmt;

/// Longest tar member name that fits the ustar `name` field without a prefix split.
pub const MAX_MEMBER_NAME: usize = 100;
/// Longest dataset name or version.
pub const MAX_LABEL: usize = 64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("{what} `{value}` is empty")]
    Empty { what: &'static str, value: String },
    #[error("{what} `{value}` is longer than {max} bytes")]
    TooLong {
        what: &'static str,
        value: String,
        max: usize,
    },
    #[error("{what} `{value}` contains `{ch}`, which is not allowed ({rule})")]
    BadChar {
        what: &'static str,
        value: String,
        ch: char,
        rule: &'static str,
    },
    #[error("{what} `{value}` must not start with `{ch}`")]
    BadStart {
        what: &'static str,
        value: String,
        ch: char,
    },
    #[error("member name `{0}` has no extension after the key (expected `<key>.<ext>`)")]
    NoExtension(String),
    #[error("member name `{0}` has an empty extension part")]
    EmptyExtensionPart(String),
}

/// Letters, digits, `.`, `_` and `-`: safe in a file name on every system and in a URL.
fn check_label(what: &'static str, value: &str) -> Result<(), NameError> {
    if value.is_empty() {
        return Err(NameError::Empty {
            what,
            value: value.into(),
        });
    }
    if value.len() > MAX_LABEL {
        return Err(NameError::TooLong {
            what,
            value: value.into(),
            max: MAX_LABEL,
        });
    }
    if let Some(ch) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(NameError::BadChar {
            what,
            value: value.into(),
            ch,
            rule: "use letters, digits, `.`, `_` and `-`",
        });
    }
    let first = value.chars().next().unwrap_or('.');
    if first == '.' || first == '-' {
        return Err(NameError::BadStart {
            what,
            value: value.into(),
            ch: first,
        });
    }
    Ok(())
}

macro_rules! label_type {
    ($name:ident, $what:literal) => {
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            pub fn parse(value: &str) -> Result<Self, NameError> {
                check_label($what, value)?;
                Ok(Self(value.to_string()))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }
    };
}

label_type!(DatasetName, "dataset name");
label_type!(Version, "version");

/// The key of an item: the WebDataset base name, the file name up to its first dot.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ItemKey(String);

impl ItemKey {
    pub fn parse(value: &str) -> Result<Self, NameError> {
        const WHAT: &str = "item key";
        if value.is_empty() {
            return Err(NameError::Empty {
                what: WHAT,
                value: value.into(),
            });
        }
        if value.len() > MAX_MEMBER_NAME - 2 {
            return Err(NameError::TooLong {
                what: WHAT,
                value: value.into(),
                max: MAX_MEMBER_NAME - 2,
            });
        }
        if let Some(ch) = value
            .chars()
            .find(|c| matches!(c, '/' | '\\' | '.') || c.is_control())
        {
            return Err(NameError::BadChar {
                what: WHAT,
                value: value.into(),
                ch,
                rule: "a key has no dots, separators or control characters",
            });
        }
        Ok(Self(value.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ItemKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The extension of a member, everything after the key's dot: `jpg`, `thumb.jpg`, `json`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Extension(String);

impl Extension {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Extension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Splits a member file name `<key>.<ext>` into its key and extension, checking both.
pub fn split_member_name(name: &str) -> Result<(ItemKey, Extension), NameError> {
    if name.len() > MAX_MEMBER_NAME {
        return Err(NameError::TooLong {
            what: "member name",
            value: name.into(),
            max: MAX_MEMBER_NAME,
        });
    }
    if name.starts_with('.') {
        return Err(NameError::BadStart {
            what: "member name",
            value: name.into(),
            ch: '.',
        });
    }
    let Some((key, ext)) = name.split_once('.') else {
        return Err(NameError::NoExtension(name.into()));
    };
    let key = ItemKey::parse(key)?;
    if ext.is_empty() {
        return Err(NameError::NoExtension(name.into()));
    }
    if ext.split('.').any(str::is_empty) {
        return Err(NameError::EmptyExtensionPart(name.into()));
    }
    if let Some(ch) = ext
        .chars()
        .find(|c| matches!(c, '/' | '\\') || c.is_control())
    {
        return Err(NameError::BadChar {
            what: "member name",
            value: name.into(),
            ch,
            rule: "no separators or control characters",
        });
    }
    Ok((key, Extension(ext.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names_split_at_first_dot() {
        let (k, e) = split_member_name("danbooru-4213377.thumb.jpg").unwrap();
        assert_eq!(k.as_str(), "danbooru-4213377");
        assert_eq!(e.as_str(), "thumb.jpg");
    }

    #[test]
    fn member_names_without_key_or_extension_are_refused() {
        for bad in [
            ".hidden", "noext", "key.", "a..jpg", "a.b..c", "../x.jpg", "..",
        ] {
            assert!(split_member_name(bad).is_err(), "{bad} accepted");
        }
        let long = format!("{}.jpg", "k".repeat(100));
        assert!(matches!(
            split_member_name(&long),
            Err(NameError::TooLong { .. })
        ));
    }

    #[test]
    fn labels_refuse_separators_and_leading_dots() {
        assert!(DatasetName::parse("BOORU-CHARS").is_ok());
        assert!(Version::parse("2026.11-r1").is_ok());
        for bad in ["", "a/b", "..", ".x", "-x", "a b", "é"] {
            assert!(Version::parse(bad).is_err(), "{bad:?} accepted");
        }
        let msg = DatasetName::parse("a/b").unwrap_err().to_string();
        assert_eq!(
            msg,
            "dataset name `a/b` contains `/`, which is not allowed (use letters, digits, `.`, `_` and `-`)"
        );
    }
}
