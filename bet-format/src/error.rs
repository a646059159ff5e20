//! The one error type of `bet-format`.
//!
//! Every check in [`crate::BetFile::new_checked`], in the checksum and value
//! verifiers and in the writer has its own variant, carrying where the file
//! broke (section index and kind, table, row). Nothing in this crate panics
//! on bad input; it returns one of these.

use crate::layout::SectionKind;

/// Which ragged table of a file an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "std", derive(serde::Serialize))]
pub enum Table {
    /// The user table (MLP table for NCF).
    Users,
    /// The item table (MLP table for NCF).
    Items,
    /// The NCF GMF user table.
    UserGmf,
    /// The NCF GMF item table.
    ItemGmf,
}

impl core::fmt::Display for Table {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Table::Users => "users",
            Table::Items => "items",
            Table::UserGmf => "user GMF",
            Table::ItemGmf => "item GMF",
        })
    }
}

/// Everything that can be wrong with a `.bet` file or with a request to write one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The host is big-endian; the format is little-endian and this crate never byte-swaps.
    #[error("this host is big-endian; .bet files are little-endian and are not byte-swapped")]
    UnsupportedEndian,
    /// Fewer bytes than the fixed header and section table need.
    #[error("file truncated: {needed} bytes needed for the header and section table, {actual} present")]
    Truncated {
        /// Bytes the header and table need.
        needed: u64,
        /// Bytes present.
        actual: u64,
    },
    /// The first eight bytes are not the `.bet` magic.
    #[error("bad magic: not a .bet file")]
    BadMagic,
    /// A major version this reader does not know.
    #[error("unsupported major version {found} (this reader knows {supported})")]
    UnsupportedMajorVersion {
        /// The version in the file.
        found: u16,
        /// The version this reader implements.
        supported: u16,
    },
    /// The header's `file_len` differs from the number of bytes given.
    #[error("file length mismatch: header says {header} bytes, {actual} given")]
    FileLengthMismatch {
        /// Length recorded in the header.
        header: u64,
        /// Length of the bytes given.
        actual: u64,
    },
    /// More sections than [`crate::MAX_SECTIONS`].
    #[error("{count} sections, more than the cap of {max}")]
    TooManySections {
        /// Section count in the header.
        count: u32,
        /// The cap.
        max: u32,
    },
    /// The CRC-32C of the header and section table does not match.
    #[error("header checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    HeaderChecksum {
        /// CRC in the header.
        stored: u32,
        /// CRC computed over the bytes.
        computed: u32,
    },
    /// A header field or section-table field that must be zero is not.
    #[error("reserved field {field} is not zero")]
    ReservedNotZero {
        /// The field's name in the spec.
        field: &'static str,
    },
    /// A section of an unknown kind is flagged REQUIRED.
    #[error("section {section}: unknown kind {kind} is flagged required")]
    UnknownRequiredSection {
        /// Section index in the table.
        section: u32,
        /// The raw kind.
        kind: u16,
    },
    /// A known section kind carries a dtype this reader does not know for it.
    #[error("section {section} ({kind}): unsupported dtype {dtype}")]
    UnsupportedDtype {
        /// Section index.
        section: u32,
        /// Section kind.
        kind: SectionKind,
        /// The raw dtype code.
        dtype: u8,
    },
    /// A known kind's REQUIRED flag differs from the spec, or unknown flag bits are set.
    #[error("section {section} ({kind}): flags {flags:#04x} are not the spec's {expected:#04x}")]
    BadSectionFlags {
        /// Section index.
        section: u32,
        /// Section kind.
        kind: SectionKind,
        /// Flags found.
        flags: u8,
        /// Flags the spec requires for this kind.
        expected: u8,
    },
    /// A section kind appears twice.
    #[error("section {section}: kind {kind} appears twice")]
    DuplicateSection {
        /// Index of the second occurrence.
        section: u32,
        /// The kind.
        kind: u16,
    },
    /// A section the file needs is absent.
    #[error("missing required section {kind}")]
    MissingSection {
        /// The kind that is missing.
        kind: SectionKind,
    },
    /// A section that does not belong in a file of this model kind.
    #[error("section {kind} does not belong in this model kind")]
    UnexpectedSection {
        /// The kind.
        kind: SectionKind,
    },
    /// A payload offset is not a multiple of [`crate::SECTION_ALIGN`].
    #[error("section {section}: offset {offset} is not a multiple of 64")]
    MisalignedSection {
        /// Section index.
        section: u32,
        /// The offset.
        offset: u64,
    },
    /// An offset or length does not fit this target's `usize` (e.g. beyond 4 GiB on 32-bit).
    #[error("section {section}: offset or length {value} is not addressable on this target")]
    NotAddressable {
        /// Section index.
        section: u32,
        /// The value that did not fit.
        value: u64,
    },
    /// A payload extends past the end of the file.
    #[error("section {section}: bytes {offset}..{offset}+{len} run past the end of the file ({file_len})")]
    SectionOutOfBounds {
        /// Section index.
        section: u32,
        /// Offset.
        offset: u64,
        /// Length.
        len: u64,
        /// File length.
        file_len: u64,
    },
    /// A payload starts before the previous one ends (or before the section table ends).
    #[error("section {section}: starts at {offset}, before the previous data ends at {previous_end}")]
    SectionOverlap {
        /// Section index.
        section: u32,
        /// Its offset.
        offset: u64,
        /// End of the previous section (or of the table).
        previous_end: u64,
    },
    /// A gap of 64 bytes or more before a payload: bytes that belong to nothing.
    #[error("section {section}: {gap}-byte hole before it (padding must be under 64 bytes)")]
    SectionHole {
        /// Section index.
        section: u32,
        /// Gap length.
        gap: u64,
    },
    /// A padding byte before a payload is not zero.
    #[error("non-zero padding byte at file offset {offset}")]
    NonZeroPadding {
        /// File offset of the byte.
        offset: u64,
    },
    /// Bytes after the end of the last payload.
    #[error("{extra} trailing bytes after the last section")]
    TrailingBytes {
        /// How many.
        extra: u64,
    },
    /// A payload length is not a whole number of elements, or does not match its shape.
    #[error("section {kind}: length {len} bytes does not fit its shape ({reason})")]
    BadSectionLength {
        /// Section kind.
        kind: SectionKind,
        /// Byte length.
        len: u64,
        /// Which rule.
        reason: &'static str,
    },
    /// A payload's address is not aligned for its element type (a misaligned buffer).
    #[error("section {kind}: payload address is not aligned for its element type")]
    Misaligned {
        /// Section kind.
        kind: SectionKind,
    },
    /// The metadata section is larger than [`crate::MAX_METADATA_BYTES`].
    #[error("metadata is {len} bytes, over the cap of {max}")]
    MetadataTooLarge {
        /// Its length.
        len: u64,
        /// The cap.
        max: u64,
    },
    /// The metadata does not decode as the spec's postcard schema.
    #[error("metadata does not decode: {reason}")]
    MetadataDecode {
        /// Why.
        reason: &'static str,
    },
    /// Metadata disagrees with the structure of the file.
    #[error("metadata field {field} says {claimed}, the file's structure says {actual}")]
    MetadataMismatch {
        /// The metadata field.
        field: &'static str,
        /// What the metadata claims.
        claimed: u64,
        /// What the structure holds.
        actual: u64,
    },
    /// The propagation graph (kind 13) breaks a rule of spec §4.2.
    #[error("propagation graph, entry {position}: {reason}")]
    BadGraph {
        /// Where: the user whose offsets or items are wrong (0 for the layer count).
        position: u64,
        /// Which rule.
        reason: &'static str,
    },
    /// The metadata is internally inconsistent (e.g. a placement for a model without one).
    #[error("metadata is invalid: {reason}")]
    InvalidMetadata {
        /// Why.
        reason: &'static str,
    },
    /// A count exceeds one of this crate's caps.
    #[error("{what} is {value}, over the cap of {max}")]
    OverCap {
        /// What was counted.
        what: &'static str,
        /// The value.
        value: u64,
        /// The cap.
        max: u64,
    },
    /// `row_ptr[0]` is not zero.
    #[error("{table}: row_ptr starts at {first}, not 0")]
    RowPtrStart {
        /// The table.
        table: Table,
        /// The first offset.
        first: u32,
    },
    /// `row_ptr` decreases at a row.
    #[error("{table}: row_ptr decreases at storage row {row}")]
    RowPtrNotMonotone {
        /// The table.
        table: Table,
        /// Storage row whose end offset is below its start.
        row: u32,
    },
    /// A row is wider than the file's vector width.
    #[error("{table}: storage row {row} has width {width}, over the vector width {max}")]
    RowTooWide {
        /// The table.
        table: Table,
        /// Storage row.
        row: u32,
        /// Its width.
        width: u32,
        /// The vector width.
        max: u32,
    },
    /// The last `row_ptr` entry differs from the number of stored values.
    #[error("{table}: row_ptr ends at {end}, but {values} values are stored")]
    RowPtrEnd {
        /// The table.
        table: Table,
        /// Last offset.
        end: u64,
        /// Values in the values section.
        values: u64,
    },
    /// A storage permutation is out of range or not a bijection.
    #[error("{table}: storage permutation broken at position {position}")]
    BadPermutation {
        /// The table.
        table: Table,
        /// The first position that fails.
        position: u32,
    },
    /// An external-id map is malformed (offsets, order, duplicates, size).
    #[error("{table} id map: {reason} at entry {entry}")]
    BadIdMap {
        /// The table.
        table: Table,
        /// The entry.
        entry: u32,
        /// Which rule.
        reason: &'static str,
    },
    /// The stored embedding values exceed the budget limit.
    #[error("budget exceeded: {stored} embedding values stored, limit {limit}")]
    OverBudget {
        /// Values stored.
        stored: u64,
        /// The limit.
        limit: u64,
    },
    /// A section's CRC-32C does not match its payload.
    #[error("section {section} ({kind}): checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    SectionChecksum {
        /// Section index.
        section: u32,
        /// Raw kind.
        kind: u16,
        /// CRC in the table.
        stored: u32,
        /// CRC computed.
        computed: u32,
    },
    /// A stored value is NaN or infinite.
    #[error("{table}: non-finite value at position {position}")]
    NonFiniteValue {
        /// The table (for dense NCF weights: `Users` is never used; see `NonFiniteDense`).
        table: Table,
        /// Position in the values array.
        position: u64,
    },
    /// A dense NCF weight is NaN or infinite.
    #[error("NCF dense weights: non-finite value at position {position}")]
    NonFiniteDense {
        /// Position in the dense section.
        position: u64,
    },
    /// A decimal fraction (`keep`) does not parse or is out of range.
    #[error("invalid decimal: {reason}")]
    InvalidDecimal {
        /// Why.
        reason: &'static str,
    },
    /// The budget cannot give every user and item width 1.
    #[error("budget limit {limit} cannot give all {entities} users and items width 1")]
    ImpossibleBudget {
        /// The limit.
        limit: u64,
        /// Entities that need at least one value each.
        entities: u64,
    },
    /// Writer input is inconsistent (lengths, widths, ids).
    #[error("invalid writer input: {reason}")]
    InvalidInput {
        /// Why.
        reason: &'static str,
    },
    /// An I/O error while writing the file.
    #[cfg(feature = "std")]
    #[error("I/O error while writing: {0}")]
    Io(std::io::ErrorKind),
}
