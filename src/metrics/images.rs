//! Reading pictures for evaluation the way pytorch-fid and torch-fidelity do: PIL's
//! `Image.open(path).convert('RGB')`. Grey is repeated over the channels and alpha is dropped
//! (never composited); 16-bit grey is clipped at 255 and 16-bit colour keeps its high byte, as PIL
//! converts them; palette images are expanded.

use std::path::{Path, PathBuf};

use image::{DynamicImage, RgbImage};

use crate::error::{Error, Result};

const EXTENSIONS: [&str; 8] = ["png", "jpg", "jpeg", "bmp", "webp", "tif", "tiff", "pgm"];

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

/// Reads a picture as 8-bit RGB with PIL's conversion rules.
pub fn read_rgb(path: &Path) -> Result<RgbImage> {
    let img =
        image::open(path).map_err(|e| Error::bad_file(format!("cannot read this picture ({e})"), path))?;
    Ok(match img {
        DynamicImage::ImageLuma16(g) => {
            let grey = image::GrayImage::from_fn(g.width(), g.height(), |x, y| {
                image::Luma([g.get_pixel(x, y)[0].min(255) as u8])
            });
            DynamicImage::ImageLuma8(grey).to_rgb8()
        }
        DynamicImage::ImageLumaA16(g) => {
            let grey = image::GrayImage::from_fn(g.width(), g.height(), |x, y| {
                image::Luma([g.get_pixel(x, y)[0].min(255) as u8])
            });
            DynamicImage::ImageLuma8(grey).to_rgb8()
        }
        DynamicImage::ImageRgb16(c) => RgbImage::from_fn(c.width(), c.height(), |x, y| {
            image::Rgb(c.get_pixel(x, y).0.map(|v| (v >> 8) as u8))
        }),
        DynamicImage::ImageRgba16(c) => RgbImage::from_fn(c.width(), c.height(), |x, y| {
            let p = c.get_pixel(x, y).0;
            image::Rgb([p[0], p[1], p[2]].map(|v| (v >> 8) as u8))
        }),
        other => other.to_rgb8(),
    })
}
