//! Byte layout of the fixed header and the section table, section kinds and dtypes.
//!
//! Everything here is a constant of the spec (`docs/format.md`); the reader
//! and the writer both take their numbers from this module so that they
//! cannot drift apart.

/// The eight magic bytes at offset 0 (PNG-style: a high byte, the name, and
/// CR LF / ^Z / LF so that text-mode mangling of the file is detected).
pub const MAGIC: [u8; 8] = [0x89, b'B', b'E', b'T', b'\r', b'\n', 0x1a, b'\n'];
/// The major version this crate reads and writes. A different major is refused.
pub const MAJOR_VERSION: u16 = 1;
/// The minor version this crate writes. Readers accept any minor of their major.
pub const MINOR_VERSION: u16 = 0;
/// Length of the fixed header.
pub const HEADER_LEN: usize = 64;
/// Length of one section-table entry.
pub const SECTION_ENTRY_LEN: usize = 32;
/// Every payload starts at a multiple of this (a cache line; page-aligned mmaps keep it).
pub const SECTION_ALIGN: usize = 64;
/// Cap on the number of sections (bounds the header work before anything is trusted).
pub const MAX_SECTIONS: u32 = 64;
/// Cap on the metadata payload, checked before it is decoded.
pub const MAX_METADATA_BYTES: u64 = 64 * 1024;
/// Cap on the vector width (and so on every row width). Runtimes keep one
/// vector of this many `f32` on the stack.
pub const MAX_VECTOR_WIDTH: u32 = 1024;
/// Cap on the NCF embedding width d (= d_max): bounds the dense weights (W1 is d × 2d) and the
/// runtime's per-query stack buffers.
pub const MAX_NCF_WIDTH: u32 = 256;
/// Cap on users and on items (indices are `u32`, and `row_ptr` needs `n + 1` entries).
pub const MAX_ROWS: u32 = 1 << 30;
/// Cap on the length of one external id in an id map.
pub const MAX_EXTERNAL_ID_BYTES: u32 = 4096;
/// Cap on the propagation layers of a stored graph (LightGCN uses 1 to 4; each layer costs a
/// runtime one pass over every edge, so the cap bounds the work a file can ask for).
pub const MAX_PROPAGATION_LAYERS: u32 = 8;
/// The minor version of a file that holds a propagation graph (kind 13, added in 1.1). Files
/// without one are written as 1.0, which they are.
pub const MINOR_VERSION_GRAPH: u16 = 1;

/// Section flag bit 0: a reader that does not know this kind must refuse the file.
pub const FLAG_REQUIRED: u8 = 1;

/// Header field offsets (all little-endian).
pub(crate) mod header {
    pub const MAGIC: usize = 0;
    pub const MAJOR: usize = 8;
    pub const MINOR: usize = 10;
    pub const CRC: usize = 12;
    pub const FILE_LEN: usize = 16;
    pub const SECTION_COUNT: usize = 24;
    pub const FLAGS: usize = 28;
    pub const RESERVED: core::ops::Range<usize> = 32..64;
}

/// Section-table entry field offsets (relative to the entry).
pub(crate) mod entry {
    pub const KIND: usize = 0;
    pub const DTYPE: usize = 2;
    pub const FLAGS: usize = 3;
    pub const CRC: usize = 4;
    pub const OFFSET: usize = 8;
    pub const LEN: usize = 16;
    pub const RESERVED: usize = 24;
}

/// Element type of a section's payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Dtype {
    /// Raw bytes (metadata, id maps).
    U8 = 0,
    /// Little-endian `u32` (row pointers, permutations).
    U32 = 1,
    /// IEEE-754 binary32, little-endian.
    F32 = 2,
    /// IEEE-754 binary16, little-endian; widened exactly to `f32` for scoring.
    F16 = 3,
    /// `f32` values in the 8-row blocked order (spec §4.1).
    F32x8 = 4,
    /// `f16` values in the 8-row blocked order (spec §4.1).
    F16x8 = 5,
}

impl Dtype {
    /// Parses a dtype code; `None` for codes this reader does not know.
    pub const fn from_code(code: u8) -> Option<Dtype> {
        match code {
            0 => Some(Dtype::U8),
            1 => Some(Dtype::U32),
            2 => Some(Dtype::F32),
            3 => Some(Dtype::F16),
            4 => Some(Dtype::F32x8),
            5 => Some(Dtype::F16x8),
            _ => None,
        }
    }
    /// Bytes per element.
    pub const fn size(self) -> usize {
        match self {
            Dtype::U8 => 1,
            Dtype::U32 | Dtype::F32 | Dtype::F32x8 => 4,
            Dtype::F16 | Dtype::F16x8 => 2,
        }
    }
}

impl core::fmt::Display for Dtype {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Dtype::U8 => "u8",
            Dtype::U32 => "u32",
            Dtype::F32 => "f32",
            Dtype::F16 => "f16",
            Dtype::F32x8 => "f32x8",
            Dtype::F16x8 => "f16x8",
        })
    }
}

macro_rules! section_kinds {
    ($( $(#[$doc:meta])* $name:ident = $code:literal, $label:literal, required = $req:literal, dtypes = [$($dt:ident),*]; )*) => {
        /// The kinds of section this reader knows.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u16)]
        pub enum SectionKind {
            $( $(#[$doc])* $name = $code, )*
        }
        impl SectionKind {
            /// Every known kind, in code order.
            pub const ALL: &'static [SectionKind] = &[$(SectionKind::$name),*];
            /// Parses a kind code; `None` for kinds this reader does not know.
            pub const fn from_code(code: u16) -> Option<SectionKind> {
                match code { $($code => Some(SectionKind::$name),)* _ => None }
            }
            /// Whether the spec flags this kind REQUIRED.
            pub const fn required(self) -> bool {
                match self { $(SectionKind::$name => $req,)* }
            }
            /// The dtypes the spec allows for this kind.
            pub const fn dtypes(self) -> &'static [Dtype] {
                match self { $(SectionKind::$name => &[$(Dtype::$dt),*],)* }
            }
            /// The name used in the spec and in `bet inspect`.
            pub const fn name(self) -> &'static str {
                match self { $(SectionKind::$name => $label,)* }
            }
        }
    };
}

section_kinds! {
    /// postcard-encoded [`crate::Metadata`].
    Metadata = 1, "metadata", required = true, dtypes = [U8];
    /// User `row_ptr`: `n_users + 1` monotone offsets into the user values, in storage order.
    UserRowPtr = 2, "user_row_ptr", required = true, dtypes = [U32];
    /// User values (the MLP table for NCF), rows concatenated in storage order.
    UserValues = 3, "user_values", required = true, dtypes = [F32, F16, F32x8, F16x8];
    /// Item `row_ptr`.
    ItemRowPtr = 4, "item_row_ptr", required = true, dtypes = [U32];
    /// Item values (the MLP table for NCF).
    ItemValues = 5, "item_values", required = true, dtypes = [F32, F16, F32x8, F16x8];
    /// NCF: the user GMF table, same widths (same `row_ptr`) as the user values.
    UserGmfValues = 6, "user_gmf_values", required = true, dtypes = [F32, F16, F32x8, F16x8];
    /// NCF: the item GMF table, same widths as the item values.
    ItemGmfValues = 7, "item_gmf_values", required = true, dtypes = [F32, F16, F32x8, F16x8];
    /// NCF dense weights: W1 (d × 2d, row-major), b1 (d), w_out (2d), b_out (1).
    NcfDense = 8, "ncf_dense", required = true, dtypes = [F32];
    /// User storage permutation: `row_of_index[n]` then `index_of_row[n]`.
    UserPermutation = 9, "user_permutation", required = true, dtypes = [U32];
    /// Item storage permutation: `row_of_index[n]` then `index_of_row[n]`.
    ItemPermutation = 10, "item_permutation", required = true, dtypes = [U32];
    /// External user ids: offsets, sorted order, id bytes.
    UserIds = 11, "user_ids", required = false, dtypes = [U8];
    /// External item ids.
    ItemIds = 12, "item_ids", required = false, dtypes = [U8];
    /// LightGCN `input` placement (1.1): layers, then each user's training items (CSR); the
    /// runtime propagates the stored ego rows over it (spec §7.5).
    PropagationGraph = 13, "propagation_graph", required = true, dtypes = [U32];
}

impl core::fmt::Display for SectionKind {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(feature = "std")]
impl serde::Serialize for SectionKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// Rounds `x` up to the next multiple of [`SECTION_ALIGN`], `None` on overflow.
pub const fn align_up(x: u64) -> Option<u64> {
    let a = SECTION_ALIGN as u64;
    match x.checked_add(a - 1) {
        Some(v) => Some(v / a * a),
        None => None,
    }
}

/// CRC-32C (Castagnoli), the checksum of the header and of every section.
///
/// Hosts (`std`) use the 16-table slice-by-16 variant (16 KiB of tables, fast);
/// devices use one 1 KiB table to keep flash small.
#[cfg(feature = "std")]
type CrcTable = crc::Table<16>;
#[cfg(not(feature = "std"))]
type CrcTable = crc::Table<1>;
pub(crate) const CRC32C: crc::Crc<u32, CrcTable> = crc::Crc::<u32, CrcTable>::new(&crc::CRC_32_ISCSI);

/// CRC-32C of `bytes`.
pub fn crc32c(bytes: &[u8]) -> u32 {
    CRC32C.checksum(bytes)
}
