//! Shared helpers: random models written with the format's writer, and a spec-literal reference
//! scorer (docs/format.md §7) written without the runtime's code.
#![allow(dead_code)]

use bet_format::testing::{hash_value, synthetic_provenance, values_for};
use bet_format::*;

pub struct Owned {
    pub model: ModelKind,
    pub d: u32,
    pub uw: Vec<u32>,
    pub iw: Vec<u32>,
    pub uv: Vec<f32>,
    pub iv: Vec<f32>,
    pub ug: Vec<f32>,
    pub ig: Vec<f32>,
    pub dense: Vec<f32>,
    pub dtype: ValueDtype,
    pub order: StorageOrder,
    pub layout: ValueLayout,
}

fn widths(seed: u64, n: usize, max: u32, skew: bool) -> Vec<u32> {
    (0..n as u64)
        .map(|i| {
            let r = (hash_value(seed, i) + 1.0) * 0.5;
            let w = if skew { (r * r * r * (max + 1) as f32) as u32 } else { (r * (max + 1) as f32) as u32 };
            // Every other seed draws from few widths, so that aligned groups of 8 share one.
            let w = if seed.is_multiple_of(2) { [1, max / 3 + 1, max / 2 + 1, max][(r * 3.99) as usize] } else { w };
            w.min(max)
        })
        .collect()
}

impl Owned {
    pub fn random(
        model: ModelKind,
        d: u32,
        n_users: usize,
        n_items: usize,
        seed: u64,
        dtype: ValueDtype,
        order: StorageOrder,
    ) -> Owned {
        let vw = if model == ModelKind::Ngcf { 4 * d } else { d };
        let uw = widths(seed, n_users, vw, false);
        let iw = widths(seed + 1, n_items, vw, true);
        let (uv, iv) = (values_for(&uw, seed + 2), values_for(&iw, seed + 3));
        let (ug, ig, dense) = if model == ModelKind::Ncf {
            let n = ncf_dense_len(d).unwrap() as u64;
            (
                values_for(&uw, seed + 4),
                values_for(&iw, seed + 5),
                (0..n).map(|i| hash_value(seed + 6, i) * 0.3).collect(),
            )
        } else {
            (vec![], vec![], vec![])
        };
        Owned { model, d, uw, iw, uv, iv, ug, ig, dense, dtype, order, layout: ValueLayout::RowMajor }
    }

    pub fn with_layout(mut self, layout: ValueLayout) -> Owned {
        self.layout = layout;
        self
    }

    pub fn bytes(&self) -> Vec<u8> {
        let placement = match self.model {
            ModelKind::LightGcn | ModelKind::Ngcf => MaskPlacement::Both,
            _ => MaskPlacement::NotApplicable,
        };
        ModelContents {
            model: self.model,
            placement,
            d_max: self.d,
            users: TableInput { widths: &self.uw, values: &self.uv },
            items: TableInput { widths: &self.iw, values: &self.iv },
            ncf: (self.model == ModelKind::Ncf).then_some(NcfInput {
                user_gmf: &self.ug,
                item_gmf: &self.ig,
                dense: &self.dense,
            }),
            keep: None,
            provenance: synthetic_provenance(),
            value_dtype: self.dtype,
            storage: self.order,
            value_layout: self.layout,
            user_ids: None,
            item_ids: None,
            graph: None,
        }
        .to_bytes()
        .unwrap()
    }

    fn stored(&self, x: f32) -> f32 {
        match self.dtype {
            ValueDtype::F32 => x,
            ValueDtype::F16 => half::f16::from_f32(x).to_f32(),
        }
    }

    fn row(&self, widths: &[u32], values: &[f32], i: usize) -> Vec<f32> {
        let start: usize = widths[..i].iter().map(|&w| w as usize).sum();
        values[start..start + widths[i] as usize].iter().map(|&x| self.stored(x)).collect()
    }

    pub fn user_row(&self, u: usize) -> Vec<f32> {
        self.row(&self.uw, &self.uv, u)
    }

    /// Spec §7 scores of every item for a user given by its rows.
    pub fn reference_scores_for(&self, um: &[f32], ug: &[f32]) -> Vec<f32> {
        (0..self.iw.len())
            .map(|i| {
                let im = self.row(&self.iw, &self.iv, i);
                if self.model != ModelKind::Ncf {
                    return spec_dot(um, &im);
                }
                let ig = self.row(&self.iw, &self.ig, i);
                let d = self.d as usize;
                let (w1, rest) = self.dense.split_at(2 * d * d);
                let (b1, rest) = rest.split_at(d);
                let (w_out, b_out) = rest.split_at(2 * d);
                let h: Vec<f32> = (0..d)
                    .map(|j| {
                        let row = &w1[j * 2 * d..(j + 1) * 2 * d];
                        let pre = (spec_dot(&row[..d], um) + spec_dot(&row[d..], &im)) + b1[j];
                        if pre > 0.0 { pre } else { 0.0 }
                    })
                    .collect();
                let g: Vec<f32> =
                    (0..d).map(|j| if j < ug.len().min(ig.len()) { ug[j] * ig[j] } else { 0.0 }).collect();
                (spec_dot(&w_out[..d], &h) + spec_dot(&w_out[d..], &g)) + b_out[0]
            })
            .collect()
    }

    pub fn reference_scores(&self, u: usize) -> Vec<f32> {
        let um = self.user_row(u);
        let ug = if self.model == ModelKind::Ncf { self.row(&self.uw, &self.ug, u) } else { vec![] };
        self.reference_scores_for(&um, &ug)
    }
}

/// docs/format.md §7.1, literally.
pub fn spec_dot(a: &[f32], b: &[f32]) -> f32 {
    let m = a.len().min(b.len());
    let mut acc = [0.0f32; 8];
    for t in 0..m {
        acc[t % 8] += a[t] * b[t];
    }
    let s: Vec<f32> = (0..4).map(|l| acc[l] + acc[l + 4]).collect();
    (s[0] + s[2]) + (s[1] + s[3])
}

/// Spec §7.4 ranking of all items by a full sort, then the first k passing `keep`.
pub fn reference_top_k(scores: &[f32], k: usize, keep: impl Fn(u32) -> bool) -> Vec<(u32, u32)> {
    let mut idx: Vec<u32> = (0..scores.len() as u32).filter(|&i| keep(i)).collect();
    idx.sort_by(|&a, &b| {
        let (x, y) = (scores[a as usize], scores[b as usize]);
        match (x.is_nan(), y.is_nan()) {
            (false, false) => y.partial_cmp(&x).unwrap().then(a.cmp(&b)),
            (false, true) => std::cmp::Ordering::Less,
            (true, false) => std::cmp::Ordering::Greater,
            (true, true) => a.cmp(&b),
        }
    });
    idx.truncate(k);
    idx.iter().map(|&i| (i, bits(scores[i as usize]))).collect()
}

pub fn bits(s: f32) -> u32 {
    if s.is_nan() { 0x7fc0_0000 } else { s.to_bits() }
}
