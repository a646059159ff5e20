//! The corruption suite: hand-made bad files, each with the exact error it must produce.
//!
//! Every case starts from a valid file written by the writer, breaks one rule, and (unless the
//! case is about the header CRC) repairs the header CRC so that the check under test is the one
//! that fires. A positive control checks that the base file and the repair helpers are valid.
//! With `BET_DUMP_CORRUPT=DIR` set, every bad file is also written to DIR (the fuzz seed corpus).

use bet_format::layout::{FLAG_REQUIRED, HEADER_LEN, SECTION_ENTRY_LEN, align_up};
use bet_format::testing::{synthetic_provenance, values_for};
use bet_format::*;

#[derive(Clone)]
struct Raw {
    kind: u16,
    dtype: u8,
    flags: u8,
    payload: Vec<u8>,
}

fn crc_fix(bytes: &mut [u8]) {
    let count = u32::from_le_bytes(bytes[24..28].try_into().unwrap()) as usize;
    let end = (HEADER_LEN + count * SECTION_ENTRY_LEN).min(bytes.len());
    bytes[12..16].fill(0);
    let crc = crc32c(&bytes[..end]);
    bytes[12..16].copy_from_slice(&crc.to_le_bytes());
}

/// An assembler independent of the writer's, following docs/format.md §2.
fn assemble(sections: &[Raw]) -> Vec<u8> {
    let table_end = HEADER_LEN + sections.len() * SECTION_ENTRY_LEN;
    let mut offsets = vec![];
    let mut pos = table_end as u64;
    for s in sections {
        pos = align_up(pos).unwrap();
        offsets.push(pos);
        pos += s.payload.len() as u64;
    }
    let mut out = layout::MAGIC.to_vec();
    out.extend(1u16.to_le_bytes());
    out.extend(0u16.to_le_bytes());
    out.extend([0; 4]);
    out.extend(pos.to_le_bytes());
    out.extend((sections.len() as u32).to_le_bytes());
    out.resize(HEADER_LEN, 0);
    for (s, off) in sections.iter().zip(&offsets) {
        out.extend(s.kind.to_le_bytes());
        out.push(s.dtype);
        out.push(s.flags);
        out.extend(crc32c(&s.payload).to_le_bytes());
        out.extend(off.to_le_bytes());
        out.extend((s.payload.len() as u64).to_le_bytes());
        out.extend(0u64.to_le_bytes());
    }
    for (s, off) in sections.iter().zip(&offsets) {
        out.resize(*off as usize, 0);
        out.extend(&s.payload);
    }
    crc_fix(&mut out);
    out
}

fn base_contents<'a>(uv: &'a [f32], iv: &'a [f32], ids: &'a [&'a [u8]]) -> ModelContents<'a> {
    ModelContents {
        model: ModelKind::Mf,
        placement: MaskPlacement::NotApplicable,
        d_max: 8,
        users: TableInput { widths: &[8, 3, 0, 5], values: uv },
        items: TableInput { widths: &[8, 3, 1, 6, 2, 4], values: iv },
        ncf: None,
        keep: Some(Decimal::parse("0.5").unwrap()),
        provenance: synthetic_provenance(),
        value_dtype: ValueDtype::F32,
        storage: StorageOrder::WidthDescending,
        value_layout: ValueLayout::RowMajor,
        user_ids: Some(ids),
        item_ids: None,
        graph: None,
    }
}

fn base_file() -> Vec<u8> {
    let uv = values_for(&[8, 3, 0, 5], 1);
    let iv = values_for(&[8, 3, 1, 6, 2, 4], 2);
    let ids: [&[u8]; 4] = [b"u1", b"u2", b"u3", b"u4"];
    base_contents(&uv, &iv, &ids).to_bytes().unwrap()
}

fn sections_of(bytes: &[u8]) -> Vec<Raw> {
    let aligned = AlignedBytes::new(bytes);
    let f = BetFile::new_checked(aligned.as_bytes()).unwrap();
    f.sections()
        .map(|e| Raw {
            kind: e.kind_code,
            dtype: e.dtype_code,
            flags: e.flags,
            payload: bytes[e.offset as usize..(e.offset + e.len) as usize].to_vec(),
        })
        .collect()
}

fn pos(sections: &[Raw], kind: SectionKind) -> usize {
    sections.iter().position(|s| s.kind == kind as u16).unwrap()
}

fn entry_at(i: usize) -> usize {
    HEADER_LEN + i * SECTION_ENTRY_LEN
}

fn with_meta(f: impl FnOnce(&mut Metadata<'_>)) -> Vec<u8> {
    let base = base_file();
    let mut secs = sections_of(&base);
    let i = pos(&secs, SectionKind::Metadata);
    let payload = secs[i].payload.clone();
    let mut m = Metadata::decode(&payload).unwrap();
    f(&mut m);
    secs[i].payload = m.encode().unwrap();
    assemble(&secs)
}

fn with_section(kind: SectionKind, f: impl FnOnce(&mut Raw)) -> Vec<u8> {
    let mut secs = sections_of(&base_file());
    let i = pos(&secs, kind);
    f(&mut secs[i]);
    assemble(&secs)
}

fn patch_u32(payload: &mut [u8], index: usize, value: u32) {
    payload[index * 4..index * 4 + 4].copy_from_slice(&value.to_le_bytes());
}

fn open(bytes: &[u8]) -> Result<(), Error> {
    let aligned = AlignedBytes::new(bytes);
    let f = BetFile::new_checked(aligned.as_bytes())?;
    f.verify_checksums()?;
    f.validate_values()
}

type Case = (&'static str, Vec<u8>, Error);

fn cases() -> Vec<Case> {
    let base = base_file();
    let secs = sections_of(&base);
    let meta_i = pos(&secs, SectionKind::Metadata);
    let item_ptr_i = pos(&secs, SectionKind::ItemRowPtr);
    let item_val_i = pos(&secs, SectionKind::ItemValues);
    let ids_i = pos(&secs, SectionKind::UserIds);
    let n = secs.len();
    let entry_u64 = |b: &[u8], i: usize, field: usize| {
        u64::from_le_bytes(b[entry_at(i) + field..entry_at(i) + field + 8].try_into().unwrap())
    };
    let mut c: Vec<Case> = vec![];

    let mut b = base.clone();
    b[1] = b'X';
    c.push(("bad magic", b, Error::BadMagic));

    let mut b = base.clone();
    b[8..10].copy_from_slice(&2u16.to_le_bytes());
    crc_fix(&mut b);
    c.push(("future major version", b, Error::UnsupportedMajorVersion { found: 2, supported: 1 }));

    let mut b = base.clone();
    b[entry_at(ids_i)..entry_at(ids_i) + 2].copy_from_slice(&999u16.to_le_bytes());
    b[entry_at(ids_i) + 3] = FLAG_REQUIRED;
    crc_fix(&mut b);
    c.push(("unknown required kind", b, Error::UnknownRequiredSection { section: ids_i as u32, kind: 999 }));

    c.push(("truncated inside the header", base[..40].to_vec(), Error::Truncated { needed: 64, actual: 40 }));

    let mut b = base[..HEADER_LEN + 40].to_vec();
    b[16..24].copy_from_slice(&((HEADER_LEN + 40) as u64).to_le_bytes());
    crc_fix(&mut b);
    c.push((
        "truncated inside the section table",
        b,
        Error::Truncated { needed: (HEADER_LEN + n * SECTION_ENTRY_LEN) as u64, actual: (HEADER_LEN + 40) as u64 },
    ));

    let b = base[..base.len() - 10].to_vec();
    c.push((
        "truncated payload",
        b,
        Error::FileLengthMismatch { header: base.len() as u64, actual: base.len() as u64 - 10 },
    ));

    let b = with_section(SectionKind::ItemRowPtr, |s| patch_u32(&mut s.payload, 2, 1));
    c.push(("non-monotone row_ptr", b, Error::RowPtrNotMonotone { table: Table::Items, row: 1 }));

    // Storage order is widest first: rows 0 and 1 have widths 8 and 6; merging them gives 14.
    let b = with_section(SectionKind::ItemRowPtr, |s| patch_u32(&mut s.payload, 1, 0));
    c.push(("width over d_max", b, Error::RowTooWide { table: Table::Items, row: 1, width: 14, max: 8 }));

    let b = with_section(SectionKind::ItemRowPtr, |s| patch_u32(&mut s.payload, 0, 1));
    c.push(("row_ptr not starting at 0", b, Error::RowPtrStart { table: Table::Items, first: 1 }));

    let b = with_section(SectionKind::ItemRowPtr, |s| {
        let last = s.payload.len() / 4 - 1;
        patch_u32(&mut s.payload, last, 23);
    });
    c.push(("row_ptr end below the values", b, Error::RowPtrEnd { table: Table::Items, end: 23, values: 24 }));

    let mut b = base.clone();
    let prev = entry_u64(&b, item_ptr_i, 8);
    b[entry_at(item_val_i) + 8..entry_at(item_val_i) + 16].copy_from_slice(&prev.to_le_bytes());
    crc_fix(&mut b);
    let prev_end = prev + entry_u64(&b, item_ptr_i, 16);
    c.push((
        "overlapping sections",
        b,
        Error::SectionOverlap { section: item_val_i as u32, offset: prev, previous_end: prev_end },
    ));

    // A hole: move the last payload 64 bytes later.
    let mut b = base.clone();
    let last = n - 1;
    let off = entry_u64(&b, last, 8);
    let prev_end = entry_u64(&b, last - 1, 8) + entry_u64(&b, last - 1, 16);
    let payload = b[off as usize..].to_vec();
    b.truncate(off as usize);
    b.extend([0u8; 64]);
    b.extend(&payload);
    b[entry_at(last) + 8..entry_at(last) + 16].copy_from_slice(&(off + 64).to_le_bytes());
    let len = b.len() as u64;
    b[16..24].copy_from_slice(&len.to_le_bytes());
    crc_fix(&mut b);
    c.push(("hole between sections", b, Error::SectionHole { section: last as u32, gap: off + 64 - prev_end }));

    let mut b = base.clone();
    // The first section whose payload is preceded by padding.
    let padded = (1..n).find(|&i| entry_u64(&b, i, 8) > entry_u64(&b, i - 1, 8) + entry_u64(&b, i - 1, 16)).unwrap();
    let start = entry_u64(&b, padded, 8) as usize;
    b[start - 1] = 0x55;
    c.push(("non-zero padding", b, Error::NonZeroPadding { offset: start as u64 - 1 }));

    let mut b = base.clone();
    b.extend([0u8; 8]);
    let len = b.len() as u64;
    b[16..24].copy_from_slice(&len.to_le_bytes());
    crc_fix(&mut b);
    c.push(("trailing bytes", b, Error::TrailingBytes { extra: 8 }));

    let mut b = base.clone();
    let off = entry_u64(&b, item_val_i, 8) + 4;
    b[entry_at(item_val_i) + 8..entry_at(item_val_i) + 16].copy_from_slice(&off.to_le_bytes());
    crc_fix(&mut b);
    c.push(("misaligned payload offset", b, Error::MisalignedSection { section: item_val_i as u32, offset: off }));

    let mut b = base.clone();
    let off = entry_u64(&b, item_val_i, 8) as usize;
    b[off + 5] ^= 0x10;
    let crc = u32::from_le_bytes(b[entry_at(item_val_i) + 4..entry_at(item_val_i) + 8].try_into().unwrap());
    let computed = crc32c(&b[off..off + entry_u64(&b, item_val_i, 16) as usize]);
    c.push((
        "flipped bit caught by the section CRC",
        b,
        Error::SectionChecksum {
            section: item_val_i as u32,
            kind: SectionKind::ItemValues as u16,
            stored: crc,
            computed,
        },
    ));

    let mut b = base.clone();
    b[40] = 1;
    let stored = u32::from_le_bytes(b[12..16].try_into().unwrap());
    let mut fixed = b.clone();
    crc_fix(&mut fixed);
    let computed = u32::from_le_bytes(fixed[12..16].try_into().unwrap());
    c.push(("flipped bit caught by the header CRC", b, Error::HeaderChecksum { stored, computed }));

    let mut b = base.clone();
    b[40] = 1;
    crc_fix(&mut b);
    c.push(("reserved header byte set", b, Error::ReservedNotZero { field: "header.reserved" }));

    let mut b = base.clone();
    let off = entry_u64(&b, item_val_i, 8) + (1u64 << 32);
    b[entry_at(item_val_i) + 8..entry_at(item_val_i) + 16].copy_from_slice(&off.to_le_bytes());
    crc_fix(&mut b);
    #[cfg(target_pointer_width = "64")]
    let want = Error::SectionOutOfBounds {
        section: item_val_i as u32,
        offset: off,
        len: entry_u64(&base, item_val_i, 16),
        file_len: base.len() as u64,
    };
    #[cfg(not(target_pointer_width = "64"))]
    let want = Error::NotAddressable { section: item_val_i as u32, value: off };
    c.push(("offset beyond 4 GiB", b, want));

    let mut b = base.clone();
    b[24..28].copy_from_slice(&65u32.to_le_bytes());
    c.push(("too many sections", b, Error::TooManySections { count: 65, max: 64 }));

    let b = with_section(SectionKind::Metadata, |s| s.payload = vec![0; 70_000]);
    c.push(("oversized metadata", b, Error::MetadataTooLarge { len: 70_000, max: 65_536 }));

    let b = with_section(SectionKind::Metadata, |s| s.payload = vec![0x07, 0xff, 0xff]);
    c.push((
        "metadata of an unknown version",
        b,
        Error::MetadataDecode { reason: "unknown enum variant (unknown metadata version?)" },
    ));

    let b = with_section(SectionKind::Metadata, |s| s.payload.push(0));
    c.push((
        "trailing bytes in the metadata",
        b,
        Error::MetadataDecode { reason: "trailing bytes after the metadata" },
    ));

    let b = with_meta(|m| {
        m.n_users += 1;
        m.budget.as_mut().unwrap().limit = 44; // floor(0.5 * 8 * (5 + 6)): consistent with the lie
    });
    c.push(("metadata user count disagrees", b, Error::MetadataMismatch { field: "n_users", claimed: 5, actual: 4 }));

    let b = with_meta(|m| m.budget.as_mut().unwrap().stored += 1);
    c.push((
        "metadata stored count disagrees",
        b,
        Error::MetadataMismatch { field: "budget.stored", claimed: 41, actual: 40 },
    ));

    let b = with_meta(|m| m.budget.as_mut().unwrap().limit = 1000);
    c.push((
        "metadata limit disagrees with keep",
        b,
        Error::MetadataMismatch { field: "budget.limit", claimed: 1000, actual: 40 },
    ));

    let b = with_meta(|m| {
        let budget = m.budget.as_mut().unwrap();
        budget.keep = Decimal::parse("0.25").unwrap();
        budget.limit = 20;
    });
    c.push(("stored values over the budget", b, Error::OverBudget { stored: 40, limit: 20 }));

    let b = with_meta(|m| m.placement = MaskPlacement::Output);
    c.push((
        "placement on a model without one",
        b,
        Error::InvalidMetadata { reason: "mask placement does not fit the model kind" },
    ));

    let b = with_meta(|m| m.vector_width = 32);
    c.push((
        "vector width not d_max",
        b,
        Error::InvalidMetadata { reason: "vector width must be d_max (4 * d_max for NGCF)" },
    ));

    let mut s2 = secs.clone();
    s2.push(s2[ids_i].clone());
    c.push((
        "duplicate section",
        assemble(&s2),
        Error::DuplicateSection { section: n as u32, kind: SectionKind::UserIds as u16 },
    ));

    let mut s2 = secs.clone();
    s2.remove(item_val_i);
    c.push(("missing required section", assemble(&s2), Error::MissingSection { kind: SectionKind::ItemValues }));

    let b = with_section(SectionKind::ItemValues, |s| s.dtype = 9);
    c.push((
        "unknown dtype on a known kind",
        b,
        Error::UnsupportedDtype { section: item_val_i as u32, kind: SectionKind::ItemValues, dtype: 9 },
    ));

    let b = with_section(SectionKind::ItemRowPtr, |s| s.dtype = Dtype::F32 as u8);
    c.push((
        "wrong known dtype for the kind",
        b,
        Error::UnsupportedDtype { section: item_ptr_i as u32, kind: SectionKind::ItemRowPtr, dtype: 2 },
    ));

    let b = with_section(SectionKind::ItemValues, |s| s.flags = 0);
    c.push((
        "required flag cleared on a known kind",
        b,
        Error::BadSectionFlags { section: item_val_i as u32, kind: SectionKind::ItemValues, flags: 0, expected: 1 },
    ));

    let b = with_section(SectionKind::ItemValues, |s| s.payload.push(0));
    c.push((
        "payload not a whole number of elements",
        b,
        Error::BadSectionLength { kind: SectionKind::ItemValues, len: 97, reason: "not a whole number of elements" },
    ));

    let b = with_section(SectionKind::ItemPermutation, |s| {
        let (a, z) = (
            u32::from_le_bytes(s.payload[0..4].try_into().unwrap()),
            u32::from_le_bytes(s.payload[4..8].try_into().unwrap()),
        );
        patch_u32(&mut s.payload, 0, z);
        patch_u32(&mut s.payload, 1, a);
    });
    c.push(("permutation not a bijection", b, Error::BadPermutation { table: Table::Items, position: 0 }));

    let b = with_section(SectionKind::ItemPermutation, |s| patch_u32(&mut s.payload, 3, 6));
    c.push(("permutation entry out of range", b, Error::BadPermutation { table: Table::Items, position: 3 }));

    // ids "u1".."u4": make the second equal to the first.
    let b = with_section(SectionKind::UserIds, |s| {
        let l = s.payload.len();
        s.payload[l - 5] = b'1';
    });
    c.push((
        "duplicate external id",
        b,
        Error::BadIdMap {
            table: Table::Users,
            entry: 1,
            reason: "ids not strictly increasing (duplicate or unsorted)",
        },
    ));

    let mut s2 = secs.clone();
    s2.insert(item_val_i + 1, Raw { kind: SectionKind::NcfDense as u16, dtype: 2, flags: 1, payload: vec![0; 8] });
    c.push(("NCF section in an MF file", assemble(&s2), Error::UnexpectedSection { kind: SectionKind::NcfDense }));

    let mut s2 = secs.clone();
    s2[meta_i].payload = {
        let mut m = Metadata::decode(&secs[meta_i].payload).unwrap();
        m.budget = None;
        m.encode().unwrap()
    };
    let good_without_budget = assemble(&s2);
    let mut b = good_without_budget.clone();
    let len = b.len();
    b[len - 1] = b'5'; // "u4" -> "u5" in the last payload: still sorted, only the CRC can see it
    let ids_off = entry_u64(&b, ids_i, 8) as usize;
    let computed = crc32c(&b[ids_off..]);
    let stored = u32::from_le_bytes(b[entry_at(ids_i) + 4..entry_at(ids_i) + 8].try_into().unwrap());
    c.push((
        "id bytes changed under their CRC",
        b,
        Error::SectionChecksum { section: ids_i as u32, kind: SectionKind::UserIds as u16, stored, computed },
    ));

    // The propagation graph of an `input` file (§4.2): graph of `testing::INPUT_GRAPH`, payload
    // u32 0 = layers (2), 1..=4 = offsets [0, 3, 5, 6], 5..=10 = items [0, 1, 3, 1, 4, 3].
    let input = bet_format::testing::input_file_bytes();
    let with_graph = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut secs = sections_of(&input);
        let i = pos(&secs, SectionKind::PropagationGraph);
        f(&mut secs[i].payload);
        assemble(&secs)
    };
    let graph = |position: u64, reason: &'static str| Error::BadGraph { position, reason };
    let layers = "layer count outside 1..=MAX_PROPAGATION_LAYERS";
    c.push(("graph with 0 layers", with_graph(&|p| patch_u32(p, 0, 0)), graph(0, layers)));
    c.push(("graph with 9 layers", with_graph(&|p| patch_u32(p, 0, 9)), graph(0, layers)));
    c.push(("graph offsets start at 1", with_graph(&|p| patch_u32(p, 1, 1)), graph(0, "offsets do not start at 0")));
    c.push(("graph offsets decrease", with_graph(&|p| patch_u32(p, 3, 2)), graph(1, "offsets decrease")));
    c.push((
        "graph offsets past the items",
        with_graph(&|p| patch_u32(p, 4, 7)),
        graph(2, "offsets past the item list"),
    ));
    c.push((
        "graph offsets end early",
        with_graph(&|p| patch_u32(p, 4, 5)),
        graph(3, "offsets do not end at the item count"),
    ));
    c.push(("graph item out of range", with_graph(&|p| patch_u32(p, 6, 5)), graph(0, "item out of range")));
    c.push(("graph edge twice", with_graph(&|p| patch_u32(p, 7, 1)), graph(0, "items not strictly increasing")));
    c.push((
        "graph shorter than its offsets",
        with_graph(&|p| p.truncate(12)),
        Error::BadSectionLength {
            kind: SectionKind::PropagationGraph,
            len: 12,
            reason: "must hold the layer count and n_users + 1 offsets",
        },
    ));
    let mut s2 = sections_of(&input);
    s2.remove(pos(&s2, SectionKind::PropagationGraph));
    c.push((
        "input placement without its graph",
        assemble(&s2),
        Error::MissingSection { kind: SectionKind::PropagationGraph },
    ));
    let mut s2 = secs.clone();
    let g = sections_of(&input).into_iter().find(|r| r.kind == SectionKind::PropagationGraph as u16).unwrap();
    s2.push(g);
    c.push(("graph in an MF file", assemble(&s2), Error::UnexpectedSection { kind: SectionKind::PropagationGraph }));
    let mut s2 = sections_of(&input);
    let mi = pos(&s2, SectionKind::Metadata);
    s2[mi].payload = {
        let mut m = Metadata::decode(&s2[mi].payload).unwrap();
        m.model = ModelKind::Ngcf;
        m.encode().unwrap()
    };
    c.push((
        "NGCF with the input placement",
        assemble(&s2),
        Error::InvalidMetadata { reason: "the input placement is stored for LightGCN only" },
    ));

    let b = with_section(SectionKind::ItemValues, |s| s.payload[4..8].copy_from_slice(&f32::NAN.to_le_bytes()));
    c.push(("NaN value", b, Error::NonFiniteValue { table: Table::Items, position: 1 }));
    let b =
        with_section(SectionKind::UserValues, |s| s.payload[0..4].copy_from_slice(&f32::NEG_INFINITY.to_le_bytes()));
    c.push(("infinite value", b, Error::NonFiniteValue { table: Table::Users, position: 0 }));
    c
}

#[test]
fn base_file_and_helpers_are_valid() {
    let base = base_file();
    open(&base).unwrap();
    // Re-assembling the parsed sections with the test's own assembler gives the writer's bytes:
    // the helpers are faithful, so each case breaks exactly one rule.
    assert_eq!(assemble(&sections_of(&base)), base);
    // An unknown optional kind is skipped.
    let mut secs = sections_of(&base);
    secs.push(Raw { kind: 4242, dtype: 200, flags: 0, payload: b"future".to_vec() });
    let b = assemble(&secs);
    let aligned = AlignedBytes::new(&b);
    let f = BetFile::new_checked(aligned.as_bytes()).unwrap();
    f.verify_checksums().unwrap();
    assert_eq!(f.items().rows(), 6);
}

#[test]
fn every_corrupt_file_gives_its_exact_error() {
    let cases = cases();
    assert!(cases.len() >= 20, "the suite must hold at least 20 cases, has {}", cases.len());
    let dump = std::env::var_os("BET_DUMP_CORRUPT").map(std::path::PathBuf::from);
    let mut failures = vec![];
    for (i, (name, bytes, want)) in cases.iter().enumerate() {
        if let Some(dir) = &dump {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(dir.join(format!("corrupt-{i:02}.bet")), bytes).unwrap();
        }
        let got = open(bytes);
        if got.as_ref().err() != Some(want) {
            failures.push(format!("{name}: want {want:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{} case(s) failed:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn misaligned_buffer_is_refused_not_read() {
    let base = base_file();
    // Place the file at an odd address: every f32/u32 payload is then misaligned.
    let mut buf = vec![0u8; base.len() + 1];
    let start = if (buf.as_ptr() as usize).is_multiple_of(2) { 1 } else { 0 };
    buf[start..start + base.len()].copy_from_slice(&base);
    let err = BetFile::new_checked(&buf[start..start + base.len()]).unwrap_err();
    assert!(matches!(err, Error::Misaligned { .. }), "{err:?}");
}
