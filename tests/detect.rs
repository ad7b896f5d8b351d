//! `seedpool detect` against OpenCV's `CascadeClassifier.detectMultiScale`
//! (python3-opencv) with the same LBP cascades and parameters, on real drawn portraits
//! a Debian package ships (wesnoth-1.16-data's 241 character portraits), turned grey so
//! that both read the same levels; and the cascade errors that must stop a run before
//! any image is read. The cascades: OpenCV's own LBP face cascade (opencv-data) and,
//! where ../shared/data has it, nagadomi's anime face cascade. Then the ONNX backend,
//! run through ONNX Runtime on tiny YOLO-style models that tests/interop/make_onnx.py
//! writes, and the model and runtime errors that must stop a run as early. `.ci/run`
//! installs the packages.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::*;
use seedpool::detect::cascade;
use seedpool::imaging;

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
        let rgb = imaging::load_rgb(f, imaging::DecodeLimits::default()).unwrap();
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
    let pool = publish_and_merge(&out, t.path());
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

/// Publishes release folder `out` as version 1 into `dir/store` and merges it into
/// `dir/pool`, which it returns.
fn publish_and_merge(out: &Path, dir: &Path) -> PathBuf {
    let store = dir.join("store");
    let key = fixed_key(dir);
    let mut args = publish_args(s(out), s(&store), s(&key), "1");
    args.push("--json");
    let p = run(&args);
    assert_eq!(p.code, 0, "{}", p.stderr);
    let manifest: serde_json::Value = serde_json::from_str(&p.stdout).unwrap();
    let pool = dir.join("pool");
    let m = run(&[
        "merge",
        manifest["manifest"].as_str().unwrap(),
        "--pool",
        s(&pool),
        "--from",
        s(&store),
    ]);
    assert_eq!(m.code, 0, "{}", m.stderr);
    pool
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

/// A tiny YOLO-style ONNX model that tests/interop/make_onnx.py writes with python3's
/// `onnx`: a 64 px input cut into 16 px cells, each cell's confidence its mean red
/// minus green. `.ci/run` installs onnx and onnxruntime; seedpool finds the runtime in
/// python3's onnxruntime package.
fn yolo(dir: &Path, variant: &str) -> PathBuf {
    let out = dir.join(format!("face-{variant}.onnx"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/make_onnx.py");
    let made = std::process::Command::new("python3")
        .arg(script)
        .arg(&out)
        .arg(variant)
        .output()
        .expect("python3 runs");
    assert!(
        made.status.success(),
        "make_onnx.py: {}\ninstall the model tools with `python3 -m pip install onnx onnxruntime` (`.ci/run` does)",
        String::from_utf8_lossy(&made.stderr)
    );
    out
}

/// A black picture with a red square (confidence about 1) and, where given, a dark red
/// one (about 0.5), each `(x, y, side)`.
fn squares(path: &Path, w: u32, h: u32, red: (u32, u32, u32), dark: Option<(u32, u32, u32)>) {
    let inside = |x: u32, y: u32, (sx, sy, side): (u32, u32, u32)| {
        (sx..sx + side).contains(&x) && (sy..sy + side).contains(&y)
    };
    image::RgbImage::from_fn(w, h, |x, y| {
        if inside(x, y, red) {
            image::Rgb([255, 0, 0])
        } else if dark.is_some_and(|d| inside(x, y, d)) {
            image::Rgb([128, 0, 0])
        } else {
            image::Rgb([0, 0, 0])
        }
    })
    .save(path)
    .unwrap();
}

fn boxes(report: &serde_json::Value) -> Vec<(i64, i64, i64, i64, f64)> {
    report[0]["faces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let n = |k: &str| f[k].as_i64().unwrap();
            (
                n("x"),
                n("y"),
                n("width"),
                n("height"),
                f["confidence"].as_f64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn an_onnx_model_finds_what_its_outputs_say_in_both_yolo_layouts() {
    let t = tempfile::tempdir().unwrap();
    let image = t.path().join("squares.png");
    // 128x64 letterboxes into the 64 px input at half size with 16 px of grey above
    // and below: the red square fills one cell, the dark one another.
    squares(&image, 128, 64, (64, 0, 32), Some((0, 32, 32)));
    for variant in ["v5", "v8"] {
        let model = yolo(t.path(), variant);
        let r = run(&["detect", s(&image), "--model", s(&model), "--json"]);
        assert_eq!(r.code, 0, "{variant}: {}", r.stderr);
        let found = boxes(&serde_json::from_str(&r.stdout).unwrap());
        assert_eq!(found.len(), 2, "{variant}: {found:?}");
        assert_eq!(
            (found[0].0, found[0].1, found[0].2, found[0].3),
            (64, 0, 32, 32),
            "{variant}: {found:?}"
        );
        assert_eq!(
            (found[1].0, found[1].1, found[1].2, found[1].3),
            (0, 32, 32, 32),
            "{variant}: {found:?}"
        );
        assert!(found[0].4 > 0.9, "{variant}: {found:?}");
        assert!((0.4..0.6).contains(&found[1].4), "{variant}: {found:?}");
        // A higher bar keeps the red square only; class 0 is the model's one class.
        let r = run(&[
            "detect",
            s(&image),
            "--model",
            s(&model),
            "--confidence",
            "0.6",
            "--class",
            "0",
        ]);
        assert_eq!(r.code, 0, "{variant}: {}", r.stderr);
        assert!(
            r.stdout.contains("1 face 32x32+64+0@0.9"),
            "{variant}: {}",
            r.stdout
        );
    }
    // Read the v8 way, the v5 model's objectness column is a class score of its own,
    // and the always-1 class column wins every cell: all 16 cells (8 inside the
    // picture) are faces, which only a real run of the model can tell.
    let r = run(&[
        "detect",
        s(&image),
        "--model",
        s(&t.path().join("face-v5.onnx")),
        "--yolo",
        "v8",
        "--json",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        boxes(&serde_json::from_str(&r.stdout).unwrap()).len(),
        8,
        "{}",
        r.stdout
    );
}

/// The binary, not the CLI in process: ONNX Runtime is found and loaded once per
/// process, from the process's own environment.
#[test]
fn a_bad_model_or_a_missing_runtime_stops_before_any_image() {
    let t = tempfile::tempdir().unwrap();
    // The image does not exist: the model's error must come first.
    let image = t.path().join("never-read.png");
    let junk = t.path().join("junk.onnx");
    std::fs::write(&junk, b"not a protobuf at all").unwrap();
    let v5 = yolo(t.path(), "v5");
    let cases: Vec<(PathBuf, Vec<&str>, &str)> = vec![
        (junk.clone(), vec![], "protobuf parsing failed"),
        (
            yolo(t.path(), "grey-input"),
            vec![],
            "[1, 3, height, width] (3 colour channels)",
        ),
        (
            yolo(t.path(), "flat-output"),
            vec![],
            "has shape [16, 6]; YOLO-style boxes are",
        ),
        (
            v5.clone(),
            vec!["--input-size", "320"],
            "fixed at 64x64; --input-size 320 does not fit it",
        ),
        (
            v5.clone(),
            vec!["--class", "1"],
            "--class 1: output `output0` has 1 classes",
        ),
        (
            v5.clone(),
            vec!["--iou", "2"],
            "--iou must be within 0-1 (got 2)",
        ),
        (t.path().join("missing.onnx"), vec![], "No such file"),
    ];
    for (model, extra, problem) in &cases {
        let mut args = vec!["detect", s(&image), "--model", s(model)];
        args.extend(extra);
        let r = run_binary(&args);
        assert_eq!(r.code, 2, "{problem}: {}", r.stderr);
        assert!(
            r.stderr
                .contains(model.file_name().unwrap().to_str().unwrap())
                && r.stderr.contains(problem),
            "{problem}: {}",
            r.stderr
        );
    }
    // A runtime path that names nothing.
    let r = run_binary_env(
        &["detect", s(&image), "--model", s(&v5)],
        &[("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")],
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("`/nonexistent/libonnxruntime.so`: ORT_DYLIB_PATH names no file"),
        "{}",
        r.stderr
    );
    // A file that is not a shared library at all, as the runtime.
    let r = run_binary_env(
        &["detect", s(&image), "--model", s(&v5)],
        &[("ORT_DYLIB_PATH", s(&junk))],
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("ONNX Runtime") && r.stderr.contains("junk.onnx"),
        "{}",
        r.stderr
    );
    // No runtime anywhere: python3 without the package and nothing in the models
    // folder. The message says how to install it.
    let bin = t.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let r = run_binary_env(
        &["detect", s(&image), "--model", s(&v5)],
        &[
            ("PATH", s(&bin)),
            ("SEEDPOOL_DATA", s(&t.path().join("data"))),
        ],
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    let missing = run_binary_env(
        &["models", "runtime"],
        &[
            ("PATH", s(&bin)),
            ("SEEDPOOL_DATA", s(&t.path().join("data"))),
        ],
    );
    assert_eq!(missing.code, 1, "{}", missing.stderr);
    assert!(
        missing.stderr.contains("pip install onnxruntime"),
        "{}",
        missing.stderr
    );
    // With python3's package there, `models runtime` names the library it loads.
    let found = run_binary(&["models", "runtime", "--json"]);
    assert_eq!(found.code, 0, "{}", found.stderr);
    let found: serde_json::Value = serde_json::from_str(&found.stdout).unwrap();
    assert!(
        found["path"]
            .as_str()
            .unwrap()
            .contains("onnxruntime/capi/libonnxruntime.so"),
        "{found}"
    );
    assert!(
        r.stderr
            .contains("ONNX Runtime is needed for --model and --tagger and was not found")
            && r.stderr.contains("pip install onnxruntime"),
        "{}",
        r.stderr
    );
    // --model and --cascade are one or the other.
    let r = run_binary(&[
        "detect",
        s(&image),
        "--model",
        s(&v5),
        "--cascade",
        OPENCV_FACES,
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("cannot be used with"), "{}", r.stderr);
}

#[test]
fn ingest_and_detect_record_an_onnx_models_faces() {
    let t = tempfile::tempdir().unwrap();
    let orig = t.path().join("originals");
    std::fs::create_dir(&orig).unwrap();
    // 256 px pictures: the input is a quarter of the thumbnail, so a 64 px square at a
    // multiple of 64 fills one cell. A face a quarter of the height is a portrait.
    squares(
        &orig.join("safebooru - 1 - x ~ y (z).png"),
        256,
        256,
        (128, 64, 64),
        None,
    );
    squares(
        &orig.join("safebooru - 2 - x ~ y (z).png"),
        256,
        256,
        (0, 0, 64),
        Some((192, 192, 64)),
    );
    let config = t.path().join("rules.toml");
    std::fs::write(
        &config,
        "min_width = 100\nmin_height = 100\nmin_megapixels = 0.01\n",
    )
    .unwrap();
    let v8 = yolo(t.path(), "v8");
    let out = t.path().join("release");
    let r = run(&[
        "ingest",
        s(&orig),
        "--out",
        s(&out),
        "--config",
        s(&config),
        "--model",
        s(&v8),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let record = |id: usize| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(out.join(format!("safebooru-{id}.json"))).unwrap())
            .unwrap()
    };
    let one = record(1);
    assert_eq!(
        one["faces"]["medium"],
        serde_json::json!([[0.5, 0.25, 0.25, 0.25]]),
        "{one}"
    );
    assert_eq!(one["composition"], "portrait", "{one}");
    assert_eq!(one["face_detector"]["model"], "face-v8.onnx", "{one}");
    assert_eq!(one["face_detector"]["yolo"], "v8", "{one}");
    assert_eq!(
        one["face_detector"]["medium"]["min_confidence"], 0.4,
        "{one}"
    );
    // The dark square passes the medium level (0.4), not the strict one (0.6).
    let two = record(2);
    assert_eq!(two["faces"]["strict"].as_array().unwrap().len(), 1, "{two}");
    assert_eq!(two["faces"]["medium"].as_array().unwrap().len(), 2, "{two}");
    assert_eq!(two["composition"], "group", "{two}");

    // detect on the release with another model searches every record again, from the
    // stored thumbnails, and finds the same faces; a second run rewrites nothing.
    let v5 = yolo(t.path(), "v5");
    let d = run(&["detect", s(&out), "--model", s(&v5), "--json"]);
    assert_eq!(d.code, 0, "{}", d.stderr);
    let report: serde_json::Value = serde_json::from_str(&d.stdout).unwrap();
    assert_eq!(report["updated"], 2, "{report}");
    assert_eq!(record(1)["faces"], one["faces"]);
    assert_eq!(record(1)["face_detector"]["yolo"], "v5");
    assert_eq!(report["compositions"]["group"], 1, "{report}");
    let d = run(&["detect", s(&out), "--model", s(&v5), "--json"]);
    let report: serde_json::Value = serde_json::from_str(&d.stdout).unwrap();
    assert_eq!(
        (report["updated"].as_u64(), report["current"].as_u64()),
        (Some(0), Some(2)),
        "{report}"
    );
    // A stricter medium level is another result.
    let stricter = t.path().join("stricter.toml");
    std::fs::write(
        &stricter,
        "[faces]\nmedium = { min_neighbors = 3, min_size = 32, min_confidence = 0.6 }\n",
    )
    .unwrap();
    let d = run(&[
        "detect",
        s(&out),
        "--model",
        s(&v5),
        "--config",
        s(&stricter),
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_str(&d.stdout).unwrap();
    assert_eq!(report["updated"], 2, "{report}");
    assert_eq!(record(2)["composition"], "portrait", "{}", record(2));
}

#[test]
fn ingest_stores_a_taggers_predictions_apart_from_the_booru_tags() {
    let t = tempfile::tempdir().unwrap();
    let orig = t.path().join("originals");
    std::fs::create_dir(&orig).unwrap();
    // A red 128x64 picture: padded with white to a square, its means are blue 0.5,
    // green 0.5, red 1, which the tiny tagger gives as its three tags' probabilities.
    image::RgbImage::from_pixel(128, 64, image::Rgb([255, 0, 0]))
        .save(orig.join("safebooru - 1 - x ~ y (z).png"))
        .unwrap();
    let config = t.path().join("rules.toml");
    std::fs::write(
        &config,
        "min_width = 100\nmin_height = 50\nmin_megapixels = 0.001\n",
    )
    .unwrap();
    let model = yolo(t.path(), "tagger");
    let names = t.path().join("selected_tags.csv");
    std::fs::write(
        &names,
        "tag_id,name,category,count\n1,sensitive,9,10\n2,green_theme,0,20\n3,red_hero,4,30\n",
    )
    .unwrap();
    let out = t.path().join("release");
    let ingest = |extra: &[&str], out: &Path| {
        let mut args = vec![
            "ingest",
            s(&orig),
            "--out",
            s(out),
            "--config",
            s(&config),
            "--tagger",
            s(&model),
        ];
        args.extend(extra);
        run(&args)
    };
    let r = ingest(&["--tag-names", s(&names)], &out);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("safebooru-1.json")).unwrap()).unwrap();
    assert_eq!(
        record["predicted_tags"],
        serde_json::json!({
            "rating": {"sensitive": 0.5},
            "character": {"red_hero": 1.0},
            "general": {"green_theme": 0.5},
        }),
        "{record}"
    );
    // The booru's tags (from the file name) are untouched.
    assert_eq!(record["tags"]["character"], serde_json::json!(["y"]));
    assert_eq!(record["tagger"]["model"], "face-tagger.onnx", "{record}");
    assert_eq!(record["tagger"]["general_threshold"], 0.35, "{record}");
    // A higher bar drops the general tag; the analysis is redone for the new settings.
    let r = ingest(
        &["--tag-names", s(&names), "--general-threshold", "0.6"],
        &out,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("safebooru-1.json")).unwrap()).unwrap();
    assert_eq!(record["predicted_tags"]["general"], serde_json::json!({}));

    // Through publish and merge, the predictions reach the pool in each item's record,
    // where SQL can read them.
    let pool = publish_and_merge(&out, t.path());
    let q = run(&[
        "query",
        "--pool",
        s(&pool),
        "--sql",
        "SELECT key, json_extract(record, '$.predicted_tags.character.red_hero') AS p FROM live",
        "--format",
        "csv",
    ]);
    assert_eq!(q.code, 0, "{}", q.stderr);
    assert_eq!(q.stdout, "key,p\nsafebooru-1,1\n");

    // A tag list that does not fit the model, or is not a tag list, and a model that
    // is not a tagger, stop ingest before any original is read.
    let two = t.path().join("two.csv");
    std::fs::write(&two, "tag_id,name,category,count\n1,a,0,1\n2,b,0,1\n").unwrap();
    let headless = t.path().join("headless.csv");
    std::fs::write(&headless, "1,a,0,1\n").unwrap();
    let detector = yolo(t.path(), "v5");
    for (extra, problem) in [
        (vec!["--tag-names", s(&two)], "gives 3 probabilities and"),
        (vec!["--tag-names", s(&headless)], "has no `name` column"),
        (
            vec!["--tag-names", s(&names), "--general-threshold", "1.5"],
            "--general-threshold must be within 0-1 (got 1.5)",
        ),
    ] {
        let out = t.path().join("refused");
        let r = ingest(&extra, &out);
        assert_eq!(r.code, 2, "{problem}: {}", r.stderr);
        assert!(r.stderr.contains(problem), "{problem}: {}", r.stderr);
        assert!(!out.exists(), "{problem}");
    }
    let out2 = t.path().join("refused");
    let r = run(&[
        "ingest",
        s(&orig),
        "--out",
        s(&out2),
        "--tagger",
        s(&detector),
        "--tag-names",
        s(&names),
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("face-v5.onnx") && r.stderr.contains("a tagger gives float32 [1, tags]"),
        "{}",
        r.stderr
    );
    assert!(!out2.exists());
}

/// Two-tone 96 px pictures of distinct shapes (so no two are near duplicates): the
/// tiny embedder sees only their mean colour.
fn two_tone(path: &Path, light: [u8; 3], dark: [u8; 3], split: fn(u32, u32) -> bool) {
    image::RgbImage::from_fn(96, 96, |x, y| {
        image::Rgb(if split(x, y) { light } else { dark })
    })
    .save(path)
    .unwrap();
}

#[test]
fn ingest_and_detect_record_embeddings_that_mine_similar_and_clusters_search() {
    let t = tempfile::tempdir().unwrap();
    let orig = t.path().join("originals");
    std::fs::create_dir(&orig).unwrap();
    let name = |i: u32| orig.join(format!("safebooru - {i} - x ~ y (z).png"));
    // Two reds of the same mean colour, split across and down; a blue in quarters.
    two_tone(&name(1), [255, 0, 0], [128, 0, 0], |x, _| x < 48);
    two_tone(&name(2), [255, 0, 0], [128, 0, 0], |_, y| y < 48);
    two_tone(&name(3), [0, 0, 255], [0, 0, 128], |x, y| {
        (x < 48) == (y < 48)
    });
    let config = t.path().join("rules.toml");
    std::fs::write(
        &config,
        "min_width = 64\nmin_height = 64\nmin_megapixels = 0.001\n",
    )
    .unwrap();
    let model = yolo(t.path(), "embedder");
    let ingest = |out: &Path, extra: &[&str]| {
        let mut args = vec!["ingest", s(&orig), "--out", s(out), "--config", s(&config)];
        args.extend(extra);
        run(&args)
    };
    let out = t.path().join("release");
    let r = ingest(&out, &["--embedder", s(&model)]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let record = |dir: &Path, id: u32| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(dir.join(format!("safebooru-{id}.json"))).unwrap())
            .unwrap()
    };
    let first = record(&out, 1);
    assert_eq!(first["embedder"]["dims"], 4, "{first}");
    assert_eq!(first["embedder"]["model"], "face-embedder.onnx", "{first}");
    assert_eq!(first["embedder"]["mean"][0].as_f64().unwrap() as f32, 0.485);
    let vector =
        seedpool::imaging::embedding::decode(first["embedding"].as_str().unwrap()).unwrap();
    // Mean red (191.5 of 255) less ImageNet's mean over its std; unit length.
    let red = (191.5 / 255.0 - 0.485) / 0.229;
    let green = -0.456 / 0.224;
    let blue = -0.406 / 0.225;
    let norm = (red * red + green * green + blue * blue + 1.0f64).sqrt();
    for (got, want) in vector.iter().zip([red, green, blue, 1.0]) {
        assert!((f64::from(*got) - want / norm).abs() < 0.01, "{vector:?}");
    }

    // Merged, the reds are each other's nearest, the blue far from both.
    let pool = publish_and_merge(&out, t.path());
    let r = run(&[
        "mine",
        "similar",
        "safebooru-1",
        "--by",
        "embedding",
        "--pool",
        s(&pool),
        "--json",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let found: Vec<(&str, f64)> = v["similar"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["key"].as_str().unwrap(), s["distance"].as_f64().unwrap()))
        .collect();
    assert_eq!(found.len(), 2, "{v}");
    assert_eq!(found[0].0, "safebooru-2", "{v}");
    assert!(found[0].1 < 0.01 && found[1].1 > 0.5, "{v}");
    let r = run(&[
        "mine",
        "clusters",
        "--by",
        "embedding",
        "--k",
        "2",
        "--pool",
        s(&pool),
        "--json",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        (v["name"].as_str(), v["features"].as_str()),
        (Some("embedding"), Some("embedding")),
        "{v}"
    );
    let sizes: Vec<u64> = v["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["items"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes, [2, 1], "{v}");
    assert_eq!(v["clusters"][1]["medoids"][0], "safebooru-3", "{v}");

    // `detect RELEASE_DIR --embedder` gives a release ingested without one the same
    // vectors, and then has nothing left to do.
    let plain = t.path().join("plain");
    let r = ingest(&plain, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(record(&plain, 1).get("embedding").is_none());
    let d = run(&["detect", s(&plain), "--embedder", s(&model), "--json"]);
    assert_eq!(d.code, 0, "{}", d.stderr);
    let report: serde_json::Value = serde_json::from_str(&d.stdout).unwrap();
    assert_eq!(
        (
            report["updated"].as_u64(),
            report["embedded"].as_u64(),
            report["searched"].as_u64()
        ),
        (Some(3), Some(3), Some(0)),
        "{report}"
    );
    assert_eq!(record(&plain, 1)["embedding"], first["embedding"]);
    assert!(record(&plain, 1).get("faces").is_none());
    let d = run(&["detect", s(&plain), "--embedder", s(&model), "--json"]);
    let report: serde_json::Value = serde_json::from_str(&d.stdout).unwrap();
    assert_eq!(report["current"], 3, "{report}");
    // Other normalisation is another space: every record is embedded again.
    let d = run(&[
        "detect",
        s(&plain),
        "--embedder",
        s(&model),
        "--embedder-mean",
        "0.5,0.5,0.5",
        "--embedder-std",
        "0.5,0.5,0.5",
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_str(&d.stdout).unwrap();
    assert_eq!(report["embedded"], 3, "{report}");
    assert_ne!(
        record(&plain, 1)["embedder"]["space"],
        first["embedder"]["space"]
    );

    // Models that are not embedders, and bad normalisation, stop ingest and detect
    // before any image, writing nothing.
    let tokens = yolo(t.path(), "embedder-tokens");
    let grey = yolo(t.path(), "grey-input");
    let before = std::fs::read(plain.join("safebooru-1.json")).unwrap();
    for (extra, problem) in [
        (vec![s(&tokens)], "a token sequence must be pooled"),
        (
            vec![s(&grey)],
            "an embedder takes float32 [1, 3, size, size]",
        ),
        (
            vec![s(&model), "--embedder-std", "0,1,1"],
            "--embedder-std must be above 0",
        ),
    ] {
        let refused = t.path().join("refused");
        let mut args = vec!["--embedder"];
        args.extend(&extra);
        let r = ingest(&refused, &args);
        assert_eq!(r.code, 2, "{problem}: {}", r.stderr);
        assert!(r.stderr.contains(problem), "{problem}: {}", r.stderr);
        assert!(!refused.exists(), "{problem}");
        let mut args = vec!["detect", s(&plain), "--embedder"];
        args.extend(&extra);
        let d = run(&args);
        assert_eq!(d.code, 2, "{problem}: {}", d.stderr);
        assert!(d.stderr.contains(problem), "{problem}: {}", d.stderr);
    }
    assert_eq!(
        std::fs::read(plain.join("safebooru-1.json")).unwrap(),
        before
    );
    let r = run(&[
        "ingest",
        s(&orig),
        "--out",
        s(&t.path().join("x")),
        "--embedder",
        s(&model),
        "--embedder-mean",
        "1,2",
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("R,G,B takes 3"), "{}", r.stderr);
    // Images (not a release folder) need a face detector.
    let d = run(&["detect", s(&name(1)), "--embedder", s(&model)]);
    assert_eq!(d.code, 2, "{}", d.stderr);
    assert!(
        d.stderr.contains("works on a release folder"),
        "{}",
        d.stderr
    );
}
