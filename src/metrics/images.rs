//! Reading pictures for evaluation the way pytorch-fid and torch-fidelity do: PIL's
//! `Image.open(path).convert('RGB')`. Grey is repeated over the channels and alpha is dropped
//! (never composited); 16-bit grey is clipped at 255 and 16-bit colour keeps its high byte, as PIL
//! converts them; palette images are expanded.
//!
//! Picture folders are user territory, so nothing in them may cost unbounded memory: a file's size
//! is checked before it is read ([`MAX_FILE_BYTES`]), its header's dimensions before it is decoded
//! ([`MAX_SIDE`], [`MAX_PIXELS`]), and the decoder runs under `image`'s allocation limit
//! ([`MAX_DECODE_BYTES`]). A refused picture is a `BadFile` error, which the evaluation lists as
//! unreadable and skips.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::error::LimitErrorKind;
use image::{DynamicImage, ImageError, ImageFormat, ImageReader, Limits, RgbImage};

use crate::error::{Error, Result};

const EXTENSIONS: [&str; 8] = ["png", "jpg", "jpeg", "bmp", "webp", "tif", "tiff", "pgm"];

/// The largest picture file read (256 MiB): far above any real PNG or JPEG of an allowed size.
pub const MAX_FILE_BYTES: u64 = 256 << 20;
/// The longest side decoded, in pixels.
pub const MAX_SIDE: u32 = 16_384;
/// The most pixels decoded (2²⁸, 16384²: 768 MiB as 8-bit RGB).
pub const MAX_PIXELS: u64 = 1 << 28;
/// What the decoder may allocate at once: an allowed picture as 8-bit RGBA (1 GiB). 16-bit
/// pictures near the pixel limit exceed it and are refused with a sentence.
pub const MAX_DECODE_BYTES: u64 = MAX_PIXELS * 4;

/// The pictures in a folder (not its subfolders), sorted by file name.
pub fn list_pictures(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Err(Error::not_found("picture folder", dir));
    }
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("cannot list the folder", e, dir))?;
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// The bytes of a picture file, refused unread when it is larger than [`MAX_FILE_BYTES`].
pub fn read_picture_bytes(path: &Path) -> Result<Vec<u8>> {
    // A pipe named like a picture would block the evaluation for ever.
    crate::files::refuse_special(path)?;
    let size = std::fs::metadata(path).map_err(|e| Error::io("cannot read the picture", e, path))?.len();
    if size > MAX_FILE_BYTES {
        return Err(Error::bad_file(
            format!(
                "this picture file is {}, more than the {} Easel reads; it was skipped unread \
                 (remove it from the folder, or save the picture smaller)",
                mib(size),
                mib(MAX_FILE_BYTES)
            ),
            path,
        ));
    }
    std::fs::read(path).map_err(|e| Error::io("cannot read the picture", e, path))
}

/// Reads a picture as 8-bit RGB with PIL's conversion rules, within the size limits.
pub fn read_rgb(path: &Path) -> Result<RgbImage> {
    decode_rgb(&read_picture_bytes(path)?, path)
}

/// Decodes a picture file's bytes as 8-bit RGB with PIL's conversion rules. `path` names the file
/// in errors, and its extension is the format's first guess (the content's signature wins, as
/// PIL sniffs it). Dimensions are checked from the header before any pixel is decoded.
pub fn decode_rgb(bytes: &[u8], path: &Path) -> Result<RgbImage> {
    let reader = || -> Result<ImageReader<Cursor<&[u8]>>> {
        let mut reader = ImageReader::new(Cursor::new(bytes));
        if let Ok(format) = ImageFormat::from_path(path) {
            reader.set_format(format);
        }
        reader
            .with_guessed_format()
            .map_err(|e| Error::bad_file(format!("cannot read this picture ({e})"), path))
    };
    // The header alone first, so an oversized picture gets the sentence about its size.
    let (w, h) = reader()?.into_dimensions().map_err(|e| unreadable(e, path))?;
    check_dimensions(w, h).map_err(|why| Error::bad_file(why, path))?;
    let mut decoding = reader()?;
    decoding.limits(limits());
    let img = decoding.decode().map_err(|e| unreadable(e, path))?;
    Ok(match img {
        DynamicImage::ImageLuma16(g) => {
            let grey = image::GrayImage::from_fn(g.width(), g.height(), |x, y| {
                image::Luma([g.get_pixel(x, y)[0].min(255) as u8])
            });
            DynamicImage::ImageLuma8(grey).into_rgb8()
        }
        DynamicImage::ImageLumaA16(g) => {
            let grey = image::GrayImage::from_fn(g.width(), g.height(), |x, y| {
                image::Luma([g.get_pixel(x, y)[0].min(255) as u8])
            });
            DynamicImage::ImageLuma8(grey).into_rgb8()
        }
        DynamicImage::ImageRgb16(c) => RgbImage::from_fn(c.width(), c.height(), |x, y| {
            image::Rgb(c.get_pixel(x, y).0.map(|v| (v >> 8) as u8))
        }),
        DynamicImage::ImageRgba16(c) => RgbImage::from_fn(c.width(), c.height(), |x, y| {
            let p = c.get_pixel(x, y).0;
            image::Rgb([p[0], p[1], p[2]].map(|v| (v >> 8) as u8))
        }),
        // `into_rgb8` hands an 8-bit RGB buffer over without copying it.
        other => other.into_rgb8(),
    })
}

/// Why a picture of `w`×`h` pixels is refused, if it is.
pub fn check_dimensions(w: u32, h: u32) -> std::result::Result<(), String> {
    if w == 0 || h == 0 {
        return Err(format!("this picture is {w}×{h} pixels: it has no pixels to measure"));
    }
    if w > MAX_SIDE || h > MAX_SIDE || u64::from(w) * u64::from(h) > MAX_PIXELS {
        return Err(format!(
            "this picture is {w}×{h} pixels, larger than the {MAX_SIDE}×{MAX_SIDE} Easel measures; \
             it was skipped undecoded (scale it down to evaluate it)"
        ));
    }
    Ok(())
}

fn limits() -> Limits {
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    limits
}

fn unreadable(e: ImageError, path: &Path) -> Error {
    match e {
        ImageError::Limits(l) if l.kind() == LimitErrorKind::InsufficientMemory => Error::bad_file(
            format!(
                "this picture needs more memory to decode than the {} Easel allows ({l}); it was \
                 skipped (save it smaller, or as 8-bit)",
                mib(MAX_DECODE_BYTES)
            ),
            path,
        ),
        e => Error::bad_file(format!("cannot read this picture ({e})"), path),
    }
}

fn mib(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{:.1} GiB", bytes as f64 / f64::from(1u32 << 30))
    } else {
        format!("{:.0} MiB", bytes as f64 / f64::from(1u32 << 20))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png_bytes(img: &RgbImage) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Png).expect("encoded");
        out.into_inner()
    }

    #[test]
    fn a_sparse_giant_file_is_refused_unread() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("big.png");
        // Sparse: no disk is used, and reading it would take 3 GiB of memory.
        std::fs::File::create(&path).expect("created").set_len(3 << 30).expect("sized");
        let err = read_rgb(&path).expect_err("refused").to_string();
        assert!(err.contains("3.0 GiB") && err.contains("256 MiB") && err.contains("big.png"), "{err}");
    }

    #[test]
    fn dimensions_are_checked_from_the_header() {
        // A valid PNG header declaring 20000×20000 pixels, with no pixel data behind it.
        let mut bytes = png_bytes(&RgbImage::new(1, 1));
        bytes[16..20].copy_from_slice(&20_000u32.to_be_bytes());
        bytes[20..24].copy_from_slice(&20_000u32.to_be_bytes());
        let mut crc = flate2::Crc::new();
        crc.update(&bytes[12..29]);
        bytes[29..33].copy_from_slice(&crc.sum().to_be_bytes());
        let err = decode_rgb(&bytes, Path::new("huge.png")).expect_err("refused").to_string();
        assert!(err.contains("20000×20000") && err.contains("huge.png"), "{err}");
        assert!(check_dimensions(20_000, 10).is_err());
        assert!(check_dimensions(16_384, 16_384).is_ok());
        assert!(check_dimensions(0, 5).is_err());
    }

    #[test]
    fn the_content_decides_the_format_over_the_extension() {
        let img = RgbImage::from_pixel(3, 2, image::Rgb([10, 20, 30]));
        let back = decode_rgb(&png_bytes(&img), Path::new("actually_png.jpg")).expect("decoded");
        assert_eq!(back, img);
    }
}
