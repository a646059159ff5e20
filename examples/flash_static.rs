//! The device pattern on the host: a `.bet` file embedded in the program as a 64-byte-aligned
//! static (on a microcontroller it sits in flash), opened with no allocator and ranked into a
//! stack buffer. `include_bytes!` alone only guarantees alignment 1; the wrapper fixes that.
//!
//! ```sh
//! cargo run -p bet-train --example flash_static
//! ```
use bet_runtime::{Filter, ItemSet, Model, Scored};

#[repr(C, align(64))]
struct Aligned<const N: usize>([u8; N]);

static MODEL: &Aligned<{ include_bytes!("../bet-format/tests/golden/lightgcn_f16x8_blocked.bet").len() }> =
    &Aligned(*include_bytes!("../bet-format/tests/golden/lightgcn_f16x8_blocked.bet"));

fn main() -> Result<(), bet_runtime::Error> {
    let model = Model::new(&MODEL.0[..])?; // &'static [u8]: no copy, no allocation
    model.verify_checksums()?;
    let recently_shown = [2u32, 5, 7]; // sorted
    let filter = Filter { exclude: Some(ItemSet::Sorted(&recently_shown)), allow: None };
    let mut top = [Scored::EMPTY; 5];
    for user in 0..3 {
        let n = model.top_k(user, 5, &filter, &mut top)?;
        let items: Vec<u32> = top[..n].iter().map(|s| s.index).collect();
        println!("user {user}: {items:?}");
    }
    Ok(())
}
