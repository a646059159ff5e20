//! One interface over every backbone, so that training, fine-tuning, checkpoints and evaluation
//! are written once.
//!
//! A [`Backbone`] owns its parameters as a list of flat `f32` tensors (the order is its own and
//! fixed), its graph and its reusable buffers. One call, [`Backbone::step`], computes the BPR
//! loss of a batch and its exact gradient and applies one Adam update per tensor; the training
//! loop ([`crate::train`]) never looks inside.
//!
//! Key types: [`Backbone`], [`LightGcnBackbone`] (LightGCN and MF, the 0-layer case).
//!
//! ```
//! use bet_train::backbone::{Backbone, LightGcnBackbone};
//! use bet_train::lightgcn::Placement;
//! # let data = bet_train::data::Dataset::from_pairs("tiny", 3, 4, &[(0, 0), (0, 1), (1, 1), (1, 2), (2, 3), (2, 0)]);
//! # let split = bet_train::split::Split::new(&data, bet_train::split::Protocol::Given, 1).unwrap();
//! let model = LightGcnBackbone::new(&split, 8, 3, Placement::Output, vec![4; 7], 1);
//! assert_eq!(model.tensor_shapes(), vec![7 * 8]); // one ego table, (users + items) × d
//! ```

use crate::eval::{DenseScorer, Scorer};
use crate::graph::Adjacency;
use crate::lightgcn::{LightGcn, Placement, Workspace};
use crate::ncf::{NCF_REG, Ncf, NcfWorkspace};
use crate::ngcf::{NGCF_REG, Ngcf, NgcfAdjacency, NgcfWorkspace};
use crate::split::Split;
use crate::train::{Adam, normal_init};

/// A trainable recommender.
pub trait Backbone: Send + Sync {
    /// Its parameter tensors, in a fixed order.
    fn tensors(&self) -> Vec<&[f32]>;
    /// The same, mutable (restoring a checkpoint or a best state).
    fn tensors_mut(&mut self) -> Vec<&mut [f32]>;
    /// Lengths of the tensors.
    fn tensor_shapes(&self) -> Vec<usize> {
        self.tensors().iter().map(|t| t.len()).collect()
    }
    /// The regularisation weight of this backbone in the reference.
    fn default_reg(&self) -> f32;
    /// BPR loss of `batch` (user, positive item, negative item), its gradient, and one Adam
    /// update per tensor at learning rate `lr`. Returns the loss before the update.
    fn step(&mut self, batch: &[(u32, u32, u32)], reg: f32, adam: &mut [Adam], lr: f32) -> f32;
    /// A scorer over all items for evaluation (final vectors or the NCF function).
    fn scorer(&self) -> Box<dyn Scorer + '_>;
    /// Width of every entity, users then items.
    fn widths(&self) -> &[u32];
    /// Replaces the widths (fine-tuning a pretrained full-width model to an action's widths).
    fn set_widths(&mut self, widths: Vec<u32>);
    /// What a `.bet` file stores of this model: each entity's first `width` values of what the
    /// device scores with. Refused for the `input` placement, whose final vectors are dense.
    fn export_tables(&self) -> crate::Result<ExportTables>;
    /// Whether [`Backbone::export_tables`] would succeed, without computing the tables: the
    /// error it would return (the `input` placement of a propagating model), else `Ok`.
    fn check_exportable(&self) -> crate::Result<()> {
        Ok(())
    }
}

/// The stored part of a model, in index order (see [`crate::export`]).
#[derive(Clone, Debug, PartialEq)]
pub struct ExportTables {
    /// Scoring function.
    pub model: bet_format::ModelKind,
    /// Mask placement.
    pub placement: bet_format::MaskPlacement,
    /// Budget dimension.
    pub d_max: u32,
    /// User widths.
    pub user_widths: Vec<u32>,
    /// User rows concatenated (MLP rows for NCF).
    pub user_values: Vec<f32>,
    /// Item widths.
    pub item_widths: Vec<u32>,
    /// Item rows concatenated (MLP rows for NCF).
    pub item_values: Vec<f32>,
    /// NCF: user GMF rows, item GMF rows, dense weights (W1, b1, w_out, b_out).
    pub ncf: Option<(Vec<f32>, Vec<f32>, Vec<f32>)>,
    /// LightGCN with the `input` placement: the rows above are the ego rows, and this is the
    /// graph a runtime propagates them over (`docs/format.md` §4.2, §7.5).
    pub graph: Option<ExportGraph>,
}

/// The training graph of an `input`-placement LightGCN export: user-side CSR in index order.
#[derive(Clone, Debug, PartialEq)]
pub struct ExportGraph {
    /// Propagation layers.
    pub layers: u32,
    /// `n_users + 1` offsets into `items`.
    pub user_offsets: Vec<u32>,
    /// Each user's training items, increasing.
    pub items: Vec<u32>,
}

/// Cuts rows of a `rows × width` table to their widths, concatenated.
fn cut_rows(table: &[f32], width: usize, widths: &[u32]) -> Vec<f32> {
    let mut out = Vec::with_capacity(widths.iter().map(|&w| w as usize).sum());
    for (row, &w) in table.chunks(width.max(1)).zip(widths) {
        out.extend_from_slice(&row[..(w as usize).min(width)]);
    }
    out
}

fn refuse_input(placement: Placement) -> crate::Result<bet_format::MaskPlacement> {
    match placement {
        Placement::Input => Err(crate::Error::Settings(
            "NGCF's input placement is not exportable: its propagated vectors are dense, so storing them \
             would break the budget, and its propagation has weights the format does not carry; train \
             with --placement output or both"
                .into(),
        )),
        Placement::Output => Ok(bet_format::MaskPlacement::Output),
        Placement::Both => Ok(bet_format::MaskPlacement::Both),
    }
}

/// Final vectors (`nodes × width`) as export tables of a dot-product model.
fn dot_tables(
    model: bet_format::ModelKind,
    placement: bet_format::MaskPlacement,
    d_max: usize,
    width: usize,
    n_users: usize,
    finals: &[f32],
    widths: &[u32],
) -> ExportTables {
    let (users, items) = finals.split_at(n_users * width);
    let clamp = |w: &[u32]| w.iter().map(|&x| x.min(width as u32)).collect::<Vec<u32>>();
    let (uw, iw) = (clamp(&widths[..n_users]), clamp(&widths[n_users..]));
    ExportTables {
        model,
        placement,
        d_max: d_max as u32,
        user_values: cut_rows(users, width, &uw),
        item_values: cut_rows(items, width, &iw),
        user_widths: uw,
        item_widths: iw,
        ncf: None,
        graph: None,
    }
}

/// LightGCN (or MF with 0 layers) with its graph and buffers.
pub struct LightGcnBackbone {
    /// The model.
    pub model: LightGcn<f32>,
    adj: Adjacency,
    workspace: Workspace<f32>,
}

impl LightGcnBackbone {
    /// A fresh model: N(0, 0.01²) ego table (the reference's init), widths users then items.
    pub fn new(split: &Split, d: usize, layers: usize, placement: Placement, widths: Vec<u32>, seed: u64) -> Self {
        let n = split.n_users + split.n_items;
        let model = LightGcn {
            n_users: split.n_users,
            n_items: split.n_items,
            d,
            layers,
            placement,
            widths,
            ego: normal_init(n * d, 0.01, seed),
        };
        LightGcnBackbone { model, adj: Adjacency::lightgcn(split), workspace: Workspace::default() }
    }

    /// The final vectors as a dense scorer (owned).
    pub fn dense_scorer(&self) -> DenseScorer {
        let f = self.model.forward(&self.adj);
        let (d, nu, ni) = (self.model.d, self.model.n_users, self.model.n_items);
        let users = ndarray::Array2::from_shape_vec((nu, d), f.output[..nu * d].to_vec())
            .unwrap_or_else(|_| ndarray::Array2::zeros((nu, d)));
        let items = ndarray::Array2::from_shape_vec((ni, d), f.output[nu * d..].to_vec())
            .unwrap_or_else(|_| ndarray::Array2::zeros((ni, d)));
        DenseScorer::new(users, items)
    }

    /// The graph.
    pub fn adjacency(&self) -> &Adjacency {
        &self.adj
    }
}

/// The width accessors of every backbone: each keeps its widths as `model.widths`.
macro_rules! width_accessors {
    () => {
        fn widths(&self) -> &[u32] {
            &self.model.widths
        }
        fn set_widths(&mut self, widths: Vec<u32>) {
            self.model.widths = widths;
        }
    };
}

/// The parameter accessors of the backbones that keep a list of flat tensors as `model.tensors`.
macro_rules! tensor_list_accessors {
    () => {
        fn tensors(&self) -> Vec<&[f32]> {
            self.model.tensors.iter().map(|t| t.as_slice()).collect()
        }
        fn tensors_mut(&mut self) -> Vec<&mut [f32]> {
            self.model.tensors.iter_mut().map(|t| t.as_mut_slice()).collect()
        }
    };
}

impl Backbone for LightGcnBackbone {
    fn tensors(&self) -> Vec<&[f32]> {
        vec![&self.model.ego]
    }
    fn tensors_mut(&mut self) -> Vec<&mut [f32]> {
        vec![&mut self.model.ego]
    }
    fn default_reg(&self) -> f32 {
        1e-4
    }
    fn step(&mut self, batch: &[(u32, u32, u32)], reg: f32, adam: &mut [Adam], lr: f32) -> f32 {
        let loss = self.model.loss_and_grad_into(&self.adj, batch, reg, &mut self.workspace);
        adam[0].step(&mut self.model.ego, &self.workspace.grad, lr);
        loss
    }
    fn scorer(&self) -> Box<dyn Scorer + '_> {
        Box::new(self.dense_scorer())
    }
    width_accessors!();
    fn export_tables(&self) -> crate::Result<ExportTables> {
        let m = &self.model;
        if m.layers > 0 && m.placement == Placement::Input {
            // The paper's placement: the stored rows are the ego rows (the budget counts them),
            // and the file carries the graph the runtime propagates them over.
            let mut tables = dot_tables(
                bet_format::ModelKind::LightGcn,
                bet_format::MaskPlacement::Input,
                m.d,
                m.d,
                m.n_users,
                &m.ego,
                &m.widths,
            );
            let (user_offsets, items) = self.adj.user_items(m.n_users);
            let layers = u32::try_from(m.layers).map_err(|_| crate::Error::Settings("too many layers".into()))?;
            tables.graph = Some(ExportGraph { layers, user_offsets, items });
            return Ok(tables);
        }
        let (kind, placement) = if m.layers == 0 {
            (bet_format::ModelKind::Mf, bet_format::MaskPlacement::NotApplicable)
        } else {
            (bet_format::ModelKind::LightGcn, refuse_input(m.placement)?)
        };
        let finals = m.forward(&self.adj).output;
        Ok(dot_tables(kind, placement, m.d, m.d, m.n_users, &finals, &m.widths))
    }
}

fn adam_all(tensors: &mut [Vec<f32>], grads: &[Vec<f32>], adam: &mut [Adam], lr: f32) {
    for ((t, g), a) in tensors.iter_mut().zip(grads).zip(adam) {
        a.step(t, g, lr);
    }
}

/// NGCF with its row-normalised graph.
pub struct NgcfBackbone {
    /// The model.
    pub model: Ngcf<f32>,
    adj: NgcfAdjacency,
    workspace: NgcfWorkspace<f32>,
}

impl Backbone for NgcfBackbone {
    tensor_list_accessors!();
    fn default_reg(&self) -> f32 {
        NGCF_REG
    }
    fn step(&mut self, batch: &[(u32, u32, u32)], reg: f32, adam: &mut [Adam], lr: f32) -> f32 {
        let loss = self.model.loss_and_grad_into(&self.adj, batch, reg, &mut self.workspace);
        adam_all(&mut self.model.tensors, &self.workspace.grads, adam, lr);
        loss
    }
    fn scorer(&self) -> Box<dyn Scorer + '_> {
        Box::new(self.model.scorer(&self.adj))
    }
    width_accessors!();
    fn check_exportable(&self) -> crate::Result<()> {
        refuse_input(self.model.placement).map(drop)
    }
    fn export_tables(&self) -> crate::Result<ExportTables> {
        let m = &self.model;
        let placement = refuse_input(m.placement)?;
        let finals = m.forward(&self.adj);
        Ok(dot_tables(bet_format::ModelKind::Ngcf, placement, m.d, 4 * m.d, m.n_users, &finals, &m.widths))
    }
}

/// NCF (NeuMF) with the score function of `docs/format.md` §7.3.
pub struct NcfBackbone {
    /// The model.
    pub model: Ncf<f32>,
    /// Buffers kept across steps.
    pub workspace: NcfWorkspace<f32>,
}

impl Backbone for NcfBackbone {
    tensor_list_accessors!();
    fn default_reg(&self) -> f32 {
        NCF_REG
    }
    fn step(&mut self, batch: &[(u32, u32, u32)], reg: f32, adam: &mut [Adam], lr: f32) -> f32 {
        let loss = self.model.loss_and_grad_into(batch, reg, &mut self.workspace);
        adam_all(&mut self.model.tensors, &self.workspace.grads, adam, lr);
        loss
    }
    fn scorer(&self) -> Box<dyn Scorer + '_> {
        Box::new(self.model.scorer())
    }
    width_accessors!();
    fn export_tables(&self) -> crate::Result<ExportTables> {
        let m = &self.model;
        let d = m.d;
        let nu = m.n_users;
        let clamp = |w: &[u32]| w.iter().map(|&x| x.min(d as u32)).collect::<Vec<u32>>();
        let (uw, iw) = (clamp(&m.widths[..nu]), clamp(&m.widths[nu..]));
        let t = &m.tensors;
        let dense: Vec<f32> = t[4].iter().chain(&t[5]).chain(&t[6]).chain(&t[7]).copied().collect();
        Ok(ExportTables {
            model: bet_format::ModelKind::Ncf,
            placement: bet_format::MaskPlacement::NotApplicable,
            d_max: d as u32,
            user_values: cut_rows(&t[0], d, &uw),
            item_values: cut_rows(&t[1], d, &iw),
            ncf: Some((cut_rows(&t[2], d, &uw), cut_rows(&t[3], d, &iw), dense)),
            user_widths: uw,
            item_widths: iw,
            graph: None,
        })
    }
}

/// The backbones by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackboneKind {
    /// Matrix factorisation (LightGCN with 0 layers).
    Mf,
    /// LightGCN, 3 layers.
    LightGcn,
    /// NGCF, 3 layers; final vectors 4·d wide, layer-interleaved.
    Ngcf,
    /// NCF (NeuMF): GMF and MLP tables sharing each entity's width, one hidden layer.
    Ncf,
}

impl BackboneKind {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            BackboneKind::Mf => "mf",
            BackboneKind::LightGcn => "lightgcn",
            BackboneKind::Ngcf => "ngcf",
            BackboneKind::Ncf => "ncf",
        }
    }

    /// Whether the width mask has a placement (the propagating models).
    pub fn has_placement(self) -> bool {
        matches!(self, BackboneKind::LightGcn | BackboneKind::Ngcf)
    }

    /// Whether the full-width model (every width `d_max`) differs between placements. Not for
    /// LightGCN: cutting to `d_max` cuts nothing. Yes for NGCF: its final vector is `4·d_max`
    /// wide and `output`/`both` keep `d_max` of its values even at full width. What a cached
    /// pretraining is keyed on follows from this (`search`).
    pub fn full_width_depends_on_placement(self) -> bool {
        self == BackboneKind::Ngcf
    }

    /// The widest `d_max` a `.bet` file of this kind can hold: [`bet_format::MAX_VECTOR_WIDTH`]
    /// for the dot-product models, [`bet_format::MAX_NCF_WIDTH`] for NCF (its dense weights and
    /// the runtime's per-query buffers grow with it).
    pub fn max_d_max(self) -> u32 {
        if self == BackboneKind::Ncf { bet_format::MAX_NCF_WIDTH } else { bet_format::MAX_VECTOR_WIDTH }
    }

    /// Refuses a `d_max` of 0 or above [`BackboneKind::max_d_max`] before anything is allocated
    /// or trained: such a model could never be shipped, and a huge one would only exhaust memory.
    pub fn check_d_max(self, d_max: u32) -> crate::Result<()> {
        if d_max == 0 || d_max > self.max_d_max() {
            return Err(crate::Error::Settings(format!(
                "--d-max {d_max}: {} takes 1 to {} (the widest row a .bet file holds for it)",
                self.name(),
                self.max_d_max()
            )));
        }
        Ok(())
    }

    /// Embedding tables that count against the budget per entity width (NCF has two).
    pub fn tables(self) -> u32 {
        if self == BackboneKind::Ncf { 2 } else { 1 }
    }

    /// A fresh model of this kind over `split` with `widths` (users then items). `placement` is
    /// `Some` exactly for the propagating models ([`BackboneKind::has_placement`]); anything
    /// else is refused, so that no report can name a placement a model does not have.
    pub fn build(
        self,
        split: &Split,
        d: usize,
        placement: Option<Placement>,
        widths: Vec<u32>,
        seed: u64,
    ) -> crate::Result<Box<dyn Backbone>> {
        let placement = match (self.has_placement(), placement) {
            (true, Some(p)) => p,
            // MF is LightGCN without layers: its one table is the ego table, cut to the widths.
            (false, None) => Placement::Input,
            (true, None) => {
                return Err(crate::Error::Settings(format!("{} needs a mask placement", self.name())));
            }
            (false, Some(p)) => return Err(self.has_no_placement(p)),
        };
        Ok(match self {
            BackboneKind::Mf => Box::new(LightGcnBackbone::new(split, d, 0, placement, widths, seed)),
            BackboneKind::LightGcn => Box::new(LightGcnBackbone::new(split, d, 3, placement, widths, seed)),
            BackboneKind::Ngcf => Box::new(NgcfBackbone {
                model: Ngcf::new(split.n_users, split.n_items, d, widths, seed, placement),
                adj: NgcfAdjacency::from_split(split),
                workspace: NgcfWorkspace::default(),
            }),
            BackboneKind::Ncf => Box::new(NcfBackbone {
                model: Ncf::new(split.n_users, split.n_items, d, widths, seed),
                workspace: NcfWorkspace::default(),
            }),
        })
    }

    /// The placement this kind takes when none is asked for: the best exportable one on
    /// validation where it was measured (docs/training.md, "Placements"). LightGCN: `input`,
    /// the paper's (exportable since format 1.1; ahead of `both` with BET's widths in five of
    /// five seeds of the sample and with equal widths in seven of ten; devices without a heap
    /// take `both`, whose stored rows are final). NGCF: `output` (five seeds of the sample, ahead in all five: `both` would cut
    /// the ego rows its layer transforms read). `None` for MF and NCF, which have no placement.
    pub fn default_placement(self) -> Option<Placement> {
        match self {
            BackboneKind::LightGcn => Some(Placement::Input),
            BackboneKind::Ngcf => Some(Placement::Output),
            BackboneKind::Mf | BackboneKind::Ncf => None,
        }
    }

    /// The placement this kind takes when `requested` is asked for: `None` for MF and NCF,
    /// `requested` or [`BackboneKind::default_placement`] for LightGCN and NGCF. Asking MF or
    /// NCF for a placement is an error, not silently ignored.
    pub fn placement(self, requested: Option<Placement>) -> crate::Result<Option<Placement>> {
        match (self.has_placement(), requested) {
            (true, p) => Ok(p.or(self.default_placement())),
            (false, None) => Ok(None),
            (false, Some(p)) => Err(self.has_no_placement(p)),
        }
    }

    fn has_no_placement(self, asked: Placement) -> crate::Error {
        crate::Error::Settings(format!(
            "{} has no mask placement (got --placement {}); only lightgcn and ngcf take one",
            self.name(),
            asked.name()
        ))
    }
}
