//! Computes, with the host runtime, the exact answers the firmware must reproduce for every
//! golden file, and writes them (with the files, as aligned statics) to `OUT_DIR/expected.rs`.
//! `BET_FIRMWARE_WRONG_EXPECTATION=1` flips one bit of one expected score of the first file, and
//! `=input` one of the `input` file's (checked only with feature `heap`), so CI can show that the
//! on-target check fails when it should.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use bet_runtime::{Filter, ItemSet, Model, ModelKind, Scored, UserVector};

const GOLDEN: &str = "../../bet-format/tests/golden";

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    std::fs::copy("memory.x", out.join("memory.x")).unwrap();
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");
    println!("cargo:rerun-if-changed={GOLDEN}");
    println!("cargo:rerun-if-env-changed=BET_FIRMWARE_WRONG_EXPECTATION");
    let wrong = std::env::var("BET_FIRMWARE_WRONG_EXPECTATION").unwrap_or_default();

    let mut paths: Vec<PathBuf> = std::fs::read_dir(GOLDEN).unwrap().map(|e| e.unwrap().path()).collect();
    paths.sort();
    let vector: Vec<f32> = (0..11).map(|t| (t as f32 - 5.0) / 8.0).collect();
    let mut src = String::new();
    let mut table = String::from("pub static FILES: &[Golden] = &[\n");
    for (f, path) in paths.iter().enumerate() {
        let mut model = Model::read(path).expect("golden model");
        // An `input` file needs a heap to propagate: without one the firmware must refuse its
        // queries; with one (feature `heap`) it must answer as the host does after propagating.
        let needs_heap = model.needs_propagation();
        model.propagate().expect("propagation on the host");
        let s = model.summary();
        let abs = std::fs::canonicalize(path).unwrap();
        let len = std::fs::metadata(path).unwrap().len();
        writeln!(src, "static FILE_{f}: Aligned<{len}> = Aligned(*include_bytes!({:?}));", abs.display().to_string())
            .unwrap();
        let exclude: Vec<u32> = [1u32, 5].into_iter().filter(|&i| i < s.n_items).collect();
        let name = Path::new(path).file_name().unwrap().to_string_lossy().to_string();
        let filter = Filter { exclude: Some(ItemSet::Sorted(&exclude)), allow: None };
        let mut cases = vec![];
        for user in 0..s.n_users.min(6) {
            let mut top = [Scored::EMPTY; 10];
            let n = model.top_k(user, 10, &filter, &mut top).unwrap();
            cases.push((format!("Query::User({user})"), top[..n].to_vec()));
        }
        let mut top = [Scored::EMPTY; 10];
        let (query, n) = if s.model == ModelKind::Ncf {
            let (m, g) = ((s.d_max as usize).min(11), (s.d_max as usize / 2).min(11));
            let v = UserVector::Ncf { mlp: &vector[..m], gmf: &vector[..g] };
            (format!("Query::Ncf({m}, {g})"), model.top_k_for_vector(v, 10, &Filter::NONE, &mut top).unwrap())
        } else {
            let m = (s.vector_width as usize).min(11);
            (
                format!("Query::Vector({m})"),
                model.top_k_for_vector(UserVector::Dot(&vector[..m]), 10, &Filter::NONE, &mut top).unwrap(),
            )
        };
        cases.push((query, top[..n].to_vec()));
        if (wrong == "1" && f == 0) || (wrong == "input" && needs_heap) {
            let s = &mut cases[0].1[0];
            s.score = f32::from_bits(s.score.to_bits() ^ 1);
        }
        writeln!(
            table,
            "    Golden {{ name: {name:?}, bytes: &FILE_{f}.0, exclude: &{exclude:?}, needs_heap: {needs_heap}, cases: &["
        )
        .unwrap();
        for (q, top) in &cases {
            let pairs: Vec<String> =
                top.iter().map(|s| format!("({}, {:#010x})", s.index, s.score.to_bits())).collect();
            writeln!(table, "        ({q}, &[{}]),", pairs.join(", ")).unwrap();
        }
        writeln!(table, "    ] }},").unwrap();
    }
    table.push_str("];\n");
    writeln!(src, "pub const VECTOR: [f32; {}] = [", vector.len()).unwrap();
    for v in &vector {
        writeln!(src, "    f32::from_bits({:#010x}),", v.to_bits()).unwrap();
    }
    writeln!(src, "];").unwrap();
    src.push_str(&table);
    std::fs::write(out.join("expected.rs"), src).unwrap();
}
