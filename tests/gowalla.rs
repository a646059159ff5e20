//! Opt-in large test on the real Gowalla popularity (CI never runs it):
//! `BET_GOWALLA=../shared/data/gowalla cargo test --release -p bet-train --test gowalla -- --ignored`.
//! A Gowalla-sized 10% f16 file with widths from the real training frequencies: both kernels give
//! identical top-20 for every user with their real training items excluded.

use bet_format::{AlignedBytes, Decimal, ValueDtype};
use bet_runtime::{Filter, ItemSet, Kernel, Model, Scored};
use bet_train::bench::read_lightgcn_lists;
use bet_train::synthetic::SyntheticModel;

#[test]
#[ignore = "needs BET_GOWALLA=<dir with train.txt>"]
fn gowalla_sized_file_kernels_agree_for_every_user() {
    let dir = std::env::var("BET_GOWALLA").expect("set BET_GOWALLA to the Gowalla directory");
    // Relative paths are taken from the workspace root, where the command is typed.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(dir);
    let lists = read_lightgcn_lists(&dir.join("train.txt")).unwrap();
    let n_items = lists.iter().flatten().map(|&i| i as usize + 1).max().unwrap();
    let mut item_freq = vec![0u32; n_items];
    lists.iter().flatten().for_each(|&i| item_freq[i as usize] += 1);
    let user_freq: Vec<u32> = lists.iter().map(|l| l.len() as u32).collect();
    let m = SyntheticModel::budgeted(&user_freq, &item_freq, 128, Decimal::parse("0.1").unwrap(), 9).unwrap();
    let bytes = AlignedBytes::new(&m.to_bytes(ValueDtype::F16, "gowalla-sized").unwrap());
    let portable = {
        let mut p = Model::new(bytes.as_bytes()).unwrap();
        p.set_kernel(Kernel::Portable).unwrap();
        p
    };
    let fast = Model::new(bytes.as_bytes()).unwrap();
    assert_eq!(
        fast.summary().budget.unwrap().stored,
        m.user_widths.iter().chain(&m.item_widths).map(|&w| w as u64).sum::<u64>()
    );
    let (mut a, mut b) = ([Scored::EMPTY; 20], [Scored::EMPTY; 20]);
    for (u, seen) in lists.iter().enumerate() {
        let f = Filter { exclude: Some(ItemSet::Sorted(seen)), allow: None };
        let na = portable.top_k(u as u32, 20, &f, &mut a).unwrap();
        let nb = fast.top_k(u as u32, 20, &f, &mut b).unwrap();
        assert_eq!(a[..na], b[..nb], "user {u}");
        assert!(a[..na].iter().all(|s| seen.binary_search(&s.index).is_err()));
    }
}
