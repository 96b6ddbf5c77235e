use std::path::PathBuf;

use super::*;
use crate::fs::MemFs;

fn build(fs: &MemFs, path: &Path, n: u64) -> Vec<(Bytes, u64, Value)> {
    let mut entries = Vec::new();
    for i in 0..n {
        let key = Bytes::from(format!("user-key-{i:06}"));
        // Two versions of every third key: a tombstone over an older value.
        if i % 3 == 0 {
            entries.push((key.clone(), 1000 + i, Value::Tombstone));
        }
        entries.push((key, i + 1, Value::Put(Bytes::from(format!("value-{i}").repeat(3)))));
    }
    let mut b = TableBuilder::new(fs.create(path).unwrap());
    for (k, seq, v) in &entries {
        b.add(k, *seq, v).unwrap();
    }
    let (count, bytes) = b.finish().unwrap();
    assert_eq!(count, entries.len() as u64);
    assert_eq!(bytes, fs.read(path).unwrap().len() as u64);
    entries
}

#[test]
fn round_trip_get_and_iterate() {
    let fs = MemFs::new();
    let path = PathBuf::from("/t/000001.sst");
    let entries = build(&fs, &path, 2000);
    let table = Table::open(&fs, &path).unwrap();
    assert_eq!(table.entries().unwrap(), entries);
    for i in [0u64, 1, 2, 3, 999, 1998, 1999] {
        let key = format!("user-key-{i:06}");
        let value = Bytes::from(format!("value-{i}").repeat(3));
        let newest = table.get(key.as_bytes(), u64::MAX).unwrap();
        if i % 3 == 0 {
            assert_eq!(newest, Lookup::Deleted, "{key}");
            assert_eq!(table.get(key.as_bytes(), 1000 + i - 1).unwrap(), Lookup::Found(value));
        } else {
            assert_eq!(newest, Lookup::Found(value), "{key}");
        }
        assert_eq!(table.get(key.as_bytes(), i).unwrap(), Lookup::Absent, "before its write");
    }
    assert_eq!(table.get(b"user-key-002000", u64::MAX).unwrap(), Lookup::Absent);
    assert_eq!(table.get(b"a", u64::MAX).unwrap(), Lookup::Absent);
    assert_eq!(table.get(b"zzz", u64::MAX).unwrap(), Lookup::Absent);
}

#[test]
fn the_bloom_filter_rejects_most_absent_keys() {
    let keys: Vec<Vec<u8>> = (0..10_000).map(|i| format!("present-{i}").into_bytes()).collect();
    let bloom = Bloom::build(keys.iter().map(Vec::as_slice), 10);
    assert!(keys.iter().all(|k| bloom.may_contain(k)), "a false negative");
    let false_positives =
        (0..10_000).filter(|i| bloom.may_contain(format!("absent-{i}").as_bytes())).count();
    assert!(false_positives < 300, "{false_positives} false positives in 10,000 (expect ~100)");
    let decoded = Bloom::decode(bloom.encode()).unwrap();
    assert!(keys.iter().all(|k| decoded.may_contain(k)));
    assert!(Bloom::decode(Vec::new()).is_none());
}

#[test]
fn blocks_compress_prefixes_and_seek() {
    let mut b = BlockBuilder::new();
    let keys: Vec<Vec<u8>> =
        (0..100u64).map(|i| internal_key(format!("prefix-{i:04}").as_bytes(), 5, true)).collect();
    for k in &keys {
        b.add(k, b"v");
    }
    let raw_key_bytes: usize = keys.iter().map(Vec::len).sum();
    let bytes = b.finish();
    assert!(
        bytes.len() < raw_key_bytes,
        "no prefix compression: {} >= {raw_key_bytes}",
        bytes.len()
    );
    let block = Block::new(bytes).unwrap();
    assert_eq!(block.entries().len(), 100);
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(block.seek(k).unwrap().0, *k, "seek {i}");
    }
    let between = internal_key(b"prefix-0041x", 5, true);
    assert_eq!(block.seek(&between).unwrap().0, keys[42]);
    assert!(block.seek(&internal_key(b"zzz", 5, true)).is_none());
}

#[test]
fn every_flipped_byte_is_caught_or_harmless() {
    let fs = MemFs::new();
    let path = PathBuf::from("/t/000002.sst");
    let entries = build(&fs, &path, 300);
    let len = fs.read(&path).unwrap().len();
    for at in 0..len {
        let original = fs.read(&path).unwrap()[at];
        fs.corrupt_byte(&path, at, original ^ 0x21);
        // Either the table refuses to open / read with a corruption error, or (for a byte the
        // checksums do not cover, which would be a format bug) reads back exactly what was
        // written. A wrong value must never come back.
        match Table::open(&fs, &path).and_then(|t| t.entries()) {
            Err(Error::Corruption { .. }) => {}
            Err(e) => panic!("flip at {at}: unexpected error {e}"),
            Ok(read) => assert_eq!(read, entries, "flip at {at} changed the data silently"),
        }
        fs.corrupt_byte(&path, at, original);
    }
}

#[test]
fn short_or_foreign_files_are_refused() {
    let fs = MemFs::new();
    let path = PathBuf::from("/t/bad.sst");
    fs.create(&path).unwrap().append(b"tiny").unwrap();
    assert!(matches!(Table::open(&fs, &path), Err(Error::Corruption { .. })));
    fs.create(&path).unwrap().append(&[0u8; 100]).unwrap();
    let err = Table::open(&fs, &path).err().unwrap();
    assert!(err.to_string().contains("checksum"), "{err}");
}

#[test]
#[should_panic(expected = "out of order")]
fn keys_must_come_in_order() {
    let fs = MemFs::new();
    let mut b = TableBuilder::new(fs.create(Path::new("/t/x")).unwrap());
    b.add(b"b", 1, &Value::Tombstone).unwrap();
    b.add(b"a", 1, &Value::Tombstone).unwrap();
}
