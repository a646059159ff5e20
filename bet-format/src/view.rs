//! The checked, zero-copy view of a `.bet` file.
//!
//! [`BetFile::new_checked`] validates everything once — header, section
//! table, exact coverage of the file, alignment, row pointers, widths,
//! permutations, id maps, and metadata against structure — without an
//! allocator. After that no accessor panics: lookups take indices and
//! return `Option`.
//!
//! A [`FileLayout`] is the `Copy` result of validation (byte ranges and
//! dtypes only). A runtime that owns its bytes (a `Vec`, an mmap) keeps the
//! layout and calls [`FileLayout::attach`] per request, which re-slices in
//! O(1) instead of re-validating in O(n).
//!
//! ```
//! # fn main() -> Result<(), bet_format::Error> {
//! # let bytes = bet_format::testing::tiny_file_bytes();
//! # let bytes = bet_format::testing::Aligned::new(&bytes);
//! let file = bet_format::BetFile::new_checked(bytes.as_bytes())?;
//! file.verify_checksums()?;          // explicit: a device may do this once at boot
//! let users = file.users();
//! let width = users.width(0).unwrap_or(0);
//! assert!(width <= file.summary().vector_width);
//! # Ok(()) }
//! ```

use half::f16;

use crate::Error;
use crate::error::Table;
use crate::layout::{self, Dtype, SectionKind, entry, header};
use crate::meta::{Budget, MaskPlacement, Metadata, ModelKind};

/// One entry of the section table, as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SectionEntry {
    /// Position in the table.
    pub index: u32,
    /// Raw kind code.
    pub kind_code: u16,
    /// The kind, if this reader knows it.
    pub kind: Option<SectionKind>,
    /// Raw dtype code.
    pub dtype_code: u8,
    /// Flags (bit 0: REQUIRED).
    pub flags: u8,
    /// CRC-32C of the payload.
    pub crc: u32,
    /// Payload offset from the start of the file.
    pub offset: u64,
    /// Payload length in bytes.
    pub len: u64,
}

/// A byte range of the file, already converted to `usize` and bounds-checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    start: usize,
    len: usize,
}

impl Span {
    fn of<'a>(&self, bytes: &'a [u8]) -> Option<&'a [u8]> {
        bytes.get(self.start..self.start.checked_add(self.len)?)
    }
}

/// The element type of an embedding values section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueDtype {
    /// 4-byte floats.
    F32,
    /// 2-byte floats, widened exactly to f32 when read.
    F16,
}

impl ValueDtype {
    /// Bytes per value.
    pub const fn size(self) -> usize {
        match self {
            ValueDtype::F32 => 4,
            ValueDtype::F16 => 2,
        }
    }
    /// The section dtype.
    pub const fn dtype(self) -> Dtype {
        match self {
            ValueDtype::F32 => Dtype::F32,
            ValueDtype::F16 => Dtype::F16,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ValuesLayout {
    span: Span,
    dtype: ValueDtype,
    blocked: bool,
    kind: SectionKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct TableLayout {
    row_ptr: Span,
    values: ValuesLayout,
    permutation: Option<Span>,
}

/// The numbers of a file that every caller needs, copied out of the metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    /// Scoring function.
    pub model: ModelKind,
    /// Mask placement.
    pub placement: MaskPlacement,
    /// Budget dimension.
    pub d_max: u32,
    /// Width of a full vector; every row is at most this wide.
    pub vector_width: u32,
    /// Users.
    pub n_users: u32,
    /// Items.
    pub n_items: u32,
    /// Budget, if any (its `stored` equals the structure's count: checked).
    pub budget: Option<Budget>,
    /// Minor version of the file.
    pub minor_version: u16,
    /// Number of sections.
    pub section_count: u32,
}

/// The validated byte layout of a file: `Copy`, no borrows, O(1) to [`attach`](Self::attach).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileLayout {
    file_len: usize,
    summary: Summary,
    meta: Span,
    users: TableLayout,
    items: TableLayout,
    user_gmf: Option<ValuesLayout>,
    item_gmf: Option<ValuesLayout>,
    ncf_dense: Option<Span>,
    user_ids: Option<Span>,
    item_ids: Option<Span>,
    graph: Option<Span>,
}

/// Embedding values of one table, in storage order.
#[derive(Clone, Copy, Debug)]
pub enum Values<'a> {
    /// f32 values.
    F32(&'a [f32]),
    /// f16 values.
    F16(&'a [f16]),
}

impl<'a> Values<'a> {
    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            Values::F32(v) => v.len(),
            Values::F16(v) => v.len(),
        }
    }
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The dtype.
    pub fn dtype(&self) -> ValueDtype {
        match self {
            Values::F32(_) => ValueDtype::F32,
            Values::F16(_) => ValueDtype::F16,
        }
    }
    /// Value `i` widened to f32.
    pub fn get(&self, i: usize) -> Option<f32> {
        match self {
            Values::F32(v) => v.get(i).copied(),
            Values::F16(v) => v.get(i).map(|x| x.to_f32()),
        }
    }
    /// Values `start..end`.
    pub fn slice(&self, start: usize, end: usize) -> Option<Values<'a>> {
        match self {
            Values::F32(v) => v.get(start..end).map(Values::F32),
            Values::F16(v) => v.get(start..end).map(Values::F16),
        }
    }
    /// Writes the values widened to f32 into the front of `out`; returns how many (at most `out.len()`).
    pub fn widen_into(&self, out: &mut [f32]) -> usize {
        match self {
            Values::F32(v) => {
                let n = v.len().min(out.len());
                if let (Some(dst), Some(src)) = (out.get_mut(..n), v.get(..n)) {
                    dst.copy_from_slice(src);
                }
                n
            }
            Values::F16(v) => {
                let n = v.len().min(out.len());
                if let (Some(dst), Some(src)) = (out.get_mut(..n), v.get(..n)) {
                    for (d, s) in dst.iter_mut().zip(src) {
                        *d = s.to_f32();
                    }
                }
                n
            }
        }
    }
    /// Position of the first NaN or infinity.
    pub fn first_non_finite(&self) -> Option<usize> {
        match self {
            Values::F32(v) => v.iter().position(|x| !x.is_finite()),
            Values::F16(v) => v.iter().position(|x| !x.is_finite()),
        }
    }
}

/// Rows per block in the blocked value order (`f32x8`/`f16x8`).
pub const BLOCK_ROWS: u32 = 8;

/// One row's values: `width` values at `start + t * stride` of a table's values (stride 1 in
/// row-major order, 8 inside a blocked group).
#[derive(Clone, Copy, Debug)]
pub struct Row<'a> {
    values: Values<'a>,
    start: usize,
    width: usize,
    stride: usize,
}

impl<'a> Row<'a> {
    /// The row's width.
    pub fn width(&self) -> usize {
        self.width
    }
    /// Value `t` widened to f32 (`None` past the width).
    pub fn get(&self, t: usize) -> Option<f32> {
        if t >= self.width {
            return None;
        }
        self.values.get(self.start.checked_add(t.checked_mul(self.stride)?)?)
    }
    /// Writes the values widened to f32 into the front of `out`; returns how many.
    pub fn widen_into(&self, out: &mut [f32]) -> usize {
        if let Some(v) = self.contiguous() {
            return v.widen_into(out);
        }
        let mut n = 0;
        for (t, slot) in out.iter_mut().enumerate().take(self.width) {
            *slot = self.get(t).unwrap_or(0.0);
            n += 1;
        }
        n
    }
    /// The values as one slice when they are contiguous (stride 1).
    pub fn contiguous(&self) -> Option<Values<'a>> {
        if self.stride == 1 { self.values.slice(self.start, self.start.checked_add(self.width)?) } else { None }
    }
    /// The table's values, the offset of value 0 and the stride (for kernels).
    pub fn parts(&self) -> (Values<'a>, usize, usize) {
        (self.values, self.start, self.stride)
    }
}

/// A storage permutation: index ↔ storage row, both directions, validated as a bijection.
#[derive(Clone, Copy, Debug)]
pub struct Permutation<'a> {
    row_of_index: &'a [u32],
    index_of_row: &'a [u32],
}

impl<'a> Permutation<'a> {
    /// Storage row holding `index`.
    pub fn row_of_index(&self, index: u32) -> Option<u32> {
        self.row_of_index.get(usize::try_from(index).ok()?).copied()
    }
    /// Index stored at storage `row`.
    pub fn index_of_row(&self, row: u32) -> Option<u32> {
        self.index_of_row.get(usize::try_from(row).ok()?).copied()
    }
    /// The `index_of_row` array (storage order → index).
    pub fn index_of_row_slice(&self) -> &'a [u32] {
        self.index_of_row
    }
}

/// One ragged table: `row_ptr` in storage order, its values, and the optional permutation.
#[derive(Clone, Copy, Debug)]
pub struct RaggedTable<'a> {
    row_ptr: &'a [u32],
    values: Values<'a>,
    blocked: bool,
    permutation: Option<Permutation<'a>>,
}

impl<'a> RaggedTable<'a> {
    /// Number of rows (users or items).
    pub fn rows(&self) -> u32 {
        u32::try_from(self.row_ptr.len().saturating_sub(1)).unwrap_or(0)
    }
    /// Storage row of `index` (identity without a permutation).
    pub fn storage_row(&self, index: u32) -> Option<u32> {
        if index >= self.rows() {
            return None;
        }
        match &self.permutation {
            Some(p) => p.row_of_index(index),
            None => Some(index),
        }
    }
    /// Index held by storage `row`.
    pub fn index_of_storage_row(&self, row: u32) -> Option<u32> {
        if row >= self.rows() {
            return None;
        }
        match &self.permutation {
            Some(p) => p.index_of_row(row),
            None => Some(row),
        }
    }
    /// `(start, end)` of storage `row` in the values.
    pub fn storage_bounds(&self, row: u32) -> Option<(usize, usize)> {
        let r = usize::try_from(row).ok()?;
        let start = usize::try_from(*self.row_ptr.get(r)?).ok()?;
        let end = usize::try_from(*self.row_ptr.get(r.checked_add(1)?)?).ok()?;
        (start <= end).then_some((start, end))
    }
    /// Width of `index`'s row.
    pub fn width(&self, index: u32) -> Option<u32> {
        let (s, e) = self.storage_bounds(self.storage_row(index)?)?;
        u32::try_from(e - s).ok()
    }
    /// The values of `index`'s row.
    pub fn row(&self, index: u32) -> Option<Row<'a>> {
        self.storage_row_values(self.storage_row(index)?)
    }
    /// The values of storage `row`.
    pub fn storage_row_values(&self, row: u32) -> Option<Row<'a>> {
        let (s, e) = self.storage_bounds(row)?;
        let width = e - s;
        if self.blocked && width > 0 {
            let group = row & !(BLOCK_ROWS - 1);
            if let Some(base) = self.uniform_group(group) {
                let start = base.checked_add((row - group) as usize)?;
                // The last value read is start + 8 * (width - 1) < base + 8 * width <= len.
                if base.checked_add(width.checked_mul(8)?)? > self.values.len() {
                    return None;
                }
                return Some(Row { values: self.values, start, width, stride: BLOCK_ROWS as usize });
            }
        }
        (e <= self.values.len()).then_some(Row { values: self.values, start: s, width, stride: 1 })
    }
    /// If storage rows `group .. group + 8` all exist and share one width `w >= 1`, the offset
    /// of the group's first value: such a group is stored dimension-major in a blocked table.
    pub fn uniform_group(&self, group: u32) -> Option<usize> {
        let g = usize::try_from(group).ok()?;
        let ptrs = self.row_ptr.get(g..g.checked_add(BLOCK_ROWS as usize + 1)?)?;
        let base = *ptrs.first()?;
        let w = ptrs.get(1)?.checked_sub(base)?;
        if w == 0 {
            return None;
        }
        ptrs.iter()
            .enumerate()
            .all(|(k, &p)| Some(p) == (k as u32).checked_mul(w).and_then(|x| x.checked_add(base)))
            .then_some(base as usize)
    }
    /// Whether uniform 8-row groups are stored dimension-major (dtype `f32x8`/`f16x8`).
    pub fn is_blocked(&self) -> bool {
        self.blocked
    }
    /// The `row_ptr` array (storage order).
    pub fn row_ptr(&self) -> &'a [u32] {
        self.row_ptr
    }
    /// All values (storage order).
    pub fn values(&self) -> Values<'a> {
        self.values
    }
    /// The permutation, if rows are not stored in index order.
    pub fn permutation(&self) -> Option<Permutation<'a>> {
        self.permutation
    }
    /// Number of stored values (`row_ptr[n]`).
    pub fn stored_values(&self) -> u64 {
        self.values.len() as u64
    }
    /// Adds one to `histogram[w]` for every row of width `w`; widths past the end are ignored.
    pub fn width_histogram(&self, histogram: &mut [u64]) {
        for pair in self.row_ptr.windows(2) {
            if let [a, b] = pair {
                let w = b.saturating_sub(*a) as usize;
                if let Some(slot) = histogram.get_mut(w) {
                    *slot += 1;
                }
            }
        }
    }
}

/// An external-id map: index → id bytes, and id bytes → index by binary search (no allocation).
#[derive(Clone, Copy, Debug)]
pub struct IdMap<'a> {
    offsets: &'a [u32],
    sorted: &'a [u32],
    ids: &'a [u8],
}

impl<'a> IdMap<'a> {
    /// External id of `index`.
    pub fn external_id(&self, index: u32) -> Option<&'a [u8]> {
        let i = usize::try_from(index).ok()?;
        let s = usize::try_from(*self.offsets.get(i)?).ok()?;
        let e = usize::try_from(*self.offsets.get(i.checked_add(1)?)?).ok()?;
        self.ids.get(s..e)
    }
    /// Index of the entity whose external id is `id`.
    pub fn index_of(&self, id: &[u8]) -> Option<u32> {
        let pos = self.sorted.binary_search_by(|&idx| self.external_id(idx).unwrap_or(&[]).cmp(id)).ok()?;
        self.sorted.get(pos).copied()
    }
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.sorted.len()
    }
    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    fn parse(payload: &'a [u8]) -> Option<IdMap<'a>> {
        let n = usize::try_from(u32::from_le_bytes(payload.get(0..4)?.try_into().ok()?)).ok()?;
        let off_end = n.checked_add(1)?.checked_mul(4)?.checked_add(4)?;
        let sorted_end = off_end.checked_add(n.checked_mul(4)?)?;
        let offsets: &[u32] = bytemuck::try_cast_slice(payload.get(4..off_end)?).ok()?;
        let sorted: &[u32] = bytemuck::try_cast_slice(payload.get(off_end..sorted_end)?).ok()?;
        let ids = payload.get(sorted_end..)?;
        Some(IdMap { offsets, sorted, ids })
    }

    /// Checks offsets, id lengths, strict sort order (which also proves `sorted` is a permutation
    /// and ids are unique) and that the blob is fully used.
    fn validate(&self, table: Table, rows: u32) -> Result<(), Error> {
        let bad = |entry: usize, reason| Error::BadIdMap { table, entry: entry as u32, reason };
        if self.sorted.len() != rows as usize {
            return Err(bad(0, "entry count differs from the table's rows"));
        }
        if self.offsets.first() != Some(&0) {
            return Err(bad(0, "offsets do not start at 0"));
        }
        for (i, w) in self.offsets.windows(2).enumerate() {
            let [a, b] = w else { continue };
            if b < a {
                return Err(bad(i, "offsets decrease"));
            }
            if b - a > layout::MAX_EXTERNAL_ID_BYTES {
                return Err(bad(i, "external id longer than the cap"));
            }
        }
        if self.offsets.last().map(|&l| l as usize) != Some(self.ids.len()) {
            return Err(bad(self.sorted.len(), "offsets do not end at the id bytes' end"));
        }
        for (k, &idx) in self.sorted.iter().enumerate() {
            if idx >= rows {
                return Err(bad(k, "sorted entry out of range"));
            }
        }
        // Strictly increasing ids over n in-range indices: the indices are distinct, so
        // `sorted` is a permutation and every id is unique; binary search is then exact.
        for (k, w) in self.sorted.windows(2).enumerate() {
            let [a, b] = w else { continue };
            let (Some(x), Some(y)) = (self.external_id(*a), self.external_id(*b)) else {
                return Err(bad(k, "offset out of range"));
            };
            if x >= y {
                return Err(bad(k + 1, "ids not strictly increasing (duplicate or unsorted)"));
            }
        }
        Ok(())
    }
}

/// The training graph of a LightGCN file with the `input` placement (kind 13, spec §4.2): the
/// stored rows are the ego (layer-0) rows, and a runtime propagates them over this graph
/// (spec §7.5). User-side CSR in index order.
#[derive(Clone, Copy, Debug)]
pub struct PropagationGraph<'a> {
    /// Propagation layers `L`, in `1..=MAX_PROPAGATION_LAYERS`.
    pub layers: u32,
    /// `n_users + 1` offsets into [`items`](Self::items): user `u`'s items are
    /// `items[user_offsets[u] .. user_offsets[u + 1]]`.
    pub user_offsets: &'a [u32],
    /// Each user's training items, strictly increasing, each `< n_items`.
    pub items: &'a [u32],
}

impl<'a> PropagationGraph<'a> {
    /// Splits a payload for `n_users` users; `None` if the arrays do not fit.
    fn parse(payload: &'a [u32], n_users: u32) -> Option<PropagationGraph<'a>> {
        let (&layers, rest) = payload.split_first()?;
        let offsets_len = usize::try_from(n_users).ok()?.checked_add(1)?;
        let (user_offsets, items) = rest.split_at_checked(offsets_len)?;
        Some(PropagationGraph { layers, user_offsets, items })
    }

    /// User `user`'s items (sorted), `None` past the end.
    pub fn items_of(&self, user: u32) -> Option<&'a [u32]> {
        let u = usize::try_from(user).ok()?;
        let start = usize::try_from(*self.user_offsets.get(u)?).ok()?;
        let end = usize::try_from(*self.user_offsets.get(u.checked_add(1)?)?).ok()?;
        self.items.get(start..end)
    }

    /// Number of user–item edges.
    pub fn edges(&self) -> usize {
        self.items.len()
    }

    /// Layers in range, offsets from 0, non-decreasing, ending at the item count; each user's
    /// items strictly increasing (no duplicate edge) and in range. O(edges), no allocation.
    fn validate(&self, n_items: u32) -> Result<(), Error> {
        let bad = |position: usize, reason| Error::BadGraph { position: position as u64, reason };
        if self.layers == 0 || self.layers > layout::MAX_PROPAGATION_LAYERS {
            return Err(bad(0, "layer count outside 1..=MAX_PROPAGATION_LAYERS"));
        }
        if self.user_offsets.first() != Some(&0) {
            return Err(bad(0, "offsets do not start at 0"));
        }
        for (u, w) in self.user_offsets.windows(2).enumerate() {
            let [a, b] = w else { continue };
            if b < a {
                return Err(bad(u, "offsets decrease"));
            }
            let Some(items) = self.items.get(*a as usize..*b as usize) else {
                return Err(bad(u, "offsets past the item list"));
            };
            if items.iter().any(|&i| i >= n_items) {
                return Err(bad(u, "item out of range"));
            }
            // Strict increase: the order the sums of §7.5 run in is fixed, and no edge twice.
            if items.windows(2).any(|p| p.first() >= p.get(1)) {
                return Err(bad(u, "items not strictly increasing"));
            }
        }
        if self.user_offsets.last().map(|&l| l as usize) != Some(self.items.len()) {
            return Err(bad(self.user_offsets.len().saturating_sub(1), "offsets do not end at the item count"));
        }
        Ok(())
    }
}

/// A validated `.bet` file.
#[derive(Clone, Copy, Debug)]
pub struct BetFile<'a> {
    bytes: &'a [u8],
    layout: FileLayout,
    users: RaggedTable<'a>,
    items: RaggedTable<'a>,
    user_gmf: Option<(Values<'a>, bool)>,
    item_gmf: Option<(Values<'a>, bool)>,
    ncf_dense: Option<&'a [f32]>,
    user_ids: Option<IdMap<'a>>,
    item_ids: Option<IdMap<'a>>,
    graph: Option<PropagationGraph<'a>>,
}

fn read_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at.checked_add(2)?)?.try_into().ok()?))
}
fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at.checked_add(4)?)?.try_into().ok()?))
}
fn read_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at.checked_add(8)?)?.try_into().ok()?))
}

/// Parses entry `i` of the section table (bounds already checked by the caller; `None` otherwise).
fn read_entry(bytes: &[u8], i: u32) -> Option<SectionEntry> {
    let base = layout::HEADER_LEN.checked_add((i as usize).checked_mul(layout::SECTION_ENTRY_LEN)?)?;
    let kind_code = read_u16(bytes, base + entry::KIND)?;
    Some(SectionEntry {
        index: i,
        kind_code,
        kind: SectionKind::from_code(kind_code),
        dtype_code: *bytes.get(base + entry::DTYPE)?,
        flags: *bytes.get(base + entry::FLAGS)?,
        crc: read_u32(bytes, base + entry::CRC)?,
        offset: read_u64(bytes, base + entry::OFFSET)?,
        len: read_u64(bytes, base + entry::LEN)?,
    })
}

/// CRC-32C of the header and section table with the header CRC field taken as zero.
pub(crate) fn header_crc(header_and_table: &[u8]) -> u32 {
    let mut digest = layout::CRC32C.digest();
    let crc_field = header::CRC..header::CRC + 4;
    digest.update(header_and_table.get(..crc_field.start).unwrap_or(&[]));
    digest.update(&[0; 4]);
    digest.update(header_and_table.get(crc_field.end..).unwrap_or(&[]));
    digest.finalize()
}

fn cast<T: bytemuck::AnyBitPattern>(b: &[u8], kind: SectionKind) -> Result<&[T], Error> {
    bytemuck::try_cast_slice(b).map_err(|_| Error::Misaligned { kind })
}

impl FileLayout {
    /// The summary numbers.
    pub fn summary(&self) -> Summary {
        self.summary
    }

    /// Re-slices `bytes` with this layout in O(1): bounds and alignment are re-checked, contents
    /// are not. Use it only with the bytes the layout was validated on.
    pub fn attach<'a>(&self, bytes: &'a [u8]) -> Result<BetFile<'a>, Error> {
        if bytes.len() != self.file_len {
            return Err(Error::FileLengthMismatch { header: self.file_len as u64, actual: bytes.len() as u64 });
        }
        let oob = |kind| Error::BadSectionLength { kind, len: 0, reason: "not within the bytes" };
        let values = |v: &ValuesLayout| -> Result<Values<'a>, Error> {
            let b = v.span.of(bytes).ok_or(oob(v.kind))?;
            Ok(match v.dtype {
                ValueDtype::F32 => Values::F32(cast(b, v.kind)?),
                ValueDtype::F16 => Values::F16(cast(b, v.kind)?),
            })
        };
        let table = |t: &TableLayout, ptr_kind, perm_kind| -> Result<RaggedTable<'a>, Error> {
            let row_ptr: &[u32] = cast(t.row_ptr.of(bytes).ok_or(oob(ptr_kind))?, ptr_kind)?;
            let permutation = match &t.permutation {
                None => None,
                Some(span) => {
                    let all: &[u32] = cast(span.of(bytes).ok_or(oob(perm_kind))?, perm_kind)?;
                    let n = row_ptr.len().saturating_sub(1);
                    let (row_of_index, index_of_row) =
                        (all.get(..n).ok_or(oob(perm_kind))?, all.get(n..).ok_or(oob(perm_kind))?);
                    Some(Permutation { row_of_index, index_of_row })
                }
            };
            Ok(RaggedTable { row_ptr, values: values(&t.values)?, blocked: t.values.blocked, permutation })
        };
        let ids = |span: &Option<Span>, kind| -> Result<Option<IdMap<'a>>, Error> {
            match span {
                None => Ok(None),
                Some(s) => {
                    let payload = s.of(bytes).ok_or(oob(kind))?;
                    IdMap::parse(payload).map(Some).ok_or(Error::BadSectionLength {
                        kind,
                        len: payload.len() as u64,
                        reason: "id map arrays do not fit",
                    })
                }
            }
        };
        let ncf_dense = match &self.ncf_dense {
            None => None,
            Some(s) => Some(cast::<f32>(s.of(bytes).ok_or(oob(SectionKind::NcfDense))?, SectionKind::NcfDense)?),
        };
        let kind = SectionKind::PropagationGraph;
        let graph = match &self.graph {
            None => None,
            Some(s) => {
                let payload = cast::<u32>(s.of(bytes).ok_or(oob(kind))?, kind)?;
                Some(PropagationGraph::parse(payload, self.summary.n_users).ok_or(Error::BadSectionLength {
                    kind,
                    len: s.len as u64,
                    reason: "must hold the layer count and n_users + 1 offsets",
                })?)
            }
        };
        Ok(BetFile {
            bytes,
            layout: *self,
            users: table(&self.users, SectionKind::UserRowPtr, SectionKind::UserPermutation)?,
            items: table(&self.items, SectionKind::ItemRowPtr, SectionKind::ItemPermutation)?,
            user_gmf: self.user_gmf.as_ref().map(|v| values(v).map(|x| (x, v.blocked))).transpose()?,
            item_gmf: self.item_gmf.as_ref().map(|v| values(v).map(|x| (x, v.blocked))).transpose()?,
            ncf_dense,
            user_ids: ids(&self.user_ids, SectionKind::UserIds)?,
            item_ids: ids(&self.item_ids, SectionKind::ItemIds)?,
            graph,
        })
    }
}

/// Number of f32 values in the NCF dense section for `d`: W1 d×2d, b1 d, w_out 2d, b_out 1.
pub fn ncf_dense_len(d: u32) -> Option<usize> {
    let d = usize::try_from(d).ok()?;
    let two_d = d.checked_mul(2)?;
    d.checked_mul(two_d)?.checked_add(d)?.checked_add(two_d)?.checked_add(1)
}

impl<'a> BetFile<'a> {
    /// Validates `bytes` completely (but for checksums and value finiteness, which are
    /// [`verify_checksums`](Self::verify_checksums) and [`validate_values`](Self::validate_values)).
    /// Needs no allocator. O(file structure): reads every `row_ptr`, permutation and id map.
    pub fn new_checked(bytes: &'a [u8]) -> Result<BetFile<'a>, Error> {
        if cfg!(target_endian = "big") {
            return Err(Error::UnsupportedEndian);
        }
        let layout = Self::check_structure(bytes)?;
        let file = layout.attach(bytes)?;
        file.check_contents()?;
        Ok(file)
    }

    /// Header, section table, coverage, alignment, dtypes, required sections, metadata.
    fn check_structure(bytes: &'a [u8]) -> Result<FileLayout, Error> {
        let actual = bytes.len() as u64;
        let truncated = |needed: usize| Error::Truncated { needed: needed as u64, actual };
        if bytes.len() < layout::HEADER_LEN {
            return Err(truncated(layout::HEADER_LEN));
        }
        if bytes.get(header::MAGIC..header::MAGIC + 8) != Some(&layout::MAGIC[..]) {
            return Err(Error::BadMagic);
        }
        let major = read_u16(bytes, header::MAJOR).ok_or(truncated(layout::HEADER_LEN))?;
        if major != layout::MAJOR_VERSION {
            return Err(Error::UnsupportedMajorVersion { found: major, supported: layout::MAJOR_VERSION });
        }
        let minor = read_u16(bytes, header::MINOR).ok_or(truncated(layout::HEADER_LEN))?;
        let file_len = read_u64(bytes, header::FILE_LEN).ok_or(truncated(layout::HEADER_LEN))?;
        if file_len != actual {
            return Err(Error::FileLengthMismatch { header: file_len, actual });
        }
        let count = read_u32(bytes, header::SECTION_COUNT).ok_or(truncated(layout::HEADER_LEN))?;
        if count > layout::MAX_SECTIONS {
            return Err(Error::TooManySections { count, max: layout::MAX_SECTIONS });
        }
        // count <= 64, so this cannot overflow.
        let table_end = layout::HEADER_LEN + count as usize * layout::SECTION_ENTRY_LEN;
        let head = bytes.get(..table_end).ok_or(truncated(table_end))?;
        let stored_crc = read_u32(bytes, header::CRC).ok_or(truncated(layout::HEADER_LEN))?;
        let computed = header_crc(head);
        if stored_crc != computed {
            return Err(Error::HeaderChecksum { stored: stored_crc, computed });
        }
        if read_u32(bytes, header::FLAGS) != Some(0) {
            return Err(Error::ReservedNotZero { field: "header.flags" });
        }
        if bytes.get(header::RESERVED).is_none_or(|r| r.iter().any(|&b| b != 0)) {
            return Err(Error::ReservedNotZero { field: "header.reserved" });
        }

        let mut meta = None;
        let mut users_ptr = None;
        let mut users_val = None;
        let mut items_ptr = None;
        let mut items_val = None;
        let mut user_gmf = None;
        let mut item_gmf = None;
        let mut ncf_dense = None;
        let mut user_perm = None;
        let mut item_perm = None;
        let mut user_ids = None;
        let mut item_ids = None;
        let mut graph = None;
        let mut seen_unknown_codes: [u16; layout::MAX_SECTIONS as usize] = [0; layout::MAX_SECTIONS as usize];
        let mut seen_unknown = 0usize;

        let mut previous_end = table_end as u64;
        for i in 0..count {
            let e = read_entry(bytes, i).ok_or(truncated(table_end))?;
            let base = layout::HEADER_LEN + i as usize * layout::SECTION_ENTRY_LEN;
            if read_u64(bytes, base + entry::RESERVED) != Some(0) {
                return Err(Error::ReservedNotZero { field: "section.reserved" });
            }
            // Offsets are u64 in the file; a 32-bit target must refuse what it cannot address
            // rather than truncate it.
            let start = usize::try_from(e.offset).map_err(|_| Error::NotAddressable { section: i, value: e.offset })?;
            let len = usize::try_from(e.len).map_err(|_| Error::NotAddressable { section: i, value: e.len })?;
            let end = e.offset.checked_add(e.len).filter(|&end| end <= actual).ok_or(Error::SectionOutOfBounds {
                section: i,
                offset: e.offset,
                len: e.len,
                file_len: actual,
            })?;
            if e.offset % layout::SECTION_ALIGN as u64 != 0 {
                return Err(Error::MisalignedSection { section: i, offset: e.offset });
            }
            if e.offset < previous_end {
                return Err(Error::SectionOverlap { section: i, offset: e.offset, previous_end });
            }
            let gap = e.offset - previous_end;
            if gap >= layout::SECTION_ALIGN as u64 {
                return Err(Error::SectionHole { section: i, gap });
            }
            // Padding must be zero: a file has exactly one byte representation (golden files,
            // CRC-free structure) and no room to smuggle data.
            let pad = bytes.get(previous_end as usize..start).ok_or(truncated(start))?;
            if let Some(p) = pad.iter().position(|&b| b != 0) {
                return Err(Error::NonZeroPadding { offset: previous_end + p as u64 });
            }
            previous_end = end;

            let Some(kind) = e.kind else {
                if e.flags & layout::FLAG_REQUIRED != 0 {
                    return Err(Error::UnknownRequiredSection { section: i, kind: e.kind_code });
                }
                if e.flags & !layout::FLAG_REQUIRED != 0 {
                    return Err(Error::ReservedNotZero { field: "section.flags" });
                }
                if seen_unknown_codes[..seen_unknown].contains(&e.kind_code) {
                    return Err(Error::DuplicateSection { section: i, kind: e.kind_code });
                }
                if let Some(slot) = seen_unknown_codes.get_mut(seen_unknown) {
                    *slot = e.kind_code;
                    seen_unknown += 1;
                }
                continue;
            };
            let expected_flags = if kind.required() { layout::FLAG_REQUIRED } else { 0 };
            if e.flags != expected_flags {
                return Err(Error::BadSectionFlags { section: i, kind, flags: e.flags, expected: expected_flags });
            }
            let dtype = Dtype::from_code(e.dtype_code)
                .filter(|d| kind.dtypes().contains(d))
                .ok_or(Error::UnsupportedDtype { section: i, kind, dtype: e.dtype_code })?;
            if len % dtype.size() != 0 {
                return Err(Error::BadSectionLength { kind, len: e.len, reason: "not a whole number of elements" });
            }
            let span = Span { start, len };
            let value_dtype = match dtype {
                Dtype::F16 | Dtype::F16x8 => ValueDtype::F16,
                _ => ValueDtype::F32,
            };
            let blocked = matches!(dtype, Dtype::F32x8 | Dtype::F16x8);
            let vl = ValuesLayout { span, dtype: value_dtype, blocked, kind };
            let slot: &mut Option<ValuesLayout> = match kind {
                SectionKind::Metadata => &mut meta,
                SectionKind::UserRowPtr => &mut users_ptr,
                SectionKind::UserValues => &mut users_val,
                SectionKind::ItemRowPtr => &mut items_ptr,
                SectionKind::ItemValues => &mut items_val,
                SectionKind::UserGmfValues => &mut user_gmf,
                SectionKind::ItemGmfValues => &mut item_gmf,
                SectionKind::NcfDense => &mut ncf_dense,
                SectionKind::UserPermutation => &mut user_perm,
                SectionKind::ItemPermutation => &mut item_perm,
                SectionKind::UserIds => &mut user_ids,
                SectionKind::ItemIds => &mut item_ids,
                SectionKind::PropagationGraph => &mut graph,
            };
            if slot.is_some() {
                return Err(Error::DuplicateSection { section: i, kind: e.kind_code });
            }
            *slot = Some(vl);
        }
        if previous_end != actual {
            return Err(Error::TrailingBytes { extra: actual - previous_end });
        }

        let need = |s: Option<ValuesLayout>, kind| s.ok_or(Error::MissingSection { kind });
        let meta = need(meta, SectionKind::Metadata)?;
        let meta_bytes = meta.span.of(bytes).ok_or(truncated(table_end))?;
        let m = Metadata::decode(meta_bytes)?;
        m.check_self()?;

        let is_ncf = m.model == ModelKind::Ncf;
        let (user_gmf, item_gmf, ncf_dense) = if is_ncf {
            (
                Some(need(user_gmf, SectionKind::UserGmfValues)?),
                Some(need(item_gmf, SectionKind::ItemGmfValues)?),
                Some(need(ncf_dense, SectionKind::NcfDense)?.span),
            )
        } else {
            for (present, kind) in [
                (user_gmf.is_some(), SectionKind::UserGmfValues),
                (item_gmf.is_some(), SectionKind::ItemGmfValues),
                (ncf_dense.is_some(), SectionKind::NcfDense),
            ] {
                if present {
                    return Err(Error::UnexpectedSection { kind });
                }
            }
            (None, None, None)
        };

        // The graph is what makes an `input` file's rows scoreable, and means nothing elsewhere.
        let graph = match (m.placement == MaskPlacement::Input, graph) {
            (true, Some(g)) => Some(g.span),
            (true, None) => return Err(Error::MissingSection { kind: SectionKind::PropagationGraph }),
            (false, Some(_)) => return Err(Error::UnexpectedSection { kind: SectionKind::PropagationGraph }),
            (false, None) => None,
        };

        let table = |ptr: Option<ValuesLayout>, val, perm: Option<ValuesLayout>, ptr_kind, val_kind, n: u32| {
            let ptr = need(ptr, ptr_kind)?;
            let rows = ptr.span.len / 4;
            let claimed = u64::from(n);
            if rows as u64 != claimed + 1 {
                return Err(Error::MetadataMismatch {
                    field: if ptr_kind == SectionKind::UserRowPtr { "n_users" } else { "n_items" },
                    claimed,
                    actual: (rows as u64).saturating_sub(1),
                });
            }
            if let Some(p) = &perm
                && p.span.len as u64 != 8 * claimed
            {
                return Err(Error::BadSectionLength {
                    kind: p.kind,
                    len: p.span.len as u64,
                    reason: "must hold 2 * n u32",
                });
            }
            Ok(TableLayout { row_ptr: ptr.span, values: need(val, val_kind)?, permutation: perm.map(|p| p.span) })
        };
        for (n, what) in [(m.n_users, "users"), (m.n_items, "items")] {
            if n > layout::MAX_ROWS {
                return Err(Error::OverCap { what, value: u64::from(n), max: u64::from(layout::MAX_ROWS) });
            }
        }
        let users =
            table(users_ptr, users_val, user_perm, SectionKind::UserRowPtr, SectionKind::UserValues, m.n_users)?;
        let items =
            table(items_ptr, items_val, item_perm, SectionKind::ItemRowPtr, SectionKind::ItemValues, m.n_items)?;

        Ok(FileLayout {
            file_len: bytes.len(),
            summary: Summary {
                model: m.model,
                placement: m.placement,
                d_max: m.d_max,
                vector_width: m.vector_width,
                n_users: m.n_users,
                n_items: m.n_items,
                budget: m.budget,
                minor_version: minor,
                section_count: count,
            },
            meta: meta.span,
            users,
            items,
            user_gmf,
            item_gmf,
            ncf_dense,
            user_ids: user_ids.map(|v| v.span),
            item_ids: item_ids.map(|v| v.span),
            graph,
        })
    }

    /// Row pointers, widths, permutations, NCF shapes, id maps, budget against structure.
    fn check_contents(&self) -> Result<(), Error> {
        let s = self.layout.summary;
        check_table(&self.users, Table::Users, s.vector_width)?;
        check_table(&self.items, Table::Items, s.vector_width)?;
        if let Some((g, _)) = &self.user_gmf
            && g.len() != self.users.values.len()
        {
            return Err(Error::BadSectionLength {
                kind: SectionKind::UserGmfValues,
                len: (g.len() * g.dtype().size()) as u64,
                reason: "GMF table must have the same widths as the MLP table",
            });
        }
        if let Some((g, _)) = &self.item_gmf
            && g.len() != self.items.values.len()
        {
            return Err(Error::BadSectionLength {
                kind: SectionKind::ItemGmfValues,
                len: (g.len() * g.dtype().size()) as u64,
                reason: "GMF table must have the same widths as the MLP table",
            });
        }
        if let Some(d) = self.ncf_dense
            && Some(d.len()) != ncf_dense_len(s.d_max)
        {
            return Err(Error::BadSectionLength {
                kind: SectionKind::NcfDense,
                len: d.len() as u64 * 4,
                reason: "must hold W1 (d x 2d), b1 (d), w_out (2d), b_out (1)",
            });
        }
        if let Some(ids) = &self.user_ids {
            ids.validate(Table::Users, s.n_users)?;
        }
        if let Some(ids) = &self.item_ids {
            ids.validate(Table::Items, s.n_items)?;
        }
        if let Some(g) = &self.graph {
            g.validate(s.n_items)?;
        }
        let stored = self.embedding_values();
        if let Some(b) = s.budget {
            if b.stored != stored {
                return Err(Error::MetadataMismatch { field: "budget.stored", claimed: b.stored, actual: stored });
            }
            if stored > b.limit {
                return Err(Error::OverBudget { stored, limit: b.limit });
            }
        }
        Ok(())
    }

    /// The layout, to keep and [`attach`](FileLayout::attach) again later.
    pub fn layout(&self) -> FileLayout {
        self.layout
    }
    /// The summary numbers (copied from the validated metadata).
    pub fn summary(&self) -> Summary {
        self.layout.summary
    }
    /// The file's bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }
    /// Decodes the full metadata (strings borrow from the file). Cannot fail on a file that
    /// passed `new_checked`, but is honest about decoding.
    pub fn metadata(&self) -> Result<Metadata<'a>, Error> {
        let b = self.layout.meta.of(self.bytes).ok_or(Error::MissingSection { kind: SectionKind::Metadata })?;
        Metadata::decode(b)
    }
    /// The user table (the MLP user table for NCF).
    pub fn users(&self) -> RaggedTable<'a> {
        self.users
    }
    /// The item table (the MLP item table for NCF).
    pub fn items(&self) -> RaggedTable<'a> {
        self.items
    }
    /// NCF: the user GMF values (same `row_ptr` and permutation as [`users`](Self::users)).
    pub fn user_gmf(&self) -> Option<RaggedTable<'a>> {
        self.user_gmf.map(|(values, blocked)| RaggedTable { values, blocked, ..self.users })
    }
    /// NCF: the item GMF values.
    pub fn item_gmf(&self) -> Option<RaggedTable<'a>> {
        self.item_gmf.map(|(values, blocked)| RaggedTable { values, blocked, ..self.items })
    }
    /// NCF: the dense weights, W1 (d × 2d row-major), b1 (d), w_out (2d), b_out (1).
    pub fn ncf_dense(&self) -> Option<NcfDense<'a>> {
        let d = self.layout.summary.d_max as usize;
        let all = self.ncf_dense?;
        let (w1, rest) = all.split_at_checked(d.checked_mul(2 * d)?)?;
        let (b1, rest) = rest.split_at_checked(d)?;
        let (w_out, rest) = rest.split_at_checked(2 * d)?;
        let b_out = *rest.first()?;
        Some(NcfDense { d, w1, b1, w_out, b_out })
    }
    /// External user ids, if the file has them.
    pub fn user_ids(&self) -> Option<IdMap<'a>> {
        self.user_ids
    }
    /// External item ids, if the file has them.
    pub fn item_ids(&self) -> Option<IdMap<'a>> {
        self.item_ids
    }
    /// The propagation graph of an `input`-placement LightGCN file (spec §4.2), `None` otherwise.
    pub fn graph(&self) -> Option<PropagationGraph<'a>> {
        self.graph
    }
    /// Bytes of heap a runtime needs at load to score this file: the dense final vectors of an
    /// `input`-placement file, `(n_users + n_items) * vector_width` f32 values (spec §7.5);
    /// `None` for a file scored in place. One definition, so `bet inspect` and `bet verify`
    /// cannot disagree on it.
    pub fn propagated_bytes(&self) -> Option<u64> {
        let s = &self.layout.summary;
        self.graph.map(|_| (u64::from(s.n_users) + u64::from(s.n_items)) * u64::from(s.vector_width) * 4)
    }
    /// Embedding values stored, counted from the structure: users + items (+ both GMF tables).
    pub fn embedding_values(&self) -> u64 {
        self.users.stored_values()
            + self.items.stored_values()
            + self.user_gmf.map_or(0, |(v, _)| v.len() as u64)
            + self.item_gmf.map_or(0, |(v, _)| v.len() as u64)
    }
    /// Every stored parameter: embedding values plus dense weights.
    pub fn parameter_count(&self) -> u64 {
        self.embedding_values() + self.ncf_dense.map_or(0, |d| d.len() as u64)
    }
    /// The section table entries, in file order.
    pub fn sections(&self) -> impl Iterator<Item = SectionEntry> + 'a {
        let bytes = self.bytes;
        (0..self.layout.summary.section_count).filter_map(move |i| read_entry(bytes, i))
    }
    /// Verifies the CRC-32C of every section payload.
    pub fn verify_checksums(&self) -> Result<(), Error> {
        for e in self.sections() {
            let payload = usize::try_from(e.offset)
                .ok()
                .zip(usize::try_from(e.len).ok())
                .and_then(|(s, l)| self.bytes.get(s..s.checked_add(l)?))
                .ok_or(Error::SectionOutOfBounds {
                    section: e.index,
                    offset: e.offset,
                    len: e.len,
                    file_len: self.bytes.len() as u64,
                })?;
            let computed = layout::crc32c(payload);
            if computed != e.crc {
                return Err(Error::SectionChecksum { section: e.index, kind: e.kind_code, stored: e.crc, computed });
            }
        }
        Ok(())
    }
    /// Rejects NaN and infinities in every embedding table and dense weight.
    pub fn validate_values(&self) -> Result<(), Error> {
        let tables = [
            (Some(self.users.values), Table::Users),
            (Some(self.items.values), Table::Items),
            (self.user_gmf.map(|g| g.0), Table::UserGmf),
            (self.item_gmf.map(|g| g.0), Table::ItemGmf),
        ];
        for (values, table) in tables {
            if let Some(p) = values.and_then(|v| v.first_non_finite()) {
                return Err(Error::NonFiniteValue { table, position: p as u64 });
            }
        }
        if let Some(p) = self.ncf_dense.and_then(|d| d.iter().position(|x| !x.is_finite())) {
            return Err(Error::NonFiniteDense { position: p as u64 });
        }
        Ok(())
    }
}

/// NCF dense weights, split.
#[derive(Clone, Copy, Debug)]
pub struct NcfDense<'a> {
    /// The embedding width d (= d_max).
    pub d: usize,
    /// W1, d rows of 2d, row-major: row j is `[W1_user(j) (d); W1_item(j) (d)]`.
    pub w1: &'a [f32],
    /// b1, d values.
    pub b1: &'a [f32],
    /// w_out, 2d values: the first d weigh the hidden layer, the last d the GMF product.
    pub w_out: &'a [f32],
    /// b_out.
    pub b_out: f32,
}

fn check_table(t: &RaggedTable<'_>, table: Table, max_width: u32) -> Result<(), Error> {
    let first = t.row_ptr.first().copied().unwrap_or(0);
    if first != 0 {
        return Err(Error::RowPtrStart { table, first });
    }
    for (row, w) in t.row_ptr.windows(2).enumerate() {
        let [a, b] = w else { continue };
        let row = row as u32;
        let width = b.checked_sub(*a).ok_or(Error::RowPtrNotMonotone { table, row })?;
        if width > max_width {
            return Err(Error::RowTooWide { table, row, width, max: max_width });
        }
    }
    let end = u64::from(t.row_ptr.last().copied().unwrap_or(0));
    if end != t.values.len() as u64 {
        return Err(Error::RowPtrEnd { table, end, values: t.values.len() as u64 });
    }
    if let Some(p) = &t.permutation {
        let n = t.rows();
        // Both directions in range and index_of_row[row_of_index[i]] == i for every i: then
        // row_of_index is injective on a finite set, hence a bijection, and index_of_row is
        // its inverse. O(n), no allocation.
        for (i, &r) in p.row_of_index.iter().enumerate() {
            if r >= n || p.index_of_row(r) != Some(i as u32) {
                return Err(Error::BadPermutation { table, position: i as u32 });
            }
        }
    }
    Ok(())
}
