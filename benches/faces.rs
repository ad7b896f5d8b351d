//! Times `Cascade::detect` alone on one thread, over grey PNGs already in memory, the
//! way benches/faces.sh times OpenCV's detectMultiScale. Prints seconds and boxes.
//!
//! Usage: cargo bench --bench faces -- CASCADE DIR MIN_NEIGHBORS

use seedpool::detect::cascade::{Cascade, Params};

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let [cascade, dir, min_neighbors] = &args[..] else {
        eprintln!("usage: faces CASCADE DIR MIN_NEIGHBORS");
        std::process::exit(2);
    };
    let cascade = Cascade::load(cascade.as_ref()).expect("cascade");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("image folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    files.sort();
    let images: Vec<image::GrayImage> = files
        .iter()
        .map(|p| image::open(p).expect("image").into_luma8())
        .collect();
    let params = Params {
        min_neighbors: min_neighbors.parse().expect("a number"),
        ..Params::default()
    };
    let start = std::time::Instant::now();
    let boxes: usize = images
        .iter()
        .map(|g| {
            cascade
                .detect(g.as_raw(), g.width(), g.height(), &params)
                .len()
        })
        .sum();
    let secs = start.elapsed().as_secs_f64();
    println!(
        "seedpool: {} images, {boxes} boxes, {secs:.3} s on one thread ({:.1} ms per image)",
        images.len(),
        1000.0 * secs / images.len() as f64
    );
}
