//! PNG files with text chunks: A1111's `parameters` (tEXt when Latin-1, else iTXt) and Easel's
//! own lossless JSON (`easel`, iTXt). The `image` crate drops text chunks, so the `png` crate
//! writes and reads them.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use image::RgbImage;

use crate::error::{Error, Result};
use crate::files::write_atomically;

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
            result.map_err(|e| Error::Internal(format!("cannot store the {key} metadata: {e}")))?;
        }
        let mut writer =
            encoder.write_header().map_err(|e| Error::Internal(format!("cannot encode the PNG: {e}")))?;
        writer
            .write_image_data(image.as_raw())
            .map_err(|e| Error::Internal(format!("cannot encode the PNG: {e}")))?;
    }
    Ok(out)
}

/// Writes a PNG with metadata atomically; see [`write_atomically`].
pub fn save_png(path: &Path, image: &RgbImage, texts: &[(String, String)], overwrite: bool) -> Result<()> {
    write_atomically(path, &encode_png(image, texts)?, overwrite)
}

/// The most text one chunk may hold once inflated. Parameters are a few KB and a ComfyUI graph
/// rarely 100 KB; a chunk that inflates past this is a bomb or junk, skipped with a note.
pub const MAX_TEXT_BYTES: usize = 1 << 20;

/// The most text kept from one PNG in all: a file of thousands of chunks, each under the
/// per-chunk limit, asked for 5 GB.
pub const MAX_TOTAL_TEXT_BYTES: usize = 4 << 20;

/// The most notes about skipped chunks (the rest are counted in the last one).
const MAX_NOTES: usize = 8;

/// The text chunks of a PNG, and what was left out of them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PngText {
    /// Key → text, for tEXt, zTXt and iTXt chunks.
    pub texts: BTreeMap<String, String>,
    /// One sentence per chunk that was skipped (too large, damaged, undecodable).
    pub skipped: Vec<String>,
}

/// Every text chunk of a PNG (tEXt, zTXt and iTXt), key → text; see [`read_png_text_from`].
pub fn read_png_text(path: &Path) -> Result<BTreeMap<String, String>> {
    Ok(read_png_text_notes(path)?.texts)
}

/// The text chunks of the PNG at `path`, with notes on those skipped.
pub fn read_png_text_notes(path: &Path) -> Result<PngText> {
    crate::files::refuse_special(path)?;
    let file = std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::not_found("picture", path),
        _ => Error::io("cannot open the picture", e, path),
    })?;
    read_png_text_from(std::io::BufReader::new(file))
        .map_err(|why| Error::bad_file(format!("this is not a readable PNG ({why})"), path))
}

/// Walks a PNG's chunks and keeps its text, seeking over everything else, so neither the
/// picture data nor any chunk past [`MAX_TEXT_BYTES`] is ever held in memory. (The `png`
/// crate's decoder inflates zTXt without a bound: a 3 MB file asked for 3 GiB.) Text after the
/// picture data is read too; a bad checksum skips that chunk, not the file.
pub fn read_png_text_from(mut reader: impl Read + Seek) -> std::result::Result<PngText, String> {
    const SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];
    let mut signature = [0u8; 8];
    if reader.read_exact(&mut signature).is_err() || signature != SIGNATURE {
        return Err("it does not start with the PNG signature".into());
    }
    let mut out = PngText::default();
    let (mut kept_bytes, mut unnoted) = (0usize, 0usize);
    let mut note = |out: &mut PngText, text: String| match out.skipped.len() < MAX_NOTES {
        true => out.skipped.push(text),
        false => unnoted += 1,
    };
    loop {
        let mut head = [0u8; 8];
        if reader.read_exact(&mut head).is_err() {
            break; // A file cut after its last full chunk still yields the text before the cut.
        }
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let kind: [u8; 4] = [head[4], head[5], head[6], head[7]];
        if len > 0x7fff_ffff {
            return Err(format!("a chunk declares {len} bytes, beyond the PNG limit"));
        }
        let name = String::from_utf8_lossy(&kind).to_string();
        match &kind {
            b"IEND" => break,
            b"tEXt" | b"zTXt" | b"iTXt"
                if len as usize <= MAX_TEXT_BYTES && kept_bytes < MAX_TOTAL_TEXT_BYTES =>
            {
                let mut data = vec![0u8; len as usize];
                let mut crc = [0u8; 4];
                if reader.read_exact(&mut data).and_then(|()| reader.read_exact(&mut crc)).is_err() {
                    note(&mut out, format!("a {name} chunk is cut short"));
                    break;
                }
                let mut sum = flate2::Crc::new();
                sum.update(&kind);
                sum.update(&data);
                // Fuzzing builds skip the checksum, or mutated text would never get past it.
                if sum.sum() != u32::from_be_bytes(crc) && !cfg!(fuzzing) {
                    note(&mut out, format!("a {name} chunk fails its checksum"));
                    continue;
                }
                match decode_text_chunk(&kind, &data) {
                    Ok((key, text)) if kept_bytes + text.len() <= MAX_TOTAL_TEXT_BYTES => {
                        kept_bytes += key.len() + text.len();
                        out.texts.insert(key, text);
                    }
                    Ok((key, _)) => {
                        kept_bytes = MAX_TOTAL_TEXT_BYTES;
                        note(&mut out, format!("the {key} chunk and any after it were skipped: more than {} MB of text in all", MAX_TOTAL_TEXT_BYTES >> 20));
                    }
                    Err(why) => note(&mut out, format!("a {name} chunk was skipped: {why}")),
                }
            }
            _ => {
                if matches!(&kind, b"tEXt" | b"zTXt" | b"iTXt") && kept_bytes < MAX_TOTAL_TEXT_BYTES {
                    note(&mut out, format!("a {name} chunk of {len} bytes is too large to be settings"));
                }
                reader
                    .seek(SeekFrom::Current(i64::from(len) + 4))
                    .map_err(|e| format!("cannot skip a {name} chunk: {e}"))?;
            }
        }
    }
    if unnoted > 0 {
        out.skipped.push(format!("and {unnoted} more chunks were skipped"));
    }
    Ok(out)
}

/// Key and text of one text chunk's data.
fn decode_text_chunk(kind: &[u8; 4], data: &[u8]) -> std::result::Result<(String, String), String> {
    let (keyword, rest) = split_nul(data).ok_or("it has no keyword")?;
    if keyword.is_empty() || keyword.len() > 79 {
        return Err("its keyword is not 1 to 79 characters".into());
    }
    let key = latin1(keyword);
    let text = match kind {
        b"tEXt" => latin1(rest),
        b"zTXt" => {
            let (&method, compressed) = rest.split_first().ok_or("it is empty")?;
            if method != 0 {
                return Err("unknown compression".into());
            }
            latin1(&inflate_bounded(compressed)?)
        }
        _ => {
            // iTXt: flag, method, language tag, translated keyword, UTF-8 text.
            let [flag, method, tail @ ..] = rest else { return Err("it is cut short".into()) };
            let (_language, tail) = split_nul(tail).ok_or("its language tag is unterminated")?;
            let (_translated, text) = split_nul(tail).ok_or("its translated keyword is unterminated")?;
            let bytes = match (flag, method) {
                (0, _) => text.to_vec(),
                (1, 0) => inflate_bounded(text)?,
                _ => return Err("unknown compression".into()),
            };
            String::from_utf8(bytes).map_err(|_| "its text is not UTF-8")?
        }
    };
    Ok((key, text))
}

fn split_nul(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = data.iter().position(|&b| b == 0)?;
    Some((&data[..at], &data[at + 1..]))
}

fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

/// Inflates zlib data, refusing output beyond [`MAX_TEXT_BYTES`] as soon as it is reached.
fn inflate_bounded(compressed: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let mut out = Vec::new();
    flate2::read::ZlibDecoder::new(compressed)
        .take(MAX_TEXT_BYTES as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| "its compressed text is damaged".to_string())?;
    if out.len() > MAX_TEXT_BYTES {
        return Err(format!("it inflates to more than {} MB", MAX_TEXT_BYTES >> 20));
    }
    Ok(out)
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

    fn png_with_chunks(chunks: &[(&[u8; 4], Vec<u8>)]) -> Vec<u8> {
        let mut bytes = encode_png(&RgbImage::new(2, 2), &[]).expect("encodes");
        let iend = bytes.len() - 12;
        let mut extra = Vec::new();
        for (kind, data) in chunks {
            extra.extend_from_slice(&(data.len() as u32).to_be_bytes());
            extra.extend_from_slice(*kind);
            extra.extend_from_slice(data);
            let mut crc = flate2::Crc::new();
            crc.update(*kind);
            crc.update(data);
            extra.extend_from_slice(&crc.sum().to_be_bytes());
        }
        bytes.splice(iend..iend, extra);
        bytes
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(data).expect("compresses");
        enc.finish().expect("compresses")
    }

    #[test]
    fn a_text_bomb_is_skipped_with_a_note_and_the_rest_kept() {
        let mut bomb = b"parameters\0\0".to_vec();
        bomb.extend(zlib(&vec![b'a'; 64 << 20]));
        let png = png_with_chunks(&[(b"zTXt", bomb), (b"tEXt", b"prompt\0{}".to_vec())]);
        assert!(png.len() < 1 << 20, "the bomb is small on disk: {} bytes", png.len());
        let got = read_png_text_from(std::io::Cursor::new(png)).expect("readable");
        assert_eq!(got.texts.get("prompt").map(String::as_str), Some("{}"));
        assert!(!got.texts.contains_key("parameters"));
        assert!(got.skipped[0].contains("more than 1 MB"), "{:?}", got.skipped);
    }

    #[test]
    fn compressed_international_text_and_text_after_the_picture_are_read() {
        let mut itxt = b"easel\0\x01\0en\0\0".to_vec();
        itxt.extend(zlib("猫 🐱".as_bytes()));
        let png = png_with_chunks(&[(b"iTXt", itxt)]);
        let got = read_png_text_from(std::io::Cursor::new(png)).expect("readable");
        assert_eq!(got.texts["easel"], "猫 🐱");
    }

    #[test]
    fn damaged_chunks_and_foreign_files_get_sentences() {
        let mut png = png_with_chunks(&[(b"tEXt", b"parameters\0x".to_vec())]);
        let at = png.len() - 14;
        png[at] ^= 1; // inside the text chunk's checksum
        let got = read_png_text_from(std::io::Cursor::new(png)).expect("readable");
        assert!(got.texts.is_empty() && got.skipped[0].contains("checksum"), "{got:?}");
        let err = read_png_text_from(std::io::Cursor::new(b"GIF89a....".to_vec())).expect_err("not a PNG");
        assert!(err.contains("signature"), "{err}");
    }

    #[test]
    fn thousands_of_text_chunks_are_kept_to_a_total() {
        let text = vec![b'A'; 1 << 20];
        let compressed = zlib(&text);
        let chunks: Vec<(&[u8; 4], Vec<u8>)> = (0..40)
            .map(|i| {
                let mut data = format!("k{i}\0\0").into_bytes();
                data.extend_from_slice(&compressed);
                (b"zTXt", data)
            })
            .collect();
        let got = read_png_text_from(std::io::Cursor::new(png_with_chunks(&chunks))).expect("readable");
        let kept: usize = got.texts.values().map(String::len).sum();
        assert!(
            kept <= MAX_TOTAL_TEXT_BYTES && got.texts.len() == 3,
            "{} chunks, {kept} bytes",
            got.texts.len()
        );
        assert!(got.skipped.len() <= MAX_NOTES + 1, "{:?}", got.skipped);
        assert!(got.skipped[0].contains("4 MB of text in all"), "{:?}", got.skipped);
    }
}
