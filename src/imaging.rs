//! One original, decoded once: its size, hashes of its pixels, statistics, and the
//! thumbnail and sample made from that one decode.
//!
//! Decoding runs under limits checked against the header before any pixel buffer is
//! allocated, so a PNG declaring 100000x100000 pixels is refused at once. Resizing is
//! Lanczos3 (SIMD, fast_image_resize) in linear light: sRGB is mapped to linear 16-bit,
//! resized, and mapped back, so dark and bright edges keep their weight. JPEG output uses
//! optimised Huffman tables.
//!
//! Every output is byte-identical on every x86-64 CPU, so two maintainers ingesting the
//! same originals pack the same shards and keep each other's reuse: JPEGs are decoded
//! and encoded by code without run-time SIMD choices (jpeg-decoder `platform_independent`,
//! jpeg-encoder without `simd`), the resizer's SIMD paths round as its scalar one does
//! (tested), and WebP, PNG and GIF decoding are exact by their formats' definitions.
//! tests/ingest.rs checks it by running ingest under qemu on CPUs without SSSE3 or AVX.

use fast_image_resize::images::Image;
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::{DynamicImage, ImageReader};
use serde::{Deserialize, Serialize};

/// Largest side accepted, and the most bytes a decode may allocate.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct DecodeLimits {
    pub max_side: u32,
    pub max_bytes: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_side: 30_000,
            max_bytes: 1 << 30,
        }
    }
}

/// Output sizes.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct Sizes {
    /// The thumbnail fits in a square of this side.
    pub thumb: u32,
    /// The sample's long side, and for square-ish images (within 1x1's tolerance).
    pub sample: u32,
    pub sample_square: u32,
    pub jpeg_quality: u8,
}

impl Default for Sizes {
    fn default() -> Self {
        Self {
            thumb: 512,
            sample: 1280,
            sample_square: 1024,
            jpeg_quality: 94,
        }
    }
}

/// Statistics of the decoded image (see docs/ingest.md for each field).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Stats {
    /// Box left after trimming a border of near-uniform colour: x, y, width, height,
    /// as fractions of the image.
    pub trim: [f64; 4],
    pub entropy: f64,
    pub mean: f64,
    pub std: f64,
    pub skewness: f64,
    pub colors: u64,
    pub chroma_mean: f64,
    pub chroma_max: f64,
    pub rgb_mean: [f64; 3],
    pub edges: f64,
    /// Estimated from the JPEG's quantisation tables; absent for other formats.
    pub jpeg_quality: Option<u8>,
}

pub struct Picture {
    pub width: u32,
    pub height: u32,
    /// blake3 of the RGB pixels: the same picture in another file format or container.
    pub pixels_blake3: String,
    /// 64-bit DCT perceptual hash, hex.
    pub phash: String,
    pub stats: Stats,
    pub thumb: Vec<u8>,
    pub sample: Vec<u8>,
    /// The thumbnail's pixels, before JPEG: what face detection searches.
    pub thumb_pixels: image::RgbImage,
}

/// Decoded pixels and the original's size: for a large JPEG the pixels are a reduced
/// scale of it.
struct Decoded {
    rgb: image::RgbImage,
    width: u32,
    height: u32,
}

/// Decodes `bytes` once. `want` maps the original's size to the size the caller will
/// resize to: a JPEG at least twice that size on both sides is decoded straight at the
/// smallest DCT scale (1/2, 1/4 or 1/8) that still covers it, which skips most of the
/// inverse DCT, colour conversion and resizing work. Other images decode at full size.
/// Every path gives the same pixels on every x86-64 CPU (see the module doc).
fn decode(
    bytes: &[u8],
    limits: DecodeLimits,
    want: impl Fn(u32, u32) -> (u32, u32),
) -> Result<Decoded, ImageError> {
    let reader = ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| e.to_string())?;
    match reader.format() {
        None => return Err(ImageError::UnknownFormat),
        // The JPEG decoder fills a cut-off image with grey instead of failing; a
        // download that stopped early must not pass as an original.
        Some(image::ImageFormat::Jpeg) if !ends_with_eoi(bytes) => {
            return Err(ImageError::TruncatedJpeg)
        }
        Some(image::ImageFormat::Jpeg) => {
            if let Some(decoded) = decode_jpeg(bytes, limits, &want)? {
                return Ok(decoded);
            }
        }
        Some(image::ImageFormat::WebP) => {
            if let Some(decoded) = decode_webp(bytes, limits, &want)? {
                return Ok(decoded);
            }
        }
        Some(_) => {}
    }
    let mut l = image::Limits::default();
    l.max_image_width = Some(limits.max_side);
    l.max_image_height = Some(limits.max_side);
    l.max_alloc = Some(limits.max_bytes);
    let mut reader = reader;
    reader.limits(l);
    let img = reader.decode().map_err(|e| match e {
        image::ImageError::Limits(_) => too_large(limits, &e),
        other => ImageError::Decode(other.to_string()),
    })?;
    let rgb = flatten(img);
    let (width, height) = rgb.dimensions();
    Ok(Decoded { rgb, width, height })
}

/// A still WebP through libwebp (several times faster than the pure-Rust decoder, with
/// SIMD), shrunk while decoding by the largest power of two up to 8 that still covers
/// the target, as the JPEG path does. `None` for an animation or a header libwebp cannot
/// read: the full decoder takes those and gives its own error.
fn decode_webp(
    bytes: &[u8],
    limits: DecodeLimits,
    want: &dyn Fn(u32, u32) -> (u32, u32),
) -> Result<Option<Decoded>, ImageError> {
    use libwebp_sys as webp;
    let mut config =
        webp::WebPDecoderConfig::new().map_err(|_| "libwebp refused its own ABI version")?;
    // SAFETY: the pointer and length describe `bytes`, which outlives the call; libwebp
    // only reads them and writes the features struct it is given.
    let status = unsafe { webp::WebPGetFeatures(bytes.as_ptr(), bytes.len(), &mut config.input) };
    if status != webp::VP8StatusCode::VP8_STATUS_OK || config.input.has_animation != 0 {
        return Ok(None);
    }
    let (width, height) = (config.input.width as u32, config.input.height as u32);
    let alpha = config.input.has_alpha != 0;
    let bpp: u32 = if alpha { 4 } else { 3 };
    let full_bytes = u64::from(width) * u64::from(height) * u64::from(bpp);
    if width > limits.max_side || height > limits.max_side || full_bytes > limits.max_bytes {
        return Err(too_large(limits, &format_args!("{width}x{height}")));
    }
    let (tw, th) = want(width, height);
    let mut shrink = 1;
    while shrink < 8 && width / (shrink * 2) >= tw && height / (shrink * 2) >= th {
        shrink *= 2;
    }
    let (ow, oh) = (width.div_ceil(shrink), height.div_ceil(shrink));
    if shrink > 1 {
        config.options.use_scaling = 1;
        config.options.scaled_width = ow as i32;
        config.options.scaled_height = oh as i32;
    }
    let mut buf = vec![0u8; (ow * oh * bpp) as usize];
    config.output.colorspace = if alpha {
        webp::WEBP_CSP_MODE::MODE_RGBA
    } else {
        webp::WEBP_CSP_MODE::MODE_RGB
    };
    config.output.is_external_memory = 1;
    config.output.u.RGBA = webp::WebPRGBABuffer {
        rgba: buf.as_mut_ptr(),
        stride: (ow * bpp) as i32,
        size: buf.len(),
    };
    // SAFETY: the output buffer is ours, exactly stride x height bytes as declared, and
    // outlives the call; with external memory libwebp allocates nothing to free.
    let status = unsafe { webp::WebPDecode(bytes.as_ptr(), bytes.len(), &mut config) };
    if status != webp::VP8StatusCode::VP8_STATUS_OK {
        return Err(ImageError::Decode(format!(
            "WebP decoding failed ({status:?})"
        )));
    }
    let img = if alpha {
        image::RgbaImage::from_raw(ow, oh, buf).map(DynamicImage::ImageRgba8)
    } else {
        image::RgbImage::from_raw(ow, oh, buf).map(DynamicImage::ImageRgb8)
    }
    .ok_or("WebP buffer size mismatch")?;
    Ok(Some(Decoded {
        rgb: flatten(img),
        width,
        height,
    }))
}

fn too_large(limits: DecodeLimits, detail: &dyn std::fmt::Display) -> ImageError {
    ImageError::TooLarge {
        max_side: limits.max_side,
        max_mib: limits.max_bytes >> 20,
        size: detail.to_string(),
    }
}

/// Why a picture could not be decoded or encoded. Messages name the problem, not the
/// file: callers add the path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    #[error("not an image (unknown format)")]
    UnknownFormat,
    /// The JPEG decoder fills a cut-off image with grey instead of failing.
    #[error("truncated JPEG (no end-of-image marker)")]
    TruncatedJpeg,
    /// Refused from the header, before any pixel buffer is allocated.
    #[error("too large to decode safely (over {max_side} pixels a side or {max_mib} MiB): {size}")]
    TooLarge {
        max_side: u32,
        max_mib: u64,
        size: String,
    },
    /// The decoder's own message.
    #[error("{0}")]
    Decode(String),
    #[error("cannot resize or encode: {0}")]
    Encode(String),
    #[error("{0}")]
    Read(String),
}

impl From<String> for ImageError {
    fn from(problem: String) -> Self {
        ImageError::Decode(problem)
    }
}

impl From<&str> for ImageError {
    fn from(problem: &str) -> Self {
        ImageError::Decode(problem.into())
    }
}

/// A JPEG through jpeg-decoder built `platform_independent`: the same integer IDCT and
/// colour conversion on every CPU, so two maintainers ingesting the same originals pack
/// the same bytes (the SIMD decoders round differently from one CPU to the next). A JPEG
/// at least twice the target on both sides is decoded straight at the smallest DCT
/// scale (1/2, 1/4 or 1/8) that still covers it. `None` where this decoder cannot read
/// the file (12-bit samples, arithmetic coding): the general decoder then gives its own
/// answer.
fn decode_jpeg(
    bytes: &[u8],
    limits: DecodeLimits,
    want: &dyn Fn(u32, u32) -> (u32, u32),
) -> Result<Option<Decoded>, ImageError> {
    use jpeg_decoder::PixelFormat;
    let mut dec = jpeg_decoder::Decoder::new(bytes);
    if dec.read_info().is_err() {
        return Ok(None);
    }
    let Some(info) = dec.info() else {
        return Ok(None);
    };
    let (width, height) = (u32::from(info.width), u32::from(info.height));
    let full_bytes = u64::from(width) * u64::from(height) * 4;
    if width > limits.max_side || height > limits.max_side || full_bytes > limits.max_bytes {
        return Err(too_large(limits, &format_args!("{width}x{height}")));
    }
    if info.pixel_format == PixelFormat::L16 {
        return Ok(None);
    }
    let (tw, th) = want(width, height);
    if tw * 2 <= width && th * 2 <= height {
        // Both fit in u16: a JPEG side is at most 65535 and the target is no larger.
        dec.scale(tw as u16, th as u16).map_err(|e| e.to_string())?;
    }
    dec.set_max_decoding_buffer_size(usize::try_from(limits.max_bytes).unwrap_or(usize::MAX));
    let px = match dec.decode() {
        Ok(px) => px,
        Err(jpeg_decoder::Error::Unsupported(_)) => return Ok(None),
        Err(e) => return Err(ImageError::Decode(e.to_string())),
    };
    let info = dec.info().ok_or("JPEG decoder lost its header")?;
    let (sw, sh) = (u32::from(info.width), u32::from(info.height));
    let rgb = match info.pixel_format {
        PixelFormat::L8 => {
            image::GrayImage::from_raw(sw, sh, px).map(|g| DynamicImage::ImageLuma8(g).into_rgb8())
        }
        PixelFormat::CMYK32 => image::RgbImage::from_raw(sw, sh, cmyk_to_rgb(&px)),
        _ => image::RgbImage::from_raw(sw, sh, px),
    }
    .ok_or("JPEG decoder returned fewer pixels than its header declares")?;
    Ok(Some(Decoded { rgb, width, height }))
}

/// Ink amounts (as jpeg-decoder gives them, Adobe's inversion undone) to RGB: each
/// channel is what its ink and the black ink leave of white.
fn cmyk_to_rgb(cmyk: &[u8]) -> Vec<u8> {
    let keep = |ink: u8, k: u8| {
        let v = u32::from(255 - ink) * u32::from(255 - k);
        ((v + 127) / 255) as u8
    };
    cmyk.chunks_exact(4)
        .flat_map(|p| [keep(p[0], p[3]), keep(p[1], p[3]), keep(p[2], p[3])])
        .collect()
}

/// The image's pixels at full size, as RGB (transparency over white).
pub fn decode_rgb(bytes: &[u8], limits: DecodeLimits) -> Result<image::RgbImage, ImageError> {
    Ok(decode(bytes, limits, |w, h| (w, h))?.rgb)
}

/// [`decode_rgb`] of a file; the error says why, without the path.
pub fn load_rgb(
    path: &std::path::Path,
    limits: DecodeLimits,
) -> Result<image::RgbImage, ImageError> {
    let bytes = std::fs::read(path).map_err(|e| ImageError::Read(e.to_string()))?;
    decode_rgb(&bytes, limits)
}

/// A JPEG thumbnail fitting in `side` x `side`, made as ingest makes them (one decode,
/// linear-light Lanczos3, optimised JPEG); what `benches/thumbs.sh` times.
pub fn thumbnail(
    bytes: &[u8],
    side: u32,
    quality: u8,
    limits: DecodeLimits,
) -> Result<Vec<u8>, ImageError> {
    let fit_side = |w, h| fit(w, h, side, side);
    let d = decode(bytes, limits, fit_side)?;
    let (tw, th) = fit_side(d.width, d.height);
    let px = resize(&d.rgb, tw, th)?;
    encode_jpeg(&px, tw, th, quality)
}

/// Decodes `bytes` and makes everything ingest keeps of the image.
pub fn analyse(
    bytes: &[u8],
    limits: DecodeLimits,
    sizes: Sizes,
    square: (f64, f64),
) -> Result<Picture, ImageError> {
    let sample_size = |w: u32, h: u32| {
        let ratio = f64::from(w) / f64::from(h);
        let long = if ratio >= square.0 && ratio <= square.1 {
            sizes.sample_square
        } else {
            sizes.sample
        };
        fit(w, h, long, long)
    };
    let Decoded {
        rgb,
        width: w,
        height: h,
    } = decode(bytes, limits, sample_size)?;
    let pixels_blake3 = blake3::hash(rgb.as_raw()).to_hex().to_string();
    let (sw, sh) = sample_size(w, h);
    let sample_px = resize(&rgb, sw, sh)?;
    let (tw, th) = fit(sw, sh, sizes.thumb, sizes.thumb);
    let sample_img = image::RgbImage::from_raw(sw, sh, sample_px).ok_or("resize size mismatch")?;
    let thumb_px = resize(&sample_img, tw, th)?;
    let sample = encode_jpeg(sample_img.as_raw(), sw, sh, sizes.jpeg_quality)?;
    let thumb = encode_jpeg(&thumb_px, tw, th, sizes.jpeg_quality)?;
    let thumb_pixels = image::RgbImage::from_raw(tw, th, thumb_px).ok_or("resize size mismatch")?;

    let mut stats = statistics(&sample_img);
    stats.jpeg_quality = jpeg_quality(bytes);
    let phash = format!("{:016x}", phash(&sample_img));
    Ok(Picture {
        width: w,
        height: h,
        pixels_blake3,
        phash,
        stats,
        thumb,
        sample,
        thumb_pixels,
    })
}

/// Whether a JPEG ends with its EOI marker (allowing a little padding after it, which
/// some writers add).
fn ends_with_eoi(bytes: &[u8]) -> bool {
    let tail = &bytes[bytes.len().saturating_sub(64)..];
    tail.windows(2).any(|w| w == [0xFF, 0xD9])
}

/// RGB with any transparency composited over white (JPEG has no alpha; black would be
/// what a plain conversion gives).
fn flatten(img: DynamicImage) -> image::RgbImage {
    if !img.color().has_alpha() {
        return img.into_rgb8();
    }
    let rgba = img.into_rgba8();
    let (w, h) = rgba.dimensions();
    let mut out = image::RgbImage::new(w, h);
    for (o, p) in out.pixels_mut().zip(rgba.pixels()) {
        let a = u32::from(p[3]);
        for c in 0..3 {
            o[c] = ((u32::from(p[c]) * a + 255 * (255 - a) + 127) / 255) as u8;
        }
    }
    out
}

/// The largest size within (mw, mh) with the same aspect, never larger than (w, h).
fn fit(w: u32, h: u32, mw: u32, mh: u32) -> (u32, u32) {
    if w <= mw && h <= mh {
        return (w, h);
    }
    let scale = (mw as f64 / w as f64).min(mh as f64 / h as f64);
    (
        ((w as f64 * scale).round() as u32).max(1),
        ((h as f64 * scale).round() as u32).max(1),
    )
}

fn resize(src: &image::RgbImage, w: u32, h: u32) -> Result<Vec<u8>, ImageError> {
    resize_on(src, w, h, None)
}

/// [`resize`] with the SIMD extensions `cpu` (the best this CPU has when `None`). The
/// 16-bit convolution is integer arithmetic that every extension rounds alike, which a
/// test holds it to: unlike the JPEG codecs, the resizer may keep its SIMD.
fn resize_on(
    src: &image::RgbImage,
    w: u32,
    h: u32,
    cpu: Option<fast_image_resize::CpuExtensions>,
) -> Result<Vec<u8>, ImageError> {
    let (sw, sh) = src.dimensions();
    if (sw, sh) == (w, h) {
        return Ok(src.as_raw().clone());
    }
    let err = |e: &dyn std::fmt::Display| ImageError::Encode(e.to_string());
    let mapper = fast_image_resize::create_srgb_mapper();
    let src8 = fast_image_resize::images::ImageRef::new(sw, sh, src.as_raw(), PixelType::U8x3)
        .map_err(|e| err(&e))?;
    let mut lin = Image::new(sw, sh, PixelType::U16x3);
    mapper.forward_map(&src8, &mut lin).map_err(|e| err(&e))?;
    let mut out = Image::new(w, h, PixelType::U16x3);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3));
    let mut resizer = Resizer::new();
    if let Some(cpu) = cpu {
        // SAFETY: `cpu` is one of the extensions this CPU supports (the callers check
        // `is_supported`).
        unsafe { resizer.set_cpu_extensions(cpu) };
    }
    resizer
        .resize(&lin, &mut out, &options)
        .map_err(|e| err(&e))?;
    let mut out8 = Image::new(w, h, PixelType::U8x3);
    mapper.backward_map(&out, &mut out8).map_err(|e| err(&e))?;
    Ok(out8.into_vec())
}

fn encode_jpeg(rgb: &[u8], w: u32, h: u32, quality: u8) -> Result<Vec<u8>, ImageError> {
    let mut out = Vec::new();
    let mut enc = jpeg_encoder::Encoder::new(&mut out, quality);
    enc.set_optimized_huffman_tables(true);
    let (w, h) = (
        u16::try_from(w).map_err(|_| ImageError::Encode("too wide for JPEG".into()))?,
        u16::try_from(h).map_err(|_| ImageError::Encode("too tall for JPEG".into()))?,
    );
    enc.encode(rgb, w, h, jpeg_encoder::ColorType::Rgb)
        .map_err(|e| ImageError::Encode(e.to_string()))?;
    Ok(out)
}

fn luma(p: &image::Rgb<u8>) -> f64 {
    0.299 * f64::from(p[0]) + 0.587 * f64::from(p[1]) + 0.114 * f64::from(p[2])
}

fn statistics(img: &image::RgbImage) -> Stats {
    let (w, h) = img.dimensions();
    let n = f64::from(w) * f64::from(h);
    let mut hist = [0u64; 256];
    let mut sum = [0f64; 3];
    let (mut chroma_sum, mut chroma_max) = (0f64, 0f64);
    let mut colors = std::collections::HashSet::new();
    let mut lum = Vec::with_capacity((w * h) as usize);
    for p in img.pixels() {
        let y = luma(p);
        lum.push(y);
        hist[y.round().clamp(0.0, 255.0) as usize] += 1;
        for c in 0..3 {
            sum[c] += f64::from(p[c]);
        }
        // Chroma as HCL defines it: the spread between the largest and smallest channel.
        let c = f64::from(p.0.iter().max().unwrap() - p.0.iter().min().unwrap());
        chroma_sum += c;
        chroma_max = chroma_max.max(c);
        colors.insert((u32::from(p[0]) << 16) | (u32::from(p[1]) << 8) | u32::from(p[2]));
    }
    let mean = lum.iter().sum::<f64>() / n;
    let var = lum.iter().map(|y| (y - mean).powi(2)).sum::<f64>() / n;
    let std = var.sqrt();
    let skewness = if std > 0.0 {
        lum.iter().map(|y| ((y - mean) / std).powi(3)).sum::<f64>() / n
    } else {
        0.0
    };
    let entropy = hist
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum();
    // Sobel magnitude on the luma, averaged over the interior.
    let at = |x: u32, y: u32| lum[(y * w + x) as usize];
    let mut edge_sum = 0f64;
    let mut edge_n = 0f64;
    for y in 1..h.saturating_sub(1) {
        for x in 1..w.saturating_sub(1) {
            let gx = at(x + 1, y - 1) + 2.0 * at(x + 1, y) + at(x + 1, y + 1)
                - at(x - 1, y - 1)
                - 2.0 * at(x - 1, y)
                - at(x - 1, y + 1);
            let gy = at(x - 1, y + 1) + 2.0 * at(x, y + 1) + at(x + 1, y + 1)
                - at(x - 1, y - 1)
                - 2.0 * at(x, y - 1)
                - at(x + 1, y - 1);
            edge_sum += (gx * gx + gy * gy).sqrt();
            edge_n += 1.0;
        }
    }
    let round = |v: f64| (v * 1000.0).round() / 1000.0;
    Stats {
        trim: trim_box(img).map(round),
        entropy: round(entropy),
        mean: round(mean),
        std: round(std),
        skewness: round(skewness),
        colors: colors.len() as u64,
        chroma_mean: round(chroma_sum / n),
        chroma_max,
        rgb_mean: sum.map(|s| round(s / n)),
        edges: round(if edge_n > 0.0 { edge_sum / edge_n } else { 0.0 }),
        jpeg_quality: None,
    }
}

/// The box inside a border whose rows and columns stay within 8 levels of the corner's
/// colour, as fractions of the image.
fn trim_box(img: &image::RgbImage) -> [f64; 4] {
    let (w, h) = img.dimensions();
    let corner = *img.get_pixel(0, 0);
    let near =
        |p: &image::Rgb<u8>| (0..3).all(|c| (i32::from(p[c]) - i32::from(corner[c])).abs() <= 8);
    let row_uniform = |y: u32| (0..w).all(|x| near(img.get_pixel(x, y)));
    let col_uniform = |x: u32, y0: u32, y1: u32| (y0..y1).all(|y| near(img.get_pixel(x, y)));
    let mut top = 0;
    while top < h && row_uniform(top) {
        top += 1;
    }
    if top == h {
        return [0.0, 0.0, 1.0, 1.0];
    }
    let mut bottom = h;
    while bottom > top && row_uniform(bottom - 1) {
        bottom -= 1;
    }
    let mut left = 0;
    while left < w && col_uniform(left, top, bottom) {
        left += 1;
    }
    let mut right = w;
    while right > left && col_uniform(right - 1, top, bottom) {
        right -= 1;
    }
    let (fw, fh) = (f64::from(w), f64::from(h));
    [
        f64::from(left) / fw,
        f64::from(top) / fh,
        f64::from(right - left) / fw,
        f64::from(bottom - top) / fh,
    ]
}

/// DCT perceptual hash: 32x32 luma, 2-D DCT, the 8x8 lowest frequencies (DC left out of
/// the median), one bit each for above the median.
fn phash(img: &image::RgbImage) -> u64 {
    let small = image::imageops::resize(img, 32, 32, image::imageops::FilterType::Triangle);
    let lum: Vec<f64> = small.pixels().map(luma).collect();
    let n = 32usize;
    let cos: Vec<f64> = (0..8)
        .flat_map(|u| {
            (0..n).map(move |x| {
                (std::f64::consts::PI * (2 * x + 1) as f64 * u as f64 / (2 * n) as f64).cos()
            })
        })
        .collect();
    let mut coeffs = [0f64; 64];
    for u in 0..8 {
        for v in 0..8 {
            let mut s = 0.0;
            for y in 0..n {
                for x in 0..n {
                    s += lum[y * n + x] * cos[u * n + x] * cos[v * n + y];
                }
            }
            coeffs[v * 8 + u] = s;
        }
    }
    let mut sorted: Vec<f64> = coeffs[1..].to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    coeffs
        .iter()
        .enumerate()
        .fold(0u64, |h, (i, &c)| if c > median { h | (1 << i) } else { h })
}

/// IJG-style quality estimate from the first (luminance) quantisation table: the scale
/// against the standard table, inverted through libjpeg's quality formula.
pub fn jpeg_quality(bytes: &[u8]) -> Option<u8> {
    const STD: [u16; 64] = [
        16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69,
        56, 14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81,
        104, 113, 92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
    ];
    if bytes.len() < 4 || bytes[0] != 0xFF || bytes[1] != 0xD8 {
        return None;
    }
    let mut i = 2;
    while i + 4 <= bytes.len() {
        if bytes[i] != 0xFF {
            return None;
        }
        let marker = bytes[i + 1];
        let len = usize::from(u16::from_be_bytes([bytes[i + 2], bytes[i + 3]]));
        if marker == 0xDB {
            let body = bytes.get(i + 4..i + 2 + len)?;
            let precision16 = body.first()? >> 4 == 1;
            let table: Vec<u16> = if precision16 {
                body.get(1..129)?
                    .chunks(2)
                    .map(|c| u16::from_be_bytes([c[0], c[1]]))
                    .collect()
            } else {
                body.get(1..65)?.iter().map(|&b| u16::from(b)).collect()
            };
            // Tables are stored in zigzag order; the ratio's mean does not care.
            let mut zig = [0u16; 64];
            zig.copy_from_slice(&table[..64]);
            let std_zig = zigzag(&STD);
            let scale: f64 = zig
                .iter()
                .zip(std_zig.iter())
                .map(|(&q, &s)| f64::from(q) * 100.0 / f64::from(s))
                .sum::<f64>()
                / 64.0;
            let q = if scale <= 100.0 {
                (200.0 - scale) / 2.0
            } else {
                5000.0 / scale
            };
            return Some(q.round().clamp(1.0, 100.0) as u8);
        }
        if marker == 0xDA {
            return None;
        }
        i += 2 + len;
    }
    None
}

fn zigzag(natural: &[u16; 64]) -> [u16; 64] {
    const ORDER: [usize; 64] = [
        0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27,
        20, 13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51,
        58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
    ];
    let mut out = [0u16; 64];
    for (i, &n) in ORDER.iter().enumerate() {
        out[i] = natural[n];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::ImageEncoder;

    /// What ingest keeps of `bytes` with the default sizes and limits.
    fn analysed(bytes: &[u8]) -> Picture {
        analyse(bytes, DecodeLimits::default(), Sizes::default(), (0.8, 1.2)).unwrap()
    }

    fn jpeg(w: u32, h: u32, q: u8) -> Vec<u8> {
        // Soft blobs placed by relative position, so a smaller copy is the same picture.
        let blobs = [
            (0.3, 0.35, 0.2, [220.0, 60.0, 50.0]),
            (0.7, 0.6, 0.25, [40.0, 90.0, 210.0]),
            (0.45, 0.8, 0.15, [250.0, 230.0, 90.0]),
        ];
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            let (fx, fy) = (x as f64 / w as f64, y as f64 / h as f64);
            let mut px = [30.0f64; 3];
            for (cx, cy, r, color) in blobs {
                let d2 = ((fx - cx).powi(2) + (fy - cy).powi(2)) / (r * r);
                let a = (-d2).exp();
                for c in 0..3 {
                    px[c] = px[c] * (1.0 - a) + color[c] * a;
                }
            }
            image::Rgb(px.map(|v| v as u8))
        });
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, q)
            .encode_image(&img)
            .unwrap();
        out
    }

    #[test]
    fn thumbnails_and_samples_keep_aspect_and_never_upscale() {
        let p = analysed(&jpeg(1600, 1000, 90));
        assert_eq!((p.width, p.height), (1600, 1000));
        let s = image::load_from_memory(&p.sample).unwrap();
        assert_eq!((s.width(), s.height()), (1280, 800));
        let t = image::load_from_memory(&p.thumb).unwrap();
        assert_eq!((t.width(), t.height()), (512, 320));
        let small = analysed(&jpeg(300, 200, 90));
        let s = image::load_from_memory(&small.sample).unwrap();
        assert_eq!((s.width(), s.height()), (300, 200));
        let sq = analysed(&jpeg(1500, 1400, 90));
        let s = image::load_from_memory(&sq.sample).unwrap();
        assert_eq!(s.width().max(s.height()), 1024);
    }

    #[test]
    fn the_resizer_rounds_alike_on_every_simd_extension() {
        use fast_image_resize::CpuExtensions;
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let noise = image::RgbImage::from_fn(517, 383, |_, _| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            image::Rgb([x as u8, (x >> 8) as u8, (x >> 16) as u8])
        });
        let src = image::load_from_memory(&jpeg(517, 383, 90))
            .unwrap()
            .into_rgb8();
        let cpus: Vec<CpuExtensions> = [CpuExtensions::Sse4_1, CpuExtensions::Avx2]
            .into_iter()
            .filter(|c| c.is_supported())
            .collect();
        for img in [&noise, &src] {
            for (w, h) in [(256, 190), (100, 74), (1000, 700)] {
                let scalar = resize_on(img, w, h, Some(CpuExtensions::None)).unwrap();
                for &cpu in &cpus {
                    let simd = resize_on(img, w, h, Some(cpu)).unwrap();
                    assert!(simd == scalar, "{cpu:?} differs from scalar at {w}x{h}");
                }
            }
        }
    }

    #[test]
    fn cmyk_jpegs_decode_on_the_portable_path() {
        // Full cyan ink on the left half, full black on the right.
        let (w, h) = (64u16, 32u16);
        let mut px = Vec::new();
        for _ in 0..h {
            for x in 0..w {
                px.extend_from_slice(if x < w / 2 {
                    &[255, 0, 0, 0]
                } else {
                    &[0, 0, 0, 255]
                });
            }
        }
        let mut out = Vec::new();
        jpeg_encoder::Encoder::new(&mut out, 95)
            .encode(&px, w, h, jpeg_encoder::ColorType::Cmyk)
            .unwrap();
        let d = decode_jpeg(&out, DecodeLimits::default(), &|w, h| (w, h))
            .unwrap()
            .expect("jpeg-decoder reads CMYK");
        let near = |p: &image::Rgb<u8>, want: [u8; 3]| {
            p.0.iter().zip(want).all(|(a, b)| a.abs_diff(b) <= 8)
        };
        assert!(
            near(d.rgb.get_pixel(8, 16), [0, 255, 255]),
            "{:?}",
            d.rgb.get_pixel(8, 16)
        );
        assert!(
            near(d.rgb.get_pixel(56, 16), [0, 0, 0]),
            "{:?}",
            d.rgb.get_pixel(56, 16)
        );
    }

    #[test]
    fn jpeg_quality_is_estimated_from_the_tables() {
        for q in [50u8, 75, 90] {
            let est = jpeg_quality(&jpeg(64, 64, q)).unwrap();
            assert!((i32::from(est) - i32::from(q)).abs() <= 3, "{q} -> {est}");
        }
        assert_eq!(jpeg_quality(b"not a jpeg"), None);
    }

    #[test]
    fn phash_survives_resizing_and_tells_pictures_apart() {
        let a = analysed(&jpeg(800, 600, 95));
        let b = analysed(&jpeg(400, 300, 70));
        let d = |x: &str, y: &str| {
            (u64::from_str_radix(x, 16).unwrap() ^ u64::from_str_radix(y, 16).unwrap()).count_ones()
        };
        assert!(d(&a.phash, &b.phash) <= 4, "{} {}", a.phash, b.phash);
        let other = image::RgbImage::from_fn(800, 600, |x, _| {
            image::Rgb([if x < 400 { 0 } else { 255 }; 3])
        });
        let mut bytes = Vec::new();
        image::codecs::png::PngEncoder::new(&mut bytes)
            .write_image(other.as_raw(), 800, 600, image::ExtendedColorType::Rgb8)
            .unwrap();
        let c = analysed(&bytes);
        assert!(d(&a.phash, &c.phash) > 10);
        assert_eq!(c.stats.colors, 2);
    }

    #[test]
    fn large_jpegs_decode_at_a_reduced_scale_to_the_same_picture() {
        let big = jpeg(3000, 2000, 92);
        let p = analysed(&big);
        assert_eq!((p.width, p.height), (3000, 2000));
        let s = image::load_from_memory(&p.sample).unwrap();
        assert_eq!((s.width(), s.height()), (1280, 853));
        let t =
            image::load_from_memory(&thumbnail(&big, 512, 85, DecodeLimits::default()).unwrap())
                .unwrap();
        assert_eq!((t.width(), t.height()), (512, 341));
        // The same picture as a PNG decodes at full size: its hash must agree.
        let full = image::load_from_memory(&big).unwrap().into_rgb8();
        let mut png = Vec::new();
        image::codecs::png::PngEncoder::new(&mut png)
            .write_image(full.as_raw(), 3000, 2000, image::ExtendedColorType::Rgb8)
            .unwrap();
        let q = analysed(&png);
        let d = (u64::from_str_radix(&p.phash, 16).unwrap()
            ^ u64::from_str_radix(&q.phash, 16).unwrap())
        .count_ones();
        assert!(d <= 2, "{} {}", p.phash, q.phash);
        // So must a lossless WebP of it, with an alpha channel, shrunk while decoding.
        let rgba = image::DynamicImage::ImageRgb8(full.clone()).into_rgba8();
        let mut webp = Vec::new();
        image::codecs::webp::WebPEncoder::new_lossless(&mut webp)
            .write_image(rgba.as_raw(), 3000, 2000, image::ExtendedColorType::Rgba8)
            .unwrap();
        let w = analysed(&webp);
        assert_eq!((w.width, w.height), (3000, 2000));
        let s = image::load_from_memory(&w.sample).unwrap();
        assert_eq!((s.width(), s.height()), (1280, 853));
        let d = (u64::from_str_radix(&w.phash, 16).unwrap()
            ^ u64::from_str_radix(&q.phash, 16).unwrap())
        .count_ones();
        assert!(d <= 2, "{} {}", w.phash, q.phash);
        let err = analyse(
            &webp[..webp.len() / 2],
            DecodeLimits::default(),
            Sizes::default(),
            (0.8, 1.2),
        )
        .err()
        .unwrap();
        assert!(matches!(err, ImageError::Decode(_)), "{err}");
        // Limits hold before the reduced decode allocates anything.
        let tight = DecodeLimits {
            max_side: 2500,
            max_bytes: 1 << 30,
        };
        let err = analyse(&big, tight, Sizes::default(), (0.8, 1.2))
            .err()
            .unwrap();
        assert!(
            matches!(&err, ImageError::TooLarge { max_side: 2500, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("too large"), "{err}");
        // Greyscale takes the reduced path too and comes out as RGB.
        let grey = image::DynamicImage::ImageRgb8(full).into_luma8();
        let mut gj = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut gj, 90)
            .encode_image(&grey)
            .unwrap();
        let g = analysed(&gj);
        let s = image::load_from_memory(&g.sample).unwrap();
        assert_eq!((s.width(), s.height()), (1280, 853));
        assert!(g.stats.chroma_max <= 2.0);
    }
}

/// Embeddings as records carry them: unit vectors, base64 of little-endian float16
/// (docs/detect.md, "Embeddings").
pub mod embedding {
    use base64::Engine;

    /// The longest vector seedpool stores; a model's own claim is never the limit.
    pub const MAX_DIMS: usize = 4096;

    /// Scales a vector to unit length (a zero vector stays zero).
    pub fn unit(v: &mut [f32]) {
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            v.iter_mut().for_each(|x| *x /= norm);
        }
    }

    /// Little-endian float16: 2 bytes a dimension, as records and the pool keep vectors.
    pub fn to_f16(v: &[f32]) -> Vec<u8> {
        v.iter()
            .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
            .collect()
    }

    /// The values of [`to_f16`]'s bytes (a trailing odd byte is ignored).
    pub fn from_f16(b: &[u8]) -> Vec<f32> {
        let mut v = Vec::with_capacity(b.len() / 2);
        extend_f16(&mut v, b);
        v
    }

    /// Appends the values of [`to_f16`]'s bytes to `v`, for a scan that reuses one
    /// buffer.
    pub fn extend_f16(v: &mut Vec<f32>, b: &[u8]) {
        v.extend(
            b.chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()),
        );
    }

    /// base64 of [`to_f16`]'s bytes.
    pub fn encode(v: &[f32]) -> String {
        base64::engine::general_purpose::STANDARD.encode(to_f16(v))
    }

    /// A record's `embedding`, or why it is not one. At most [`MAX_DIMS`] values, all
    /// finite: a record from the network is held to seedpool's limit.
    pub fn decode(text: &str) -> Result<Vec<f32>, String> {
        if text.len() > MAX_DIMS * 2 * 4 / 3 + 4 {
            return Err(format!("longer than {MAX_DIMS} dimensions"));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| format!("not base64: {e}"))?;
        if bytes.is_empty() || bytes.len() % 2 != 0 {
            return Err(format!("{} bytes is not a float16 vector", bytes.len()));
        }
        let v = from_f16(&bytes);
        if v.iter().any(|x| !x.is_finite()) {
            return Err("holds a value that is not a finite number".into());
        }
        Ok(v)
    }
}
