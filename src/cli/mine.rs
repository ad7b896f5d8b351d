//! `seedpool mine`: analyses over a pool's metadata (`crate::mine`).

use std::io::Write;
use std::path::PathBuf;

use anyhow::anyhow;
use clap::{Args, Subcommand};

use super::{CommandResult, Env, Failure};
use crate::mine::related::{self, Measure, MineError, RelatedPlan, DEFAULT_SAMPLE};
use crate::pool::Pool;

/// Mine a pool's metadata: analyses computed from what the pool already holds.
#[derive(Subcommand, Debug)]
pub enum MineCommand {
    /// The tags that co-occur with TAG over the live items, ranked by a measure of
    /// association, as Danbooru's related tags. `count` favours tags on everything;
    /// `jaccard`, `cosine` and `npmi` favour tags that come with TAG and seldom
    /// without it; `overlap` finds tags nested in one another (docs/mining.md).
    Related(RelatedArgs),
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
    /// Read the tags of at most this many of TAG's items (a fixed stride over them);
    /// counts are scaled back up. More is slower and closer.
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
    let MineCommand::Related(args) = cmd;
    let pool_dir = env.path(&args.pool);
    if !pool_dir.join(crate::pool::DATABASE).is_file() {
        return Err(Failure::Usage(anyhow!(
            "`{}` is not a pool (no {})",
            pool_dir.display(),
            crate::pool::DATABASE
        )));
    }
    let pool = Pool::open_read_only(&pool_dir).map_err(|e| Failure::Usage(e.into()))?;
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
    let report = related::related(&pool, &plan).map_err(|e| match e {
        MineError::UnknownTag { .. } | MineError::UnknownDataset(_) | MineError::Empty { .. } => {
            Failure::Usage(e.into())
        }
        e => Failure::Data(e.into()),
    })?;
    let out = &mut env.out;
    if args.json {
        out.json(&report)?;
        return Ok(());
    }
    let w = &mut out.out;
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
