//! BOORU-CHARS file names: `<booru> - <id> - <copyright> ~ <characters> (<artist>).<ext>`.
//! The copyright and characters parts hold several names separated by spaces or commas,
//! as the booru writes them (tags use `_` inside a name, so a space separates two).

/// What a file name says about its post.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NameInfo {
    pub booru: Option<String>,
    pub post_id: Option<u64>,
    pub copyrights: Vec<String>,
    pub characters: Vec<String>,
    pub artists: Vec<String>,
}

/// The booru's canonical name (`yande.re`), from how a file name or a dump writes it
/// (`Yande.re`, `yandere`, `konachan.com`).
pub fn canonical_booru(name: &str) -> Option<&'static str> {
    let squash = |s: &str| -> String {
        s.to_ascii_lowercase()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect()
    };
    let wanted = squash(name);
    let wanted = wanted.strip_suffix("com").unwrap_or(&wanted);
    let wanted = wanted.strip_suffix("net").unwrap_or(wanted);
    crate::curate::BOORUS
        .iter()
        .copied()
        .find(|b| squash(b) == wanted || squash(b).starts_with(wanted) && wanted.len() >= 5)
}

/// The booru as it appears in an item key: no dots (`yandere`).
pub fn key_booru(booru: &str) -> String {
    booru.chars().filter(|c| *c != '.').collect()
}

fn split_names(part: &str) -> Vec<String> {
    part.split([' ', ','])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Parses a file stem (the name without its extension); parts it cannot read stay empty.
pub fn parse(stem: &str) -> NameInfo {
    let mut info = NameInfo::default();
    let mut parts = stem.splitn(3, " - ");
    let (Some(booru), Some(id)) = (parts.next(), parts.next()) else {
        return info;
    };
    let Some(booru) = canonical_booru(booru.trim()) else {
        return info;
    };
    let Ok(post_id) = id.trim().parse::<u64>() else {
        return info;
    };
    info.booru = Some(booru.to_string());
    info.post_id = Some(post_id);
    let Some(rest) = parts.next() else {
        return info;
    };
    // The artist is the last parenthesised group; a character name may hold
    // parentheses of its own (`saber_(fate)`), which have no space before them.
    let (body, artist) = match rest.rfind(" (") {
        Some(i) if rest.ends_with(')') => (&rest[..i], Some(&rest[i + 2..rest.len() - 1])),
        _ => (rest, None),
    };
    if let Some(a) = artist {
        info.artists = split_names(a);
    }
    match body.split_once(" ~ ") {
        Some((copyright, characters)) => {
            info.copyrights = split_names(copyright);
            info.characters = split_names(characters);
        }
        None => info.copyrights = split_names(body),
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_booru_of_the_table_is_read_from_names_and_keys_and_ranked() {
        for (rank, &booru) in crate::curate::BOORUS.iter().enumerate() {
            assert_eq!(canonical_booru(booru), Some(booru));
            assert_eq!(canonical_booru(&key_booru(booru)), Some(booru));
            assert_eq!(canonical_booru(&booru.to_ascii_uppercase()), Some(booru));
            assert_eq!(crate::curate::source_rank(Some(booru)), rank);
            let n = parse(&format!("{booru} - 7 - x ~ y (z)"));
            assert_eq!(n.booru.as_deref(), Some(booru), "{booru}");
        }
    }

    #[test]
    fn reads_the_booru_chars_convention() {
        let n =
            parse("danbooru - 4242 - fate_(series) ~ saber_(fate) rin_tohsaka (takeuchi_takashi)");
        assert_eq!(n.booru.as_deref(), Some("danbooru"));
        assert_eq!(n.post_id, Some(4242));
        assert_eq!(n.copyrights, ["fate_(series)"]);
        assert_eq!(n.characters, ["saber_(fate)", "rin_tohsaka"]);
        assert_eq!(n.artists, ["takeuchi_takashi"]);
        let n = parse("Yande.re - 7 - touhou, vocaloid ~ hakurei_reimu,hatsune_miku");
        assert_eq!(n.booru.as_deref(), Some("yande.re"));
        assert_eq!(n.copyrights, ["touhou", "vocaloid"]);
        assert_eq!(n.characters, ["hakurei_reimu", "hatsune_miku"]);
        assert!(n.artists.is_empty());
    }

    #[test]
    fn other_names_say_nothing() {
        assert_eq!(parse("IMG_2041"), NameInfo::default());
        assert_eq!(parse("nobooru - 12 - x"), NameInfo::default());
        assert_eq!(parse("danbooru - twelve - x").post_id, None);
        assert_eq!(canonical_booru("konachan.com"), Some("konachan"));
        assert_eq!(canonical_booru("yandere"), Some("yande.re"));
        assert_eq!(key_booru("yande.re"), "yandere");
    }
}
