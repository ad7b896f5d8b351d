//! Makes a 512 px JPEG thumbnail of every image in a folder, in parallel on all cores,
//! the way `seedpool ingest` makes them. Run by benches/thumbs.sh beside vipsthumbnail
//! and ImageMagick; prints images per second.
//!
//! Usage: cargo bench --bench thumbs -- IN_DIR OUT_DIR

use rayon::prelude::*;
use seedpool::imaging::{thumbnail, DecodeLimits};

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let [input, output] = &args[..] else {
        eprintln!("usage: thumbs IN_DIR OUT_DIR");
        std::process::exit(2);
    };
    std::fs::create_dir_all(output).expect("output folder");
    let mut files: Vec<_> = std::fs::read_dir(input)
        .expect("input folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    let start = std::time::Instant::now();
    let failures: usize = files
        .par_iter()
        .map(|path| {
            let bytes = std::fs::read(path).expect("readable image");
            match thumbnail(&bytes, 512, 85, DecodeLimits::default()) {
                Ok(jpeg) => {
                    let name = path.file_stem().unwrap().to_string_lossy();
                    std::fs::write(format!("{output}/{name}.jpg"), jpeg).expect("write");
                    0
                }
                Err(e) => {
                    eprintln!("{}: {e}", path.display());
                    1
                }
            }
        })
        .sum();
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{} thumbnails in {secs:.2} s: {:.1} images/s ({failures} failed)",
        files.len() - failures,
        (files.len() - failures) as f64 / secs
    );
}
