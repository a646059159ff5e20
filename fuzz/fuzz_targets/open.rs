//! The one entry point, `BetFile::new_checked`, on arbitrary bytes (as given, and copied to an
//! aligned buffer). After `Ok`, every accessor, checksum verification, value validation and the
//! runtime's scoring and top-k (k = 0, 1 and n + 5, with filters) must return without panicking;
//! an `input` file is queried before propagation (typed refusals) and, when small enough for the
//! fuzzer's memory limit, after it.
#![no_main]

use bet_format::{AlignedBytes, BetFile};
use bet_runtime::{Filter, ItemSet, Model, Scored, UserVector};
use libfuzzer_sys::fuzz_target;

fn exercise(file: &BetFile<'_>) {
    let s = file.summary();
    let _ = file.metadata();
    let _ = file.verify_checksums();
    let _ = file.validate_values();
    let _ = (file.embedding_values(), file.parameter_count(), file.ncf_dense());
    for e in file.sections() {
        let _ = e.kind.map(|k| k.name());
    }
    let mut hist = [0u64; 64];
    for t in [Some(file.users()), Some(file.items()), file.user_gmf(), file.item_gmf()].into_iter().flatten() {
        t.width_histogram(&mut hist);
        for i in 0..t.rows().min(64) + 2 {
            let _ = (t.width(i), t.row(i).map(|r| r.get(0)), t.storage_row(i), t.index_of_storage_row(i));
        }
    }
    if let Some(g) = file.graph() {
        let _ = (g.edges(), g.items_of(0), g.items_of(s.n_users), g.items_of(u32::MAX));
    }
    for ids in [file.user_ids(), file.item_ids()].into_iter().flatten() {
        for i in 0..(ids.len() as u32).min(16) + 1 {
            if let Some(id) = ids.external_id(i) {
                let _ = ids.index_of(id);
            }
        }
        let _ = ids.index_of(b"no such id");
    }
    let _ = s;
}

/// Floats of propagated vectors the fuzzer allows itself (its memory limit is 2 GB).
const MAX_PROPAGATED_FLOATS: u64 = 1 << 22;

fn run_model(bytes: &[u8]) {
    let Ok(mut model) = Model::new(bytes) else { return };
    query(&model);
    let s = model.summary();
    let floats = (u64::from(s.n_users) + u64::from(s.n_items)) * u64::from(s.vector_width);
    if model.needs_propagation() && floats <= MAX_PROPAGATED_FLOATS && model.propagate().is_ok() {
        query(&model);
    }
}

fn query(model: &Model<&[u8]>) {
    let s = model.summary();
    let n = s.n_items as usize;
    let mut out = vec![Scored::EMPTY; n + 5];
    let mut scores = vec![0.0f32; n];
    let exclude: Vec<u32> = (0..s.n_items).step_by(3).collect();
    let mut allow_bits = vec![0u64; n.div_ceil(64)];
    for i in (0..n).step_by(2) {
        allow_bits[i / 64] |= 1 << (i % 64);
    }
    let filters = [
        Filter::NONE,
        Filter { exclude: Some(ItemSet::Sorted(&exclude)), allow: None },
        Filter { exclude: Some(ItemSet::Sorted(&exclude)), allow: Some(ItemSet::Bits(&allow_bits)) },
    ];
    for user in (0..s.n_users.min(4)).chain([s.n_users]) {
        for k in [0, 1, n + 5] {
            for f in &filters {
                let _ = model.top_k(user, k, f, &mut out);
            }
        }
        let _ = model.scores(user, &mut scores);
        let _ = model.score(user, 0);
    }
    let v = [0.5f32; 9];
    let _ = model.top_k_for_vector(UserVector::Dot(&v), 3, &Filter::NONE, &mut out);
    let _ = model.top_k_for_vector(UserVector::Ncf { mlp: &v, gmf: &v[..4] }, 3, &Filter::NONE, &mut out);
    let users: Vec<u32> = (0..s.n_users.min(3)).collect();
    let mut counts = vec![0usize; users.len()];
    let mut batch = vec![Scored::EMPTY; users.len() * (n + 1)];
    let _ = model.top_k_batch(&users, n + 1, |_, _| Filter::NONE, &mut batch, &mut counts);
}

fuzz_target!(|data: &[u8]| {
    if let Ok(file) = BetFile::new_checked(data) {
        exercise(&file);
    }
    let aligned = AlignedBytes::new(data);
    if let Ok(file) = BetFile::new_checked(aligned.as_bytes()) {
        exercise(&file);
        run_model(aligned.as_bytes());
    }
});
