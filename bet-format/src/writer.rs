//! The writer (`std` feature): deterministic bytes, atomic files.
//!
//! [`ModelContents`] holds a model in index order (widths and concatenated
//! rows per table); [`ModelContents::to_bytes`] lays it out as the spec
//! says, computing the budget's limit and stored count itself so that a
//! caller cannot write a count that disagrees with the structure.
//! [`write_atomic`] writes to a temporary file beside the target, fsyncs it,
//! renames it over the target and fsyncs the directory.
//!
//! The same contents always give the same bytes: section order, padding,
//! f16 rounding (round-to-nearest-even) and postcard encoding are all fixed.

use std::io::Write;
use std::path::Path;
use std::vec::Vec;

use half::f16;

use crate::Error;
use crate::layout::{self, Dtype, SectionKind};
use crate::meta::{Budget, Decimal, MaskPlacement, Metadata, ModelKind, Provenance};
use crate::view::{ValueDtype, ncf_dense_len};

/// One ragged table in index order: `widths[i]` values of row `i`, rows concatenated.
#[derive(Clone, Copy, Debug)]
pub struct TableInput<'a> {
    /// Width of each row, by index.
    pub widths: &'a [u32],
    /// The rows' values, concatenated in index order (`sum(widths)` values).
    pub values: &'a [f32],
}

/// The NCF-only parts: GMF tables (same widths as the MLP tables) and dense weights.
#[derive(Clone, Copy, Debug)]
pub struct NcfInput<'a> {
    /// User GMF rows, index order, same widths as the user (MLP) table.
    pub user_gmf: &'a [f32],
    /// Item GMF rows.
    pub item_gmf: &'a [f32],
    /// W1 (d × 2d row-major), b1 (d), w_out (2d), b_out (1), concatenated.
    pub dense: &'a [f32],
}

/// The training graph of a LightGCN model with the `input` placement (spec §4.2): user-side CSR
/// in index order. The writer checks it as a reader would.
#[derive(Clone, Copy, Debug)]
pub struct GraphInput<'a> {
    /// Propagation layers, in `1..=MAX_PROPAGATION_LAYERS`.
    pub layers: u32,
    /// `n_users + 1` offsets into `items`.
    pub user_offsets: &'a [u32],
    /// Each user's items, strictly increasing.
    pub items: &'a [u32],
}

/// In which order rows are stored (the storage row is private to the format).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageOrder {
    /// Storage row = index; no permutation section.
    Index,
    /// Widest rows first, ties by index; a permutation section maps indices to rows.
    /// Rows of equal width are then contiguous, which is what fast scoring wants.
    WidthDescending,
}

/// The order of values inside a table (spec §4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueLayout {
    /// Each row's values contiguous (dtypes `f32`, `f16`).
    RowMajor,
    /// Aligned groups of 8 storage rows of one width stored dimension-major (dtypes `f32x8`,
    /// `f16x8`), so that 8 rows score together without a horizontal reduction.
    Blocked8,
}

/// Everything a `.bet` file holds, in index order.
#[derive(Clone, Copy, Debug)]
pub struct ModelContents<'a> {
    /// Scoring function.
    pub model: ModelKind,
    /// Mask placement (must fit the model kind).
    pub placement: MaskPlacement,
    /// Budget dimension.
    pub d_max: u32,
    /// User table (MLP table for NCF).
    pub users: TableInput<'a>,
    /// Item table (MLP table for NCF).
    pub items: TableInput<'a>,
    /// NCF parts; required exactly when `model` is NCF.
    pub ncf: Option<NcfInput<'a>>,
    /// Kept fraction; the writer computes the limit and the stored count.
    pub keep: Option<Decimal>,
    /// Provenance.
    pub provenance: Provenance<'a>,
    /// Storage dtype of the embedding values.
    pub value_dtype: ValueDtype,
    /// Storage order of the rows (applied to users and items alike).
    pub storage: StorageOrder,
    /// Order of values inside every table.
    pub value_layout: ValueLayout,
    /// External user ids by index (unique), if any.
    pub user_ids: Option<&'a [&'a [u8]]>,
    /// External item ids by index (unique), if any.
    pub item_ids: Option<&'a [&'a [u8]]>,
    /// The training graph; given exactly for the `input` placement (LightGCN only).
    pub graph: Option<GraphInput<'a>>,
}

struct Section {
    kind: SectionKind,
    dtype: Dtype,
    payload: Vec<u8>,
}

fn u32_bytes(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn values_bytes(v: &[f32], dtype: ValueDtype) -> Result<Vec<u8>, Error> {
    match dtype {
        ValueDtype::F32 => Ok(v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        ValueDtype::F16 => {
            let mut out = Vec::with_capacity(v.len() * 2);
            for &x in v {
                let h = f16::from_f32(x);
                if x.is_finite() && !h.is_finite() {
                    return Err(Error::InvalidInput { reason: "a finite value overflows f16" });
                }
                out.extend_from_slice(&h.to_bits().to_le_bytes());
            }
            Ok(out)
        }
    }
}

/// Storage layout of one table: `order[row] = index`, and row_ptr in storage order.
struct Arranged {
    order: Vec<u32>,
    row_ptr: Vec<u32>,
    /// Start of each index's row in the caller's (index-order) values.
    source_start: Vec<usize>,
}

fn arrange(t: &TableInput<'_>, storage: StorageOrder, max_width: u32) -> Result<Arranged, Error> {
    let n = t.widths.len();
    if n as u64 > u64::from(layout::MAX_ROWS) {
        return Err(Error::OverCap { what: "rows", value: n as u64, max: u64::from(layout::MAX_ROWS) });
    }
    let mut source_start = Vec::with_capacity(n);
    let mut total: usize = 0;
    for &w in t.widths {
        if w > max_width {
            return Err(Error::InvalidInput { reason: "a width exceeds the vector width" });
        }
        source_start.push(total);
        total = total.checked_add(w as usize).ok_or(Error::InvalidInput { reason: "too many values" })?;
    }
    if total != t.values.len() {
        return Err(Error::InvalidInput { reason: "values length differs from the sum of widths" });
    }
    if u32::try_from(total).is_err() {
        return Err(Error::OverCap { what: "values in one table", value: total as u64, max: u64::from(u32::MAX) });
    }
    let mut order: Vec<u32> = (0..n as u32).collect();
    if storage == StorageOrder::WidthDescending {
        // Stable: equal widths keep index order, so the file is a function of the inputs.
        order.sort_by(|&a, &b| t.widths[b as usize].cmp(&t.widths[a as usize]));
    }
    let mut row_ptr = Vec::with_capacity(n + 1);
    let mut acc = 0u32;
    row_ptr.push(0);
    for &i in &order {
        acc += t.widths[i as usize];
        row_ptr.push(acc);
    }
    Ok(Arranged { order, row_ptr, source_start })
}

impl Arranged {
    fn is_identity(&self) -> bool {
        self.order.iter().enumerate().all(|(r, &i)| r as u32 == i)
    }
    fn gather(&self, widths: &[u32], values: &[f32], layout: ValueLayout) -> Vec<f32> {
        let mut out = Vec::with_capacity(values.len());
        for &i in &self.order {
            let s = self.source_start[i as usize];
            out.extend_from_slice(&values[s..s + widths[i as usize] as usize]);
        }
        if layout == ValueLayout::Blocked8 {
            let rows = self.order.len();
            let b = crate::BLOCK_ROWS as usize;
            for g in (0..rows.saturating_sub(b - 1)).step_by(b) {
                let ptr = &self.row_ptr[g..=g + b];
                let w = (ptr[1] - ptr[0]) as usize;
                let uniform = w > 0 && ptr.iter().enumerate().all(|(k, &p)| p as usize == ptr[0] as usize + k * w);
                if uniform {
                    let base = ptr[0] as usize;
                    let group: Vec<f32> = out[base..base + b * w].to_vec();
                    for j in 0..b {
                        for t in 0..w {
                            out[base + b * t + j] = group[j * w + t];
                        }
                    }
                }
            }
        }
        out
    }
    fn permutation_payload(&self) -> Vec<u8> {
        let mut row_of_index = vec![0u32; self.order.len()];
        for (r, &i) in self.order.iter().enumerate() {
            row_of_index[i as usize] = r as u32;
        }
        let mut out = u32_bytes(&row_of_index);
        out.extend(u32_bytes(&self.order));
        out
    }
}

fn id_map_payload(ids: &[&[u8]], rows: usize) -> Result<Vec<u8>, Error> {
    if ids.len() != rows {
        return Err(Error::InvalidInput { reason: "id count differs from the table's rows" });
    }
    let mut offsets = Vec::with_capacity(rows + 1);
    let mut blob = Vec::new();
    offsets.push(0u32);
    for id in ids {
        if id.len() > layout::MAX_EXTERNAL_ID_BYTES as usize {
            return Err(Error::InvalidInput { reason: "an external id is longer than the cap" });
        }
        blob.extend_from_slice(id);
        offsets.push(u32::try_from(blob.len()).map_err(|_| Error::InvalidInput { reason: "id bytes exceed 4 GiB" })?);
    }
    let mut sorted: Vec<u32> = (0..rows as u32).collect();
    sorted.sort_by(|&a, &b| ids[a as usize].cmp(ids[b as usize]));
    if sorted.windows(2).any(|w| ids[w[0] as usize] == ids[w[1] as usize]) {
        return Err(Error::InvalidInput { reason: "duplicate external id" });
    }
    let mut out = (rows as u32).to_le_bytes().to_vec();
    out.extend(u32_bytes(&offsets));
    out.extend(u32_bytes(&sorted));
    out.extend(blob);
    Ok(out)
}

impl ModelContents<'_> {
    /// Lays the model out as a `.bet` file.
    pub fn to_bytes(&self) -> Result<Vec<u8>, Error> {
        let vector_width = Metadata::expected_vector_width(self.model, self.d_max)
            .ok_or(Error::InvalidInput { reason: "d_max too large" })?;
        let users = arrange(&self.users, self.storage, vector_width)?;
        let items = arrange(&self.items, self.storage, vector_width)?;
        let n_users = self.users.widths.len() as u32;
        let n_items = self.items.widths.len() as u32;

        let mut stored = (self.users.values.len() + self.items.values.len()) as u64;
        if let Some(ncf) = &self.ncf {
            if ncf.user_gmf.len() != self.users.values.len() || ncf.item_gmf.len() != self.items.values.len() {
                return Err(Error::InvalidInput { reason: "GMF tables must have the MLP tables' widths" });
            }
            if Some(ncf.dense.len()) != ncf_dense_len(self.d_max) {
                return Err(Error::InvalidInput { reason: "NCF dense weights have the wrong length" });
            }
            stored += (ncf.user_gmf.len() + ncf.item_gmf.len()) as u64;
        }
        if (self.model == ModelKind::Ncf) != self.ncf.is_some() {
            return Err(Error::InvalidInput { reason: "NCF parts are given exactly for NCF models" });
        }
        let budget = match self.keep {
            None => None,
            Some(keep) => {
                let limit = Budget::limit_for(keep, self.d_max, u64::from(n_users) + u64::from(n_items))?;
                if stored > limit {
                    return Err(Error::OverBudget { stored, limit });
                }
                Some(Budget { keep, limit, stored })
            }
        };
        let meta = Metadata {
            model: self.model,
            placement: self.placement,
            d_max: self.d_max,
            vector_width,
            n_users,
            n_items,
            budget,
            provenance: self.provenance,
        };
        meta.check_self()?;
        let meta_bytes = meta.encode()?;
        if meta_bytes.len() as u64 > layout::MAX_METADATA_BYTES {
            return Err(Error::MetadataTooLarge { len: meta_bytes.len() as u64, max: layout::MAX_METADATA_BYTES });
        }

        let vd = self.value_dtype;
        let value_section_dtype = match (vd, self.value_layout) {
            (ValueDtype::F32, ValueLayout::RowMajor) => Dtype::F32,
            (ValueDtype::F16, ValueLayout::RowMajor) => Dtype::F16,
            (ValueDtype::F32, ValueLayout::Blocked8) => Dtype::F32x8,
            (ValueDtype::F16, ValueLayout::Blocked8) => Dtype::F16x8,
        };
        let mut sections = vec![
            Section { kind: SectionKind::Metadata, dtype: Dtype::U8, payload: meta_bytes },
            Section { kind: SectionKind::UserRowPtr, dtype: Dtype::U32, payload: u32_bytes(&users.row_ptr) },
            Section {
                kind: SectionKind::UserValues,
                dtype: value_section_dtype,
                payload: values_bytes(&users.gather(self.users.widths, self.users.values, self.value_layout), vd)?,
            },
            Section { kind: SectionKind::ItemRowPtr, dtype: Dtype::U32, payload: u32_bytes(&items.row_ptr) },
            Section {
                kind: SectionKind::ItemValues,
                dtype: value_section_dtype,
                payload: values_bytes(&items.gather(self.items.widths, self.items.values, self.value_layout), vd)?,
            },
        ];
        if let Some(ncf) = &self.ncf {
            sections.push(Section {
                kind: SectionKind::UserGmfValues,
                dtype: value_section_dtype,
                payload: values_bytes(&users.gather(self.users.widths, ncf.user_gmf, self.value_layout), vd)?,
            });
            sections.push(Section {
                kind: SectionKind::ItemGmfValues,
                dtype: value_section_dtype,
                payload: values_bytes(&items.gather(self.items.widths, ncf.item_gmf, self.value_layout), vd)?,
            });
            sections.push(Section {
                kind: SectionKind::NcfDense,
                dtype: Dtype::F32,
                payload: values_bytes(ncf.dense, ValueDtype::F32)?,
            });
        }
        if !users.is_identity() {
            sections.push(Section {
                kind: SectionKind::UserPermutation,
                dtype: Dtype::U32,
                payload: users.permutation_payload(),
            });
        }
        if !items.is_identity() {
            sections.push(Section {
                kind: SectionKind::ItemPermutation,
                dtype: Dtype::U32,
                payload: items.permutation_payload(),
            });
        }
        if let Some(ids) = self.user_ids {
            sections.push(Section {
                kind: SectionKind::UserIds,
                dtype: Dtype::U8,
                payload: id_map_payload(ids, n_users as usize)?,
            });
        }
        if let Some(ids) = self.item_ids {
            sections.push(Section {
                kind: SectionKind::ItemIds,
                dtype: Dtype::U8,
                payload: id_map_payload(ids, n_items as usize)?,
            });
        }
        if (self.placement == MaskPlacement::Input) != self.graph.is_some() {
            return Err(Error::InvalidInput { reason: "a propagation graph is given exactly for the input placement" });
        }
        let minor = match self.graph {
            None => layout::MINOR_VERSION,
            Some(g) => {
                if g.user_offsets.len() != n_users as usize + 1 {
                    return Err(Error::InvalidInput { reason: "graph offsets must number n_users + 1" });
                }
                let mut payload = u32_bytes(&[g.layers]);
                payload.extend(u32_bytes(g.user_offsets));
                payload.extend(u32_bytes(g.items));
                sections.push(Section { kind: SectionKind::PropagationGraph, dtype: Dtype::U32, payload });
                layout::MINOR_VERSION_GRAPH
            }
        };
        let bytes = assemble(&sections, minor)?;
        if self.graph.is_some() {
            // The graph's rules (order, range, layer cap) are checked once, by the reader's code.
            crate::BetFile::new_checked(&bytes)?;
        }
        Ok(bytes)
    }

    /// Lays the model out and writes it atomically to `path`.
    pub fn write_atomic(&self, path: &Path) -> Result<(), Error> {
        write_atomic(path, &self.to_bytes()?)
    }
}

/// Builds header, table, padding and payloads from sections in file order.
fn assemble(sections: &[Section], minor: u16) -> Result<Vec<u8>, Error> {
    let count = sections.len();
    let table_end = layout::HEADER_LEN + count * layout::SECTION_ENTRY_LEN;
    let mut offsets = Vec::with_capacity(count);
    let mut pos = table_end as u64;
    for s in sections {
        pos = layout::align_up(pos).ok_or(Error::InvalidInput { reason: "file too large" })?;
        offsets.push(pos);
        pos += s.payload.len() as u64;
    }
    let file_len = pos;
    let mut out = Vec::with_capacity(file_len as usize);
    out.extend_from_slice(&layout::MAGIC);
    out.extend_from_slice(&layout::MAJOR_VERSION.to_le_bytes());
    out.extend_from_slice(&minor.to_le_bytes());
    out.extend_from_slice(&[0; 4]); // header CRC, filled below
    out.extend_from_slice(&file_len.to_le_bytes());
    out.extend_from_slice(&(count as u32).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes()); // flags
    out.resize(layout::HEADER_LEN, 0);
    for (s, &offset) in sections.iter().zip(&offsets) {
        out.extend_from_slice(&(s.kind as u16).to_le_bytes());
        out.push(s.dtype as u8);
        out.push(if s.kind.required() { layout::FLAG_REQUIRED } else { 0 });
        out.extend_from_slice(&layout::crc32c(&s.payload).to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        out.extend_from_slice(&(s.payload.len() as u64).to_le_bytes());
        out.extend_from_slice(&0u64.to_le_bytes());
    }
    let crc = crate::view::header_crc(&out);
    out[12..16].copy_from_slice(&crc.to_le_bytes());
    for (s, &offset) in sections.iter().zip(&offsets) {
        out.resize(offset as usize, 0);
        out.extend_from_slice(&s.payload);
    }
    debug_assert_eq!(out.len() as u64, file_len);
    Ok(out)
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, fsync, rename,
/// fsync of the directory. A reader never sees a half-written file at `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let io = |e: std::io::Error| Error::Io(e.kind());
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let name = path.file_name().ok_or(Error::InvalidInput { reason: "path has no file name" })?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        #[cfg(unix)]
        std::fs::File::open(&dir)?.sync_all()?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}
