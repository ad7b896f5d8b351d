//! Tag aliases to review (docs/mining.md): pairs of tags of one category that look like
//! one tag written two ways (words swapped, a qualifier added, punctuation or a letter
//! or two apart), seldom on the same item, and drawn with the same other tags. The
//! names propose; the items decide: a pair is kept only when the two tags' companions
//! agree (cosine of their co-occurrence profiles). `seedpool tags alias` writes the
//! reviewed ones into the pool.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::{datasets, MineError, Vocabulary};
use crate::pool::Pool;

#[derive(Clone, Debug)]
pub struct AliasesPlan {
    pub dataset: Option<String>,
    pub category: Option<String>,
    /// Least cosine of the two tags' companions.
    pub min_similarity: f64,
    /// Least live items of the rarer tag.
    pub min_items: u64,
    pub limit: usize,
}

/// Items read per tag for its profile of companions.
const PROFILE_ITEMS: usize = 2_000;
/// Largest group of names sharing one key that is paired up (a longer one is a
/// pattern such as `character_1` to `character_999`, not spellings).
const GROUP_LIMIT: usize = 40;
/// Most share of the rarer tag's items that also have the other: spellings of one tag
/// are seldom both on an item.
const MAX_TOGETHER: f64 = 0.2;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Reason {
    /// The same words in another order (`hatsune_miku`, `miku_hatsune`).
    Order,
    /// One has a qualifier the other lacks (`saber_(fate)`, `saber`).
    Qualifier,
    /// The same letters and digits (`re:zero`, `re_zero`).
    Punctuation,
    /// One or two letters apart (`kirisame_marisa`, `kirisame_marissa`).
    Spelling,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AliasCandidate {
    /// The rarer spelling, proposed as the alias.
    pub alias: String,
    pub name: String,
    pub category: String,
    pub alias_items: u64,
    pub name_items: u64,
    pub reason: Reason,
    /// Cosine of the two tags' companions (1: drawn with the same tags).
    pub similarity: f64,
    /// Share of the alias's items (read) that also have the name.
    pub together: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct AliasesReport {
    /// Pairs the names proposed, and those the items kept.
    pub proposed: u64,
    pub candidates: Vec<AliasCandidate>,
}

/// The keys under which two spellings of one tag meet, with their reason.
fn keys(name: &str) -> Vec<(Reason, String)> {
    let mut out = Vec::new();
    let words: Vec<&str> = name.split('_').filter(|w| !w.is_empty()).collect();
    if words.len() > 1 {
        let mut sorted = words.clone();
        sorted.sort_unstable();
        out.push((Reason::Order, sorted.join("_")));
    }
    if let Some(open) = name.rfind("_(") {
        if name.ends_with(')') && open > 0 {
            out.push((Reason::Qualifier, name[..open].to_string()));
        }
    } else {
        out.push((Reason::Qualifier, name.to_string()));
    }
    let plain: String = name.chars().filter(|c| c.is_alphanumeric()).collect();
    if !plain.is_empty() {
        out.push((Reason::Punctuation, plain.clone()));
    }
    // One letter deleted: two names sharing such a key are at most two edits apart.
    let chars: Vec<char> = plain.chars().collect();
    if chars.len() >= 6 {
        out.push((Reason::Spelling, plain.clone()));
        for i in 0..chars.len() {
            let mut k: String = chars[..i].iter().collect();
            k.extend(&chars[i + 1..]);
            out.push((Reason::Spelling, k));
        }
    }
    out
}

/// Names that differ only in their digits are numbered things (`episode_1`,
/// `episode_2`), not spellings.
fn only_digits_differ(a: &str, b: &str) -> bool {
    let letters = |s: &str| {
        s.chars()
            .filter(|c| !c.is_ascii_digit())
            .collect::<String>()
    };
    a != b && letters(a) == letters(b)
}

pub fn aliases(pool: &Pool, plan: &AliasesPlan) -> Result<AliasesReport, MineError> {
    let conn = pool.connection();
    let _snapshot = super::Snapshot::begin(conn)?;
    let ds = datasets(conn, plan.dataset.as_deref())?;
    let vocab = Vocabulary::read(conn, &ds)?;
    if vocab.keys.is_empty() {
        return Err(MineError::Empty {
            scope: String::new(),
        });
    }
    // Proposals by name: per category and key, every pair of the group.
    let mut groups: HashMap<(&str, Reason, String), Vec<u32>> = HashMap::new();
    for (v, (name, category)) in vocab.keys.iter().enumerate() {
        if plan.category.as_ref().is_some_and(|c| c != category) || vocab.items[v] < plan.min_items
        {
            continue;
        }
        for (reason, key) in keys(name) {
            groups
                .entry((category.as_str(), reason, key))
                .or_default()
                .push(v as u32);
        }
    }
    let mut proposed: HashMap<(u32, u32), Reason> = HashMap::new();
    for ((_, reason, _), members) in &groups {
        if members.len() < 2 || members.len() > GROUP_LIMIT {
            continue;
        }
        for (i, &a) in members.iter().enumerate() {
            for &b in &members[i + 1..] {
                let (na, nb) = (&vocab.keys[a as usize].0, &vocab.keys[b as usize].0);
                if na == nb || only_digits_differ(na, nb) {
                    continue;
                }
                let pair = (a.min(b), a.max(b));
                // The most telling reason when several keys meet.
                let r = proposed.entry(pair).or_insert(*reason);
                *r = (*r).min(*reason);
            }
        }
    }

    // The items decide: each proposed tag's companions, from up to PROFILE_ITEMS items.
    let mut tag_ids: HashMap<u32, Vec<i64>> = HashMap::new();
    for (&t, &v) in &vocab.of_tag {
        tag_ids.entry(v).or_default().push(t);
    }
    let wanted: HashSet<u32> = proposed.keys().flat_map(|&(a, b)| [a, b]).collect();
    let mut profiles: HashMap<u32, (HashMap<u32, u32>, u32)> = HashMap::new();
    {
        let mut st = conn.prepare_cached(
            "SELECT it.item FROM item_tags it JOIN items i ON i.id = it.item
             WHERE it.tag = ?1 AND i.removed_in IS NULL AND i.duplicate_of IS NULL LIMIT ?2",
        )?;
        let mut sorted: Vec<u32> = wanted.into_iter().collect();
        sorted.sort_unstable();
        for v in sorted {
            let mut items: Vec<i64> = Vec::new();
            for t in tag_ids.get(&v).into_iter().flatten() {
                for item in
                    st.query_map(rusqlite::params![t, PROFILE_ITEMS as i64 * 4], |r| r.get(0))?
                {
                    items.push(item?);
                }
            }
            items.sort_unstable();
            items.dedup();
            let items = super::related::sample(items, PROFILE_ITEMS);
            let mut counts: HashMap<u32, u32> = HashMap::new();
            vocab.each_item(conn, &items, |_, tags| {
                for &t in tags {
                    *counts.entry(t).or_default() += 1;
                }
            })?;
            profiles.insert(v, (counts, items.len() as u32));
        }
    }
    let mut out = Vec::new();
    for (&(a, b), &reason) in &proposed {
        let (pa, ra) = &profiles[&a];
        let (pb, rb) = &profiles[&b];
        if *ra == 0 || *rb == 0 {
            continue;
        }
        // The rarer one is the alias (of two as common, the later name).
        let rank = |v: u32| {
            (
                vocab.items[v as usize],
                std::cmp::Reverse(&vocab.keys[v as usize].0),
            )
        };
        let (alias, name, p_alias, read_alias) = if rank(a) < rank(b) {
            (a, b, pa, *ra)
        } else {
            (b, a, pb, *rb)
        };
        let together = f64::from(p_alias.get(&name).copied().unwrap_or(0)) / f64::from(read_alias);
        if together > MAX_TOGETHER {
            continue;
        }
        let similarity = cosine(pa, *ra, pb, *rb, [a, b]);
        if similarity < plan.min_similarity {
            continue;
        }
        let (ka, kn) = (&vocab.keys[alias as usize], &vocab.keys[name as usize]);
        out.push(AliasCandidate {
            alias: ka.0.clone(),
            name: kn.0.clone(),
            category: ka.1.clone(),
            alias_items: vocab.items[alias as usize],
            name_items: vocab.items[name as usize],
            reason,
            similarity,
            together,
        });
    }
    out.sort_by(|x, y| {
        y.similarity
            .total_cmp(&x.similarity)
            .then_with(|| x.alias.cmp(&y.alias))
            .then_with(|| x.name.cmp(&y.name))
    });
    let proposed = proposed.len() as u64;
    out.truncate(plan.limit);
    Ok(AliasesReport {
        proposed,
        candidates: out,
    })
}

/// Cosine of two profiles as shares of their items, leaving out the pair's own tags.
fn cosine(a: &HashMap<u32, u32>, na: u32, b: &HashMap<u32, u32>, nb: u32, own: [u32; 2]) -> f64 {
    let share = |m: &HashMap<u32, u32>, n: u32| -> HashMap<u32, f64> {
        m.iter()
            .filter(|(t, _)| !own.contains(t))
            .map(|(&t, &c)| (t, f64::from(c) / f64::from(n)))
            .collect()
    };
    let (sa, sb) = (share(a, na), share(b, nb));
    let dot: f64 = sa
        .iter()
        .filter_map(|(t, x)| sb.get(t).map(|y| x * y))
        .sum();
    let norm = |s: &HashMap<u32, f64>| s.values().map(|x| x * x).sum::<f64>().sqrt();
    let d = norm(&sa) * norm(&sb);
    if d == 0.0 {
        0.0
    } else {
        dot / d
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{record, Fixture};

    #[test]
    fn names_meet_under_the_keys_of_their_spellings() {
        let has = |a: &str, b: &str, reason: Reason| {
            let ka: HashSet<_> = keys(a).into_iter().collect();
            keys(b)
                .into_iter()
                .any(|k| k.0 == reason && ka.contains(&k))
        };
        assert!(has("hatsune_miku", "miku_hatsune", Reason::Order));
        assert!(has("saber_(fate)", "saber", Reason::Qualifier));
        assert!(has("re:zero", "re_zero", Reason::Punctuation));
        assert!(has("kirisame_marisa", "kirisame_marissa", Reason::Spelling));
        assert!(!has("hatsune_miku", "kagamine_rin", Reason::Spelling));
        assert!(only_digits_differ("episode_1", "episode_12"));
        assert!(!only_digits_differ("miku", "miku"));
    }

    #[test]
    fn spellings_drawn_alike_are_proposed_and_look_alike_names_drawn_apart_are_not() {
        let f = Fixture::new();
        // One booru writes `hatsune_miku`, another `miku_hatsune`, both with `vocaloid`
        // and `twintails`; `kirisame_marisa` and `kirisame_marissa` likewise with
        // `touhou`. `saber` and `saber_(fate)` look alike but are drawn with other tags.
        let mut items: Vec<(String, serde_json::Value)> = Vec::new();
        let mut add = |booru: &str, character: &str, general: &[&str]| {
            let i = items.len() as u64;
            items.push((
                format!("item-{i:03}"),
                record(
                    booru,
                    i,
                    &[("character", &[character]), ("general", general)],
                ),
            ));
        };
        for i in 0..12 {
            add("danbooru", "hatsune_miku", &["vocaloid", "twintails"]);
            if i < 8 {
                add("gelbooru", "Miku Hatsune", &["vocaloid", "twintails"]);
            }
            add("danbooru", "kirisame_marisa", &["touhou", "hat"]);
            if i < 6 {
                add("gelbooru", "kirisame_marissa", &["touhou", "hat"]);
            }
            add("danbooru", "saber", &["sword", "armor"]);
            add("gelbooru", "saber_(fate)", &["swimsuit", "beach"]);
        }
        let items: Vec<(&str, serde_json::Value)> =
            items.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        f.publish("1", None, &items);
        f.merge("1");
        let pool = f.open_pool();
        let plan = AliasesPlan {
            dataset: None,
            category: None,
            min_similarity: 0.5,
            min_items: 3,
            limit: 10,
        };
        let r = aliases(&pool, &plan).unwrap();
        let found: Vec<(&str, &str, Reason)> = r
            .candidates
            .iter()
            .map(|c| (c.alias.as_str(), c.name.as_str(), c.reason))
            .collect();
        assert_eq!(
            found,
            [
                ("kirisame_marissa", "kirisame_marisa", Reason::Spelling),
                ("miku_hatsune", "hatsune_miku", Reason::Order)
            ]
        );
        assert!(r.proposed >= 3, "{r:?}");
        assert!((r.candidates[0].similarity - 1.0).abs() < 1e-9);
        assert_eq!(r.candidates[1].alias_items, 8);
    }
}
