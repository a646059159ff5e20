//! # bet-runtime: score and rank from a `.bet` file, on a device or a server
//!
//! `no_std`, no allocation and no panic on the hot path. A [`Model`] wraps
//! the file's bytes — `&'static [u8]` in flash, an `AlignedBytes` read
//! into memory, or an mmap — validates them once with
//! [`bet_format::BetFile::new_checked`], and then answers:
//!
//! - [`Model::score`]: one (user, item) score, exactly as `docs/format.md` §7 fixes it;
//! - [`Model::top_k`]: the best `k` items for a user into a caller buffer, with
//!   exclusions and an allow-list ([`Filter`]); [`Model::top_k_batch`] for many users;
//!   [`Model::top_k_for_vector`] for a user vector the caller keeps (federated clients);
//! - [`Model::scores`]: every item's score in index order (parity checks, evaluation).
//!
//! A LightGCN file with the paper's `input` placement (format 1.1) stores ego rows and the
//! training graph instead of final vectors: `Model::propagate` (feature `alloc`) computes the
//! dense final vectors once, at load, and only then does it score; until then every scoring call
//! returns [`Error::NotPropagated`]. Files of every other placement are read in place. Those
//! final vectors are dense, so ranking streams the whole item table per user:
//! [`Model::top_k_batch`] ranks 8 users per pass over it instead (the same answers, bit for bit,
//! at about a third of the CPU time a user on Gowalla; `BENCHMARKS.md`).
//!
//! Scores are bit-identical on every target: the accumulation order is fixed
//! by the spec, f16 is widened exactly, no fused multiply-add is used, and
//! the x86-64 AVX2/F16C kernel (picked at run time with `std`) reproduces the
//! portable one bit for bit.
//!
//! ## Example
//! ```
//! use bet_runtime::{Filter, ItemSet, Model, Scored};
//! # fn main() -> Result<(), bet_runtime::Error> {
//! # let bytes = bet_format::AlignedBytes::new(&bet_format::testing::tiny_file_bytes());
//! let model = Model::new(bytes)?;          // validates everything once
//! model.verify_checksums()?;               // optional, explicit
//! let mut out = [Scored::EMPTY; 3];
//! let seen = [1u32];                       // items the user already has, sorted
//! let filter = Filter { exclude: Some(ItemSet::Sorted(&seen)), allow: None };
//! let n = model.top_k(0, 3, &filter, &mut out)?;
//! assert_eq!(n, 3);
//! assert!(out[..n].iter().all(|s| s.index != 1));
//! assert!(out[0].score >= out[1].score);
//! # Ok(()) }
//! ```
//!
//! ## Cargo features
//! - (none): `no_std`, no allocator, for `&'static [u8]` and other borrowed bytes.
//! - `alloc`: `AlignedBytes`, owned buffers, and `Model::propagate` for `input` files.
//! - `capi`: an `extern "C"` API (see the `capi` module and `include/bet.h`), built as a static library
//!   by the `bet-capi` crate.
//! - `std`: reading files (`Model::read`), memory maps (`Model::map`, an `unsafe fn`),
//!   run-time CPU feature detection for the AVX2/F16C kernel.
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![deny(missing_docs)]
#![deny(unsafe_code)]

#[cfg(feature = "alloc")]
extern crate alloc;

#[allow(unsafe_code)]
mod audited;
/// The C API (feature `capi`); the header is `bet-runtime/include/bet.h`.
#[cfg(feature = "capi")]
pub use audited::capi;
mod kernel;
mod model;
mod ncf;
#[cfg(feature = "alloc")]
mod propagate;
mod topk;

#[cfg(feature = "alloc")]
pub use bet_format::AlignedBytes;
pub use bet_format::{ModelKind, Summary};
pub use kernel::Kernel;
pub use model::{Model, UserVector};
pub use topk::{Filter, ItemSet, Scored};

/// Everything that can go wrong in the runtime.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file is not a valid `.bet` file (or its checksums or values fail).
    #[error(transparent)]
    Format(#[from] bet_format::Error),
    /// A user index past the end.
    #[error("user {user} out of range (the model has {n_users} users)")]
    UserOutOfRange {
        /// The index asked for.
        user: u32,
        /// Number of users.
        n_users: u32,
    },
    /// An item index past the end (in a request or a filter).
    #[error("item {item} out of range (the model has {n_items} items)")]
    ItemOutOfRange {
        /// The index.
        item: u32,
        /// Number of items.
        n_items: u32,
    },
    /// The output buffer is shorter than the request needs.
    #[error("output buffer holds {got}, {needed} needed")]
    OutputTooSmall {
        /// Slots needed.
        needed: usize,
        /// Slots given.
        got: usize,
    },
    /// A sorted item list is not strictly increasing.
    #[error("item list is not strictly increasing at position {position}")]
    UnsortedItemList {
        /// First position out of order.
        position: usize,
    },
    /// A bitset does not have exactly `ceil(n_items / 64)` words.
    #[error("item bitset has {got} words, {expected} expected")]
    BitsetLength {
        /// Words expected.
        expected: usize,
        /// Words given.
        got: usize,
    },
    /// A caller-supplied vector is wider than the model's vectors.
    #[error("user vector of width {width} is wider than the model's {max}")]
    VectorTooWide {
        /// Its width.
        width: usize,
        /// The model's vector width.
        max: u32,
    },
    /// A caller-supplied vector of the wrong form for the model (dot vs NCF).
    #[error("user vector does not fit a {model} model")]
    WrongVectorKind {
        /// The model kind.
        model: &'static str,
    },
    /// The file is a LightGCN model with the `input` placement: its stored rows are ego rows to
    /// propagate over its graph before scoring (`Model::propagate`, feature `alloc`).
    #[error("this file stores ego rows and a graph (input placement): propagate it before scoring")]
    NotPropagated,
    /// Propagation was asked of a file without a graph (cannot happen through [`Model`], which
    /// checks the placement first; kept so the check is not an unwrap).
    #[error("the file has no propagation graph")]
    NotPropagating,
    /// The memory for propagated vectors could not be allocated.
    #[error("could not allocate {bytes} bytes for propagated vectors")]
    OutOfMemory {
        /// Bytes asked for (saturated at u64::MAX when the count itself overflows).
        bytes: u64,
    },
    /// The requested kernel does not run on this CPU.
    #[error("kernel {0:?} is not supported on this CPU")]
    KernelUnsupported(Kernel),
    /// An I/O error opening a file.
    #[cfg(feature = "std")]
    #[error("I/O error: {0}")]
    Io(std::io::ErrorKind),
}
