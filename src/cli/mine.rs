//! `seedpool mine`: analyses over a pool's metadata (`crate::mine`).

use std::io::Write;
use std::path::PathBuf;

use anyhow::anyhow;
use clap::{Args, Subcommand};

use super::{CommandResult, Env, Failure};
use crate::mine::aliases::{self, AliasesPlan};
use crate::mine::clusters::{self, ClustersPlan};
use crate::mine::implications::{self, ImplicationsPlan};
use crate::mine::related::{self, Measure, RelatedPlan, DEFAULT_SAMPLE};
use crate::mine::similar::{self, By, SimilarPlan, DEFAULT_PROBES, DEFAULT_RADIUS};
use crate::mine::suggest::{self, EvaluatePlan, SuggestPlan};
use crate::mine::trends::{self, TrendsPlan};
use crate::mine::MineError;
use crate::pool::Pool;
use crate::query::{self, Format, Table};

/// Mine a pool's metadata: analyses computed from what the pool already holds.
#[derive(Subcommand, Debug)]
pub enum MineCommand {
    /// The tags that co-occur with TAG over the live items, ranked by a measure of
    /// association, as Danbooru's related tags. `count` favours tags on everything;
    /// `jaccard`, `cosine` and `npmi` favour tags that come with TAG and seldom
    /// without it; `overlap` finds tags nested in one another (docs/mining.md).
    Related(RelatedArgs),
    /// The tags whose share of a dataset's live items grew or fell most between two
    /// merged releases (by default the newest and its parent), in percentage points.
    Trends(TrendsArgs),
    /// The live items nearest one item: by perceptual hash (look-alike pictures, in
    /// bits apart) or by tags (rare tags weigh more; 1 - weighted Jaccard).
    Similar(SimilarArgs),
    /// Tag implications to review: pairs where items with TAG almost always have
    /// another, broader tag (a character → its series), with the share of TAG's items
    /// that have it.
    Implications(ImplicationsArgs),
    /// Tag aliases to review: pairs of tags of one category that look like one tag
    /// written two ways (words swapped, a qualifier, punctuation, a letter or two) and
    /// are drawn with the same other tags. Review the CSV (`--format csv`), delete
    /// what is wrong, and write the rest with `seedpool tags alias --from FILE`.
    Aliases(AliasesArgs),
    /// Suggested tags of a category (character, copyright) for the items that have
    /// none, from their nearest items by tags, each with a confidence (the share of
    /// the neighbours' similarity that votes for it). `mine evaluate` says how far to
    /// trust them.
    Suggest(SuggestArgs),
    /// How good `mine suggest` is on this pool: hides the category's tags of items
    /// that have some, suggests them back, and reports precision and recall at several
    /// confidences.
    Evaluate(EvaluateArgs),
    /// Cluster the live items by their tags (k-means over IDF-weighted tag vectors) and
    /// store the clustering in the pool under --name, with each cluster's most
    /// characteristic tags and the items nearest its centre; later merges put the items
    /// they bring into its clusters. With --show, print a stored clustering instead.
    Clusters(ClustersArgs),
}

#[derive(Args, Debug)]
pub struct ClustersArgs {
    /// The pool folder.
    #[arg(long, env = "SEEDPOOL_POOL")]
    pool: PathBuf,
    /// Number of clusters to make.
    #[arg(long, required_unless_present = "show")]
    k: Option<usize>,
    /// Print the stored clustering of this name (no training).
    #[arg(long, value_name = "NAME", conflicts_with_all = ["k", "name"])]
    show: Option<String>,
    /// What items are grouped by: tags (IDF-weighted tag vectors), stats (image
    /// statistics vectors) or embedding (the embedder's vectors, from `ingest
    /// --embedder` or `detect --embedder`).
    #[arg(long, value_enum, default_value_t = crate::mine::clusters::By::Tags)]
    by: crate::mine::clusters::By,
    /// The name it is stored under (a clustering of that name is replaced)
    /// [default: the --by value].
    #[arg(long)]
    name: Option<String>,
    /// The dataset (needed when the pool holds several).
    #[arg(long)]
    dataset: Option<String>,
    /// The most used tags that make the features.
    #[arg(long, default_value_t = crate::mine::clusters::DEFAULT_VOCABULARY)]
    vocabulary: usize,
    /// Most k-means iterations (it stops earlier once under 0.1% of items move).
    #[arg(long, default_value_t = 20)]
    iterations: usize,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct SuggestArgs {
    /// The pool folder.
    #[arg(long, env = "SEEDPOOL_POOL")]
    pool: PathBuf,
    /// The category to suggest.
    #[arg(long, default_value = "character")]
    category: String,
    /// The dataset (needed when the pool holds several).
    #[arg(long)]
    dataset: Option<String>,
    /// Suggest for this item only (tags it has are not suggested again).
    #[arg(long)]
    key: Option<String>,
    /// Most items (the first ones without a tag of the category).
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Nearest items that vote.
    #[arg(long, default_value_t = crate::mine::suggest::DEFAULT_NEIGHBOURS)]
    neighbours: usize,
    /// Least confidence of a suggestion (0 to 1).
    #[arg(long, default_value_t = 0.5)]
    min_confidence: f64,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct EvaluateArgs {
    /// The pool folder.
    #[arg(long, env = "SEEDPOOL_POOL")]
    pool: PathBuf,
    /// The category to hide and suggest back.
    #[arg(long, default_value = "character")]
    category: String,
    /// The dataset (needed when the pool holds several).
    #[arg(long)]
    dataset: Option<String>,
    /// Items whose tags of the category are hidden (picked by a hash of their ids).
    #[arg(long, default_value_t = 500)]
    holdout: usize,
    /// Nearest items that vote.
    #[arg(long, default_value_t = crate::mine::suggest::DEFAULT_NEIGHBOURS)]
    neighbours: usize,
    /// The confidence to score (others are reported beside it).
    #[arg(long, default_value_t = 0.5)]
    min_confidence: f64,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct ImplicationsArgs {
    /// The pool folder.
    #[arg(long, env = "SEEDPOOL_POOL")]
    pool: PathBuf,
    /// Only this dataset.
    #[arg(long)]
    dataset: Option<String>,
    /// Least share of the tag's items that have the implied tag (0 to 1).
    #[arg(long, default_value_t = 0.95)]
    min_confidence: f64,
    /// Least live items with the tag.
    #[arg(long, default_value_t = 20)]
    min_support: u64,
    /// Only tags of this category imply (character, to find each one's series).
    #[arg(long)]
    category: Option<String>,
    /// Only implied tags of this category (copyright).
    #[arg(long)]
    implied_category: Option<String>,
    /// Most pairs shown.
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Read the tags of at most this many live items (picked by a hash of their ids).
    #[arg(long, default_value_t = crate::mine::implications::DEFAULT_SAMPLE, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000_000))]
    sample: usize,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

#[derive(Args, Debug)]
pub struct AliasesArgs {
    /// The pool folder.
    #[arg(long, env = "SEEDPOOL_POOL")]
    pool: PathBuf,
    /// Only this dataset.
    #[arg(long)]
    dataset: Option<String>,
    /// Only tags of this category.
    #[arg(long)]
    category: Option<String>,
    /// Least cosine of the two tags' companions (0 to 1).
    #[arg(long, default_value_t = 0.5)]
    min_similarity: f64,
    /// Least live items of each tag.
    #[arg(long, default_value_t = 3)]
    min_items: u64,
    /// Most pairs shown.
    #[arg(long, default_value_t = 100)]
    limit: usize,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

#[derive(Args, Debug)]
pub struct TrendsArgs {
    /// The pool folder.
    #[arg(long, env = "SEEDPOOL_POOL")]
    pool: PathBuf,
    /// The dataset (needed when the pool holds several).
    #[arg(long)]
    dataset: Option<String>,
    /// The earlier release (default: the later one's parent).
    #[arg(long, value_name = "VERSION")]
    from: Option<String>,
    /// The later release (default: the newest merged).
    #[arg(long, value_name = "VERSION")]
    to: Option<String>,
    /// Only tags of this category (artist, copyright, character, general, meta).
    #[arg(long)]
    category: Option<String>,
    /// Most tags shown in each direction.
    #[arg(long, default_value_t = 15)]
    limit: usize,
    /// Leave out tags on fewer items than this in both releases.
    #[arg(long, default_value_t = 10)]
    min_items: u64,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct SimilarArgs {
    /// The item's key (as `seedpool query` and the web page show it).
    key: String,
    /// The pool folder.
    #[arg(long, env = "SEEDPOOL_POOL")]
    pool: PathBuf,
    /// What makes items similar.
    #[arg(long, value_enum, default_value = "phash")]
    by: By,
    /// The item's dataset, when its key is in several; with --only-dataset, results
    /// from it alone.
    #[arg(long)]
    dataset: Option<String>,
    /// Only items of the item's own dataset.
    #[arg(long)]
    only_dataset: bool,
    /// By pHash: most bits apart (of 64). Duplicate detection at ingest uses 3.
    #[arg(long, default_value_t = DEFAULT_RADIUS, value_parser = clap::value_parser!(u32).range(0..=32))]
    radius: u32,
    /// By stats or embedding: search only the items of this many clusters, those
    /// nearest the item, of the largest clustering of its space (`mine clusters --by
    /// stats|embedding`): an approximate index that merges keep. 0, or no clustering
    /// of more clusters, compares every vector.
    #[arg(long, default_value_t = DEFAULT_PROBES)]
    probes: usize,
    /// Most items shown.
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct RelatedArgs {
    /// The tag, as any booru writes it (`Hatsune Miku` or `hatsune_miku`); the pool's
    /// aliases apply.
    tag: String,
    /// The pool folder.
    #[arg(long, env = "SEEDPOOL_POOL")]
    pool: PathBuf,
    /// How to rank.
    #[arg(long, value_enum, default_value = "jaccard")]
    measure: Measure,
    /// Only related tags of this category (artist, copyright, character, general, meta).
    #[arg(long)]
    category: Option<String>,
    /// Only this dataset (a pool may hold several).
    #[arg(long)]
    dataset: Option<String>,
    /// Only items posted in these years: `2019` or `2015..2020` (inclusive).
    #[arg(long, value_parser = parse_years, value_name = "YEAR[..YEAR]")]
    years: Option<(i64, i64)>,
    /// Most tags shown.
    #[arg(long, default_value_t = 25)]
    limit: usize,
    /// Leave out tags seen with TAG on fewer items than this.
    #[arg(long, default_value_t = 2)]
    min_count: u64,
    /// Read the tags of at most this many of TAG's items (picked by a hash of their
    /// ids); counts are scaled back up. More is slower and closer.
    #[arg(long, default_value_t = DEFAULT_SAMPLE, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=100_000_000))]
    sample: usize,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

fn parse_years(text: &str) -> Result<(i64, i64), String> {
    let bad = || format!("`{text}` is not a year or a range of years like 2015..2020");
    let (a, b) = match text.split_once("..") {
        Some((a, b)) => (a, b),
        None => (text, text),
    };
    let a: i64 = a.trim().parse().map_err(|_| bad())?;
    let b: i64 = b.trim().parse().map_err(|_| bad())?;
    if a > b {
        return Err(format!("`{text}`: the first year is after the last"));
    }
    Ok((a, b))
}

pub fn run(cmd: MineCommand, env: &mut Env) -> CommandResult {
    match cmd {
        MineCommand::Related(args) => run_related(args, env),
        MineCommand::Trends(args) => run_trends(args, env),
        MineCommand::Similar(args) => run_similar(args, env),
        MineCommand::Implications(args) => run_implications(args, env),
        MineCommand::Aliases(args) => run_aliases(args, env),
        MineCommand::Suggest(args) => run_suggest(args, env),
        MineCommand::Evaluate(args) => run_evaluate(args, env),
        MineCommand::Clusters(args) => run_clusters(args, env),
    }
}

/// The pool, read-only; a folder that is not one is the user's mistake.
fn open(env: &Env, pool: &std::path::Path) -> Result<Pool, Failure> {
    let pool_dir = env.path(pool);
    if !pool_dir.join(crate::pool::DATABASE).is_file() {
        return Err(Failure::Usage(anyhow!(
            "`{}` is not a pool (no {})",
            pool_dir.display(),
            crate::pool::DATABASE
        )));
    }
    Pool::open_read_only(&pool_dir).map_err(|e| Failure::Usage(e.into()))
}

fn failure(e: MineError) -> Failure {
    match e.is_usage() {
        true => Failure::Usage(e.into()),
        false => Failure::Data(e.into()),
    }
}

fn run_related(args: RelatedArgs, env: &mut Env) -> CommandResult {
    let pool = open(env, &args.pool)?;
    let plan = RelatedPlan {
        tag: args.tag.clone(),
        category: args.category.clone(),
        dataset: args.dataset.clone(),
        years: args.years,
        measure: args.measure,
        limit: args.limit,
        min_count: args.min_count,
        sample: args.sample,
    };
    let report = related::related(&pool, &plan).map_err(failure)?;
    emit(env, args.json, &report, |report, w| {
        write!(
            w,
            "{}: {} of {} live items",
            report.tag, report.tag_items, report.scope_items
        )?;
        if let Some(n) = report.sampled {
            write!(w, " (tags read from {n} of them)")?;
        }
        writeln!(w)?;
        writeln!(
            w,
            "{:<32} {:<10} {:>9} {:>9} {:>9}",
            "tag",
            "category",
            "both",
            "items",
            clap::ValueEnum::to_possible_value(&args.measure)
                .map_or_else(String::new, |v| v.get_name().to_string())
        )?;
        for r in &report.related {
            writeln!(
                w,
                "{:<32} {:<10} {:>9} {:>9} {:>9.4}",
                r.tag, r.category, r.both, r.items, r.value
            )?;
        }
        Ok(())
    })
}

fn run_trends(args: TrendsArgs, env: &mut Env) -> CommandResult {
    let pool = open(env, &args.pool)?;
    let plan = TrendsPlan {
        dataset: args.dataset,
        from: args.from,
        to: args.to,
        category: args.category,
        limit: args.limit,
        min_items: args.min_items,
    };
    let report = trends::trends(&pool, &plan).map_err(failure)?;
    emit(env, args.json, &report, |report, w| {
        writeln!(
            w,
            "{} {} → {}: {} → {} live items",
            report.dataset, report.from, report.to, report.items_before, report.items_after
        )?;
        for (title, list) in [("grew", &report.grew), ("fell", &report.fell)] {
            writeln!(w, "\n{title}:")?;
            if list.is_empty() {
                writeln!(w, "  (none)")?;
                continue;
            }
            writeln!(
                w,
                "{:<32} {:<10} {:>9} {:>9} {:>8} {:>8} {:>8}",
                "tag", "category", "before", "after", "% before", "% after", "change"
            )?;
            for t in list {
                writeln!(
                    w,
                    "{:<32} {:<10} {:>9} {:>9} {:>8.2} {:>8.2} {:>+8.2}",
                    t.tag, t.category, t.before, t.after, t.share_before, t.share_after, t.change
                )?;
            }
        }
        Ok(())
    })
}

fn run_similar(args: SimilarArgs, env: &mut Env) -> CommandResult {
    let pool = open(env, &args.pool)?;
    let plan = SimilarPlan {
        key: args.key,
        dataset: args.dataset,
        only_dataset: args.only_dataset,
        by: args.by,
        limit: args.limit,
        radius: args.radius,
        probes: args.probes,
    };
    let report = similar::similar(&pool, &plan).map_err(failure)?;
    emit(env, args.json, &report, |report, w| {
        let unit = match report.by {
            By::Phash => "bits apart",
            By::Tags => "1 - weighted Jaccard",
            By::Stats => "Euclidean, statistics",
            By::Embedding => "1 - cosine",
        };
        let through = report.index.as_ref().map_or_else(String::new, |p| {
            format!(
                " (in {} of the {} clusters of clustering `{}`)",
                p.probed, p.clusters, p.clustering
            )
        });
        writeln!(
            w,
            "nearest to {} ({}) by {}: {} found, {} compared{through}",
            report.key,
            report.dataset,
            clap::ValueEnum::to_possible_value(&report.by)
                .map_or_else(String::new, |v| v.get_name().to_string()),
            report.similar.len(),
            report.compared
        )?;
        writeln!(
            w,
            "{:<40} {:<16} {:>10}  ({unit})",
            "key", "dataset", "distance"
        )?;
        for s in &report.similar {
            let d = match report.by {
                By::Phash => format!("{}", s.distance),
                By::Tags | By::Stats | By::Embedding => format!("{:.4}", s.distance),
            };
            writeln!(w, "{:<40} {:<16} {:>10}", s.key, s.dataset, d)?;
        }
        Ok(())
    })
}

/// A report as JSON, or as text by `text`.
fn emit<R: serde::Serialize>(
    env: &mut Env,
    json: bool,
    report: &R,
    text: impl FnOnce(&R, &mut dyn Write) -> std::io::Result<()>,
) -> CommandResult {
    if json {
        env.out.json(report)?;
        return Ok(());
    }
    text(report, &mut env.out.out)?;
    Ok(())
}

/// A report as a table in the chosen format, or whole as JSON.
fn write_table(
    env: &mut Env,
    format: Format,
    report: &impl serde::Serialize,
    columns: &[&str],
    rows: Vec<Vec<serde_json::Value>>,
) -> CommandResult {
    if format == Format::Json {
        env.out.json(report)?;
        return Ok(());
    }
    let table = Table {
        columns: columns.iter().map(|c| c.to_string()).collect(),
        rows,
    };
    query::write(&table, format, &mut env.out.out)?;
    Ok(())
}

fn rounded(v: f64) -> serde_json::Value {
    serde_json::Number::from_f64((v * 1e4).round() / 1e4)
        .map_or(serde_json::Value::Null, serde_json::Value::Number)
}

fn run_implications(args: ImplicationsArgs, env: &mut Env) -> CommandResult {
    let pool = open(env, &args.pool)?;
    let plan = ImplicationsPlan {
        dataset: args.dataset,
        min_confidence: args.min_confidence,
        min_support: args.min_support,
        category: args.category,
        implied_category: args.implied_category,
        limit: args.limit,
        sample: args.sample,
    };
    let report = implications::implications(&pool, &plan).map_err(failure)?;
    let rows = report
        .implications
        .iter()
        .map(|i| {
            vec![
                i.tag.clone().into(),
                i.category.clone().into(),
                i.implies.clone().into(),
                i.implied_category.clone().into(),
                i.items.into(),
                i.implied_items.into(),
                rounded(i.confidence),
            ]
        })
        .collect();
    let columns = [
        "tag",
        "category",
        "implies",
        "implied_category",
        "items",
        "implied_items",
        "confidence",
    ];
    write_table(env, args.format, &report, &columns, rows)
}

fn run_aliases(args: AliasesArgs, env: &mut Env) -> CommandResult {
    let pool = open(env, &args.pool)?;
    if !(0.0..=1.0).contains(&args.min_similarity) {
        return Err(Failure::Usage(anyhow!(
            "--min-similarity {} is not between 0 and 1",
            args.min_similarity
        )));
    }
    let plan = AliasesPlan {
        dataset: args.dataset,
        category: args.category,
        min_similarity: args.min_similarity,
        min_items: args.min_items,
        limit: args.limit,
    };
    let report = aliases::aliases(&pool, &plan).map_err(failure)?;
    let rows = report
        .candidates
        .iter()
        .map(|c| {
            vec![
                c.alias.clone().into(),
                c.name.clone().into(),
                c.category.clone().into(),
                c.alias_items.into(),
                c.name_items.into(),
                serde_json::to_value(c.reason).unwrap_or_default(),
                rounded(c.similarity),
                rounded(c.together),
            ]
        })
        .collect();
    let columns = [
        "alias",
        "name",
        "category",
        "alias_items",
        "name_items",
        "reason",
        "similarity",
        "together",
    ];
    write_table(env, args.format, &report, &columns, rows)
}

fn run_suggest(args: SuggestArgs, env: &mut Env) -> CommandResult {
    let pool = open(env, &args.pool)?;
    let plan = SuggestPlan {
        dataset: args.dataset,
        category: args.category,
        key: args.key,
        limit: args.limit,
        neighbours: args.neighbours,
        min_confidence: args.min_confidence,
    };
    let report = suggest::suggest(&pool, &plan).map_err(failure)?;
    emit(env, args.json, &report, |report, w| {
        writeln!(
            w,
            "{} item(s) of {} without a {} tag; suggested (confidence):",
            report.items.len(),
            report.dataset,
            report.category
        )?;
        for item in &report.items {
            let list: Vec<String> = item
                .suggestions
                .iter()
                .map(|s| format!("{} ({:.2})", s.tag, s.confidence))
                .collect();
            let list = match list.is_empty() {
                true => "(nothing confident enough)".to_string(),
                false => list.join(", "),
            };
            writeln!(w, "{:<40} {list}", item.key)?;
        }
        Ok(())
    })
}

fn run_evaluate(args: EvaluateArgs, env: &mut Env) -> CommandResult {
    let pool = open(env, &args.pool)?;
    let plan = EvaluatePlan {
        dataset: args.dataset,
        category: args.category,
        holdout: args.holdout,
        neighbours: args.neighbours,
        min_confidence: args.min_confidence,
    };
    let report = suggest::evaluate(&pool, &plan).map_err(failure)?;
    emit(env, args.json, &report, |report, w| {
        writeln!(
            w,
            "{} tags of {} items hidden, suggested back from {} neighbours each:",
            report.hidden, report.items, plan.neighbours
        )?;
        writeln!(
            w,
            "{:>14} {:>10} {:>8} {:>10} {:>8}",
            "min confidence", "suggested", "correct", "precision", "recall"
        )?;
        for s in &report.curve {
            let mark = if s.min_confidence == report.score.min_confidence {
                " *"
            } else {
                ""
            };
            writeln!(
                w,
                "{:>14.2} {:>10} {:>8} {:>10.3} {:>8.3}{mark}",
                s.min_confidence, s.suggested, s.correct, s.precision, s.recall
            )?;
        }
        Ok(())
    })
}

fn run_clusters(args: ClustersArgs, env: &mut Env) -> CommandResult {
    let report = match (&args.show, args.k) {
        (Some(name), _) => {
            let pool = open(env, &args.pool)?;
            clusters::show(&pool, args.dataset.as_deref(), name).map_err(failure)?
        }
        (None, k) => {
            drop(open(env, &args.pool)?);
            let (mut pool, _lock) = Pool::open_or_create_locked(&env.path(&args.pool))
                .map_err(|e| Failure::Data(e.into()))?;
            let plan = ClustersPlan {
                dataset: args.dataset.clone(),
                name: args
                    .name
                    .clone()
                    .unwrap_or_else(|| args.by.name().to_string()),
                k: k.unwrap_or_default(),
                vocabulary: args.vocabulary,
                iterations: args.iterations,
                by: args.by,
            };
            clusters::train(&mut pool, &plan).map_err(failure)?
        }
    };
    emit(env, args.json, &report, |report, w| {
        write!(
            w,
            "clustering `{}` of {} by {}: {} clusters, trained on {} items",
            report.name, report.dataset, report.features, report.k, report.trained_items
        )?;
        if let (Some(i), Some(m)) = (report.iterations, report.last_moved) {
            write!(w, " ({i} iterations, {:.2}% moved in the last)", m * 100.0)?;
        }
        writeln!(w)?;
        for c in &report.clusters {
            let tags: Vec<String> = c
                .tags
                .iter()
                .map(|t| format!("{} {:.0}%", t.tag, t.share * 100.0))
                .collect();
            writeln!(
                w,
                "{:>4} {:>9} items  {}",
                c.cluster,
                c.items,
                tags.join(", ")
            )?;
            writeln!(w, "{:>20}  e.g. {}", "", c.medoids.join(", "))?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn years_are_one_or_a_range() {
        assert_eq!(parse_years("2019"), Ok((2019, 2019)));
        assert_eq!(parse_years("2015..2020"), Ok((2015, 2020)));
        assert!(parse_years("2020..2015").unwrap_err().contains("after"));
        assert!(parse_years("soon").is_err());
    }

    #[test]
    fn related_prints_a_table_and_json_and_refuses_an_unknown_tag() {
        let f = crate::testing::Fixture::new();
        let items: Vec<(String, serde_json::Value)> = (0..6u64)
            .map(|i| {
                let general: &[&str] = if i < 3 { &["witch", "broom"] } else { &["cat"] };
                (
                    format!("item-{i}"),
                    crate::testing::record("danbooru", i, &[("general", general)]),
                )
            })
            .collect();
        let items: Vec<(&str, serde_json::Value)> =
            items.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        f.publish("1", None, &items);
        f.merge("1");
        let pool = f.pool.to_str().unwrap().to_string();
        let mut env = Env::new(
            ["seedpool", "mine", "related", "Witch", "--pool", &pool],
            f.dir.path(),
        );
        assert_eq!(super::super::run(&mut env), 0, "{}", env.out.stderr());
        let text = env.out.stdout();
        assert!(text.starts_with("witch: 3 of 6 live items\n"), "{text}");
        assert!(text.lines().nth(2).unwrap().starts_with("broom "), "{text}");

        let mut env = Env::new(
            [
                "seedpool",
                "mine",
                "related",
                "witch",
                "--pool",
                &pool,
                "--json",
                "--measure",
                "npmi",
            ],
            f.dir.path(),
        );
        assert_eq!(super::super::run(&mut env), 0, "{}", env.out.stderr());
        let v: serde_json::Value = serde_json::from_str(&env.out.stdout()).unwrap();
        assert_eq!(v["measure"], "npmi");
        assert_eq!(v["related"][0]["tag"], "broom");
        assert_eq!(v["related"][0]["both"], 3);

        let mut env = Env::new(
            ["seedpool", "mine", "related", "dog", "--pool", &pool],
            f.dir.path(),
        );
        assert_eq!(super::super::run(&mut env), 2);
        assert!(
            env.out.stderr().contains("no tag `dog`"),
            "{}",
            env.out.stderr()
        );
        let empty = f.dir.path().join("empty");
        let mut env = Env::new(
            [
                "seedpool",
                "mine",
                "related",
                "dog",
                "--pool",
                empty.to_str().unwrap(),
            ],
            f.dir.path(),
        );
        assert_eq!(super::super::run(&mut env), 2);
        assert!(
            env.out.stderr().contains("is not a pool"),
            "{}",
            env.out.stderr()
        );
    }
}

#[cfg(test)]
mod more_tests {
    use super::super::{run, Env};
    use crate::testing::{record, Fixture};

    fn pool_of_two_releases() -> Fixture {
        let f = Fixture::new();
        let items = |n: u64, spelled: &str| -> Vec<(String, serde_json::Value)> {
            (0..n)
                .map(|i| {
                    let booru = if i % 2 == 0 { "danbooru" } else { "gelbooru" };
                    let character = if i % 2 == 0 { "hatsune_miku" } else { spelled };
                    let mut r = record(
                        booru,
                        i,
                        &[
                            ("character", &[character]),
                            ("copyright", &["vocaloid"]),
                            (
                                "general",
                                &[
                                    "twintails",
                                    if i < 10 { "solo" } else { "duo" },
                                    if i % 4 == 0 { "headset" } else { "twintails" },
                                ],
                            ),
                        ],
                    );
                    // Spread out, but item-01 is item-00 with 5 bits flipped (a look-alike,
                    // not a duplicate: those are 3 bits apart at most).
                    let spread = |i: u64| (i + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                    let hash = if i == 1 {
                        spread(0) ^ 0b11111
                    } else {
                        spread(i)
                    };
                    r["phash"] = format!("{hash:016x}").into();
                    (format!("item-{i:02}"), r)
                })
                .collect()
        };
        for (version, parent, n) in [("1", None, 12), ("2", Some("1"), 30)] {
            let items = items(n, "Miku Hatsune");
            let items: Vec<(&str, serde_json::Value)> =
                items.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
            f.publish(version, parent, &items);
            f.merge(version);
        }
        f
    }

    fn ok(f: &Fixture, args: &[&str]) -> String {
        let pool = f.pool.to_str().unwrap();
        let mut argv = vec!["seedpool"];
        argv.extend_from_slice(args);
        argv.extend(["--pool", pool]);
        let mut env = Env::new(argv, f.dir.path());
        assert_eq!(run(&mut env), 0, "{args:?}: {}", env.out.stderr());
        env.out.stdout()
    }

    #[test]
    fn trends_similar_implications_and_aliases_from_the_command_line() {
        let f = pool_of_two_releases();
        // Trends: `duo` went from 2 of 12 to 20 of 30 items.
        let text = ok(&f, &["mine", "trends", "--min-items", "1"]);
        assert!(text.starts_with("ds 1 → 2: 12 → 30 live items"), "{text}");
        let v: serde_json::Value =
            serde_json::from_str(&ok(&f, &["mine", "trends", "--min-items", "1", "--json"]))
                .unwrap();
        assert_eq!(v["grew"][0]["tag"], "duo");
        assert_eq!(v["fell"][0]["tag"], "solo");

        // Similar by pHash: item-01 is 5 bits from item-00.
        let v: serde_json::Value = serde_json::from_str(&ok(
            &f,
            &["mine", "similar", "item-00", "--radius", "6", "--json"],
        ))
        .unwrap();
        assert_eq!(v["similar"][0]["key"], "item-01");
        assert_eq!(v["similar"][0]["distance"], 5.0);
        let text = ok(
            &f,
            &["mine", "similar", "item-00", "--by", "tags", "--limit", "3"],
        );
        assert!(text.contains("by tags"), "{text}");

        // Every headset is Miku's (vocaloid, on every item, implies nothing).
        let text = ok(
            &f,
            &[
                "mine",
                "implications",
                "--implied-category",
                "character",
                "--min-support",
                "5",
                "--format",
                "csv",
            ],
        );
        assert!(
            text.contains("headset,general,hatsune_miku,character,8,15,1"),
            "{text}"
        );

        // The two spellings of Miku are one alias candidate; written, they are one tag.
        let csv = ok(&f, &["mine", "aliases", "--format", "csv"]);
        assert!(
            csv.lines()
                .nth(1)
                .unwrap()
                .starts_with("miku_hatsune,hatsune_miku,character,15,15,order"),
            "{csv}"
        );
        let file = f.dir.path().join("reviewed.csv");
        std::fs::write(&file, &csv).unwrap();
        let text = ok(&f, &["tags", "alias", "--from", file.to_str().unwrap()]);
        assert!(text.starts_with("wrote 1 aliases"), "{text}");
        let v: serde_json::Value = serde_json::from_str(&ok(
            &f,
            &[
                "mine",
                "related",
                "vocaloid",
                "--category",
                "character",
                "--json",
            ],
        ))
        .unwrap();
        assert_eq!(v["related"][0]["tag"], "hatsune_miku");
        assert_eq!(v["related"][0]["both"], 30);
        assert_eq!(v["related"].as_array().unwrap().len(), 1);
        let csv = ok(&f, &["mine", "aliases", "--format", "csv"]);
        assert_eq!(csv.lines().count(), 1, "{csv}");

        // Every item has a character: nothing to suggest, and hiding them is scored.
        let text = ok(&f, &["mine", "suggest"]);
        assert!(
            text.starts_with("0 item(s) of ds without a character tag"),
            "{text}"
        );
        let v: serde_json::Value = serde_json::from_str(&ok(
            &f,
            &[
                "mine",
                "suggest",
                "--key",
                "item-03",
                "--category",
                "copyright",
                "--json",
            ],
        ))
        .unwrap();
        assert_eq!(v["items"][0]["suggestions"], serde_json::json!([]));
        let v: serde_json::Value =
            serde_json::from_str(&ok(&f, &["mine", "evaluate", "--holdout", "10", "--json"]))
                .unwrap();
        assert_eq!(v["items"], 10);
        assert_eq!(v["score"]["precision"], 1.0);

        // Two clusters (solo and duo items), stored, shown again.
        let text = ok(&f, &["mine", "clusters", "--k", "2"]);
        assert!(
            text.starts_with("clustering `tags` of ds by tags: 2 clusters, trained on 30 items"),
            "{text}"
        );
        let v: serde_json::Value =
            serde_json::from_str(&ok(&f, &["mine", "clusters", "--show", "tags", "--json"]))
                .unwrap();
        let sizes: Vec<u64> = v["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["items"].as_u64().unwrap())
            .collect();
        assert_eq!(sizes, [20, 10]);
    }

    #[test]
    fn bad_requests_are_usage_errors_that_write_nothing() {
        let f = pool_of_two_releases();
        let pool = f.pool.to_str().unwrap().to_string();
        for (args, says) in [
            (
                vec!["mine", "trends", "--from", "7"],
                "no merged release `7` (it has 1, 2)",
            ),
            (vec!["mine", "similar", "nope"], "no item `nope`"),
            (
                vec!["mine", "implications", "--min-confidence", "2"],
                "between 0 and 1",
            ),
            (
                vec!["mine", "aliases", "--min-similarity", "1.5"],
                "between 0 and 1",
            ),
            (vec!["tags", "alias", "miku", "Miku"], "one tag already"),
            (
                vec!["mine", "suggest", "--neighbours", "0"],
                "--neighbours 0",
            ),
            (vec!["mine", "evaluate", "--holdout", "0"], "--holdout 0"),
            (vec!["mine", "clusters", "--k", "0"], "--k 0"),
            (
                vec!["mine", "clusters", "--k", "31"],
                "more than the 30 live items",
            ),
            (
                vec!["mine", "clusters", "--show", "nope"],
                "no clustering `nope`",
            ),
            (
                vec!["mine", "suggest", "--category", "charakter"],
                "no live item has a tag of category `charakter`",
            ),
        ] {
            let mut argv = vec!["seedpool"];
            argv.extend(args.iter().copied());
            argv.extend(["--pool", &pool]);
            let mut env = Env::new(argv, f.dir.path());
            assert_eq!(run(&mut env), 2, "{args:?}: {}", env.out.stderr());
            assert!(
                env.out.stderr().contains(says),
                "{args:?}: {}",
                env.out.stderr()
            );
        }
        let bad = f.dir.path().join("bad.csv");
        std::fs::write(&bad, "alias,name\nok_tag,other_tag\n,missing\n").unwrap();
        let mut env = Env::new(
            [
                "seedpool",
                "tags",
                "alias",
                "--from",
                bad.to_str().unwrap(),
                "--pool",
                &pool,
            ],
            f.dir.path(),
        );
        assert_eq!(run(&mut env), 2);
        assert!(
            env.out.stderr().contains("line 3: no alias or no name"),
            "{}",
            env.out.stderr()
        );
        let aliases: i64 = f
            .open_pool()
            .connection()
            .query_row("SELECT count(*) FROM tag_aliases", [], |r| r.get(0))
            .unwrap();
        assert_eq!(aliases, 0);
    }
}
