//! `seedpool detect` against OpenCV's `CascadeClassifier.detectMultiScale`
//! (python3-opencv) with the same LBP cascades and parameters, on real drawn portraits
//! a Debian package ships (wesnoth-1.16-data's 241 character portraits), turned grey so
//! that both read the same levels; and the cascade errors that must stop a run before
//! any image is read. The cascades: OpenCV's own LBP face cascade (opencv-data) and,
//! where ../shared/data has it, nagadomi's anime face cascade. `.ci/run` installs the
//! packages.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::*;
use seedpool::detect::cascade;
use seedpool::ingest::picture;

const PORTRAITS: &str = "/usr/share/games/wesnoth/1.16/data/core/images/portraits";

const OPENCV_FACES: &str = "/usr/share/opencv4/lbpcascades/lbpcascade_frontalface_improved.xml";

fn cascades() -> Vec<PathBuf> {
    let opencv = PathBuf::from(OPENCV_FACES);
    assert!(
        opencv.is_file(),
        "{OPENCV_FACES} is missing: install opencv-data (`.ci/run` does)"
    );
    let anime =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/lbpcascade_animeface.xml");
    if anime.is_file() {
        vec![opencv, anime]
    } else {
        eprintln!(
            "note: {} is absent; checking OpenCV's cascade only",
            anime.display()
        );
        vec![opencv]
    }
}

/// Every portrait as a grey PNG (alpha over white), named after its path.
fn grey_portraits(dir: &Path) -> usize {
    let root = Path::new(PORTRAITS);
    assert!(
        root.is_dir(),
        "{PORTRAITS} is missing: install wesnoth-1.16-data (`.ci/run` does)"
    );
    let mut files = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "png") {
                files.push(p);
            }
        }
    }
    files.sort();
    for f in &files {
        // As seedpool reads images (alpha over white), in OpenCV's grey levels.
        let rgb = picture::load_rgb(f, picture::DecodeLimits::default()).unwrap();
        let grey =
            image::GrayImage::from_raw(rgb.width(), rgb.height(), cascade::grey(rgb.as_raw()))
                .unwrap();
        let name = f
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .replace('/', "_");
        grey.save(dir.join(name)).unwrap();
    }
    files.len()
}

fn iou(a: &[i64; 4], b: &[i64; 4]) -> f64 {
    let w = (a[0] + a[2]).min(b[0] + b[2]) - a[0].max(b[0]);
    let h = (a[1] + a[3]).min(b[1] + b[3]) - a[1].max(b[1]);
    let inter = (w.max(0) * h.max(0)) as f64;
    inter / ((a[2] * a[3] + b[2] * b[3]) as f64 - inter)
}

#[test]
fn detect_finds_the_boxes_opencv_finds() {
    let t = tempfile::tempdir().unwrap();
    let n = grey_portraits(t.path());
    assert!(n >= 200, "{n} portraits");
    let images: Vec<String> = {
        let mut v: Vec<String> = std::fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().path().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    // Every window that passes (no grouping), then grouped faces as users ask for them.
    for (cascade, min_neighbors) in cascades()
        .into_iter()
        .flat_map(|c| [(c.clone(), "0"), (c, "3")])
    {
        let out = std::process::Command::new("/usr/bin/python3")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/opencv_detect.py"))
            .args([s(&cascade), s(t.path()), "1.1", min_neighbors])
            .output()
            .expect("/usr/bin/python3 with python3-opencv");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let reference: BTreeMap<String, Vec<[i64; 4]>> =
            serde_json::from_slice(&out.stdout).unwrap();

        let mut args = vec![
            "detect",
            "--cascade",
            s(&cascade),
            "--min-neighbors",
            min_neighbors,
            "--json",
        ];
        args.extend(images.iter().map(String::as_str));
        let r = run(&args);
        assert_eq!(r.code, 0, "{}", r.stderr);
        let ours: Vec<serde_json::Value> = serde_json::from_str(&r.stdout).unwrap();
        let (mut total, mut matched, mut extra) = (0usize, 0usize, 0usize);
        for image in &ours {
            let name = Path::new(image["path"].as_str().unwrap())
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let mine: Vec<[i64; 4]> = image["faces"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| ["x", "y", "width", "height"].map(|k| b[k].as_i64().unwrap()))
                .collect();
            let theirs = &reference[&name];
            let mut used = vec![false; mine.len()];
            for b in theirs {
                total += 1;
                let best = mine
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !used[*i])
                    .map(|(i, m)| (iou(b, m), i))
                    .max_by(|x, y| x.0.total_cmp(&y.0));
                if let Some((v, i)) = best.filter(|(v, _)| *v >= 0.5) {
                    let _ = v;
                    used[i] = true;
                    matched += 1;
                }
            }
            extra += used.iter().filter(|u| !**u).count();
        }
        assert!(
            total > 10,
            "OpenCV found only {total} boxes with min-neighbors {min_neighbors}"
        );
        eprintln!(
            "{}, min-neighbors {min_neighbors}: OpenCV {total} boxes, {matched} matched, {extra} extra",
            cascade.display()
        );
        assert!(
            matched * 10 >= total * 9,
            "{matched} of {total} OpenCV boxes matched"
        );
        assert!(
            extra * 10 <= total,
            "{extra} boxes OpenCV did not find (of {total})"
        );
    }
}

#[test]
fn a_bad_cascade_stops_before_any_image() {
    let t = tempfile::tempdir().unwrap();
    // The image does not exist: a cascade error must come first.
    let image = t.path().join("never-read.png");
    let cases: [(&str, &str); 4] = [
        ("not xml at all <", "not valid XML"),
        (
            "<?xml version=\"1.0\"?><opencv_storage><cascade><stageType>BOOST</stageType>\
             <featureType>HAAR</featureType><height>24</height><width>24</width>\
             </cascade></opencv_storage>",
            "only LBP cascades",
        ),
        (
            "<?xml version=\"1.0\"?><opencv_storage><cascade><stageType>BOOST</stageType>\
             <featureType>LBP</featureType><height>24</height><width>24</width><stageNum>1</stageNum>\
             <stages><_><maxWeakCount>1</maxWeakCount><stageThreshold>-1</stageThreshold>\
             <weakClassifiers><_><internalNodes>0 -1 7 -1 -1 -1 -1 -1 -1 -1 -1</internalNodes>\
             <leafValues>-1 1</leafValues></_></weakClassifiers></_></stages>\
             <features><_><rect>0 0 1 1</rect></_></features></cascade></opencv_storage>",
            "feature 7 of 1",
        ),
        (
            "<?xml version=\"1.0\"?><opencv_storage><cascade><stageType>BOOST</stageType>\
             <featureType>LBP</featureType><height>24</height><width>24</width>\
             <stages></stages><features><_><rect>20 0 3 3</rect></_></features></cascade></opencv_storage>",
            "leave the 24x24 window",
        ),
    ];
    for (i, (xml, problem)) in cases.iter().enumerate() {
        let path = t.path().join(format!("bad-{i}.xml"));
        std::fs::write(&path, xml).unwrap();
        let r = run(&["detect", s(&image), "--cascade", s(&path)]);
        assert_eq!(r.code, 2, "{}", r.stderr);
        assert!(
            r.stderr.contains(&format!("bad-{i}.xml")) && r.stderr.contains(problem),
            "{problem}: {}",
            r.stderr
        );
    }
    let r = run(&[
        "detect",
        s(&image),
        "--cascade",
        s(&t.path().join("missing.xml")),
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("missing.xml"), "{}", r.stderr);
    // A good cascade with an unreadable image reports the image and goes on.
    let r = run(&["detect", s(&image), "--cascade", OPENCV_FACES]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("never-read.png: unreadable"),
        "{}",
        r.stderr
    );
}

#[test]
fn ingest_records_faces_at_three_levels_and_a_composition() {
    let t = tempfile::tempdir().unwrap();
    let (orig, config) = portrait_originals(t.path());
    let out = t.path().join("release");
    let r = run(&[
        "ingest",
        s(&orig),
        "--out",
        s(&out),
        "--config",
        s(&config),
        "--cascade",
        OPENCV_FACES,
        "--json",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let mut compositions = Vec::new();
    for id in 1..=PICKS.len() {
        let record: serde_json::Value = serde_json::from_slice(
            &std::fs::read(out.join(format!("safebooru-{id}.json"))).unwrap(),
        )
        .unwrap();
        let about = &record["face_detector"];
        assert_eq!(
            about["cascade"], "lbpcascade_frontalface_improved.xml",
            "{record}"
        );
        assert_eq!(about["medium"]["min_neighbors"], 3, "{record}");
        assert_eq!(about["strict"]["min_size"], 48, "{record}");
        for level in ["strict", "medium", "relaxed"] {
            let boxes = record["faces"][level].as_array().unwrap();
            assert!(boxes.len() <= 5);
            for b in boxes {
                let v: Vec<f64> = b
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap())
                    .collect();
                assert!(
                    v.iter().all(|x| (0.0..=1.0).contains(x)) && v[0] + v[2] <= 1.0,
                    "{record}"
                );
            }
        }
        // Stricter levels never find more than looser ones.
        let n = |l: &str| record["faces"][l].as_array().unwrap().len();
        assert!(
            n("strict") <= n("medium") + 1 && n("medium") <= n("relaxed") + 1,
            "{record}"
        );
        compositions.push(record["composition"].as_str().unwrap().to_string());
    }
    // The elf captain's face is about an eighth of the portrait's height.
    assert_eq!(compositions[0], "upper-body", "{compositions:?}");
    assert!(
        compositions.iter().any(|c| c == "no-face"),
        "{compositions:?}"
    );

    // The same run through the pool: the composition lands in the items table.
    let store = t.path().join("store");
    let key = fixed_key(t.path());
    let mut args = publish_args(s(&out), s(&store), s(&key), "1");
    args.push("--json");
    let p = run(&args);
    assert_eq!(p.code, 0, "{}", p.stderr);
    let manifest: serde_json::Value = serde_json::from_str(&p.stdout).unwrap();
    let pool = t.path().join("pool");
    let m = run(&[
        "merge",
        manifest["manifest"].as_str().unwrap(),
        "--pool",
        s(&pool),
        "--from",
        s(&store),
    ]);
    assert_eq!(m.code, 0, "{}", m.stderr);
    let db = rusqlite::Connection::open(pool.join("pool.sqlite")).unwrap();
    let (faces, composition): (i64, String) = db
        .query_row(
            "SELECT faces, composition FROM items WHERE key = 'safebooru-1'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((faces, composition.as_str()), (1, "upper-body"));
    // The quality score ranks them, filtered by composition.
    let q = run(&[
        "query",
        "--pool",
        s(&pool),
        "top-quality",
        "--composition",
        "upper-body",
        "--format",
        "json",
    ]);
    assert_eq!(q.code, 0, "{}", q.stderr);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&q.stdout).unwrap();
    assert!(!rows.is_empty());
    assert!(rows.iter().all(|r| r["composition"] == "upper-body"));
    let scores: Vec<f64> = rows
        .iter()
        .map(|r| r["quality"].as_f64().unwrap())
        .collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    assert!(scores.iter().all(|q| (0.0..=1.0).contains(q)), "{scores:?}");

    // A bad cascade stops ingest before any original is read.
    let bad = t.path().join("bad.xml");
    std::fs::write(&bad, "<opencv_storage>").unwrap();
    let out2 = t.path().join("release-2");
    let r = run(&["ingest", s(&orig), "--out", s(&out2), "--cascade", s(&bad)]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("bad.xml"), "{}", r.stderr);
    assert!(!out2.join("ingest-report.tsv").exists());
}

/// Portraits with a frontal face and without one, named as BOORU-CHARS names files
/// (`safebooru-1` ... `safebooru-5`), and rules that let 400 px pictures through.
const PICKS: [&str; 5] = [
    "elves/captain.png",
    "humans/mage-red.png",
    "dwarves/guard.png",
    "undead/ghoul.png",
    "drakes/burner.png",
];

fn portrait_originals(dir: &Path) -> (PathBuf, PathBuf) {
    let orig = dir.join("originals");
    std::fs::create_dir(&orig).unwrap();
    for (i, file) in PICKS.iter().enumerate() {
        let from = Path::new(PORTRAITS).join(file);
        assert!(
            from.is_file(),
            "{} is missing: install wesnoth-1.16-data",
            from.display()
        );
        let name = format!("safebooru - {} - wesnoth ~ x (y).png", i + 1);
        std::fs::copy(&from, orig.join(name)).unwrap();
    }
    let config = dir.join("rules.toml");
    std::fs::write(
        &config,
        "min_width = 100\nmin_height = 100\nmin_megapixels = 0.01\n",
    )
    .unwrap();
    (orig, config)
}

#[test]
fn detect_adds_faces_to_a_release_and_resumes() {
    let t = tempfile::tempdir().unwrap();
    let (orig, config) = portrait_originals(t.path());
    let out = t.path().join("release");
    let r = run(&["ingest", s(&orig), "--out", s(&out), "--config", s(&config)]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let record = |id: usize| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(out.join(format!("safebooru-{id}.json"))).unwrap())
            .unwrap()
    };
    assert!(record(1).get("faces").is_none());
    let d = run(&["detect", s(&out), "--cascade", OPENCV_FACES, "--json"]);
    assert_eq!(d.code, 0, "{}", d.stderr);
    let report: serde_json::Value = serde_json::from_str(&d.stdout).unwrap();
    assert_eq!(
        (report["records"].as_u64(), report["updated"].as_u64()),
        (Some(5), Some(5)),
        "{report}"
    );
    assert_eq!(record(1)["composition"], "upper-body");
    assert_eq!(record(1)["face_detector"]["medium"]["min_size"], 32);
    // Composition is part of the quality score, which follows it.
    assert_eq!(report["rescored"], 5, "{report}");
    assert_eq!(record(1)["quality_parts"]["composition"], 0.8);
    // Everything is current now: a second run (or the rest of an interrupted one)
    // rewrites nothing.
    let before = std::fs::metadata(out.join("safebooru-1.json"))
        .unwrap()
        .modified()
        .unwrap();
    let d = run(&["detect", s(&out), "--cascade", OPENCV_FACES, "--json"]);
    let report: serde_json::Value = serde_json::from_str(&d.stdout).unwrap();
    assert_eq!(
        (report["updated"].as_u64(), report["current"].as_u64()),
        (Some(0), Some(5)),
        "{report}"
    );
    let after = std::fs::metadata(out.join("safebooru-1.json"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(before, after);
    // Other levels are other results: every record is searched again.
    let stricter = t.path().join("stricter.toml");
    std::fs::write(
        &stricter,
        "[faces]\nmedium = { min_neighbors = 6, min_size = 32 }\n",
    )
    .unwrap();
    let d = run(&[
        "detect",
        s(&out),
        "--cascade",
        OPENCV_FACES,
        "--config",
        s(&stricter),
        "--json",
    ]);
    assert_eq!(d.code, 0, "{}", d.stderr);
    let report: serde_json::Value = serde_json::from_str(&d.stdout).unwrap();
    assert_eq!(report["updated"], 5, "{report}");
    assert_eq!(record(1)["face_detector"]["medium"]["min_neighbors"], 6);

    // A record without a thumbnail is skipped and named; a record that is not JSON
    // stops the run with its name and stays as it was.
    std::fs::write(out.join("extra-1.json"), r#"{"volume":"1x1-2024"}"#).unwrap();
    let d = run(&["detect", s(&out), "--cascade", OPENCV_FACES, "--json"]);
    assert_eq!(d.code, 0, "{}", d.stderr);
    let report: serde_json::Value = serde_json::from_str(&d.stdout).unwrap();
    assert_eq!(report["skipped"].as_array().unwrap().len(), 1, "{report}");
    assert!(
        report["skipped"][0]
            .as_str()
            .unwrap()
            .contains("extra-1.json"),
        "{report}"
    );
    std::fs::write(out.join("broken.json"), "{ not json").unwrap();
    let d = run(&["detect", s(&out), "--cascade", OPENCV_FACES]);
    assert_eq!(d.code, 1, "{}", d.stderr);
    assert!(d.stderr.contains("broken.json"), "{}", d.stderr);
    assert_eq!(
        std::fs::read(out.join("broken.json")).unwrap(),
        b"{ not json"
    );
    // The other records are whole, with the default levels the run before wrote.
    assert_eq!(record(1)["face_detector"]["medium"]["min_neighbors"], 3);
}

#[test]
fn models_fetch_puts_a_checked_cascade_where_cascade_names_find_it() {
    let t = tempfile::tempdir().unwrap();
    let served = t.path().join("served");
    std::fs::create_dir(&served).unwrap();
    std::fs::copy(OPENCV_FACES, served.join("mirror.xml")).unwrap();
    std::fs::write(served.join("junk.xml"), "<html>not found</html>").unwrap();
    let (_server, port) = http_server(&served);
    let data = t.path().join("data");
    let env = [("SEEDPOOL_DATA", s(&data))];

    // Not fetched yet: a clear pointer to the command.
    let image = t.path().join("face.png");
    std::fs::copy(Path::new(PORTRAITS).join(PICKS[0]), &image).unwrap();
    let r = run_env(&["detect", s(&image), "--cascade", "animeface"], &env);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("seedpool models fetch animeface"),
        "{}",
        r.stderr
    );
    let (orig, config) = portrait_originals(t.path());
    let release = t.path().join("release");
    let ingest = [
        "ingest",
        s(&orig),
        "--out",
        s(&release),
        "--config",
        s(&config),
        "--detect",
    ];
    let r = run_env(&ingest, &env);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("seedpool models fetch animeface"),
        "{}",
        r.stderr
    );

    // A download that is not a cascade, or not there, leaves nothing behind.
    for bad in ["junk.xml", "missing.xml"] {
        let url = format!("http://127.0.0.1:{port}/{bad}");
        let r = run_env(&["models", "fetch", "animeface", "--from", &url], &env);
        assert_eq!(r.code, 1, "{}", r.stderr);
        assert!(r.stderr.contains(bad), "{}", r.stderr);
        assert!(!data.join("models/lbpcascade_animeface.xml").exists());
    }

    let url = format!("http://127.0.0.1:{port}/mirror.xml");
    let r = run_env(
        &["models", "fetch", "animeface", "--from", &url, "--json"],
        &env,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let fetched = data.join("models/lbpcascade_animeface.xml");
    assert_eq!(
        std::fs::read(&fetched).unwrap(),
        std::fs::read(OPENCV_FACES).unwrap()
    );
    let list = run_env(&["models", "list", "--json"], &env);
    let list: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(list[0]["fetched"], true, "{list}");

    // The name now resolves; the boxes are the file's.
    let by_name = run_env(
        &["detect", s(&image), "--cascade", "animeface", "--json"],
        &env,
    );
    let by_path = run(&["detect", s(&image), "--cascade", OPENCV_FACES, "--json"]);
    assert_eq!(by_name.code, 0, "{}", by_name.stderr);
    assert_eq!(by_name.stdout, by_path.stdout);
    // `ingest --detect` uses the fetched model.
    let r = run_env(&ingest, &env);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(release.join("safebooru-1.json")).unwrap()).unwrap();
    assert_eq!(
        record["face_detector"]["cascade"], "lbpcascade_animeface.xml",
        "{record}"
    );
    let r = run_env(&["models", "fetch", "nonesuch"], &env);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("animeface"), "{}", r.stderr);
}
