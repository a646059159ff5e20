//! Rank items for a user from a `.bet` file, the way a server would: map the file (no copy),
//! validate once, then answer queries.
//!
//! ```sh
//! cargo run --release -p bet-train --example rank -- target/bet-demo/demo.bet 0 10 [EXCLUDED_ITEM ...]
//! ```
use bet_runtime::{Filter, ItemSet, Model, Scored};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: rank FILE USER K [EXCLUDED_ITEM ...]";
    let path = std::path::PathBuf::from(args.next().ok_or(usage)?);
    let user: u32 = args.next().ok_or(usage)?.parse()?;
    let k: usize = args.next().ok_or(usage)?.parse()?;
    let mut excluded = args.map(|a| a.parse::<u32>()).collect::<Result<Vec<_>, _>>()?;
    excluded.sort_unstable();
    excluded.dedup();
    // SAFETY: this example owns the file for its whole run; nothing truncates or rewrites it.
    let model = unsafe { Model::map(&path)? };
    model.verify_checksums()?;
    let s = model.summary();
    println!(
        "{}: {} model, {} users, {} items, kernel {:?}",
        path.display(),
        s.model.name(),
        s.n_users,
        s.n_items,
        model.kernel()
    );
    let filter = Filter { exclude: Some(ItemSet::Sorted(&excluded)), allow: None };
    let mut out = vec![Scored::EMPTY; k.min(s.n_items as usize)];
    let n = model.top_k(user, k, &filter, &mut out)?;
    for (rank, s) in out[..n].iter().enumerate() {
        println!("{:>3}. item {:>6}  score {:.6}", rank + 1, s.index, s.score);
    }
    Ok(())
}
