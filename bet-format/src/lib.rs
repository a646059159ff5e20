//! # bet-format: the `.bet` ragged embedding-table file
//!
//! A `.bet` file holds one recommender's embedding tables, one width per user
//! and per item (the BET method's budgeted widths), in a layout a device can
//! read in place from flash or an mmap. The normative spec is
//! `docs/format.md`; this crate is its reference implementation.
//!
//! ## Key types
//! - [`BetFile::new_checked`] validates a whole file once, without an allocator;
//!   afterwards every accessor is panic-free. Checksums
//!   ([`BetFile::verify_checksums`]) and value finiteness
//!   ([`BetFile::validate_values`]) are explicit calls.
//! - [`RaggedTable`]: CSR rows (`row_ptr` + values, f32 or f16), with the
//!   storage permutation hidden behind index-based lookups.
//! - [`Metadata`]: model kind, widths, counts, the exact [`Budget`], provenance.
//! - [`Error`]: one `#[non_exhaustive]` variant per broken rule.
//! - `ModelContents` (feature `std`): the deterministic, atomic writer.
//!
//! ## Example
//! ```
//! use bet_format::*;
//! # fn main() -> Result<(), Error> {
//! let provenance = Provenance {
//!     dataset: "toy", dataset_sha256: [0; 32], split: "none", seed: 1, threads: 1,
//!     trainer_version: "doc", git_commit: "", validation: None, test: None,
//! };
//! let contents = ModelContents {
//!     model: ModelKind::Mf, placement: MaskPlacement::NotApplicable, d_max: 4,
//!     users: TableInput { widths: &[2, 1], values: &[1.0, 2.0, 3.0] },
//!     items: TableInput { widths: &[4, 0, 1], values: &[1.0, 0.5, 0.25, 0.125, 9.0] },
//!     ncf: None, keep: Some(Decimal::parse("0.5")?), provenance,
//!     value_dtype: ValueDtype::F32, storage: StorageOrder::WidthDescending,
//!     value_layout: ValueLayout::Blocked8,
//!     user_ids: None, item_ids: None, graph: None,
//! };
//! let bytes = AlignedBytes::from(contents.to_bytes()?);
//! let file = BetFile::new_checked(bytes.as_bytes())?;
//! file.verify_checksums()?;
//! assert_eq!(file.embedding_values(), 8);           // counted from the structure
//! assert_eq!(file.summary().budget.unwrap().limit, 10); // floor(0.5 * 4 * 5)
//! assert_eq!(file.items().width(2), Some(1));
//! assert_eq!(file.items().row(2).and_then(|r| r.get(0)), Some(9.0));
//! # Ok(()) }
//! ```
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

#[cfg(feature = "alloc")]
extern crate alloc;

#[cfg(feature = "alloc")]
mod aligned;
mod error;
pub mod layout;
mod meta;
#[cfg(feature = "std")]
pub mod testing;
mod view;
#[cfg(feature = "std")]
mod writer;

#[cfg(feature = "alloc")]
pub use aligned::AlignedBytes;
pub use error::{Error, Table};
pub use layout::{
    Dtype, MAX_EXTERNAL_ID_BYTES, MAX_METADATA_BYTES, MAX_NCF_WIDTH, MAX_PROPAGATION_LAYERS, MAX_ROWS, MAX_SECTIONS,
    MAX_VECTOR_WIDTH, SECTION_ALIGN, SectionKind, crc32c,
};
pub use meta::{Budget, Decimal, MaskPlacement, Metadata, MetadataRepr, ModelKind, Provenance, Quality};
pub use view::{
    BLOCK_ROWS, BetFile, FileLayout, IdMap, NcfDense, Permutation, PropagationGraph, RaggedTable, Row, SectionEntry,
    Summary, ValueDtype, Values, ncf_dense_len,
};
#[cfg(feature = "std")]
pub use writer::{GraphInput, ModelContents, NcfInput, StorageOrder, TableInput, ValueLayout, write_atomic};
