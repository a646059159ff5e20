//! One top-10 on the firmware's model and query (user 0, items 1, 5, 16, 40 excluded), once per
//! kernel, for a deterministic instruction count under valgrind (qemu has no timing):
//!
//! ```sh
//! cargo build --release -p bet-train --example topk_instructions
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out \
//!   --toggle-collect='bet_runtime::model::Model<B>::top_k_dot' \
//!   target/release/examples/topk_instructions portable
//! callgrind_annotate /tmp/cg.out | head -20      # "PROGRAM TOTALS" = instructions in top_k
//! ```
use bet_runtime::{Filter, ItemSet, Kernel, Model, Scored};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let kernel = match std::env::args().nth(1).as_deref() {
        Some("avx2") => Kernel::Avx2F16c,
        _ => Kernel::Portable,
    };
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../bet-format/tests/golden/lightgcn_f16x8_blocked.bet");
    let mut model = Model::read(&path)?;
    model.set_kernel(kernel)?;
    let exclude = [1u32, 5, 16, 40];
    let filter = Filter { exclude: Some(ItemSet::Sorted(&exclude)), allow: None };
    let mut out = [Scored::EMPTY; 10];
    let n = model.top_k(0, 10, &filter, &mut out)?;
    println!("{kernel:?}: {n} items, first {} {:#010x}", out[0].index, out[0].score.to_bits());
    Ok(())
}
