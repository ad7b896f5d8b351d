//! A view of a pool's live items as a person picks it: tags, booru, rating, ranges of
//! year, faces, quality and score, a sort and a page.
//!
//! `serve` keeps a filter in the URL, so a view can be bookmarked; this module parses
//! that query string into typed, bounded fields (anything else is refused, naming the
//! field) and writes it back in one canonical order. `browse` turns a filter into SQL:
//! every value the user typed reaches SQLite as a quoted literal (`sql_text`) or a
//! number Rust parsed, never as SQL text.

use serde::Serialize;

/// Most tags one filter may name.
pub const MAX_TAGS: usize = 12;
/// Most characters of any one value.
pub const MAX_VALUE: usize = 200;
/// Most items one page may show.
pub const MAX_PER_PAGE: u32 = 200;
/// Pages past this one are refused (OFFSET reads every row it skips).
pub const MAX_PAGE: u32 = 10_000;
pub const DEFAULT_PER_PAGE: u32 = 60;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FilterError {
    #[error("unknown filter field `{}`; the gallery understands {}", crate::name::shown(.0), FIELDS.join(", "))]
    Unknown(String),
    #[error("filter field `{field}` is `{}`: {why}", crate::name::shown(.value))]
    Invalid {
        field: &'static str,
        value: String,
        why: String,
    },
    #[error("filter field `{field}` is longer than {MAX_VALUE} characters")]
    TooLong { field: &'static str },
    #[error("the filter names {0} tags; at most {MAX_TAGS} are allowed")]
    TooManyTags(usize),
    #[error("filter field `{0}` is given twice")]
    Twice(&'static str),
}

/// One tag of the filter: items must carry it, or (written `-tag`) must not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TagTerm {
    pub name: String,
    pub exclude: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sort {
    #[default]
    Score,
    Favs,
    Quality,
    Date,
    Key,
}

impl Sort {
    pub const ALL: [Sort; 5] = [
        Sort::Score,
        Sort::Favs,
        Sort::Quality,
        Sort::Date,
        Sort::Key,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Sort::Score => "score",
            Sort::Favs => "favs",
            Sort::Quality => "quality",
            Sort::Date => "date",
            Sort::Key => "key",
        }
    }

    /// The ORDER BY over `live l`: best first, items without the value last, the key
    /// breaking ties so that pages never overlap.
    pub fn order_sql(self) -> &'static str {
        match self {
            Sort::Score => "l.score IS NULL, l.score DESC, l.key",
            Sort::Favs => "l.favs IS NULL, l.favs DESC, l.key",
            Sort::Quality => "l.quality IS NULL, l.quality DESC, l.key",
            Sort::Date => "l.posted IS NULL, l.posted DESC, l.key",
            Sort::Key => "l.key",
        }
    }
}

/// Which items by where their shard is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Presence {
    #[default]
    Any,
    /// Items whose shard the pool holds.
    Present,
    /// Items the pool knows from an index only (a selective sync left their shard out).
    Missing,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Filter {
    pub dataset: Option<String>,
    pub tags: Vec<TagTerm>,
    pub booru: Option<String>,
    pub rating: Option<String>,
    pub year_min: Option<i64>,
    pub year_max: Option<i64>,
    pub volume: Option<String>,
    pub composition: Option<String>,
    pub faces_min: Option<i64>,
    pub faces_max: Option<i64>,
    pub quality_min: Option<f64>,
    pub quality_max: Option<f64>,
    pub score_min: Option<i64>,
    pub shards: Presence,
    pub sort: Sort,
    pub page: u32,
    pub per_page: u32,
}

/// The fields a query string may hold, in the order `to_query` writes them.
pub const FIELDS: &[&str] = &[
    "dataset",
    "tags",
    "booru",
    "rating",
    "year_min",
    "year_max",
    "volume",
    "composition",
    "faces_min",
    "faces_max",
    "quality_min",
    "quality_max",
    "score_min",
    "shards",
    "sort",
    "page",
    "per_page",
];

impl Filter {
    pub fn new() -> Self {
        Self {
            page: 1,
            per_page: DEFAULT_PER_PAGE,
            ..Self::default()
        }
    }

    /// Parses a URL query string (`tags=a+-b&year_min=2020&sort=favs`). Empty values
    /// count as absent, as an HTML form sends its blank fields; names in `ignore` (the
    /// access token) are skipped.
    pub fn from_query(query: &str, ignore: &[&str]) -> Result<Self, FilterError> {
        let mut f = Self::new();
        let mut seen = std::collections::HashSet::new();
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            if ignore.contains(&key.as_ref()) {
                continue;
            }
            let Some(&field) = FIELDS.iter().find(|f| **f == key) else {
                return Err(FilterError::Unknown(key.chars().take(MAX_VALUE).collect()));
            };
            if !seen.insert(field) {
                return Err(FilterError::Twice(field));
            }
            let value = value.trim();
            if value.chars().count() > MAX_VALUE * if field == "tags" { 4 } else { 1 } {
                return Err(FilterError::TooLong { field });
            }
            if value.is_empty() {
                continue;
            }
            f.set(field, value)?;
        }
        if let (Some(a), Some(b)) = (f.year_min, f.year_max) {
            if a > b {
                return Err(invalid("year_max", &b.to_string(), "below year_min"));
            }
        }
        Ok(f)
    }

    fn set(&mut self, field: &'static str, value: &str) -> Result<(), FilterError> {
        let text = || Some(value.to_string());
        match field {
            "dataset" => self.dataset = text(),
            "tags" => self.tags = parse_tags(value)?,
            "booru" => self.booru = text(),
            "rating" => self.rating = text(),
            "volume" => self.volume = text(),
            "composition" => self.composition = text(),
            "year_min" => self.year_min = Some(number(field, value)?),
            "year_max" => self.year_max = Some(number(field, value)?),
            "faces_min" => self.faces_min = Some(number(field, value)?),
            "faces_max" => self.faces_max = Some(number(field, value)?),
            "score_min" => self.score_min = Some(number(field, value)?),
            "quality_min" => self.quality_min = Some(fraction(field, value)?),
            "quality_max" => self.quality_max = Some(fraction(field, value)?),
            "shards" => {
                self.shards = match value {
                    "any" => Presence::Any,
                    "present" => Presence::Present,
                    "missing" => Presence::Missing,
                    _ => return Err(invalid(field, value, "not one of any, present, missing")),
                }
            }
            "sort" => {
                self.sort = Sort::ALL
                    .into_iter()
                    .find(|s| s.name() == value)
                    .ok_or_else(|| {
                        invalid(field, value, "not one of score, favs, quality, date, key")
                    })?
            }
            "page" => self.page = bounded(field, value, 1, MAX_PAGE)?,
            "per_page" => self.per_page = bounded(field, value, 1, MAX_PER_PAGE)?,
            _ => return Err(FilterError::Unknown(field.to_string())),
        }
        Ok(())
    }

    /// The query string of this filter, fields in `FIELDS` order, defaults left out:
    /// one view has one URL.
    pub fn to_query(&self) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                q.append_pair(k, &v);
            }
        };
        let s = |v: &Option<String>| v.clone();
        let n = |v: Option<i64>| v.map(|v| v.to_string());
        let x = |v: Option<f64>| v.map(|v| v.to_string());
        put("dataset", s(&self.dataset));
        put("tags", (!self.tags.is_empty()).then(|| self.tags_text()));
        put("booru", s(&self.booru));
        put("rating", s(&self.rating));
        put("year_min", n(self.year_min));
        put("year_max", n(self.year_max));
        put("volume", s(&self.volume));
        put("composition", s(&self.composition));
        put("faces_min", n(self.faces_min));
        put("faces_max", n(self.faces_max));
        put("quality_min", x(self.quality_min));
        put("quality_max", x(self.quality_max));
        put("score_min", n(self.score_min));
        let shards = match self.shards {
            Presence::Any => None,
            Presence::Present => Some("present".to_string()),
            Presence::Missing => Some("missing".to_string()),
        };
        put("shards", shards);
        put(
            "sort",
            (self.sort != Sort::default()).then(|| self.sort.name().to_string()),
        );
        put("page", (self.page > 1).then(|| self.page.to_string()));
        put(
            "per_page",
            (self.per_page != DEFAULT_PER_PAGE).then(|| self.per_page.to_string()),
        );
        q.finish()
    }

    /// The tags as a person types them: space-separated, `-` before an excluded one.
    pub fn tags_text(&self) -> String {
        self.tags
            .iter()
            .map(|t| format!("{}{}", if t.exclude { "-" } else { "" }, t.name))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// This filter with one more tag (a facet's click), back on the first page.
    pub fn with_tag(&self, name: &str) -> Self {
        let mut f = self.clone();
        let name = crate::name::normalize_tag(name);
        if !f.tags.iter().any(|t| t.name == name) && f.tags.len() < MAX_TAGS {
            f.tags.push(TagTerm {
                name,
                exclude: false,
            });
        }
        f.page = 1;
        f
    }

    pub fn with_page(&self, page: u32) -> Self {
        Self {
            page: page.clamp(1, MAX_PAGE),
            ..self.clone()
        }
    }

    /// Whether only the dataset narrows the view (its counts are in the count tables).
    pub fn is_whole(&self) -> bool {
        let mut bare = Self::new();
        bare.dataset = self.dataset.clone();
        bare.sort = self.sort;
        bare.page = self.page;
        bare.per_page = self.per_page;
        *self == bare
    }
}

fn invalid(field: &'static str, value: &str, why: &str) -> FilterError {
    FilterError::Invalid {
        field,
        value: value.to_string(),
        why: why.to_string(),
    }
}

fn number(field: &'static str, value: &str) -> Result<i64, FilterError> {
    value
        .parse::<i64>()
        .map_err(|_| invalid(field, value, "not a whole number"))
}

fn bounded(field: &'static str, value: &str, lo: u32, hi: u32) -> Result<u32, FilterError> {
    match value.parse::<u32>() {
        Ok(n) if (lo..=hi).contains(&n) => Ok(n),
        _ => Err(invalid(
            field,
            value,
            &format!("not a whole number from {lo} to {hi}"),
        )),
    }
}

fn fraction(field: &'static str, value: &str) -> Result<f64, FilterError> {
    match value.parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(x),
        _ => Err(invalid(field, value, "not a number")),
    }
}

fn parse_tags(value: &str) -> Result<Vec<TagTerm>, FilterError> {
    let mut tags: Vec<TagTerm> = Vec::new();
    for word in value.split_whitespace() {
        let (exclude, name) = match word.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, word),
        };
        let name = crate::name::normalize_tag(name);
        if name.is_empty() || name.chars().any(char::is_control) {
            return Err(invalid("tags", word, "not a tag name"));
        }
        if name.chars().count() > MAX_VALUE {
            return Err(FilterError::TooLong { field: "tags" });
        }
        if !tags.iter().any(|t| t.name == name) {
            tags.push(TagTerm { name, exclude });
        }
    }
    if tags.len() > MAX_TAGS {
        return Err(FilterError::TooManyTags(tags.len()));
    }
    Ok(tags)
}

/// `text` as an SQL string literal.
pub fn sql_text(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_string_round_trips_in_one_canonical_order() {
        let f = Filter::from_query(
            "sort=favs&tags=Hakurei_Reimu+-solo&year_min=2020&year_max=2024&quality_min=0.5&page=3&booru=danbooru&shards=missing",
            &[],
        )
        .unwrap();
        assert_eq!(f.tags.len(), 2);
        assert_eq!(f.tags[0].name, "hakurei_reimu");
        assert!(f.tags[1].exclude);
        assert_eq!(f.sort, Sort::Favs);
        assert_eq!(f.page, 3);
        assert_eq!(
            f.to_query(),
            "tags=hakurei_reimu+-solo&booru=danbooru&year_min=2020&year_max=2024&quality_min=0.5&shards=missing&sort=favs&page=3"
        );
        assert_eq!(Filter::from_query(&f.to_query(), &[]).unwrap(), f);
        assert_eq!(Filter::new().to_query(), "");
    }

    #[test]
    fn blank_form_fields_are_absent_and_the_token_is_skipped() {
        let f = Filter::from_query("tags=&booru=&year_min=&token=abc", &["token"]).unwrap();
        assert_eq!(f, Filter::new());
        assert!(f.is_whole());
    }

    #[test]
    fn bad_fields_are_refused_by_name() {
        let bad = |q: &str| Filter::from_query(q, &[]).unwrap_err().to_string();
        assert!(bad("colour=red").contains("unknown filter field `colour`"));
        assert!(bad("per_page=500").contains("`per_page` is `500`"));
        assert!(bad("page=0").contains("from 1 to 10000"));
        assert!(bad("year_min=soon").contains("not a whole number"));
        assert!(bad("quality_min=NaN").contains("not a number"));
        assert!(bad("sort=random").contains("not one of score"));
        assert!(bad("year_min=2024&year_max=2020").contains("below year_min"));
        assert!(bad("booru=a&booru=b").contains("given twice"));
        let many: Vec<String> = (0..13).map(|i| format!("t{i}")).collect();
        assert!(bad(&format!("tags={}", many.join("+"))).contains("13 tags"));
        assert!(bad(&format!("booru={}", "x".repeat(201))).contains("longer than 200"));
    }

    #[test]
    fn a_facet_adds_its_tag_once_and_goes_back_to_page_one() {
        let f = Filter::from_query("tags=a&page=4", &[]).unwrap();
        let g = f.with_tag("Blue Eyes");
        assert_eq!(g.to_query(), "tags=a+blue_eyes");
        assert_eq!(g.with_tag("blue_eyes"), g);
        assert!(!g.is_whole());
    }

    #[test]
    fn text_becomes_a_quoted_literal() {
        assert_eq!(sql_text("it's"), "'it''s'");
        assert_eq!(
            sql_text("'); DROP TABLE items; --"),
            "'''); DROP TABLE items; --'"
        );
    }
}
