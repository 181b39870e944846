//! Crafted torch.save files, honest and hostile, written in each test.

use std::io::Write;

use super::*;

fn unicode(s: &str) -> Vec<u8> {
    let mut p = b"X".to_vec();
    p.extend_from_slice(&(s.len() as u32).to_le_bytes());
    p.extend_from_slice(s.as_bytes());
    p
}

fn int(i: i64) -> Vec<u8> {
    match i32::try_from(i) {
        Ok(small) => [&b"J"[..], &small.to_le_bytes()].concat(),
        Err(_) => [&b"\x8a\x08"[..], &i.to_le_bytes()].concat(),
    }
}

fn ints(values: &[i64]) -> Vec<u8> {
    [b"(".to_vec(), values.iter().flat_map(|&v| int(v)).collect(), b"t".to_vec()].concat()
}

/// `_rebuild_tensor_v2` as torch.save writes it; `legacy` adds the old sixth storage field.
fn tensor(
    kind: &str,
    key: &str,
    numel: i64,
    offset: i64,
    size: &[i64],
    stride: &[i64],
    legacy: bool,
) -> Vec<u8> {
    let mut p = b"ctorch._utils\n_rebuild_tensor_v2\n((".to_vec();
    p.extend(unicode("storage"));
    p.extend(format!("ctorch\n{kind}\n").bytes());
    p.extend(unicode(key));
    p.extend(unicode("cpu"));
    p.extend(int(numel));
    p.extend_from_slice(if legacy { b"NtQ" } else { b"tQ" });
    p.extend(int(offset));
    p.extend(ints(size));
    p.extend(ints(stride));
    p.extend_from_slice(b"\x89ccollections\nOrderedDict\n)RtR");
    p
}

/// `{"state_dict": OrderedDict(entries), "epoch": 5}`.
fn checkpoint(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut p = b"\x80\x02}(".to_vec();
    p.extend(unicode("state_dict"));
    p.extend_from_slice(b"ccollections\nOrderedDict\n)R(");
    for (name, value) in entries {
        p.extend(unicode(name));
        p.extend_from_slice(value);
    }
    p.extend_from_slice(b"u");
    p.extend(unicode("epoch"));
    p.extend_from_slice(b"K\x05u.");
    p
}

fn archive(pickle: &[u8], storages: &[(&str, Vec<u8>)]) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    let mut zip = zip::ZipWriter::new(file.reopen().expect("reopen"));
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let entries = std::iter::once(("any_name/data.pkl".to_owned(), pickle.to_vec()))
        .chain(storages.iter().map(|(key, bytes)| (format!("any_name/data/{key}"), bytes.clone())));
    for (name, bytes) in entries {
        zip.start_file(name, options).expect("entry");
        zip.write_all(&bytes).expect("write");
    }
    zip.finish().expect("finish");
    file
}

fn f32s(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn refusal(file: &tempfile::NamedTempFile) -> String {
    match read_torch_checkpoint(file.path()) {
        Ok(tensors) => panic!("accepted, with {} tensors", tensors.len()),
        Err(e) => e.to_string(),
    }
}

fn values(tensors: &TensorMap, name: &str) -> Vec<f32> {
    let t = tensors[name].to_dtype(DType::F32).and_then(|t| t.flatten_all()).expect("f32");
    t.to_vec1::<f32>().expect("values")
}

#[test]
fn a_small_state_dict_is_read_back_exactly() -> Result<()> {
    let halves: Vec<u8> =
        [0.5f32, -2.0, 8.0].iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect();
    let parameter = [
        &b"ctorch._utils\n_rebuild_parameter\n("[..],
        &tensor("HalfStorage", "1", 3, 1, &[2], &[1], false),
        b"\x88ccollections\nOrderedDict\n)RtR",
    ]
    .concat();
    let hook = [&b"cposix\nsystem\n"[..], &unicode("touch /tmp/easel-torch-test-ran"), b"\x85R"].concat();
    let pickle = checkpoint(&[
        ("a.weight", tensor("FloatStorage", "0", 6, 0, &[3, 2], &[2, 1], false)),
        ("a.transposed", tensor("FloatStorage", "0", 6, 0, &[2, 3], &[1, 2], false)),
        ("b.half", parameter),
        ("hook", hook),
        ("step", int(7)),
    ]);
    let file = archive(&pickle, &[("0", f32s(&[1., 2., 3., 4., 5., 6.])), ("1", halves)]);
    let tensors = read_torch_checkpoint(file.path())?;
    let mut names: Vec<_> = tensors.keys().cloned().collect();
    names.sort();
    assert_eq!(names, ["a.transposed", "a.weight", "b.half"]);
    assert_eq!(tensors["a.weight"].dims(), [3, 2]);
    assert_eq!(values(&tensors, "a.weight"), [1., 2., 3., 4., 5., 6.]);
    assert_eq!(values(&tensors, "a.transposed"), [1., 3., 5., 2., 4., 6.]);
    assert_eq!(tensors["b.half"].dtype(), DType::F16);
    assert_eq!(values(&tensors, "b.half"), [-2.0, 8.0]);
    assert!(!Path::new("/tmp/easel-torch-test-ran").exists());
    Ok(())
}

#[test]
fn a_declared_terabyte_tensor_is_refused_before_allocating() {
    let side = 1i64 << 20;
    let big = tensor("FloatStorage", "0", side * side, 0, &[side, side], &[side, 1], false);
    let file = archive(&checkpoint(&[("big", big)]), &[("0", f32s(&[1.0]))]);
    assert!(std::fs::metadata(file.path()).map(|m| m.len()).unwrap_or(0) < 1024);
    let err = refusal(&file);
    assert!(err.contains("declares 1099511627776 elements") && err.contains("holds 4 bytes"), "{err}");

    let overflowing = tensor("FloatStorage", "0", 1, 0, &[1 << 40, 1 << 40], &[1, 1], false);
    let err = refusal(&archive(&checkpoint(&[("x", overflowing)]), &[("0", f32s(&[1.0]))]));
    assert!(err.contains("does not fit in its storage"), "{err}");
}

#[test]
fn a_storage_larger_than_its_data_is_refused() {
    let t = tensor("FloatStorage", "0", 100, 0, &[100], &[1], false);
    let err = refusal(&archive(&checkpoint(&[("w", t)]), &[("0", f32s(&[1.0, 2.0]))]));
    assert!(err.contains("declares 100 elements (400 bytes) but its data holds 8 bytes"), "{err}");

    let past_the_end = tensor("FloatStorage", "0", 2, 1, &[2], &[1], false);
    let err = refusal(&archive(&checkpoint(&[("w", past_the_end)]), &[("0", f32s(&[1.0, 2.0]))]));
    assert!(err.contains("tensor `w` declares a shape that does not fit"), "{err}");

    let missing = tensor("FloatStorage", "7", 2, 0, &[2], &[1], false);
    let err = refusal(&archive(&checkpoint(&[("w", missing)]), &[]));
    assert!(err.contains("storage `7` is missing"), "{err}");
}

#[test]
fn a_truncated_pickle_or_archive_is_refused_with_a_sentence() {
    let pickle = checkpoint(&[("w", tensor("FloatStorage", "0", 2, 0, &[2], &[1], false))]);
    let err = refusal(&archive(&pickle[..pickle.len() - 9], &[("0", f32s(&[1.0, 2.0]))]));
    assert!(err.contains("truncated"), "{err}");

    let file = archive(&pickle, &[("0", f32s(&[1.0, 2.0]))]);
    let bytes = std::fs::read(file.path()).expect("read");
    std::fs::write(file.path(), &bytes[..bytes.len() / 2]).expect("write");
    assert!(refusal(&file).contains("damaged"));
    std::fs::write(file.path(), b"not a checkpoint at all").expect("write");
    assert!(refusal(&file).contains("neither a torch.save zip archive nor a legacy torch pickle"));
}

#[test]
fn a_legacy_torch_file_is_read() -> Result<()> {
    let mut bytes = [&b"\x80\x02\x8a\x0a"[..], &LEGACY_MAGIC, b".\x80\x02M\xe9\x03.\x80\x02}("].concat();
    bytes.extend(unicode("little_endian"));
    bytes.extend_from_slice(b"\x88u.");
    bytes.extend(checkpoint(&[
        ("w", tensor("FloatStorage", "93", 3, 1, &[2], &[1], true)),
        ("ids", tensor("CharStorage", "94", 2, 0, &[2], &[1], true)),
    ]));
    bytes.extend_from_slice(b"\x80\x02](");
    bytes.extend([unicode("93"), unicode("94")].concat());
    bytes.extend_from_slice(b"e.");
    bytes.extend(3u64.to_le_bytes());
    bytes.extend(f32s(&[1.0, 2.0, 3.0]));
    bytes.extend(2u64.to_le_bytes());
    bytes.extend_from_slice(&[1, 2]);
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(&bytes).expect("write");
    let tensors = read_torch_checkpoint(file.path())?;
    assert_eq!(tensors.len(), 1, "int8 tensors are skipped, as candle has no int8");
    assert_eq!(values(&tensors, "w"), [2.0, 3.0]);

    file.as_file().set_len(bytes.len() as u64 - 3).expect("cut");
    assert!(refusal(&file).contains("truncated"));
    Ok(())
}

#[test]
fn a_long_tuple_shared_by_many_tensors_is_read_in_linear_time() -> Result<()> {
    // One argument tuple with a million extra items, referenced by 100,000 entries: a reader that
    // copies the tuple for each entry does 10^11 copies.
    let mut p = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\nq\x010((X\x07\x00\x00\x00storage".to_vec();
    p.extend_from_slice(b"ctorch\nFloatStorage\n");
    p.extend([unicode("0"), unicode("cpu")].concat());
    p.extend_from_slice(b"K\x01tQK\x00(K\x01t(K\x01t");
    p.extend(std::iter::repeat_n(b'N', 1_000_000));
    p.extend_from_slice(b"tq\x000}(");
    for _ in 0..100_000 {
        p.extend([unicode("x"), b"h\x01h\x00R".to_vec()].concat());
    }
    p.extend_from_slice(b"u.");
    let file = archive(&p, &[("0", f32s(&[2.5]))]);
    let started = std::time::Instant::now();
    let tensors = read_torch_checkpoint(file.path())?;
    assert_eq!(values(&tensors, "x"), [2.5]);
    assert!(started.elapsed().as_secs_f32() < 5.0, "took {:?}", started.elapsed());
    Ok(())
}

#[test]
fn millions_of_names_for_one_storage_are_refused_before_any_tensor_is_made() {
    // One memoised tensor fetched under 300 000 names (`q` puts it in memo 0, `h` fetches it).
    let mut p = b"\x80\x02}(".to_vec();
    p.extend(unicode("state_dict"));
    p.extend_from_slice(b"}(");
    p.extend(unicode("t0"));
    p.extend(tensor("FloatStorage", "0", 4, 0, &[4], &[1], false));
    p.extend_from_slice(b"q\x00");
    for i in 1..300_000 {
        p.extend(unicode(&format!("t{i}")));
        p.extend_from_slice(b"h\x00");
    }
    p.extend_from_slice(b"uu.");
    let file = archive(&p, &[("0", f32s(&[1.0, 2.0, 3.0, 4.0]))]);
    let err = read_torch_checkpoint(file.path()).expect_err("refused").to_string();
    assert!(err.contains("300000 tensors"), "{err}");
}

#[test]
fn storages_that_inflate_far_past_the_file_are_refused() {
    // 64 MiB of zeros deflate to about 64 KB: each entry is plausible alone, together they are not.
    let file = tempfile::NamedTempFile::new().expect("temp file");
    let mut zip = zip::ZipWriter::new(file.reopen().expect("reopen"));
    let deflated =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    let numel = 16 << 20;
    let entries: Vec<(String, Vec<u8>)> = (0..6)
        .map(|i| (format!("w{i}"), tensor("FloatStorage", &i.to_string(), numel, 0, &[numel], &[1], false)))
        .collect();
    let named: Vec<(&str, Vec<u8>)> = entries.iter().map(|(n, v)| (n.as_str(), v.clone())).collect();
    zip.start_file("any_name/data.pkl", deflated).expect("entry");
    zip.write_all(&checkpoint(&named)).expect("write");
    let zeros = vec![0u8; (numel * 4) as usize];
    for i in 0..6 {
        zip.start_file(format!("any_name/data/{i}"), deflated).expect("entry");
        zip.write_all(&zeros).expect("write");
    }
    zip.finish().expect("finish");
    let err = read_torch_checkpoint(file.path()).expect_err("refused").to_string();
    assert!(err.contains("inflate to far more"), "{err}");
}
