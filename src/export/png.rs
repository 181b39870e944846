//! PNG files with text chunks: A1111's `parameters` (tEXt when Latin-1, else iTXt) and Easel's
//! own lossless JSON (`easel`, iTXt). The `image` crate drops text chunks, so the `png` crate
//! writes and reads them.

use std::collections::BTreeMap;
use std::path::Path;

use image::RgbImage;

use super::write_atomically;
use crate::error::{Error, Result};

/// Encodes `image` with the given text chunks (key → text).
pub fn encode_png(image: &RgbImage, texts: &[(String, String)]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, image.width(), image.height());
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        for (key, text) in texts {
            let result = if text.chars().all(|c| (c as u32) < 256) {
                encoder.add_text_chunk(key.clone(), text.clone())
            } else {
                encoder.add_itxt_chunk(key.clone(), text.clone())
            };
            result.map_err(|e| Error::BadRequest(format!("cannot store the {key} metadata: {e}")))?;
        }
        let mut writer =
            encoder.write_header().map_err(|e| Error::BadRequest(format!("cannot encode the PNG: {e}")))?;
        writer
            .write_image_data(image.as_raw())
            .map_err(|e| Error::BadRequest(format!("cannot encode the PNG: {e}")))?;
    }
    Ok(out)
}

/// Writes a PNG with metadata atomically; see [`write_atomically`].
pub fn save_png(path: &Path, image: &RgbImage, texts: &[(String, String)], overwrite: bool) -> Result<()> {
    write_atomically(path, &encode_png(image, texts)?, overwrite)
}

/// Every text chunk of a PNG (tEXt, zTXt and iTXt), key → text.
pub fn read_png_text(path: &Path) -> Result<BTreeMap<String, String>> {
    let file = std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::not_found("picture", path),
        _ => Error::io("cannot open the picture", e, path),
    })?;
    let decoder = png::Decoder::new(std::io::BufReader::new(file));
    let reader = decoder
        .read_info()
        .map_err(|e| Error::bad_file(format!("this is not a readable PNG ({e})"), path))?;
    let info = reader.info();
    let mut texts = BTreeMap::new();
    for chunk in &info.uncompressed_latin1_text {
        texts.insert(chunk.keyword.clone(), chunk.text.clone());
    }
    for chunk in &info.compressed_latin1_text {
        if let Ok(text) = chunk.get_text() {
            texts.insert(chunk.keyword.clone(), text);
        }
    }
    for chunk in &info.utf8_text {
        if let Ok(text) = chunk.get_text() {
            texts.insert(chunk.keyword.clone(), text);
        }
    }
    Ok(texts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_chunks_survive_a_round_trip() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("x.png");
        let img = RgbImage::from_pixel(8, 8, image::Rgb([10, 20, 30]));
        let texts = vec![
            ("parameters".to_string(), "café\nSteps: 1".to_string()),
            ("easel".to_string(), "{\"prompt\": \"猫 🐱\"}".to_string()),
        ];
        save_png(&path, &img, &texts, false).expect("saved");
        let back = read_png_text(&path).expect("read");
        assert_eq!(back["parameters"], "café\nSteps: 1");
        assert_eq!(back["easel"], "{\"prompt\": \"猫 🐱\"}");
        let decoded = image::open(&path).expect("decodes").to_rgb8();
        assert_eq!(decoded, img);
    }
}
