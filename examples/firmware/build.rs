//! Computes, with the host runtime, the exact answers the firmware must reproduce, and writes
//! them to `OUT_DIR/expected.rs`. `BET_FIRMWARE_WRONG_EXPECTATION=1` flips one bit of one expected
//! score, so CI can show that the on-target check fails when it should.

use std::fmt::Write as _;
use std::path::PathBuf;

use bet_runtime::{Filter, ItemSet, Model, Scored, UserVector};

/// The model the firmware embeds (also `include_bytes!`-ed by `src/main.rs`).
const MODEL: &str = "../../bet-format/tests/golden/lightgcn_f16x8_blocked.bet";

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    std::fs::copy("memory.x", out.join("memory.x")).unwrap();
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");
    println!("cargo:rerun-if-changed={MODEL}");
    println!("cargo:rerun-if-env-changed=BET_FIRMWARE_WRONG_EXPECTATION");

    let model = Model::read(std::path::Path::new(MODEL)).expect("golden model");
    let mut src = String::new();
    let exclude: [u32; 4] = [1, 5, 16, 40];
    let mut cases = vec![];
    for user in 0..model.summary().n_users {
        let mut top = [Scored::EMPTY; 10];
        let f = Filter { exclude: Some(ItemSet::Sorted(&exclude)), allow: None };
        let n = model.top_k(user, 10, &f, &mut top).unwrap();
        cases.push((format!("Query::User({user})"), top[..n].to_vec()));
    }
    let vector: Vec<f32> = (0..11).map(|t| (t as f32 - 5.0) / 7.0).collect();
    let mut top = [Scored::EMPTY; 10];
    let n = model.top_k_for_vector(UserVector::Dot(&vector), 10, &Filter::NONE, &mut top).unwrap();
    cases.push(("Query::Vector".into(), top[..n].to_vec()));
    if std::env::var("BET_FIRMWARE_WRONG_EXPECTATION").is_ok_and(|v| v == "1") {
        let s = &mut cases[2].1[3];
        s.score = f32::from_bits(s.score.to_bits() ^ 1);
    }
    writeln!(src, "pub const EXCLUDE: [u32; {}] = {:?};", exclude.len(), exclude).unwrap();
    writeln!(src, "pub const VECTOR: [f32; {}] = [", vector.len()).unwrap();
    for v in &vector {
        writeln!(src, "    f32::from_bits({:#010x}),", v.to_bits()).unwrap();
    }
    writeln!(src, "];").unwrap();
    writeln!(src, "pub const CASES: &[(Query, &[(u32, u32)])] = &[").unwrap();
    for (q, top) in &cases {
        let pairs: Vec<String> = top.iter().map(|s| format!("({}, {:#010x})", s.index, s.score.to_bits())).collect();
        writeln!(src, "    ({q}, &[{}]),", pairs.join(", ")).unwrap();
    }
    writeln!(src, "];").unwrap();
    std::fs::write(out.join("expected.rs"), src).unwrap();
}
