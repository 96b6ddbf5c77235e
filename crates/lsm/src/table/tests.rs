use std::path::PathBuf;
use std::sync::Arc;

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

fn block_of(keys: &[Vec<u8>]) -> Block {
    let mut b = BlockBuilder::new();
    for (i, k) in keys.iter().enumerate() {
        b.add(k, format!("v{i}").as_bytes());
    }
    Block::new(Bytes::from(b.finish())).unwrap()
}

fn prefixed_keys(n: u64) -> Vec<Vec<u8>> {
    (0..n).map(|i| internal_key(format!("prefix-{:04}", 2 * i).as_bytes(), 5, true)).collect()
}

#[test]
fn blocks_compress_prefixes_and_seek() {
    let mut b = BlockBuilder::new();
    let keys = prefixed_keys(100);
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
    let block = Block::new(Bytes::from(bytes)).unwrap();
    assert_eq!(block.entries().len(), 100);
    let mut it = BlockIter::new(block);
    for (i, k) in keys.iter().enumerate() {
        it.seek(k);
        assert_eq!(it.key(), &k[..], "seek {i}");
    }
    let between = internal_key(b"prefix-0083", 5, true);
    it.seek(&between);
    assert_eq!(it.key(), &keys[42][..]);
    it.seek(&internal_key(b"zzz", 5, true));
    assert!(!it.valid() && !it.is_corrupt());
    assert_eq!((it.key(), it.value(), it.value_bytes()), (&[][..], &[][..], Bytes::new()));
}

/// Seeks land on the first key at or after the target wherever the target falls: before
/// everything, on and around every restart point, between entries, past the end; and stepping
/// on from a seek visits every later entry in order.
#[test]
fn block_cursor_seeks_land_on_the_first_key_at_or_after_the_target() {
    for n in [1u64, 2, 15, 16, 17, 31, 32, 33, 100] {
        let keys = prefixed_keys(n);
        let mut it = BlockIter::new(block_of(&keys));
        let n = n as usize;
        let mut targets: Vec<(Vec<u8>, usize)> = vec![(Vec::new(), 0)];
        for (i, key) in keys.iter().enumerate() {
            // Keys are prefix-{2i}: prefix-{2i-1} falls just before key i, the key itself
            // with a newer seq sorts before it, an older seq after it.
            targets.push((key.clone(), i));
            let before = format!("prefix-{:04}", 2 * i as i64 - 1);
            targets.push((internal_key(before.as_bytes(), 5, true), i));
            let user = format!("prefix-{:04}", 2 * i);
            targets.push((internal_key(user.as_bytes(), 9, true), i));
            targets.push((internal_key(user.as_bytes(), 4, true), i + 1));
        }
        targets.push((internal_key(b"a", 1, true), 0));
        targets.push((internal_key(b"z", 1, true), n));
        for (target, want) in targets {
            it.seek(&target);
            for (j, key) in keys.iter().enumerate().skip(want) {
                assert!(it.valid(), "n={n} target {target:?}: ended before entry {j}");
                assert_eq!(it.key(), &key[..], "n={n} target {target:?}");
                assert_eq!(it.value(), format!("v{j}").as_bytes());
                assert_eq!(it.value_bytes(), it.value());
                it.next();
            }
            assert!(!it.valid() && !it.is_corrupt(), "n={n}: past the end");
            assert!(!it.next(), "stepping past the end stays there");
        }
        it.seek_to_first();
        assert_eq!(it.key(), &keys[0][..]);
    }
    // An empty block: nothing to find, nothing damaged.
    let mut it = BlockIter::new(Block::new(Bytes::from(BlockBuilder::new().finish())).unwrap());
    it.seek_to_first();
    assert!(!it.valid() && !it.is_corrupt());
    it.seek(b"anything");
    assert!(!it.valid() && !it.is_corrupt());
    // A cursor moved to another block forgets the first one.
    it.reset(block_of(&prefixed_keys(3)));
    it.seek_to_first();
    assert_eq!(it.key(), &prefixed_keys(1)[0][..]);
    it.reset(Block::empty());
    it.seek_to_first();
    assert!(!it.valid());
}

/// Walks a block every way a reader does, with a bound on the steps: it must end.
fn exercise(block: Block, targets: &[Vec<u8>]) -> (usize, bool) {
    let mut it = BlockIter::new(block);
    let mut seen = 0;
    it.seek_to_first();
    while it.valid() {
        seen += 1;
        assert!(seen < 10_000, "a damaged block made the cursor loop");
        let _ = (it.key(), it.value(), it.value_bytes());
        it.next();
    }
    let corrupt = it.is_corrupt();
    for t in targets {
        it.seek(t);
        let _ = (it.valid(), it.key(), it.value());
        it.next();
    }
    (seen, corrupt)
}

/// Damaged block bytes (which a checksum would normally catch first) make the cursor stop and
/// say so, never panic: every byte flipped several ways, and every truncation.
#[test]
fn damaged_blocks_never_panic() {
    let keys = prefixed_keys(40);
    let mut b = BlockBuilder::new();
    for (i, k) in keys.iter().enumerate() {
        b.add(k, format!("value-{i}").repeat(20).as_bytes()); // Two-byte value lengths.
    }
    let good = b.finish();
    let targets: Vec<Vec<u8>> =
        [&b""[..], &keys[0], &keys[17], &keys[39], &internal_key(b"zzz", 1, true)]
            .iter()
            .map(|t| t.to_vec())
            .collect();
    assert_eq!(exercise(Block::new(Bytes::from(good.clone())).unwrap(), &targets), (40, false));
    let (mut parsed, mut flagged) = (0, 0);
    for at in 0..good.len() {
        for mask in [0x01u8, 0x21, 0x80, 0xff] {
            let mut bad = good.clone();
            bad[at] ^= mask;
            if let Some(block) = Block::new(Bytes::from(bad)) {
                parsed += 1;
                flagged += usize::from(exercise(block, &targets).1);
            }
        }
    }
    assert!(parsed > 0 && flagged > 0, "{parsed} damaged blocks parsed, {flagged} flagged");
    for len in 0..good.len() {
        if let Some(block) = Block::new(Bytes::copy_from_slice(&good[..len])) {
            exercise(block, &targets);
        }
    }
    // Hand-made damage: a restart point whose entry claims a shared prefix, a varint that never
    // ends, lengths running past the entries, and a restart array larger than the block.
    let mut shared_at_restart = Vec::new();
    varint::put(&mut shared_at_restart, 3);
    shared_at_restart.extend_from_slice(&[1, 0, b'k']);
    shared_at_restart.extend_from_slice(&0u32.to_le_bytes());
    shared_at_restart.extend_from_slice(&1u32.to_le_bytes());
    let block = Block::new(Bytes::from(shared_at_restart)).unwrap();
    assert_eq!(exercise(block, &targets), (0, true));
    let mut endless = vec![0xff; 12];
    endless.extend_from_slice(&0u32.to_le_bytes());
    endless.extend_from_slice(&1u32.to_le_bytes());
    assert_eq!(exercise(Block::new(Bytes::from(endless)).unwrap(), &targets), (0, true));
    let mut too_long = vec![0, 1, 100, b'k'];
    too_long.extend_from_slice(&0u32.to_le_bytes());
    too_long.extend_from_slice(&1u32.to_le_bytes());
    assert_eq!(exercise(Block::new(Bytes::from(too_long)).unwrap(), &targets), (0, true));
    let mut huge_lengths = vec![0];
    varint::put(&mut huge_lengths, u64::MAX);
    varint::put(&mut huge_lengths, u64::MAX);
    huge_lengths.extend_from_slice(&0u32.to_le_bytes());
    huge_lengths.extend_from_slice(&1u32.to_le_bytes());
    assert_eq!(exercise(Block::new(Bytes::from(huge_lengths)).unwrap(), &targets), (0, true));
    assert!(Block::new(Bytes::from_static(&[0, 0, 0, 0x40])).is_none(), "restarts overflow");
    assert!(Block::new(Bytes::from_static(&[9, 0, 0, 0, 1, 0, 0, 0])).is_none(), "past entries");
    assert!(Block::new(Bytes::from_static(&[1, 0, 0])).is_none(), "no trailer");
}

/// A table iterator visits what `entries` returns, from wherever it is positioned, across
/// block boundaries, and stays at the end once there.
#[test]
fn table_iter_seeks_and_walks_across_blocks() {
    let fs = MemFs::new();
    let path = PathBuf::from("/t/000003.sst");
    let entries = build(&fs, &path, 1500);
    let table = Arc::new(Table::open(&fs, &path).unwrap());
    assert!(table.index.len() > 10, "several blocks");
    let keys: Vec<Vec<u8>> = entries
        .iter()
        .map(|(k, seq, v)| internal_key(k, *seq, matches!(v, Value::Put(_))))
        .collect();
    let mut it = TableIter::seek(Arc::clone(&table), &[]).unwrap();
    for (key, (_, _, value)) in keys.iter().zip(&entries) {
        let (k, v) = it.entry().expect("an entry");
        assert_eq!(k, &key[..]);
        match value {
            Value::Put(want) => assert_eq!((v, it.value_bytes()), (&want[..], want.clone())),
            Value::Tombstone => assert!(v.is_empty()),
        }
        it.advance().unwrap();
    }
    assert!(it.entry().is_none());
    it.advance().unwrap();
    assert!(it.entry().is_none(), "stays at the end");
    for i in [0usize, 1, 2, 77, 78, 500, keys.len() - 1] {
        let it = TableIter::seek(Arc::clone(&table), &keys[i]).unwrap();
        assert_eq!(it.entry().unwrap().0, &keys[i][..], "seek to entry {i}");
    }
    let user = format!("user-key-{:06}", 700);
    let it = TableIter::seek(Arc::clone(&table), &internal_key(user.as_bytes(), 0, false));
    let want = internal_key(b"user-key-000701", 702, true);
    assert_eq!(it.unwrap().entry().unwrap().0, &want[..], "the seq below every version");
    let past = TableIter::seek(Arc::clone(&table), &internal_key(b"zzz", 1, true)).unwrap();
    assert!(past.entry().is_none());
    assert_eq!(table.largest_user_key(), Some(&b"user-key-001499"[..]));
}

/// A table whose blocks are framed and checksummed correctly but whose contents are wrong:
/// the kind of damage only a format bug (or a checksum collision) could produce.
fn raw_table(fs: &MemFs, path: &Path, data: &[u8], index_value: Option<&[u8]>) {
    raw_table_with_index(fs, path, data, index_value, &internal_key(b"zzz", 1, true), None);
}

/// As [`raw_table`], with the index's one key given, or the whole index block.
fn raw_table_with_index(
    fs: &MemFs,
    path: &Path,
    data: &[u8],
    index_value: Option<&[u8]>,
    index_key: &[u8],
    raw_index: Option<&[u8]>,
) {
    let mut file = Vec::new();
    let mut frame = |bytes: &[u8]| {
        let handle = Handle { offset: file.len() as u64, size: bytes.len() as u64 };
        file.extend_from_slice(bytes);
        file.extend_from_slice(&crc32fast::hash(bytes).to_le_bytes());
        handle
    };
    let data_handle = frame(data);
    let filter = frame(&Bloom::build([&b"k"[..]].into_iter(), 10).encode());
    let mut handle_bytes = Vec::new();
    data_handle.encode(&mut handle_bytes);
    let mut index = BlockBuilder::new();
    index.add(index_key, index_value.unwrap_or(&handle_bytes));
    let index = frame(raw_index.unwrap_or(&index.finish()));
    let mut footer = Vec::new();
    filter.encode(&mut footer);
    index.encode(&mut footer);
    footer.extend_from_slice(&TABLE_VERSION.to_le_bytes());
    footer.extend_from_slice(&TABLE_MAGIC.to_le_bytes());
    let crc = crc32fast::hash(&footer);
    footer.extend_from_slice(&crc.to_le_bytes());
    file.extend_from_slice(&footer);
    let mut w = fs.create(path).unwrap();
    w.append(&file).unwrap();
}

fn is_corruption<T>(result: Result<T>, detail: &str) -> bool {
    matches!(result, Err(Error::Corruption { detail: d, .. }) if d.contains(detail))
}

#[test]
fn well_framed_nonsense_is_reported_as_corruption() {
    let fs = MemFs::new();
    let path = PathBuf::from("/t/raw.sst");
    // A key too short to hold a sequence number.
    let mut short = BlockBuilder::new();
    short.add(b"k", b"v");
    raw_table(&fs, &path, &short.finish(), None);
    let table = Arc::new(Table::open(&fs, &path).unwrap());
    assert!(is_corruption(table.entries(), "shorter than its trailer"));
    assert!(is_corruption(TableIter::seek(Arc::clone(&table), &[]), "shorter than its trailer"));
    // An entry that does not decode (its lengths run past the block).
    let mut bad = vec![0, 1, 100, b'k'];
    bad.extend_from_slice(&0u32.to_le_bytes());
    bad.extend_from_slice(&1u32.to_le_bytes());
    raw_table(&fs, &path, &bad, None);
    let table = Arc::new(Table::open(&fs, &path).unwrap());
    assert!(is_corruption(table.entries(), "does not decode"));
    assert!(is_corruption(TableIter::seek(Arc::clone(&table), &[]), "does not decode"));
    assert!(is_corruption(table.get(b"k", 5), "does not decode"));
    // A data block whose restart array does not parse.
    raw_table(&fs, &path, &[1, 0, 0], None);
    let table = Arc::new(Table::open(&fs, &path).unwrap());
    assert!(is_corruption(table.entries(), "does not parse"));
    // An index entry that is not a block handle, and one pointing past the file.
    raw_table(&fs, &path, &short_block(), Some(b"short"));
    assert!(is_corruption(Table::open(&fs, &path), "bad block handle"));
    let mut outside = Vec::new();
    Handle { offset: u64::MAX - 2, size: 10 }.encode(&mut outside);
    raw_table(&fs, &path, &short_block(), Some(&outside));
    let table = Arc::new(Table::open(&fs, &path).unwrap());
    assert!(is_corruption(table.entries(), "outside the file"));
    // An index entry that does not decode.
    let mut bad_index = vec![0, 1, 100, b'k'];
    bad_index.extend_from_slice(&0u32.to_le_bytes());
    bad_index.extend_from_slice(&1u32.to_le_bytes());
    let key = internal_key(b"zzz", 1, true);
    raw_table_with_index(&fs, &path, &short_block(), None, &key, Some(&bad_index));
    assert!(is_corruption(Table::open(&fs, &path), "index entry does not decode"));
    // A lookup past the table's last key (the filter let it through): absent.
    let key = internal_key(b"k", 1, true);
    raw_table_with_index(&fs, &path, &short_block(), None, &key, None);
    let table = Table::open(&fs, &path).unwrap();
    assert_eq!(table.get(b"k", 0).unwrap(), Lookup::Absent, "older than every version");
    assert_eq!(table.get(b"k", 1).unwrap(), Lookup::Found(Bytes::from_static(b"v")));
}

fn short_block() -> Vec<u8> {
    let mut b = BlockBuilder::new();
    b.add(&internal_key(b"k", 1, true), b"v");
    b.finish()
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
        let opened = Table::open(&fs, &path).map(Arc::new);
        match opened.and_then(|t| t.entries().and_then(|e| walk(&t).map(|w| (e, w)))) {
            Err(Error::Corruption { .. }) => {}
            Err(e) => panic!("flip at {at}: unexpected error {e}"),
            Ok((read, walked)) => {
                assert_eq!(read, entries, "flip at {at} changed the data silently");
                assert_eq!(walked, entries.len(), "flip at {at}: the iterator disagrees");
            }
        }
        fs.corrupt_byte(&path, at, original);
    }
}

/// Walks the table with an iterator, as reads do; returns how many entries it saw.
fn walk(table: &Arc<Table>) -> Result<usize> {
    let mut it = TableIter::seek(Arc::clone(table), &[])?;
    let mut n = 0;
    while it.entry().is_some() {
        n += 1;
        it.advance()?;
    }
    Ok(n)
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

/// The index's search by key prefixes finds exactly the block a search by whole keys finds,
/// whatever the keys share, however long they are, and wherever the target falls.
#[test]
fn index_prefix_search_agrees_with_whole_key_search() {
    let mut state = 7u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for case in 0..200 {
        let shared = &b"common-prefix"[..case % 14];
        let random_user = |next: &mut dyn FnMut() -> u64| {
            let mut user = shared.to_vec();
            for _ in 0..next() % 14 {
                user.push(b"ab\0\xff"[(next() % 4) as usize]);
            }
            user
        };
        let mut users: Vec<Vec<u8>> =
            (0..1 + next() % 40).map(|_| random_user(&mut next)).collect();
        users.sort();
        users.dedup();
        let mut index = Index::default();
        for (i, user) in users.iter().enumerate() {
            // Several blocks may end in versions of one user key (newest first).
            for v in 0..1 + next() % 3 {
                index.push(
                    &internal_key(user, 100 - 10 * v, true),
                    Handle { offset: i as u64, size: 1 },
                );
            }
        }
        index.build_prefixes();
        assert!(!index.prefixes.is_empty());
        let mut targets: Vec<Vec<u8>> = vec![Vec::new(), b"short".to_vec()];
        for user in users.iter().chain([random_user(&mut next), random_user(&mut next)].iter()) {
            for seq in [0, 75, 90, 95, 100, 1000] {
                targets.push(internal_key(user, seq, true));
            }
            let mut longer = user.clone();
            longer.push(0);
            targets.push(internal_key(&longer, 5, false));
            if let Some((_, shorter)) = user.split_last() {
                targets.push(internal_key(shorter, 5, true));
            }
        }
        for target in &targets {
            let want = index.search(0, index.len(), target);
            assert_eq!(index.find(target), want, "case {case}: target {target:?}");
        }
    }
    // An index with a key too short to be an internal key falls back to whole keys.
    let mut index = Index::default();
    index.push(b"k", Handle { offset: 0, size: 1 });
    index.push(&internal_key(b"m", 1, true), Handle { offset: 1, size: 1 });
    index.build_prefixes();
    assert!(index.prefixes.is_empty());
    assert_eq!(index.find(&internal_key(b"l", 1, true)), 1);
    let empty = Index::default();
    assert_eq!(empty.find(&internal_key(b"l", 1, true)), 0);
}

#[test]
fn compare_bytes_orders_as_slices_do() {
    let samples: Vec<&[u8]> = vec![
        b"",
        b"a",
        b"ab",
        b"abcdefgh",
        b"abcdefgh\0",
        b"abcdefgi",
        b"abcdefghijklmnop",
        b"abcdefghijklmnoq",
        b"abcdefghijklmno",
        b"\xff",
        b"\xff\xff\xff\xff\xff\xff\xff\xff\x00",
        b"0000000000123456",
        b"0000000000123457",
        b"00000000001234",
    ];
    for a in &samples {
        for b in &samples {
            assert_eq!(compare_bytes(a, b), a.cmp(b), "{a:?} vs {b:?}");
        }
    }
}
