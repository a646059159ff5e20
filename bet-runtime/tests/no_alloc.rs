//! No heap allocation on the hot path: a counting global allocator (per thread, so parallel
//! tests do not disturb each other) around opening, single, batch and caller-vector top-k over
//! every user with exclusions, for every model kind. A positive control shows that a `Vec`
//! allocation is counted.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bet_format::{AlignedBytes, ModelKind, StorageOrder, ValueDtype, ValueLayout};
use bet_runtime::{Filter, ItemSet, Model, Scored, UserVector};
use common::Owned;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during<R>(f: impl FnOnce() -> R) -> (usize, R) {
    let before = ALLOCATIONS.with(|c| c.get());
    let r = f();
    (ALLOCATIONS.with(|c| c.get()) - before, r)
}

#[test]
fn the_counter_sees_a_vec() {
    let (n, v) = allocations_during(|| vec![1u8; 100]);
    assert!(n >= 1, "positive control: a Vec allocation must be counted");
    assert_eq!(v.len(), 100);
}

#[test]
fn hot_paths_never_allocate() {
    for (kind, dtype) in [
        (ModelKind::Mf, ValueDtype::F32),
        (ModelKind::LightGcn, ValueDtype::F16),
        (ModelKind::Ngcf, ValueDtype::F16),
        (ModelKind::Ncf, ValueDtype::F16),
    ] {
        let owned = Owned::random(kind, 32, 40, 700, 10, dtype, StorageOrder::WidthDescending)
            .with_layout(ValueLayout::Blocked8);
        let bytes = AlignedBytes::new(&owned.bytes());
        let n_items = 700u32;
        // Every user's "training items": a sorted list per user, prepared before counting.
        let exclusions: Vec<Vec<u32>> =
            (0..40u32).map(|u| (0..n_items).filter(|i| (i * 7 + u) % 5 == 0).collect()).collect();
        let users: Vec<u32> = (0..40).collect();
        let mut out = vec![Scored::EMPTY; 20];
        let mut batch = vec![Scored::EMPTY; 40 * 20];
        let mut counts = vec![0usize; 40];
        let mut scores = vec![0.0f32; n_items as usize];
        let vector: Vec<f32> = (0..20).map(|t| t as f32 / 20.0).collect();

        let (allocs, written) = allocations_during(|| {
            let model = Model::new(bytes.as_bytes()).unwrap();
            model.verify_checksums().unwrap();
            let mut written = 0;
            for &u in &users {
                let filter = Filter { exclude: Some(ItemSet::Sorted(&exclusions[u as usize])), allow: None };
                written += model.top_k(u, 20, &filter, &mut out).unwrap();
                let v = match kind {
                    ModelKind::Ncf => UserVector::Ncf { mlp: &vector, gmf: &vector[..10] },
                    _ => UserVector::Dot(&vector),
                };
                written += model.top_k_for_vector(v, 20, &filter, &mut out).unwrap();
                model.scores(u, &mut scores).unwrap();
                written += model.score(u, u).unwrap().is_finite() as usize;
            }
            model
                .top_k_batch(
                    &users,
                    20,
                    |i, _| Filter { exclude: Some(ItemSet::Sorted(&exclusions[i])), allow: None },
                    &mut batch,
                    &mut counts,
                )
                .unwrap();
            written + counts.iter().sum::<usize>()
        });
        assert_eq!(allocs, 0, "{kind:?}: {allocs} heap allocations on the hot path");
        assert_eq!(written, 40 * 20 * 3 + 40, "{kind:?}: the counted work did not run fully");
    }
}

#[test]
fn ranking_a_propagated_input_file_never_allocates() {
    // Propagation allocates once (the final vectors), before counting; ranking after it, one user
    // or a batch (several users per pass over the items), does not.
    let file =
        bet_format::testing::random_input_file(30, 50, 24, 3, 11, ValueDtype::F32, ValueLayout::RowMajor).unwrap();
    let bytes = AlignedBytes::new(&file.bytes);
    let mut model = Model::new(bytes.as_bytes()).unwrap();
    model.propagate().unwrap();
    let exclusions: Vec<Vec<u32>> = (0..30u32).map(|u| (0..50).filter(|i| (i + u) % 4 == 0).collect()).collect();
    let users: Vec<u32> = (0..30).collect();
    let (mut out, mut batch, mut counts) = (vec![Scored::EMPTY; 10], vec![Scored::EMPTY; 30 * 10], vec![0usize; 30]);
    let (allocs, written) = allocations_during(|| {
        let mut written = 0;
        for &u in &users {
            let filter = Filter { exclude: Some(ItemSet::Sorted(&exclusions[u as usize])), allow: None };
            written += model.top_k(u, 10, &filter, &mut out).unwrap();
        }
        let filter_of = |i: usize, _| Filter { exclude: Some(ItemSet::Sorted(&exclusions[i])), allow: None };
        model.top_k_batch(&users, 10, filter_of, &mut batch, &mut counts).unwrap();
        written + counts.iter().sum::<usize>()
    });
    assert_eq!(allocs, 0, "{allocs} heap allocations ranking propagated vectors");
    assert_eq!(written, 30 * 10 * 2, "the counted work did not run fully");
}
