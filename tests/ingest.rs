//! `seedpool ingest` end to end: originals the test draws (JPEG, PNG, WebP, GIF, CMYK,
//! 16-bit), booru file names and dumps, duplicates, and every kind of bad input, then
//! a re-run and a publish of the result.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;

/// A picture of soft blobs placed by relative position (so a smaller copy is the same
/// picture), varied by `seed`.
fn picture(w: u32, h: u32, seed: u32) -> image::RgbImage {
    let s = f64::from(seed);
    let blobs = [
        (
            (0.2 + 0.13 * s) % 0.8 + 0.1,
            0.35,
            0.2,
            [220.0, 60.0 + 20.0 * s, 50.0],
        ),
        (
            0.7,
            (0.3 + 0.17 * s) % 0.8 + 0.1,
            0.25,
            [40.0, 90.0, 210.0 - 15.0 * s],
        ),
        (0.45, 0.8, 0.15 + 0.02 * s, [250.0, 230.0, 90.0]),
    ];
    image::RgbImage::from_fn(w, h, |x, y| {
        let (fx, fy) = (f64::from(x) / f64::from(w), f64::from(y) / f64::from(h));
        let mut px = [30.0 + 10.0 * s; 3];
        for (cx, cy, r, color) in blobs {
            let a = (-((fx - cx).powi(2) + (fy - cy).powi(2)) / (r * r)).exp();
            for c in 0..3 {
                px[c] = px[c] * (1.0 - a) + color[c] * a;
            }
        }
        image::Rgb(px.map(|v| v.clamp(0.0, 255.0) as u8))
    })
}

fn jpeg(img: &image::RgbImage, q: u8) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, q)
        .encode_image(img)
        .unwrap();
    out
}

fn encode(img: &image::DynamicImage, format: image::ImageFormat) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

/// A PNG whose header declares 100000 x 100000 pixels: a decompression bomb.
fn png_bomb() -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend(100_000u32.to_be_bytes());
    ihdr.extend(100_000u32.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    png.extend(13u32.to_be_bytes());
    png.extend(&ihdr);
    png.extend(crc32(&ihdr).to_be_bytes());
    png
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn report(out: &Path) -> BTreeMap<String, (String, String)> {
    let text = std::fs::read_to_string(out.join("ingest-report.tsv")).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("input\tstatus\tdetail"));
    lines
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let name = Path::new(f[0])
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            (name, (f[1].to_string(), f[2].to_string()))
        })
        .collect()
}

fn record(out: &Path, key: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(out.join(format!("{key}.json"))).unwrap()).unwrap()
}

/// Writes originals of every kind ingest meets into `orig`: booru-named JPEGs, an exact
/// and a near duplicate, PNG with alpha, WebP, GIF, 16-bit PNG, CMYK JPEG, a non-UTF-8
/// name, a picture too small, and bad files. Returns the first JPEG's bytes.
fn write_originals(orig: &Path) -> Vec<u8> {
    std::fs::create_dir_all(orig.join("more")).unwrap();
    let w = |name: &str, bytes: &[u8]| std::fs::write(orig.join(name), bytes).unwrap();

    let a = jpeg(&picture(1200, 1600, 1), 92);
    w("danbooru - 101 - touhou ~ hakurei_reimu (artist_a).jpg", &a);
    w("copy of a.jpg", &a); // the same file again
    w(
        "gelbooru - 202 - vocaloid ~ hatsune_miku (artist_b).jpg",
        &jpeg(&picture(1500, 1500, 2), 92),
    );
    // The same picture, smaller, from a booru with better priority: resolution wins.
    w(
        "safebooru - 203 - vocaloid ~ hatsune_miku.jpg",
        &jpeg(
            &image::imageops::resize(
                &picture(1500, 1500, 2),
                1100,
                1100,
                image::imageops::FilterType::Lanczos3,
            ),
            85,
        ),
    );
    // PNG with alpha, WebP, GIF, 16-bit PNG, CMYK JPEG.
    let base = picture(1000, 1400, 3);
    let rgba = image::DynamicImage::ImageRgba8(image::RgbaImage::from_fn(1000, 1400, |x, y| {
        let p = base.get_pixel(x, y).0;
        image::Rgba([p[0], p[1], p[2], if x < 100 { 0 } else { 255 }])
    }));
    w(
        "konachan - 303 - fate ~ saber (artist_c).png",
        &encode(&rgba, image::ImageFormat::Png),
    );
    let rgb4 = image::DynamicImage::ImageRgb8(picture(1100, 1100, 4));
    w(
        "yande.re - 404 - x ~ y.webp",
        &encode(&rgb4, image::ImageFormat::WebP),
    );
    w(
        "more/zerochan - 505 - x ~ z.gif",
        &encode(
            &image::DynamicImage::ImageRgb8(picture(1100, 1100, 5)),
            image::ImageFormat::Gif,
        ),
    );
    let deep = image::DynamicImage::ImageRgb16(
        image::DynamicImage::ImageRgb8(picture(1100, 1100, 6)).into_rgb16(),
    );
    w(
        "more/sankaku - 606 - x ~ w.png",
        &encode(&deep, image::ImageFormat::Png),
    );
    let cmyk_src = picture(1100, 1100, 7);
    let cmyk: Vec<u8> = cmyk_src
        .pixels()
        .flat_map(|p| {
            let [r, g, b] = p.0;
            let k = 255 - r.max(g).max(b);
            [
                255 - r - k.min(255 - r),
                255 - g - k.min(255 - g),
                255 - b - k.min(255 - b),
                k,
            ]
        })
        .collect();
    let mut cmyk_jpeg = Vec::new();
    jpeg_encoder::Encoder::new(&mut cmyk_jpeg, 90)
        .encode(&cmyk, 1100, 1100, jpeg_encoder::ColorType::Cmyk)
        .unwrap();
    w("e-shuushuu - 707 - x ~ v.jpg", &cmyk_jpeg);
    // A non-UTF-8 file name, no booru convention: keyed by its md5.
    {
        use std::os::unix::ffi::OsStrExt;
        let name = std::ffi::OsStr::from_bytes(b"caf\xe9 scan.jpg");
        std::fs::write(orig.join(name), jpeg(&picture(1100, 1100, 8), 90)).unwrap();
    }
    // Too small, and bad files of every kind.
    w(
        "danbooru - 808 - x ~ small.jpg",
        &jpeg(&picture(500, 500, 9), 90),
    );
    w("truncated.jpg", &jpeg(&picture(1000, 1000, 10), 90)[..3000]);
    w("empty.jpg", b"");
    w("notes.jpg", b"this is a text file, not a JPEG\n");
    w("bomb.png", &png_bomb());
    w("readme.txt", b"not an image");
    a
}

#[test]
fn ingest_curates_originals_into_a_release_that_publishes() {
    let t = tempfile::tempdir().unwrap();
    let orig = t.path().join("originals");
    let a = write_originals(&orig);

    // Dumps: Danbooru posts.json for post 101, and a malformed one.
    let md5 = {
        use md5::Digest;
        hex::encode(md5::Md5::digest(&a))
    };
    let dumps = t.path().join("dumps");
    std::fs::create_dir_all(&dumps).unwrap();
    std::fs::write(
        dumps.join("posts.json"),
        serde_json::json!([{"id": 101, "md5": md5, "rating": "s", "score": 77, "fav_count": 12,
            "created_at": "2023-05-06T07:08:09.000-04:00", "image_width": 1200, "image_height": 1600,
            "tag_string_artist": "artist_a", "tag_string_copyright": "touhou",
            "tag_string_character": "hakurei_reimu", "tag_string_general": "1girl solo",
            "tag_string_meta": "highres"}])
        .to_string(),
    )
    .unwrap();
    std::fs::write(dumps.join("broken.json"), "[\n  {\"id\": 1,\n  oops\n]").unwrap();

    let out = t.path().join("release");
    let r = run(&[
        "ingest",
        s(&orig),
        "--out",
        s(&out),
        "--meta",
        s(&dumps.join("posts.json")),
        "--meta",
        s(&dumps.join("broken.json")),
        "--json",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let summary: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    let rep = report(&out);
    let status = |name: &str| {
        rep.get(name)
            .unwrap_or_else(|| panic!("{name} not in {rep:?}"))
            .clone()
    };

    assert_eq!(
        status("danbooru - 101 - touhou ~ hakurei_reimu (artist_a).jpg"),
        ("kept".into(), "danbooru-101".into())
    );
    assert_eq!(status("copy of a.jpg").0, "duplicate");
    assert!(status("copy of a.jpg")
        .1
        .contains("of danbooru-101 (same file)"));
    assert_eq!(
        status("safebooru - 203 - vocaloid ~ hatsune_miku.jpg").0,
        "duplicate"
    );
    assert!(status("safebooru - 203 - vocaloid ~ hatsune_miku.jpg")
        .1
        .contains("of gelbooru-202 (perceptual hash"));
    for (name, key) in [
        (
            "konachan - 303 - fate ~ saber (artist_c).png",
            "konachan-303",
        ),
        ("yande.re - 404 - x ~ y.webp", "yandere-404"),
        ("zerochan - 505 - x ~ z.gif", "zerochan-505"),
        ("sankaku - 606 - x ~ w.png", "sankaku-606"),
        ("e-shuushuu - 707 - x ~ v.jpg", "e-shuushuu-707"),
    ] {
        assert_eq!(status(name), ("kept".into(), key.into()), "{name}");
    }
    assert_eq!(status("caf\u{fffd} scan.jpg").0, "kept");
    assert_eq!(
        status("danbooru - 808 - x ~ small.jpg"),
        ("filtered".into(), "quality: width 500 < 900".into())
    );
    assert_eq!(
        status("empty.jpg"),
        ("unreadable".into(), "empty file".into())
    );
    assert_eq!(status("truncated.jpg").0, "unreadable");
    assert_eq!(status("notes.jpg").0, "unreadable");
    assert_eq!(status("bomb.png").0, "unreadable");
    assert!(
        status("bomb.png").1.contains("too large to decode safely"),
        "{:?}",
        status("bomb.png")
    );
    assert_eq!(status("readme.txt").0, "ignored");
    assert_eq!(status("broken.json").0, "unreadable");
    assert!(
        status("broken.json").1.contains("line 3 column 3"),
        "{:?}",
        status("broken.json")
    );
    assert_eq!(summary["kept"], 8);
    assert_eq!(summary["duplicates"], 2);

    // Records: the dump first, then the file name, then the image.
    let r101 = record(&out, "danbooru-101");
    assert_eq!(r101["score"], 77);
    assert_eq!(r101["favs"], 12);
    assert_eq!(r101["md5"], md5.as_str());
    assert_eq!(
        r101["tags"]["general"],
        serde_json::json!(["1girl", "solo"])
    );
    assert_eq!(r101["volume"], "3x4-2023");
    assert_eq!(r101["stats"]["jpeg_quality"], 92);
    // Every kept record has a quality score in [0, 1] with the parts it came from; one
    // without a score or favs has no popularity part, one that is not a JPEG no jpeg part.
    for entry in std::fs::read_dir(&out).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let r: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            let q = r["quality"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&q), "{}: {q}", path.display());
            let parts = r["quality_parts"].as_object().unwrap();
            assert_eq!(
                parts.contains_key("popularity"),
                r["score"].is_number() || r["favs"].is_number()
            );
            assert_eq!(
                parts.contains_key("jpeg"),
                r["stats"]["jpeg_quality"].is_number()
            );
        }
    }
    assert!(r101["quality_parts"]["popularity"].is_number());
    let r303 = record(&out, "konachan-303");
    assert_eq!(r303["tags"]["character"], serde_json::json!(["saber"]));
    assert_eq!(r303["tags"]["artist"], serde_json::json!(["artist_c"]));
    assert_eq!(r303["volume"], "7x10-unknown");
    // Transparent areas became white, not black.
    let sample =
        image::load_from_memory(&std::fs::read(out.join("konachan-303.sample.jpg")).unwrap())
            .unwrap()
            .into_rgb8();
    assert!(
        sample.get_pixel(2, 500).0.iter().all(|&c| c > 240),
        "{:?}",
        sample.get_pixel(2, 500)
    );
    let thumb =
        image::load_from_memory(&std::fs::read(out.join("gelbooru-202.thumb.jpg")).unwrap())
            .unwrap();
    assert_eq!((thumb.width(), thumb.height()), (512, 512));
    let sample =
        image::load_from_memory(&std::fs::read(out.join("gelbooru-202.sample.jpg")).unwrap())
            .unwrap();
    assert_eq!((sample.width(), sample.height()), (1024, 1024));

    // A second run reuses every analysis and gives the same release.
    let rerun = || {
        let r = run(&[
            "ingest",
            s(&orig),
            "--out",
            s(&out),
            "--meta",
            s(&dumps.join("posts.json")),
            "--json",
        ]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        serde_json::from_str::<serde_json::Value>(r.stdout.trim()).unwrap()
    };
    let before = tree(&out);
    let again = rerun();
    assert_eq!(again["reused"], 11);
    let after = tree(&out);
    for (k, v) in &before {
        if k.ends_with(".json") || k.ends_with(".jpg") {
            assert!(after.get(k) == Some(v), "{k} changed on re-run");
        }
    }

    // An original gone from the downloads takes its item out of the release on the next
    // run; a file ingest never wrote stays.
    std::fs::remove_file(orig.join("konachan - 303 - fate ~ saber (artist_c).png")).unwrap();
    std::fs::write(out.join("extra-1.json"), r#"{"volume":"1x1-2024"}"#).unwrap();
    let third = rerun();
    assert_eq!(third["removed"], 1, "{third}");
    for suffix in [".thumb.jpg", ".sample.jpg", ".json"] {
        assert!(
            !out.join(format!("konachan-303{suffix}")).exists(),
            "{suffix}"
        );
    }
    assert!(out.join("gelbooru-202.json").exists());
    assert!(out.join("extra-1.json").exists());

    // The release publishes as it is.
    let key = fixed_key(t.path());
    let store = t.path().join("store");
    let args = publish_args(s(&out), s(&store), s(&key), "1");
    let p = run(&args);
    assert_eq!(p.code, 0, "{}", p.stderr);
}

#[test]
fn an_unreadable_folder_lands_in_the_report() {
    let t = tempfile::tempdir().unwrap();
    let orig = t.path().join("originals");
    let locked = orig.join("locked");
    std::fs::create_dir_all(&locked).unwrap();
    std::fs::write(
        orig.join("danbooru - 1 - a ~ b.jpg"),
        jpeg(&picture(1200, 1200, 1), 90),
    )
    .unwrap();
    std::fs::write(
        locked.join("danbooru - 2 - a ~ c.jpg"),
        jpeg(&picture(1200, 1200, 2), 90),
    )
    .unwrap();
    let out = t.path().join("release");
    let (mut cmd, as_nobody) = unprivileged_seedpool(t.path());
    if as_nobody {
        open_up(t.path());
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    let o = cmd
        .args(["ingest", s(&orig), "--out", s(&out)])
        .output()
        .unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let rep = report(&out);
    assert_eq!(rep["danbooru - 1 - a ~ b.jpg"].0, "kept");
    assert_eq!(rep["locked"].0, "unreadable");
    assert!(
        rep["locked"].1.contains("ermission denied"),
        "{:?}",
        rep["locked"]
    );
}

#[test]
fn a_bad_config_is_a_usage_error() {
    let t = tempfile::tempdir().unwrap();
    let cfg = t.path().join("rules.toml");
    let with_config = |text: &str| {
        std::fs::write(&cfg, text).unwrap();
        run(&[
            "ingest",
            s(t.path()),
            "--out",
            s(&t.path().join("o")),
            "--config",
            s(&cfg),
        ])
    };
    let r = with_config("min_width = 1000\nmin_heigth = 5\n");
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("min_heigth"), "{}", r.stderr);
    let r = with_config("[quality.weights]\nedges = -0.5\n");
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("rules.toml") && r.stderr.contains("quality weights"),
        "{}",
        r.stderr
    );
    assert!(
        !t.path().join("o").exists(),
        "a refused configuration wrote nothing"
    );
    let r = run(&[
        "ingest",
        s(&t.path().join("nowhere")),
        "--out",
        s(&t.path().join("o")),
    ]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("does not exist"), "{}", r.stderr);
}

/// Ingest's bytes do not depend on the CPU it runs on: the same originals ingested here
/// and under qemu emulating a baseline x86-64 CPU (SSE2 and SSE3 only: no SSSE3, SSE4 or
/// AVX, so no SIMD path a library could pick at run time) give the same release folder,
/// byte for byte. Otherwise two maintainers would pack different shards from the same
/// downloads and lose each other's reuse.
#[cfg(target_arch = "x86_64")]
#[test]
fn ingest_writes_the_same_bytes_on_a_cpu_without_simd() {
    let t = tempfile::tempdir().unwrap();
    let orig = t.path().join("originals");
    write_originals(&orig);
    let native = t.path().join("native");
    let r = run(&["ingest", s(&orig), "--out", s(&native)]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let emulated = t.path().join("emulated");
    let out = std::process::Command::new("qemu-x86_64")
        .args(["-cpu", "qemu64", env!("CARGO_BIN_EXE_seedpool"), "ingest"])
        .arg(&orig)
        .arg("--out")
        .arg(&emulated)
        .output()
        .unwrap_or_else(|e| panic!("cannot run qemu-x86_64: {e}; install qemu-user (see .ci/run)"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The analysis cache is appended to from parallel workers: the same lines, in any order.
    let sorted = |mut files: BTreeMap<String, Vec<u8>>| {
        if let Some(cache) = files.get_mut(".seedpool/ingest/analyses.jsonl") {
            let mut lines: Vec<&[u8]> = cache.split(|&b| b == b'\n').collect();
            lines.sort();
            *cache = lines.join(&b'\n');
        }
        files
    };
    let (a, b) = (sorted(tree(&native)), sorted(tree(&emulated)));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    assert!(a.keys().any(|k| k.ends_with(".thumb.jpg")));
    let differ: Vec<&String> = a.keys().filter(|k| a[*k] != b[*k]).collect();
    assert!(differ.is_empty(), "these differ without SIMD: {differ:?}");
}
