//! bet on a Cortex-M4F: every golden `.bet` file (MF, LightGCN, NGCF, NCF; f32, f16, blocked;
//! NaN and signed-zero edge cases) is an aligned static in flash. The firmware opens each with
//! `new_checked` (no allocator), verifies the CRCs, ranks items for several users with an
//! exclusion list and once for a caller-supplied vector, and compares every index and score bit
//! for bit with what the host runtime computed at build time. It exits 0 only on a full match.
//! It also measures the worst-case stack of `top_k` by painting the stack first.
//!
//! A LightGCN `input` file stores ego rows and its graph; its queries must be refused until it is
//! propagated. The default build has no heap and checks just that. With feature `heap` (a 16 KiB
//! `embedded-alloc` heap and the runtime's `alloc`) the firmware then propagates the file on the
//! device and checks its answers bit for bit like every other file's.
#![no_std]
#![no_main]

use core::panic::PanicInfo;

use bet_runtime::{Filter, ItemSet, Model, Scored, UserVector};
use cortex_m as _; // links the critical-section implementation semihosting needs
use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hprintln};

/// One query: a stored user, a caller vector of the first `n` values of `VECTOR`, or an NCF
/// caller vector (MLP and GMF lengths).
#[derive(Clone, Copy, Debug)]
pub enum Query {
    User(u32),
    Vector(usize),
    Ncf(usize, usize),
}

/// A golden file with its expected answers: `(query, [(item, score bits)])`.
pub struct Golden {
    name: &'static str,
    bytes: &'static [u8],
    exclude: &'static [u32],
    cases: &'static [(Query, &'static [(u32, u32)])],
    /// A LightGCN `input` file (ego rows and a graph): before propagation every query must be
    /// refused with `NotPropagated`, never answered from the ego rows; `cases` are its answers
    /// after propagation (checked with feature `heap`).
    needs_heap: bool,
}

/// The heap for propagated vectors (feature `heap`).
#[cfg(feature = "heap")]
#[global_allocator]
static HEAP: embedded_alloc::LlffHeap = embedded_alloc::LlffHeap::empty();
/// Bytes of heap. The golden `input` file (14 users, 19 items, d_max 12) needs, computed from
/// `propagate.rs`'s buffers, three of at most 1,584 bytes and the item-side graph, about 5 KiB.
#[cfg(feature = "heap")]
const HEAP_BYTES: usize = 16 * 1024;

/// `include_bytes!` only promises alignment 1; the format's payloads need 4 (and are 64-aligned
/// in the file), so each blob lives in a 64-byte-aligned wrapper.
#[repr(C, align(64))]
struct Aligned<const N: usize>([u8; N]);

include!(concat!(env!("OUT_DIR"), "/expected.rs"));

/// The pattern painted below the stack pointer before a query.
const PAINT: u32 = 0xDEAD_BEEF;
/// Bytes of stack painted (the RAM is 64 KiB; statics use little).
const PAINT_BYTES: usize = 24 * 1024;

/// Paints `PAINT_BYTES` just below the caller's stack pointer and returns that stack pointer.
/// Inlined into the caller, so no frame of its own lies in the painted region; nothing else runs
/// (no interrupts are enabled), so the paint survives until the measured call.
#[inline(always)]
fn paint_stack() -> usize {
    let sp = cortex_m::register::msp::read() as usize;
    let mut p = sp - PAINT_BYTES;
    while p < sp - 8 {
        // SAFETY: free stack below the live frames; RAM is 64 KiB with the stack at its top and
        // a few hundred bytes of statics at its bottom.
        unsafe { core::ptr::write_volatile(p as *mut u32, PAINT) };
        p += 4;
    }
    sp
}

/// Bytes below `sp` that a call overwrote since `paint_stack` returned `sp`.
#[inline(always)]
fn stack_used(sp: usize) -> usize {
    let mut p = sp - PAINT_BYTES;
    // SAFETY: reads the painted region.
    while p < sp - 8 && unsafe { core::ptr::read_volatile(p as *const u32) } == PAINT {
        p += 4;
    }
    sp - p
}

/// One query, kept out of line so that everything `top_k` puts on the stack lies below the
/// caller's stack pointer, where the paint is (inlined into `run`, it would sit in `run`'s frame).
#[inline(never)]
fn ranked(
    model: &Model<&'static [u8]>,
    query: &Query,
    filter: &Filter<'_>,
    out: &mut [Scored],
) -> Result<usize, bet_runtime::Error> {
    match *query {
        Query::User(u) => model.top_k(u, 10, filter, out),
        Query::Vector(n) => model.top_k_for_vector(UserVector::Dot(&VECTOR[..n]), 10, &Filter::NONE, out),
        Query::Ncf(m, g) => {
            model.top_k_for_vector(UserVector::Ncf { mlp: &VECTOR[..m], gmf: &VECTOR[..g] }, 10, &Filter::NONE, out)
        }
    }
}

#[entry]
fn main() -> ! {
    // SAFETY: called once, first thing, before anything allocates.
    #[cfg(feature = "heap")]
    unsafe {
        embedded_alloc::init!(HEAP, HEAP_BYTES);
    }
    let ok = run();
    debug::exit(if ok { debug::EXIT_SUCCESS } else { debug::EXIT_FAILURE });
    // Not reached: the semihosting exit ends qemu (a real board would sleep here).
    loop {
        cortex_m::asm::wfi();
    }
}

fn run() -> bool {
    let mut worst_stack = 0;
    let mut mismatches = 0;
    let mut queries = 0;
    for golden in FILES {
        #[cfg_attr(not(feature = "heap"), allow(unused_mut))]
        let mut model = match Model::new(golden.bytes) {
            Ok(m) => m,
            Err(e) => {
                hprintln!("{}: open failed: {}", golden.name, e);
                return false;
            }
        };
        if let Err(e) = model.verify_checksums() {
            hprintln!("{}: checksums failed: {}", golden.name, e);
            return false;
        }
        let s = model.summary();
        let mut file_stack = 0;
        let filter = Filter { exclude: Some(ItemSet::Sorted(golden.exclude)), allow: None };
        if golden.needs_heap {
            let mut out = [Scored::EMPTY; 10];
            for query in [Query::User(0), Query::Vector(4)] {
                queries += 1;
                match ranked(&model, &query, &filter, &mut out) {
                    Err(bet_runtime::Error::NotPropagated) => {}
                    other => {
                        mismatches += 1;
                        hprintln!("MISMATCH {} {:?}: want NotPropagated, got {:?}", golden.name, query, other);
                    }
                }
            }
            #[cfg(not(feature = "heap"))]
            {
                hprintln!("{}: input placement, refused without a heap as it must be", golden.name);
                continue;
            }
            #[cfg(feature = "heap")]
            {
                if let Err(e) = model.propagate() {
                    hprintln!("{}: propagation failed: {}", golden.name, e);
                    return false;
                }
                hprintln!(
                    "{}: input placement, refused before propagation, then propagated on the device into {} bytes of heap",
                    golden.name,
                    model.propagated_bytes()
                );
            }
        }
        for (query, want) in golden.cases {
            let mut out = [Scored::EMPTY; 10];
            let sp = paint_stack();
            let got = ranked(&model, query, &filter, &mut out);
            file_stack = file_stack.max(stack_used(sp));
            queries += 1;
            let n = match got {
                Ok(n) => n,
                Err(e) => {
                    hprintln!("{}: top_k failed: {}", golden.name, e);
                    return false;
                }
            };
            let same = n == want.len()
                && out[..n].iter().zip(want.iter()).all(|(g, w)| g.index == w.0 && g.score.to_bits() == w.1);
            if !same {
                mismatches += 1;
                hprintln!("MISMATCH {} {:?}", golden.name, query);
                for (g, w) in out[..n].iter().zip(want.iter()) {
                    hprintln!("  got {} {:#010x}  want {} {:#010x}", g.index, g.score.to_bits(), w.0, w.1);
                }
            }
        }
        hprintln!(
            "{}: {} model, {} users, {} items, {} bytes in flash, {} queries, top_k stack {} bytes",
            golden.name,
            s.model.name(),
            s.n_users,
            s.n_items,
            golden.bytes.len(),
            golden.cases.len(),
            file_stack
        );
        worst_stack = worst_stack.max(file_stack);
    }
    hprintln!(
        "files: {}, queries: {}, mismatches: {}, worst-case top_k stack: {} bytes",
        FILES.len(),
        queries,
        mismatches,
        worst_stack
    );
    mismatches == 0
}

#[panic_handler]
fn panic(_: &PanicInfo) -> ! {
    hprintln!("panic");
    debug::exit(debug::EXIT_FAILURE);
    // Not reached: the semihosting exit ends qemu (a real board would sleep here).
    loop {
        cortex_m::asm::wfi();
    }
}
