//! Fixtures for unit tests: real releases published into a real store and merged into a
//! real pool, from records a test writes out. Test-only, so it sits above every layer.

use std::path::PathBuf;

use serde_json::Value;

use crate::name::{DatasetName, Version};
use crate::pool::merge::{self, MergePlan, MergeReport};
use crate::publish::{self, PublishPlan, PublishReport};

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub store: PathBuf,
    pub pool: PathBuf,
    key: PathBuf,
    /// Releases published so far: each is created a day after the one before.
    published: std::cell::Cell<u64>,
}

/// A record's `stats` for a picture of mean colour (r, g, b), the rest fixed.
pub fn stats(r: f64, g: f64, b: f64) -> Value {
    serde_json::json!({
        "trim": [0.0, 0.0, 1.0, 1.0], "entropy": 6.0, "mean": (r + g + b) / 3.0,
        "std": 40.0, "skewness": 0.1, "colors": 5000, "chroma_mean": 30.0,
        "chroma_max": 200.0, "rgb_mean": [r, g, b], "edges": 20.0,
    })
}

/// A record of the kind ingest writes, for item `post` of `booru`.
pub fn record(booru: &str, post: u64, tags: &[(&str, &[&str])]) -> Value {
    let mut by_category = serde_json::Map::new();
    for (category, names) in tags {
        by_category.insert((*category).into(), serde_json::json!(names));
    }
    serde_json::json!({"booru": booru, "post_id": post, "tags": by_category})
}

impl Fixture {
    /// Trains clustering `name` of the pool's one dataset by `by` into `k` clusters and
    /// stores it, as `mine clusters` does.
    pub fn cluster(&self, name: &str, by: crate::mine::clusters::By, k: usize) {
        let mut pool = crate::pool::Pool::open(&self.pool).expect("the pool opens");
        let plan = crate::mine::clusters::ClustersPlan {
            dataset: None,
            name: name.into(),
            k,
            vocabulary: 100,
            iterations: 10,
            by,
        };
        crate::mine::clusters::train(&mut pool, &plan).expect("the clustering trains");
    }

    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let key = dir.path().join("publisher.key");
        crate::signing::PublisherKey::from_seed([7; 32])
            .save(&key, false)
            .expect("the key is written");
        Self {
            store: dir.path().join("store"),
            pool: dir.path().join("pool"),
            key,
            dir,
            published: std::cell::Cell::new(0),
        }
    }

    /// Publishes release `version` of dataset `ds` (child of `parent` when given): one
    /// item per `(key, record)`, created a day after the release before,, each with a small payload derived from its key, two
    /// items a shard.
    pub fn publish(
        &self,
        version: &str,
        parent: Option<&str>,
        items: &[(&str, Value)],
    ) -> PublishReport {
        self.try_publish(version, parent, items)
            .expect("the release publishes")
    }

    pub fn try_publish(
        &self,
        version: &str,
        parent: Option<&str>,
        items: &[(&str, Value)],
    ) -> Result<PublishReport, publish::PublishError> {
        self.try_publish_with(version, parent, items, &[])
    }

    /// Like `try_publish`, with more member files: (`<key>.<ext>`, bytes).
    pub fn try_publish_with(
        &self,
        version: &str,
        parent: Option<&str>,
        items: &[(&str, Value)],
        files: &[(&str, &[u8])],
    ) -> Result<PublishReport, publish::PublishError> {
        let rel = self.dir.path().join(format!("release-{version}"));
        std::fs::create_dir_all(&rel).expect("a release folder");
        for (name, bytes) in files {
            std::fs::write(rel.join(name), bytes).expect("a member file");
        }
        let n = self.published.replace(self.published.get() + 1);
        for (key, record) in items {
            std::fs::write(rel.join(format!("{key}.bin")), format!("payload of {key}"))
                .expect("a payload");
            std::fs::write(rel.join(format!("{key}.json")), record.to_string()).expect("a record");
        }
        publish::run(
            &PublishPlan {
                release_dir: rel,
                dataset: DatasetName::parse("ds").expect("a dataset name"),
                version: Version::parse(version).expect("a version"),
                store: self.store.clone(),
                parent: parent.map(|p| self.manifest(p)),
                shard_items: 2,
                repack_above: publish::DEFAULT_REPACK_ABOVE,
                trackers: Vec::new(),
                web_seeds: Vec::new(),
                key: self.key.clone(),
                created: 1_767_225_600 + 86_400 * n,
                piece_length: None,
                direct_io: false,
                feed_valid_for: crate::manifest::feed::DEFAULT_VALID_FOR,
                timings: false,
            },
            &crate::progress::Silent,
        )
    }

    /// Publishes and merges release `version` of owned `(key, record)` pairs.
    pub fn release(&self, version: &str, parent: Option<&str>, items: &[(String, Value)]) {
        let items: Vec<(&str, Value)> =
            items.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        self.publish(version, parent, &items);
        self.merge(version);
    }

    pub fn manifest(&self, version: &str) -> PathBuf {
        self.store.join(format!("ds-{version}.manifest.json"))
    }

    /// Merges release `version` of the store into the pool.
    pub fn merge(&self, version: &str) -> MergeReport {
        self.try_merge(version).expect("the release merges")
    }

    pub fn try_merge(&self, version: &str) -> Result<MergeReport, merge::MergeError> {
        let plan = MergePlan {
            tuning: merge::Tuning {
                merged_at: 1_767_225_600,
                ..Default::default()
            },
            ..MergePlan::new(
                self.manifest(version),
                self.pool.clone(),
                self.store.clone(),
            )
        };
        merge::run(&plan, &crate::progress::Silent)
    }

    /// The pool, opened read-only.
    pub fn open_pool(&self) -> crate::pool::Pool {
        crate::pool::Pool::open_read_only(&self.pool).expect("the pool opens")
    }
}

/// Every file under `dir`, relative path to bytes, for comparing folders.
pub fn tree(dir: &std::path::Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("a readable folder") {
            let path = e.expect("an entry").path();
            if path.is_dir() {
                todo.push(path);
            } else {
                let rel = path.strip_prefix(dir).expect("under dir").to_path_buf();
                out.insert(rel, std::fs::read(&path).expect("a readable file"));
            }
        }
    }
    out
}
