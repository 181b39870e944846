//! A bounded reader for NumPy's `.npz` archives (a zip of `.npy` entries, stored as `np.savez`
//! writes them or deflated as `np.savez_compressed` does), enough for FID statistics: float64 or
//! float32 arrays of either byte order, C or Fortran order.
//!
//! Statistics files come from elsewhere, so nothing in them is trusted before it is checked: the
//! `.npy` header is parsed by hand (no Python evaluation), the declared shape's size is computed
//! with checked arithmetic and compared with [`MAX_ARRAY_BYTES`] and with the entry's length before
//! anything is allocated, and values are read as they arrive, so a file that declares more than it
//! holds costs no more memory than it holds. [`parse_npz`] takes raw bytes, for fuzzing.

use std::io::{Cursor, Read, Seek};

/// The largest array read, counted as the float64 values it becomes in memory (128 MiB: a
/// covariance of 4096 dimensions; Inception's 2048 take 32 MiB). Counting the file's own
/// element size instead let a float32 file double past the limit once widened.
pub const MAX_ARRAY_BYTES: u64 = 128 << 20;
/// The largest `.npy` header read (NumPy's own headers are under 200 bytes).
const MAX_HEADER_BYTES: usize = 64 << 10;
/// The most dimensions an array may declare (NumPy's own limit).
const MAX_DIMS: usize = 64;
const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// Why an archive or one of its arrays was refused: a sentence, without the file's path (the
/// caller adds it).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NpzError(pub String);

type Result<T> = std::result::Result<T, NpzError>;

fn fail<T>(message: impl Into<String>) -> Result<T> {
    Err(NpzError(message.into()))
}

/// One array: its shape and its values as f64, in C (row-major) order whatever the file's order.
#[derive(Clone, Debug, PartialEq)]
pub struct NpyArray {
    /// Length along each dimension.
    pub shape: Vec<usize>,
    /// The values, row-major.
    pub values: Vec<f64>,
}

/// Reads the arrays `names` (without `.npy`) from an `.npz` archive in memory, in that order.
/// Any input gives an array or a sentence, never a panic or an allocation beyond what the bytes
/// hold (and [`MAX_ARRAY_BYTES`] per array); fuzz harnesses call this.
pub fn parse_npz(bytes: &[u8], names: &[&str]) -> Result<Vec<NpyArray>> {
    read_npz(Cursor::new(bytes), names)
}

/// Reads the arrays `names` (without `.npy`) from an `.npz` archive, in that order; other entries
/// are not read.
pub fn read_npz<R: Read + Seek>(reader: R, names: &[&str]) -> Result<Vec<NpyArray>> {
    let mut archive = zip::ZipArchive::new(reader)
        .map_err(|e| NpzError(format!("this is not an .npz archive NumPy could write ({e})")))?;
    let mut arrays = Vec::with_capacity(names.len());
    for name in names {
        let entry = match archive.by_name(&format!("{name}.npy")) {
            Ok(entry) => entry,
            Err(zip::result::ZipError::FileNotFound) => return fail(format!("it has no `{name}` array")),
            Err(e) => return fail(format!("its `{name}` array cannot be read ({e})")),
        };
        let declared = entry.size();
        arrays
            .push(read_npy(entry, Some(declared)).map_err(|e| NpzError(format!("its `{name}` array {e}")))?);
    }
    Ok(arrays)
}

/// Reads one `.npy` array. `len`, when known (the zip entry's uncompressed size), must be exactly
/// the header plus the declared values. Errors read as the end of a sentence about the array
/// ("is cut short…").
pub fn read_npy<R: Read>(mut reader: R, len: Option<u64>) -> Result<NpyArray> {
    let mut magic = [0u8; 8];
    reader.read_exact(&mut magic).map_err(|_| NpzError("is too short to be a .npy array".into()))?;
    if &magic[..6] != MAGIC {
        return fail("is not a .npy array (its first bytes are not NumPy's signature)");
    }
    let (major, minor) = (magic[6], magic[7]);
    let header_len = match major {
        1 => {
            let mut b = [0u8; 2];
            reader.read_exact(&mut b).map_err(|_| NpzError("is cut short in its header".into()))?;
            usize::from(u16::from_le_bytes(b))
        }
        2 | 3 => {
            let mut b = [0u8; 4];
            reader.read_exact(&mut b).map_err(|_| NpzError("is cut short in its header".into()))?;
            usize::try_from(u32::from_le_bytes(b)).unwrap_or(usize::MAX)
        }
        _ => return fail(format!("uses .npy format version {major}.{minor}; Easel reads versions 1 to 3")),
    };
    if header_len > MAX_HEADER_BYTES {
        return fail(format!("declares a {header_len}-byte header; NumPy writes a few hundred bytes"));
    }
    let mut header = vec![0u8; header_len];
    reader.read_exact(&mut header).map_err(|_| NpzError("is cut short in its header".into()))?;
    // Versions 1 and 2 write Latin-1 headers, version 3 UTF-8; a valid header is ASCII either way.
    let header =
        std::str::from_utf8(&header).map_err(|_| NpzError("has a header that is not text".into()))?;
    let header = Header::parse(header)?;

    let too_large = || {
        NpzError(format!(
            "declares shape {}, more than the {} MiB Easel reads",
            header.shape_text(),
            MAX_ARRAY_BYTES >> 20
        ))
    };
    let data_bytes = header
        .shape
        .iter()
        .try_fold(1u64, |n, &d| n.checked_mul(d))
        .filter(|&n| n.checked_mul(8).is_some_and(|widened| widened <= MAX_ARRAY_BYTES))
        .and_then(|n| n.checked_mul(header.dtype.size))
        .ok_or_else(too_large)?;
    let shape = header
        .shape
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| too_large()))
        .collect::<Result<Vec<usize>>>()?;
    let count = usize::try_from(data_bytes / header.dtype.size).map_err(|_| too_large())?;
    let prefix = 8 + if major == 1 { 2 } else { 4 } + header_len as u64;
    if let Some(len) = len {
        if len.checked_sub(prefix) != Some(data_bytes) {
            return fail(format!(
                "declares shape {} ({data_bytes} bytes of values) but holds {} bytes",
                header.shape_text(),
                len.saturating_sub(prefix)
            ));
        }
    }

    // Values as they arrive: never more memory than the data really holds.
    let size = if header.dtype.float64 { 8 } else { 4 };
    let mut values = Vec::with_capacity(count.min(1 << 16));
    let mut buf = vec![0u8; 1 << 16];
    let mut left = count * size;
    while left > 0 {
        let chunk = left.min(buf.len());
        reader.read_exact(&mut buf[..chunk]).map_err(|_| {
            NpzError(format!(
                "is cut short: it declares shape {} but holds fewer values",
                header.shape_text()
            ))
        })?;
        values.extend(buf[..chunk].chunks_exact(size).map(|b| header.dtype.value(b)));
        left -= chunk;
    }
    // Read to the end so a damaged deflate stream or checksum is noticed.
    let mut rest = [0u8; 1];
    match reader.read(&mut rest) {
        Ok(0) => {}
        Ok(_) => {
            return fail(format!("holds more data than its shape {} declares", header.shape_text()));
        }
        Err(e) => return fail(format!("is damaged ({e})")),
    }
    let values = if header.fortran_order && shape.len() > 1 { fortran_to_c(&values, &shape) } else { values };
    Ok(NpyArray { shape, values })
}

/// Reorders column-major values (the first index varies fastest) row-major.
fn fortran_to_c(values: &[f64], shape: &[usize]) -> Vec<f64> {
    let mut out = vec![0.0; values.len()];
    let mut index = vec![0usize; shape.len()];
    for &v in values {
        // `index` is the Fortran-order position of `v`; its C-order offset has the last index fastest.
        let offset = index.iter().zip(shape).fold(0, |acc, (&i, &d)| acc * d + i);
        out[offset] = v;
        for (i, &d) in index.iter_mut().zip(shape) {
            *i += 1;
            if *i < d {
                break;
            }
            *i = 0;
        }
    }
    out
}

/// The element type.
#[derive(Clone, Copy, Debug)]
struct Dtype {
    float64: bool,
    big_endian: bool,
    size: u64,
}

impl Dtype {
    fn parse(descr: &str) -> Result<Self> {
        // '|' and '=' never describe floats in NumPy's headers.
        let (big_endian, kind) = match (descr.strip_prefix('<'), descr.strip_prefix('>')) {
            (Some(kind), _) => (false, kind),
            (_, Some(kind)) => (true, kind),
            _ => return fail(format!("holds `{descr}` values; Easel reads float64 or float32")),
        };
        match kind {
            "f8" => Ok(Self { float64: true, big_endian, size: 8 }),
            "f4" => Ok(Self { float64: false, big_endian, size: 4 }),
            _ => fail(format!("holds `{descr}` values; Easel reads float64 or float32")),
        }
    }

    /// One value from exactly `size` bytes.
    fn value(&self, b: &[u8]) -> f64 {
        if self.float64 {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            if self.big_endian {
                f64::from_be_bytes(a)
            } else {
                f64::from_le_bytes(a)
            }
        } else {
            let mut a = [0u8; 4];
            a.copy_from_slice(b);
            f64::from(if self.big_endian { f32::from_be_bytes(a) } else { f32::from_le_bytes(a) })
        }
    }
}

/// The header dictionary, e.g. `{'descr': '<f8', 'fortran_order': False, 'shape': (2048,), }`.
struct Header {
    dtype: Dtype,
    fortran_order: bool,
    shape: Vec<u64>,
}

/// A value in the header dictionary: the only kinds NumPy writes there.
enum Literal {
    Str(String),
    Bool(bool),
    Tuple(Vec<u64>),
}

impl Header {
    fn parse(text: &str) -> Result<Self> {
        let mut p = Parser { s: text.as_bytes(), i: 0 };
        let bad = || {
            NpzError(
                "has a header Easel cannot read (not NumPy's dictionary of descr, fortran_order and shape)"
                    .into(),
            )
        };
        p.expect(b'{').ok_or_else(bad)?;
        let (mut descr, mut fortran, mut shape) = (None, None, None);
        loop {
            p.skip_space();
            if p.eat(b'}') {
                break;
            }
            let Some(Literal::Str(key)) = p.literal() else { return Err(bad()) };
            p.expect(b':').ok_or_else(bad)?;
            let value = p.literal().ok_or_else(bad)?;
            match (key.as_str(), value) {
                ("descr", Literal::Str(s)) => descr = Some(s),
                ("fortran_order", Literal::Bool(b)) => fortran = Some(b),
                ("shape", Literal::Tuple(t)) => shape = Some(t),
                ("descr", _) => return fail("holds structured records; Easel reads plain float arrays"),
                _ => return Err(bad()),
            }
            p.skip_space();
            if p.eat(b',') {
                continue;
            }
            p.expect(b'}').ok_or_else(bad)?;
            break;
        }
        p.skip_space();
        if p.i != p.s.len() {
            return Err(bad());
        }
        let (Some(descr), Some(fortran_order), Some(shape)) = (descr, fortran, shape) else {
            return Err(bad());
        };
        Ok(Self { dtype: Dtype::parse(&descr)?, fortran_order, shape })
    }

    fn shape_text(&self) -> String {
        let dims: Vec<String> = self.shape.iter().map(u64::to_string).collect();
        match dims.len() {
            1 => format!("({},)", dims[0]),
            _ => format!("({})", dims.join(", ")),
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn skip_space(&mut self) {
        while self.s.get(self.i).is_some_and(u8::is_ascii_whitespace) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: u8) -> Option<()> {
        self.skip_space();
        self.eat(c).then_some(())
    }

    fn word(&mut self, w: &str) -> bool {
        if self.s[self.i..].starts_with(w.as_bytes()) {
            self.i += w.len();
            true
        } else {
            false
        }
    }

    fn literal(&mut self) -> Option<Literal> {
        self.skip_space();
        match *self.s.get(self.i)? {
            q @ (b'\'' | b'"') => {
                self.i += 1;
                let start = self.i;
                while *self.s.get(self.i)? != q {
                    // NumPy's keys and dtype strings never need escapes.
                    if self.s[self.i] == b'\\' {
                        return None;
                    }
                    self.i += 1;
                }
                let text = std::str::from_utf8(&self.s[start..self.i]).ok()?.to_string();
                self.i += 1;
                Some(Literal::Str(text))
            }
            b'T' if self.word("True") => Some(Literal::Bool(true)),
            b'F' if self.word("False") => Some(Literal::Bool(false)),
            b'(' => {
                self.i += 1;
                let mut dims = Vec::new();
                loop {
                    self.skip_space();
                    if self.eat(b')') {
                        return Some(Literal::Tuple(dims));
                    }
                    if dims.len() == MAX_DIMS {
                        return None;
                    }
                    dims.push(self.integer()?);
                    self.skip_space();
                    if !self.eat(b',') {
                        self.skip_space();
                        return self.eat(b')').then_some(Literal::Tuple(dims));
                    }
                }
            }
            _ => None,
        }
    }

    /// A non-negative integer (Python 2's NumPy appended `L`), with overflow refused.
    fn integer(&mut self) -> Option<u64> {
        let start = self.i;
        let mut n: u64 = 0;
        while let Some(d) = self.s.get(self.i).filter(|c| c.is_ascii_digit()) {
            n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
            self.i += 1;
        }
        if self.i == start {
            return None;
        }
        self.eat(b'L');
        Some(n)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::Write;

    use super::*;

    /// A `.npy` entry as NumPy writes it: version 1, header padded to 64 bytes.
    pub(crate) fn npy(descr: &str, fortran: bool, shape: &str, data: &[u8]) -> Vec<u8> {
        let order = if fortran { "True" } else { "False" };
        let mut header = format!("{{'descr': '{descr}', 'fortran_order': {order}, 'shape': {shape}, }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut out = MAGIC.to_vec();
        out.extend([1, 0]);
        out.extend((header.len() as u16).to_le_bytes());
        out.extend(header.as_bytes());
        out.extend(data);
        out
    }

    /// An `.npz` of named `.npy` entries, stored (`np.savez`) or deflated (`np.savez_compressed`).
    pub(crate) fn npz(entries: &[(&str, Vec<u8>)], deflated: bool) -> Vec<u8> {
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let method = if deflated { zip::CompressionMethod::Deflated } else { zip::CompressionMethod::Stored };
        let options = zip::write::SimpleFileOptions::default().compression_method(method);
        for (name, bytes) in entries {
            zip.start_file(format!("{name}.npy"), options).expect("entry");
            zip.write_all(bytes).expect("written");
        }
        zip.finish().expect("finished").into_inner()
    }

    fn f64s(v: &[f64]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn read(bytes: &[u8], names: &[&str]) -> std::result::Result<Vec<NpyArray>, String> {
        parse_npz(bytes, names).map_err(|e| e.to_string())
    }

    #[test]
    fn stored_and_deflated_archives_read_alike() {
        for deflated in [false, true] {
            let bytes = npz(
                &[
                    ("mu", npy("<f8", false, "(2,)", &f64s(&[1.5, -2.0]))),
                    ("sigma", npy("<f8", false, "(2, 2)", &f64s(&[1.0, 0.5, 0.5, 2.0]))),
                ],
                deflated,
            );
            let arrays = read(&bytes, &["mu", "sigma"]).expect("read");
            assert_eq!(arrays[0], NpyArray { shape: vec![2], values: vec![1.5, -2.0] });
            assert_eq!(arrays[1].shape, vec![2, 2]);
            assert_eq!(arrays[1].values, vec![1.0, 0.5, 0.5, 2.0]);
        }
    }

    #[test]
    fn float32_big_endian_and_fortran_order() {
        let data: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0].iter().flat_map(|x| x.to_be_bytes()).collect();
        // Fortran order: the column-major 2×3 matrix [[1, 3, 5], [2, 4, 6]].
        let bytes = npz(&[("a", npy(">f4", true, "(2, 3)", &data))], true);
        let a = &read(&bytes, &["a"]).expect("read")[0];
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(a.values, vec![1.0, 3.0, 5.0, 2.0, 4.0, 6.0]);
    }

    #[test]
    fn a_huge_declared_shape_is_refused_before_allocating() {
        let bytes = npz(&[("sigma", npy("<f8", false, "(1048576, 1048576)", &[]))], true);
        assert!(bytes.len() < 400, "{} bytes", bytes.len());
        let err = read(&bytes, &["sigma"]).expect_err("refused");
        assert!(err.contains("(1048576, 1048576)") && err.contains("128 MiB"), "{err}");
        // A product that overflows 64 bits is refused the same way.
        let bytes = npz(&[("sigma", npy("<f8", false, "(18446744073709551615, 3)", &[]))], false);
        assert!(read(&bytes, &["sigma"]).expect_err("refused").contains("more than"));
        // Digits beyond 64 bits are not a shape at all.
        let bytes = npz(&[("sigma", npy("<f8", false, "(99999999999999999999999,)", &[]))], false);
        assert!(read(&bytes, &["sigma"]).expect_err("refused").contains("header"));
    }

    #[test]
    fn a_shape_that_disagrees_with_the_data_is_refused() {
        let bytes = npz(&[("mu", npy("<f8", false, "(3,)", &f64s(&[1.0, 2.0])))], false);
        let err = read(&bytes, &["mu"]).expect_err("refused");
        assert!(err.contains("declares shape (3,) (24 bytes of values) but holds 16 bytes"), "{err}");
    }

    #[test]
    fn other_dtypes_and_damaged_headers_are_sentences() {
        let cases: [(Vec<u8>, &str); 6] = [
            (npy("<i8", false, "(1,)", &[0; 8]), "`<i8` values"),
            (npy("|O", false, "(1,)", &[0; 8]), "`|O` values"),
            (b"\x93NUMPY\x09\x00".to_vec(), "version 9.0"),
            (b"PK not npy".to_vec(), "signature"),
            (b"\x93NUMPY\x01\x00\x10\x00{'descr': '<f8'".to_vec(), "cut short"),
            (npy("<f8", false, "[1]", &[0; 8]), "header"),
        ];
        for (entry, expected) in cases {
            let err = read(&npz(&[("x", entry)], false), &["x"]).expect_err("refused");
            assert!(err.contains(expected), "{err} (expected {expected})");
        }
        assert!(read(b"not a zip at all", &["x"]).expect_err("refused").contains("not an .npz"));
        let empty = npz(&[("mu", npy("<f8", false, "(0,)", &[]))], false);
        assert!(read(&empty, &["sigma"]).expect_err("refused").contains("no `sigma` array"));
    }

    #[test]
    fn truncated_and_mutated_archives_never_panic() {
        let good = npz(
            &[
                ("mu", npy("<f8", false, "(3,)", &f64s(&[1.0, 2.0, 3.0]))),
                ("sigma", npy("<f8", false, "(3, 3)", &f64s(&[1.0; 9]))),
            ],
            true,
        );
        for cut in 0..good.len() {
            let _ = parse_npz(&good[..cut], &["mu", "sigma"]);
        }
        let mut s = 7u32;
        for i in 0..good.len() {
            for _ in 0..4 {
                let mut bytes = good.clone();
                s = s.wrapping_mul(1_103_515_245).wrapping_add(12345);
                bytes[i] = (s >> 16) as u8;
                let _ = parse_npz(&bytes, &["mu", "sigma"]);
            }
        }
    }
}
