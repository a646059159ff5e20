//! bet on a Cortex-M4F: the `.bet` file is an aligned static in flash; the firmware opens it
//! with `new_checked` (no allocator), verifies the CRCs, ranks items for every user with an
//! exclusion list and once for a caller-supplied vector, and compares every index and score bit
//! for bit with what the host runtime computed at build time. It exits 0 only on a full match.
//! It also measures the worst-case stack of `top_k` by painting the stack first.
#![no_std]
#![no_main]

use core::panic::PanicInfo;

use bet_runtime::{Filter, ItemSet, Model, Scored, UserVector};
use cortex_m as _; // links the critical-section implementation semihosting needs
use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hprintln};

#[derive(Clone, Copy)]
pub enum Query {
    User(u32),
    Vector,
}

include!(concat!(env!("OUT_DIR"), "/expected.rs"));

/// `include_bytes!` only promises alignment 1; the format's payloads need 4 (and are 64-aligned
/// in the file), so the blob lives in a 64-byte-aligned wrapper.
#[repr(C, align(64))]
struct Aligned<const N: usize>([u8; N]);

const FILE_LEN: usize = include_bytes!("../../../bet-format/tests/golden/lightgcn_f16x8_blocked.bet").len();
static FILE: Aligned<FILE_LEN> =
    Aligned(*include_bytes!("../../../bet-format/tests/golden/lightgcn_f16x8_blocked.bet"));

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
    match query {
        Query::User(u) => model.top_k(*u, 10, filter, out),
        Query::Vector => model.top_k_for_vector(UserVector::Dot(&VECTOR), 10, &Filter::NONE, out),
    }
}

#[entry]
fn main() -> ! {
    let ok = run();
    debug::exit(if ok { debug::EXIT_SUCCESS } else { debug::EXIT_FAILURE });
    loop {}
}

fn run() -> bool {
    let model = match Model::new(&FILE.0[..]) {
        Ok(m) => m,
        Err(e) => {
            hprintln!("open failed: {}", e);
            return false;
        }
    };
    if let Err(e) = model.verify_checksums() {
        hprintln!("checksums failed: {}", e);
        return false;
    }
    let s = model.summary();
    hprintln!("bet on Cortex-M4F: {} users, {} items, {} bytes in flash", s.n_users, s.n_items, FILE_LEN);
    let filter = Filter { exclude: Some(ItemSet::Sorted(&EXCLUDE)), allow: None };
    let mut worst_stack = 0;
    let mut mismatches = 0;
    for (query, want) in CASES {
        let mut out = [Scored::EMPTY; 10];
        let sp = paint_stack();
        let got = ranked(&model, query, &filter, &mut out);
        worst_stack = worst_stack.max(stack_used(sp));
        let n = match got {
            Ok(n) => n,
            Err(e) => {
                hprintln!("top_k failed: {}", e);
                return false;
            }
        };
        let same = n == want.len()
            && out[..n].iter().zip(want.iter()).all(|(g, w)| g.index == w.0 && g.score.to_bits() == w.1);
        if !same {
            mismatches += 1;
            hprintln!(
                "MISMATCH for {:?}",
                match query {
                    Query::User(u) => *u as i64,
                    Query::Vector => -1,
                }
            );
            for (g, w) in out[..n].iter().zip(want.iter()) {
                hprintln!("  got {} {:#010x}  want {} {:#010x}", g.index, g.score.to_bits(), w.0, w.1);
            }
        }
    }
    hprintln!("queries: {}, mismatches: {}, worst-case top_k stack: {} bytes", CASES.len(), mismatches, worst_stack);
    mismatches == 0
}

#[panic_handler]
fn panic(_: &PanicInfo) -> ! {
    hprintln!("panic");
    debug::exit(debug::EXIT_FAILURE);
    loop {}
}
