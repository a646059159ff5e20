//! The C API (feature `capi`): open a model from a pointer and a length, verify it, read counts
//! and widths, score, and rank into caller buffers. The model handle lives in memory the caller
//! provides (`bet_model_size()` / `bet_model_align()` bytes), and nothing allocates except
//! `bet_propagate`, which a LightGCN `input`-placement file needs once before it can be scored:
//! its final vectors are computed into memory the library allocates (feature `alloc`; the
//! `libbet_capi.a` of `bet-capi` has it) and `bet_close` releases. A build without an allocator
//! (the Cortex-M one) answers `BET_ERR_MEMORY` there and scores every other file.
//!
//! Every function returns a `BET_*` code (0 = success, negative = error) and writes results
//! through out-pointers only on success. Contract for C callers: every pointer/length pair must
//! describe memory the caller owns for the duration of the call; the file bytes given to
//! `bet_open` must stay valid and unchanged while the handle is used. Within that contract no
//! input — null pointers, misaligned buffers, out-of-range indices, unsorted lists, a corrupt
//! file — makes a function crash; each gets its error code.

use core::mem::{align_of, size_of};

use crate::{Error, Filter, ItemSet, Model, Scored, UserVector};

/// Success.
pub const BET_OK: i32 = 0;
/// A required pointer is null.
pub const BET_ERR_NULL: i32 = -1;
/// A buffer is not aligned for its element type (or the handle memory for the handle).
pub const BET_ERR_ALIGNMENT: i32 = -2;
/// The handle memory is smaller than `bet_model_size()`.
pub const BET_ERR_HANDLE_SIZE: i32 = -3;
/// The file is not a valid `.bet` file.
pub const BET_ERR_FORMAT: i32 = -4;
/// A section checksum does not match.
pub const BET_ERR_CHECKSUM: i32 = -5;
/// A stored value is NaN or infinite.
pub const BET_ERR_VALUES: i32 = -6;
/// A user or item index is out of range.
pub const BET_ERR_RANGE: i32 = -7;
/// An output buffer is too small.
pub const BET_ERR_BUFFER: i32 = -8;
/// An argument is invalid: an unsorted exclusion list, a vector too wide or of the wrong kind.
pub const BET_ERR_ARGUMENT: i32 = -9;
/// The handle was not produced by `bet_open` (or was overwritten, or closed).
pub const BET_ERR_HANDLE: i32 = -10;
/// A LightGCN `input`-placement file stores ego rows: call `bet_propagate` once before scoring.
pub const BET_ERR_NOT_PROPAGATED: i32 = -11;
/// `bet_propagate` could not allocate the final vectors, or this build has no allocator.
pub const BET_ERR_MEMORY: i32 = -12;

/// Marks a live handle.
const HANDLE_MAGIC: u64 = 0x6265_745f_6d6f_6465; // "bet_mode"

/// An opened model (opaque to C; lives in caller memory).
pub struct BetModel {
    magic: u64,
    model: Model<&'static [u8]>,
}

fn code(e: Error) -> i32 {
    match e {
        Error::Format(bet_format::Error::SectionChecksum { .. }) => BET_ERR_CHECKSUM,
        Error::Format(bet_format::Error::NonFiniteValue { .. } | bet_format::Error::NonFiniteDense { .. }) => {
            BET_ERR_VALUES
        }
        Error::Format(_) => BET_ERR_FORMAT,
        Error::NotPropagated => BET_ERR_NOT_PROPAGATED,
        Error::OutOfMemory { .. } => BET_ERR_MEMORY,
        Error::UserOutOfRange { .. } | Error::ItemOutOfRange { .. } => BET_ERR_RANGE,
        Error::OutputTooSmall { .. } => BET_ERR_BUFFER,
        _ => BET_ERR_ARGUMENT,
    }
}

/// Turns a pointer/length pair into a slice: null with length 0 is the empty slice.
///
/// # Safety
/// If non-null, `ptr` must point to `len` readable `T`s that stay valid for `'a`.
unsafe fn slice<'a, T>(ptr: *const T, len: usize) -> Result<&'a [T], i32> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(BET_ERR_NULL);
    }
    if !(ptr as usize).is_multiple_of(align_of::<T>()) {
        return Err(BET_ERR_ALIGNMENT);
    }
    // SAFETY: non-null, aligned, and the caller promises `len` readable elements.
    Ok(unsafe { core::slice::from_raw_parts(ptr, len) })
}

/// # Safety
/// As for [`slice`], for writable memory.
unsafe fn slice_mut<'a, T>(ptr: *mut T, len: usize) -> Result<&'a mut [T], i32> {
    if len == 0 {
        return Ok(&mut []);
    }
    if ptr.is_null() {
        return Err(BET_ERR_NULL);
    }
    if !(ptr as usize).is_multiple_of(align_of::<T>()) {
        return Err(BET_ERR_ALIGNMENT);
    }
    // SAFETY: non-null, aligned, and the caller promises `len` writable elements.
    Ok(unsafe { core::slice::from_raw_parts_mut(ptr, len) })
}

/// # Safety
/// `m` must be null or point to memory holding a handle written by `bet_open`.
unsafe fn handle<'a>(m: *const BetModel) -> Result<&'a BetModel, i32> {
    if m.is_null() {
        return Err(BET_ERR_NULL);
    }
    if !(m as usize).is_multiple_of(align_of::<BetModel>()) {
        return Err(BET_ERR_ALIGNMENT);
    }
    // SAFETY: non-null and aligned; the caller promises it came from `bet_open`.
    let h = unsafe { &*m };
    if h.magic != HANDLE_MAGIC {
        return Err(BET_ERR_HANDLE);
    }
    Ok(h)
}

/// # Safety
/// `m` must be null or point to memory holding a handle written by `bet_open`, which nothing
/// else accesses during the call.
unsafe fn handle_mut<'a>(m: *mut BetModel) -> Result<&'a mut BetModel, i32> {
    // SAFETY: forwarded contract; checks null, alignment and the magic.
    unsafe { handle(m)? };
    // SAFETY: checked just above; the caller promises exclusive access for the call.
    Ok(unsafe { &mut *m })
}

/// # Safety
/// If non-null, `p` must be writable and aligned for `T`.
unsafe fn put<T>(p: *mut T, v: T) -> Result<(), i32> {
    if p.is_null() {
        return Err(BET_ERR_NULL);
    }
    if !(p as usize).is_multiple_of(align_of::<T>()) {
        return Err(BET_ERR_ALIGNMENT);
    }
    // SAFETY: non-null, aligned, writable by the caller's contract.
    unsafe { p.write(v) };
    Ok(())
}

fn status(r: Result<(), i32>) -> i32 {
    match r {
        Ok(()) => BET_OK,
        Err(c) => c,
    }
}

/// Bytes of caller memory a model handle needs.
#[unsafe(no_mangle)]
pub extern "C" fn bet_model_size() -> usize {
    size_of::<BetModel>()
}

/// Alignment the handle memory needs.
#[unsafe(no_mangle)]
pub extern "C" fn bet_model_align() -> usize {
    align_of::<BetModel>()
}

/// Validates the file at `bytes[0..len]` and writes a handle into `memory[0..memory_len]`;
/// `*out` then points to it. The bytes must stay valid and unchanged while the handle is used.
/// (Opening over the memory of a handle that was propagated and not closed leaks its vectors.)
///
/// # Safety
/// `bytes`/`len` and `memory`/`memory_len` must describe caller-owned memory; `out` must be
/// writable. See the module documentation.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bet_open(
    bytes: *const u8,
    len: usize,
    memory: *mut core::ffi::c_void,
    memory_len: usize,
    out: *mut *mut BetModel,
) -> i32 {
    status((|| {
        if bytes.is_null() || memory.is_null() || out.is_null() {
            return Err(BET_ERR_NULL);
        }
        // SAFETY: the caller promises `len` readable bytes that outlive the handle, which is
        // what the `'static` stands for here.
        let file: &'static [u8] = unsafe { slice(bytes, len)? };
        if memory_len < size_of::<BetModel>() {
            return Err(BET_ERR_HANDLE_SIZE);
        }
        let slot = memory.cast::<BetModel>();
        if !(slot as usize).is_multiple_of(align_of::<BetModel>()) {
            return Err(BET_ERR_ALIGNMENT);
        }
        let model = Model::new(file).map_err(code)?;
        // SAFETY: `slot` is non-null, aligned and has room for a `BetModel` (checked above).
        unsafe { slot.write(BetModel { magic: HANDLE_MAGIC, model }) };
        // SAFETY: `out` is non-null; the caller promises it is writable.
        unsafe { put(out, slot) }
    })())
}

/// Makes an `input`-placement LightGCN file scoreable: propagates its ego rows over its graph
/// into final vectors (`(n_users + n_items) · d_max` floats, allocated here and kept until
/// `bet_close`; spec §7.5, bit-identical to every other runtime). Once is enough; on a handle
/// that needs none (every other file, or a second call) it does nothing and returns `BET_OK`.
/// Without an allocator in the build it returns `BET_ERR_MEMORY` for a file that needs it.
///
/// # Safety
/// `model` must come from `bet_open`, and no other call may use it at the same time.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bet_propagate(model: *mut BetModel) -> i32 {
    status((|| {
        // SAFETY: forwarded contract.
        let h = unsafe { handle_mut(model)? };
        #[cfg(feature = "alloc")]
        {
            h.model.propagate().map_err(code)
        }
        #[cfg(not(feature = "alloc"))]
        {
            if h.model.needs_propagation() { Err(BET_ERR_MEMORY) } else { Ok(()) }
        }
    })())
}

/// Releases what the handle holds (the vectors of `bet_propagate`) and marks it closed: later
/// calls with it return `BET_ERR_HANDLE`, and its memory may be freed or reused. Call it once
/// per handle when done (a handle never propagated holds nothing, so skipping it there leaks
/// nothing).
///
/// # Safety
/// `model` must come from `bet_open` and not be in use by another call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bet_close(model: *mut BetModel) -> i32 {
    status((|| {
        // SAFETY: forwarded contract.
        let h = unsafe { handle_mut(model)? };
        // Releasing the vectors leaves a model that owns no heap memory (its bytes are the
        // caller's), so the caller may free the handle's memory without a drop; the cleared
        // magic makes every later call, a second close included, a `BET_ERR_HANDLE`.
        #[cfg(feature = "alloc")]
        h.model.release_propagated();
        h.magic = 0;
        Ok(())
    })())
}

/// Verifies every section checksum and that no stored value is NaN or infinite.
///
/// # Safety
/// `model` must come from `bet_open`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bet_verify(model: *const BetModel) -> i32 {
    status((|| {
        // SAFETY: forwarded contract.
        let h = unsafe { handle(model)? };
        h.model.verify_checksums().map_err(code)?;
        h.model.validate_values().map_err(code)
    })())
}

/// Counts: users, items, vector width and parameters (embedding values + dense weights, counted
/// from the structure). Any out-pointer may be null to skip it.
///
/// # Safety
/// `model` must come from `bet_open`; non-null out-pointers must be writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bet_counts(
    model: *const BetModel,
    n_users: *mut u32,
    n_items: *mut u32,
    vector_width: *mut u32,
    parameters: *mut u64,
) -> i32 {
    status((|| {
        // SAFETY: forwarded contract.
        let h = unsafe { handle(model)? };
        let s = h.model.summary();
        let params = h.model.file().map_err(code)?.parameter_count();
        // SAFETY (each): non-null out-pointers are writable by the caller's contract.
        unsafe {
            if !n_users.is_null() {
                put(n_users, s.n_users)?;
            }
            if !n_items.is_null() {
                put(n_items, s.n_items)?;
            }
            if !vector_width.is_null() {
                put(vector_width, s.vector_width)?;
            }
            if !parameters.is_null() {
                put(parameters, params)?;
            }
        }
        Ok(())
    })())
}

/// The width of user `index` (`table` 0) or item `index` (`table` 1).
///
/// # Safety
/// `model` must come from `bet_open`; `width` must be writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bet_width(model: *const BetModel, table: u32, index: u32, width: *mut u32) -> i32 {
    status((|| {
        // SAFETY: forwarded contract.
        let h = unsafe { handle(model)? };
        let file = h.model.file().map_err(code)?;
        let t = match table {
            0 => file.users(),
            1 => file.items(),
            _ => return Err(BET_ERR_ARGUMENT),
        };
        let w = t.width(index).ok_or(BET_ERR_RANGE)?;
        // SAFETY: the caller promises `width` is writable.
        unsafe { put(width, w) }
    })())
}

/// The score of `(user, item)`.
///
/// # Safety
/// `model` must come from `bet_open`; `score` must be writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bet_score(model: *const BetModel, user: u32, item: u32, score: *mut f32) -> i32 {
    status((|| {
        // SAFETY: forwarded contract.
        let h = unsafe { handle(model)? };
        let s = h.model.score(user, item).map_err(code)?;
        // SAFETY: the caller promises `score` is writable.
        unsafe { put(score, s) }
    })())
}

/// # Safety
/// Pointer/length pairs as in the module documentation.
#[allow(clippy::too_many_arguments)]
unsafe fn rank(
    model: *const BetModel,
    user: Option<u32>,
    vector: (*const f32, usize),
    gmf: (*const f32, usize),
    k: u32,
    exclude: *const u32,
    n_exclude: usize,
    out: *mut Scored,
    capacity: usize,
    written: *mut usize,
) -> Result<(), i32> {
    // SAFETY (all): forwarded caller contract.
    let h = unsafe { handle(model)? };
    let exclude = unsafe { slice(exclude, n_exclude)? };
    let out = unsafe { slice_mut(out, capacity)? };
    if written.is_null() {
        return Err(BET_ERR_NULL);
    }
    let filter = Filter { exclude: Some(ItemSet::Sorted(exclude)), allow: None };
    let n = match user {
        Some(u) => h.model.top_k(u, k as usize, &filter, out),
        None => {
            let v = unsafe { slice(vector.0, vector.1)? };
            let g = unsafe { slice(gmf.0, gmf.1)? };
            let uv = if h.model.summary().model == bet_format::ModelKind::Ncf {
                UserVector::Ncf { mlp: v, gmf: g }
            } else if g.is_empty() {
                UserVector::Dot(v)
            } else {
                return Err(BET_ERR_ARGUMENT);
            };
            h.model.top_k_for_vector(uv, k as usize, &filter, out)
        }
    }
    .map_err(code)?;
    unsafe { put(written, n) }
}

/// The best `k` items for `user`, excluding the strictly increasing list `exclude[0..n_exclude]`,
/// best first, into `out[0..capacity]` (`capacity >= min(k, n_items)`); `*written` = how many.
///
/// # Safety
/// `model` must come from `bet_open`; pointer/length pairs describe caller memory.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bet_top_k(
    model: *const BetModel,
    user: u32,
    k: u32,
    exclude: *const u32,
    n_exclude: usize,
    out: *mut Scored,
    capacity: usize,
    written: *mut usize,
) -> i32 {
    // SAFETY: forwarded contract.
    status(unsafe {
        rank(
            model,
            Some(user),
            (core::ptr::null(), 0),
            (core::ptr::null(), 0),
            k,
            exclude,
            n_exclude,
            out,
            capacity,
            written,
        )
    })
}

/// As `bet_top_k`, for a user vector the caller keeps: `vector[0..width]` (any width up to the
/// model's vector width). For NCF models `vector` is the MLP row and `gmf[0..gmf_width]` the GMF
/// row; for the others `gmf` must be null with `gmf_width` 0.
///
/// # Safety
/// `model` must come from `bet_open`; pointer/length pairs describe caller memory.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bet_top_k_vector(
    model: *const BetModel,
    vector: *const f32,
    width: usize,
    gmf: *const f32,
    gmf_width: usize,
    k: u32,
    exclude: *const u32,
    n_exclude: usize,
    out: *mut Scored,
    capacity: usize,
    written: *mut usize,
) -> i32 {
    // SAFETY: forwarded contract.
    status(unsafe {
        rank(model, None, (vector, width), (gmf, gmf_width), k, exclude, n_exclude, out, capacity, written)
    })
}
