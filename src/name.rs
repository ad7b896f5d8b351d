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

/// Text from elsewhere made safe to print on a terminal: control characters (escape
/// sequences start with one) and the invisible characters that reorder or hide text
/// are written as `\u{..}` escapes; other text is borrowed as it is.
pub fn shown(text: &str) -> std::borrow::Cow<'_, str> {
    fn hidden(c: char) -> bool {
        c.is_control()
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
    }
    if !text.chars().any(hidden) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if hidden(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Like [`shown`], but keeps line breaks: for whole messages made of several lines.
pub fn shown_lines(text: &str) -> String {
    text.split('\n')
        .map(|line| shown(line).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("{what} `{}` is empty", shown(.value))]
    Empty { what: &'static str, value: String },
    #[error("{what} `{}` is longer than {max} bytes", shown(.value))]
    TooLong {
        what: &'static str,
        value: String,
        max: usize,
    },
    #[error("{what} `{}` contains `{}`, which is not allowed ({rule})", shown(.value), .ch.escape_debug())]
    BadChar {
        what: &'static str,
        value: String,
        ch: char,
        rule: &'static str,
    },
    #[error("{what} `{}` must not start with `{ch}`", shown(.value))]
    BadStart {
        what: &'static str,
        value: String,
        ch: char,
    },
    #[error("member name `{}` has no extension after the key (expected `<key>.<ext>`)", shown(.0))]
    NoExtension(String),
    #[error("member name `{}` has an empty extension part", shown(.0))]
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

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = NameError;
            fn try_from(value: String) -> Result<Self, NameError> {
                check_label($what, &value)?;
                Ok(Self(value))
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<$name> for String {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }

        impl rusqlite::ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                self.0.to_sql()
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let value = String::deserialize(d)?;
                Self::try_from(value).map_err(serde::de::Error::custom)
            }
        }
    };
}

label_type!(DatasetName, "dataset name");
label_type!(Version, "version");
label_type!(Volume, "volume");

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

/// The normalised form of a tag name (the same as `pool::CANONICAL_TAG_SQL` without aliases).
pub fn normalize_tag(name: &str) -> String {
    name.trim().replace(' ', "_").to_lowercase()
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
    fn text_from_elsewhere_is_shown_without_terminal_controls() {
        assert_eq!(shown("plain ключ"), "plain ключ");
        assert_eq!(shown("a\u{1b}[31mred"), "a\\u{1b}[31mred");
        assert_eq!(shown("x\u{202e}y\u{9b}"), "x\\u{202e}y\\u{9b}");
        assert_eq!(shown_lines("a\nb\u{7}"), "a\nb\\u{7}");
        let err = ItemKey::parse("k\u{1b}]0;pwned\u{7}")
            .unwrap_err()
            .to_string();
        assert!(!err.contains('\u{1b}') && err.contains("\\u{1b}"), "{err}");
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
