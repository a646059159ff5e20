//! [`Model`]: a validated file plus the precomputed run table, generic over its bytes.
#![forbid(unsafe_code)]

use bet_format::{BetFile, FileLayout, MAX_VECTOR_WIDTH, MaskPlacement, ModelKind, Row, Summary};

use crate::Error;
#[cfg(feature = "alloc")]
use crate::kernel::dot;
use crate::kernel::{Kernel, RunTable, Sink, canonical, dot_row, scan_items};
use crate::ncf::NcfUser;
use crate::topk::{Collector, Filter, ItemSet, Scored};

/// A user vector kept by the caller instead of a stored user row (e.g. a federated client that
/// trains its own row). Widths up to the model's vector width; zeros past the end.
#[derive(Clone, Copy, Debug)]
pub enum UserVector<'a> {
    /// For MF, LightGCN and NGCF.
    Dot(&'a [f32]),
    /// For NCF: the user's MLP and GMF rows.
    Ncf {
        /// MLP row.
        mlp: &'a [f32],
        /// GMF row.
        gmf: &'a [f32],
    },
}

/// Floats in a user-vector buffer: the widest vector plus 8 zeros for block kernels.
const USER_BUF: usize = MAX_VECTOR_WIDTH as usize + 8;

/// Widens `row` into the front of `buf` (the rest stays zero) and returns its width. The buffer
/// is declared by the caller and filled in place: returning a 4 KiB array by value would cost a
/// second copy of it on a device's stack.
fn fill_user(buf: &mut [f32; USER_BUF], row: Option<Row<'_>>) -> usize {
    let cap = MAX_VECTOR_WIDTH as usize;
    row.map_or(0, |r| r.widen_into(buf.get_mut(..cap).unwrap_or(&mut [])))
}

/// A validated `.bet` model over bytes of type `B` (`&'static [u8]`, `bet_format::AlignedBytes`,
/// an mmap, ...). Every method is free of panics, and of allocation except
/// `propagate`, which a LightGCN file with the `input` placement needs once
/// before it can be scored (feature `alloc`; spec §7.5).
pub struct Model<B> {
    bytes: B,
    layout: FileLayout,
    item_runs: RunTable,
    kernel: Kernel,
    #[cfg(feature = "alloc")]
    propagated: Option<crate::propagate::FinalVectors>,
}

impl<B: AsRef<[u8]>> core::fmt::Debug for Model<B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Model").field("summary", &self.layout.summary()).field("kernel", &self.kernel).finish()
    }
}

#[cfg(feature = "std")]
impl Model<bet_format::AlignedBytes> {
    /// Reads the file at `path` into aligned memory and validates it (the safe path; see
    /// [`Model::map`] for zero-copy).
    pub fn read(path: &std::path::Path) -> Result<Self, Error> {
        let bytes = bet_format::AlignedBytes::read_file(path).map_err(|e| Error::Io(e.kind()))?;
        Model::new(bytes)
    }
}

impl<B: AsRef<[u8]>> Model<B> {
    /// Validates `bytes` with [`BetFile::new_checked`] (no checksums, no value scan: see
    /// [`verify_checksums`](Self::verify_checksums) and [`validate_values`](Self::validate_values))
    /// and precomputes the item run table. O(rows); no allocation.
    pub fn new(bytes: B) -> Result<Self, Error> {
        let file = BetFile::new_checked(bytes.as_ref())?;
        let layout = file.layout();
        let item_runs = RunTable::build(file.items().row_ptr());
        Ok(Model {
            bytes,
            layout,
            item_runs,
            kernel: Kernel::detect(),
            #[cfg(feature = "alloc")]
            propagated: None,
        })
    }

    /// Whether this file stores ego rows and a graph (LightGCN, `input` placement) that have not
    /// been propagated yet: scoring it returns [`Error::NotPropagated`] until
    /// `propagate` runs.
    pub fn needs_propagation(&self) -> bool {
        self.summary().placement == MaskPlacement::Input && !self.is_propagated()
    }

    /// Frees the vectors `propagate` computed; an `input` file then needs propagation again.
    /// Everything else a model holds is borrowed or inline, so afterwards it owns no heap memory
    /// (the C API's `bet_close` relies on this).
    #[cfg(feature = "alloc")]
    pub fn release_propagated(&mut self) {
        self.propagated = None;
    }

    #[cfg(feature = "alloc")]
    fn is_propagated(&self) -> bool {
        self.propagated.is_some()
    }
    #[cfg(not(feature = "alloc"))]
    fn is_propagated(&self) -> bool {
        false
    }

    /// Propagates the ego rows of a LightGCN `input` file over its graph into final vectors held
    /// in memory (`(n_users + n_items) · d_max` floats; as much again plus the smaller side's
    /// rows while it runs), once; every later call, and every call on another kind of file, does
    /// nothing. O(layers · edges · d_max). See the module `propagate` docs in the crate source and spec §7.5.
    #[cfg(feature = "alloc")]
    pub fn propagate(&mut self) -> Result<(), Error> {
        if self.needs_propagation() {
            let vectors = crate::propagate::FinalVectors::compute(&self.file()?)?;
            self.propagated = Some(vectors);
        }
        Ok(())
    }

    /// Bytes of memory held by propagated vectors (0 unless `propagate` ran on
    /// an `input` file).
    pub fn propagated_bytes(&self) -> usize {
        #[cfg(feature = "alloc")]
        {
            self.propagated.as_ref().map_or(0, |p| p.bytes())
        }
        #[cfg(not(feature = "alloc"))]
        {
            0
        }
    }

    /// Refuses to score an `input` file whose vectors were not propagated: its stored rows are
    /// ego rows, and scoring them as final vectors would be a silently wrong answer.
    fn check_scoreable(&self) -> Result<(), Error> {
        if self.needs_propagation() { Err(Error::NotPropagated) } else { Ok(()) }
    }

    /// The propagated vectors of an `input` file, after `propagate`.
    #[cfg(feature = "alloc")]
    fn propagated(&self) -> Option<&crate::propagate::FinalVectors> {
        self.propagated.as_ref()
    }

    /// The validated file view (O(1): re-slices the bytes with the stored layout).
    pub fn file(&self) -> Result<BetFile<'_>, Error> {
        Ok(self.layout.attach(self.bytes.as_ref())?)
    }
    /// Counts, widths, model kind and budget.
    pub fn summary(&self) -> Summary {
        self.layout.summary()
    }
    /// Verifies every section's CRC-32C.
    pub fn verify_checksums(&self) -> Result<(), Error> {
        Ok(self.file()?.verify_checksums()?)
    }
    /// Rejects NaN and infinities in the stored values.
    pub fn validate_values(&self) -> Result<(), Error> {
        Ok(self.file()?.validate_values()?)
    }
    /// The kernel in use.
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }
    /// Chooses the kernel (results are identical; this is for tests and benchmarks).
    pub fn set_kernel(&mut self, kernel: Kernel) -> Result<(), Error> {
        if !kernel.is_supported() {
            return Err(Error::KernelUnsupported(kernel));
        }
        self.kernel = kernel;
        Ok(())
    }
    /// The bytes back.
    pub fn into_inner(self) -> B {
        self.bytes
    }

    fn check_user(&self, user: u32) -> Result<(), Error> {
        let n_users = self.summary().n_users;
        if user >= n_users {
            return Err(Error::UserOutOfRange { user, n_users });
        }
        Ok(())
    }

    /// The score of `(user, item)` (spec §7).
    pub fn score(&self, user: u32, item: u32) -> Result<f32, Error> {
        self.check_user(user)?;
        let n_items = self.summary().n_items;
        if item >= n_items {
            return Err(Error::ItemOutOfRange { item, n_items });
        }
        let file = self.file()?;
        if self.summary().model == ModelKind::Ncf {
            let ncf_user = self.ncf_user_of(&file, user)?;
            let (im, ig) = ncf_item_rows(&file, item);
            Ok(canonical(ncf_user.score(&ncf_dense(&file)?, im, ig)))
        } else {
            self.check_scoreable()?;
            #[cfg(feature = "alloc")]
            if let Some(p) = self.propagated() {
                return Ok(canonical(dot(p.user(user), p.item(item))));
            }
            let mut buf = [0.0f32; USER_BUF];
            let width = fill_user(&mut buf, file.users().row(user));
            let u = buf.get(..width).unwrap_or(&[]);
            Ok(canonical(file.items().row(item).map_or(0.0, |r| dot_row(u, r))))
        }
    }

    /// Every item's score for `user`, in index order, into `out[..n_items]`.
    pub fn scores(&self, user: u32, out: &mut [f32]) -> Result<(), Error> {
        self.check_user(user)?;
        let file = self.file()?;
        let n = self.summary().n_items as usize;
        let got = out.len();
        let out = out.get_mut(..n).ok_or(Error::OutputTooSmall { needed: n, got })?;
        if self.summary().model == ModelKind::Ncf {
            let ncf_user = self.ncf_user_of(&file, user)?;
            let dense = ncf_dense(&file)?;
            for (i, slot) in out.iter_mut().enumerate() {
                let (im, ig) = ncf_item_rows(&file, i as u32);
                *slot = canonical(ncf_user.score(&dense, im, ig));
            }
        } else {
            self.check_scoreable()?;
            #[cfg(feature = "alloc")]
            if let Some(p) = self.propagated() {
                let u = p.user(user);
                for (i, slot) in out.iter_mut().enumerate() {
                    *slot = canonical(dot(u, p.item(i as u32)));
                }
                return Ok(());
            }
            let mut buf = [0.0f32; USER_BUF];
            let width = fill_user(&mut buf, file.users().row(user));
            let items = file.items();
            let u = buf.get(..width).unwrap_or(&[]);
            scan_items(self.kernel, &self.item_runs, &items, u, &buf, &mut Sink::All { out: &mut *out });
            for s in out.iter_mut() {
                *s = canonical(*s);
            }
        }
        Ok(())
    }

    /// The best `k` items for `user` that pass `filter`, best first, into `out`; returns how many
    /// were written (fewer than `k` when fewer items qualify). `out` must hold `min(k, n_items)`.
    pub fn top_k(&self, user: u32, k: usize, filter: &Filter<'_>, out: &mut [Scored]) -> Result<usize, Error> {
        self.check_user(user)?;
        if self.summary().model == ModelKind::Ncf {
            self.top_k_ncf(user, k, filter, out)
        } else {
            self.top_k_dot(user, k, filter, out)
        }
    }

    // The two paths are kept out of line so that a call's stack holds one path's buffers, not
    // both (devices have a few KiB of stack; see the firmware's measured worst case).
    #[inline(never)]
    fn top_k_dot(&self, user: u32, k: usize, filter: &Filter<'_>, out: &mut [Scored]) -> Result<usize, Error> {
        self.check_scoreable()?;
        #[cfg(feature = "alloc")]
        if let Some(p) = self.propagated() {
            return self.rank_propagated(p, p.user(user), k, filter, out);
        }
        let file = self.file()?;
        let mut buf = [0.0f32; USER_BUF];
        let width = fill_user(&mut buf, file.users().row(user));
        self.rank_dot(&file, &buf, width, k, filter, out)
    }

    #[inline(never)]
    fn top_k_ncf(&self, user: u32, k: usize, filter: &Filter<'_>, out: &mut [Scored]) -> Result<usize, Error> {
        let file = self.file()?;
        let ncf_user = self.ncf_user_of(&file, user)?;
        self.rank_ncf(&file, &ncf_user, k, filter, out)
    }

    /// [`top_k`](Self::top_k) for a caller-supplied user vector of any width up to the vector
    /// width (for NCF, up to `d_max` for each row).
    pub fn top_k_for_vector(
        &self,
        user: UserVector<'_>,
        k: usize,
        filter: &Filter<'_>,
        out: &mut [Scored],
    ) -> Result<usize, Error> {
        let s = self.summary();
        let file = self.file()?;
        match (user, s.model) {
            (UserVector::Dot(v), m) if m != ModelKind::Ncf => {
                if v.len() > s.vector_width as usize {
                    return Err(Error::VectorTooWide { width: v.len(), max: s.vector_width });
                }
                // The caller's vector stands for a final user vector; items are propagated.
                self.check_scoreable()?;
                #[cfg(feature = "alloc")]
                if let Some(p) = self.propagated() {
                    return self.rank_propagated(p, v, k, filter, out);
                }
                self.rank_dot_vector(&file, v, k, filter, out)
            }
            (UserVector::Ncf { mlp, gmf }, ModelKind::Ncf) => {
                let widest = mlp.len().max(gmf.len());
                if widest > s.d_max as usize {
                    return Err(Error::VectorTooWide { width: widest, max: s.d_max });
                }
                self.rank_ncf_vector(&file, mlp, gmf, k, filter, out)
            }
            (_, m) => Err(Error::WrongVectorKind { model: m.name() }),
        }
    }

    /// [`top_k`](Self::top_k) for each of `users`. User `i`'s results go to
    /// `out[i*kk .. (i+1)*kk]` with `kk = min(k, n_items)`, and their count to `counts[i]`;
    /// `filter_for(i, user)` gives each user's filter (e.g. their training items).
    pub fn top_k_batch<'f>(
        &self,
        users: &[u32],
        k: usize,
        mut filter_for: impl FnMut(usize, u32) -> Filter<'f>,
        out: &mut [Scored],
        counts: &mut [usize],
    ) -> Result<(), Error> {
        let kk = k.min(self.summary().n_items as usize);
        let needed = users.len().checked_mul(kk).ok_or(Error::OutputTooSmall { needed: usize::MAX, got: out.len() })?;
        if out.len() < needed {
            return Err(Error::OutputTooSmall { needed, got: out.len() });
        }
        if counts.len() < users.len() {
            return Err(Error::OutputTooSmall { needed: users.len(), got: counts.len() });
        }
        #[cfg(feature = "alloc")]
        if let Some(p) = self.propagated()
            && kk > 0
            && p.width() > 0
            && self.summary().model != ModelKind::Ncf
        {
            return self.top_k_batch_propagated(p, users, kk, filter_for, out, counts);
        }
        for (i, (&user, count)) in users.iter().zip(counts.iter_mut()).enumerate() {
            let filter = filter_for(i, user);
            // In range: `users.len() * kk` was checked above. With `kk == 0` every user still
            // gets its checks and a count of 0.
            let chunk = out.get_mut(i * kk..(i + 1) * kk).unwrap_or(&mut []);
            *count = self.top_k(user, kk, &filter, chunk)?;
        }
        Ok(())
    }

    /// [`top_k_batch`](Self::top_k_batch) over propagated vectors: users in passes of
    /// [`USERS_PER_PASS`](crate::kernel::USERS_PER_PASS), each item row read once per pass. The
    /// answers, and the error (the first in user order, after the users before it are written),
    /// are the one-user path's: a pass with an invalid user, or a user with an allow-list (which
    /// the one-user path walks instead of scanning), is ranked one user at a time.
    #[cfg(feature = "alloc")]
    fn top_k_batch_propagated<'f>(
        &self,
        p: &crate::propagate::FinalVectors,
        users: &[u32],
        kk: usize,
        mut filter_for: impl FnMut(usize, u32) -> Filter<'f>,
        out: &mut [Scored],
        counts: &mut [usize],
    ) -> Result<(), Error> {
        use crate::kernel::{PassUser, USERS_PER_PASS, rank_dense_users};
        let n_items = self.summary().n_items;
        let avx2 = if self.kernel == Kernel::Avx2F16c { crate::audited::avx2_token() } else { None };
        let passes = users.chunks(USERS_PER_PASS).zip(out.chunks_mut(kk.saturating_mul(USERS_PER_PASS)));
        for (pass_no, ((pass, pass_out), pass_counts)) in passes.zip(counts.chunks_mut(USERS_PER_PASS)).enumerate() {
            let first = pass_no * USERS_PER_PASS;
            let mut filters = [Filter::NONE; USERS_PER_PASS];
            for ((j, &user), filter) in pass.iter().enumerate().zip(filters.iter_mut()) {
                *filter = filter_for(first + j, user);
            }
            let together = pass.iter().zip(&filters).all(|(&user, filter)| {
                self.check_user(user).is_ok()
                    && filter.check(n_items).is_ok()
                    && !matches!(filter.allow, Some(ItemSet::Sorted(_)))
            });
            if !together {
                for (((&user, filter), chunk), count) in
                    pass.iter().zip(&filters).zip(pass_out.chunks_mut(kk)).zip(pass_counts.iter_mut())
                {
                    *count = self.top_k(user, kk, filter, chunk)?;
                }
                continue;
            }
            let mut chunks = pass_out.chunks_mut(kk);
            let mut ranked: [Option<PassUser<'_, '_, '_>>; USERS_PER_PASS] = core::array::from_fn(|j| {
                let (user, chunk) = (pass.get(j)?, chunks.next()?);
                let filter = filters.get(j).copied().unwrap_or(Filter::NONE);
                Some(PassUser { vector: p.user(*user), filter, collector: Collector::new(chunk) })
            });
            match avx2 {
                Some(token) => crate::audited::rank_dense_users_avx2(token, p.items(), p.width(), &mut ranked),
                None => rank_dense_users(p.items(), p.width(), &mut ranked),
            }
            for (user, count) in ranked.into_iter().zip(pass_counts.iter_mut()) {
                if let Some(user) = user {
                    *count = user.collector.finish();
                }
            }
        }
        Ok(())
    }

    #[inline(never)]
    fn rank_dot_vector(
        &self,
        file: &BetFile<'_>,
        v: &[f32],
        k: usize,
        filter: &Filter<'_>,
        out: &mut [Scored],
    ) -> Result<usize, Error> {
        let mut buf = [0.0f32; USER_BUF];
        let width = v.len().min(MAX_VECTOR_WIDTH as usize);
        if let (Some(dst), Some(src)) = (buf.get_mut(..width), v.get(..width)) {
            dst.copy_from_slice(src);
        }
        self.rank_dot(file, &buf, width, k, filter, out)
    }

    #[inline(never)]
    fn rank_ncf_vector(
        &self,
        file: &BetFile<'_>,
        mlp: &[f32],
        gmf: &[f32],
        k: usize,
        filter: &Filter<'_>,
        out: &mut [Scored],
    ) -> Result<usize, Error> {
        let dense = ncf_dense(file)?;
        let ncf_user = NcfUser::from_slices(&dense, mlp, gmf);
        self.rank_ncf(file, &ncf_user, k, filter, out)
    }

    fn ncf_user_of(&self, file: &BetFile<'_>, user: u32) -> Result<NcfUser, Error> {
        let dense = ncf_dense(file)?;
        let mlp = file.users().row(user);
        let gmf = file.user_gmf().and_then(|t| t.row(user));
        Ok(NcfUser::new(&dense, mlp, gmf))
    }

    fn collector_slot<'o>(&self, k: usize, out: &'o mut [Scored]) -> Result<&'o mut [Scored], Error> {
        let kk = k.min(self.summary().n_items as usize);
        let got = out.len();
        out.get_mut(..kk).ok_or(Error::OutputTooSmall { needed: kk, got })
    }

    /// Ranks by `dot(user, final item vector)` over the propagated vectors.
    #[cfg(feature = "alloc")]
    fn rank_propagated(
        &self,
        p: &crate::propagate::FinalVectors,
        user: &[f32],
        k: usize,
        filter: &Filter<'_>,
        out: &mut [Scored],
    ) -> Result<usize, Error> {
        let n_items = self.summary().n_items;
        filter.check(n_items)?;
        let mut collector = Collector::new(self.collector_slot(k, out)?);
        let mut offer = |index: u32| {
            let score = canonical(dot(user, p.item(index)));
            if collector.may_enter(score) {
                collector.offer(Scored { index, score });
            }
        };
        match filter.allow {
            // A short allow-list is walked directly, as for stored rows.
            Some(ItemSet::Sorted(list)) => {
                let exclude = Filter { exclude: filter.exclude, allow: None };
                list.iter().filter(|&&i| exclude.admits(i)).for_each(|&i| offer(i));
            }
            _ => (0..n_items).filter(|&i| filter.admits(i)).for_each(offer),
        }
        Ok(collector.finish())
    }

    /// `padded` holds the user vector in its first `width` floats, then zeros.
    fn rank_dot(
        &self,
        file: &BetFile<'_>,
        padded: &[f32; USER_BUF],
        width: usize,
        k: usize,
        filter: &Filter<'_>,
        out: &mut [Scored],
    ) -> Result<usize, Error> {
        let n_items = self.summary().n_items;
        filter.check(n_items)?;
        let mut collector = Collector::new(self.collector_slot(k, out)?);
        let items = file.items();
        let u = padded.get(..width).unwrap_or(&[]);
        match filter.allow {
            // A short allow-list (items in stock) is walked directly instead of scanning all.
            Some(ItemSet::Sorted(list)) => {
                let exclude = Filter { exclude: filter.exclude, allow: None };
                for &index in list {
                    let score = items.row(index).map_or(0.0, |r| dot_row(u, r));
                    if collector.may_enter(score) && exclude.admits(index) {
                        collector.offer(Scored { index, score });
                    }
                }
            }
            _ => scan_items(
                self.kernel,
                &self.item_runs,
                &items,
                u,
                padded,
                &mut Sink::TopK { collector: &mut collector, filter },
            ),
        }
        Ok(collector.finish())
    }

    fn rank_ncf(
        &self,
        file: &BetFile<'_>,
        user: &NcfUser,
        k: usize,
        filter: &Filter<'_>,
        out: &mut [Scored],
    ) -> Result<usize, Error> {
        let n_items = self.summary().n_items;
        filter.check(n_items)?;
        let dense = ncf_dense(file)?;
        let mut collector = Collector::new(self.collector_slot(k, out)?);
        for index in 0..n_items {
            if !filter.admits(index) {
                continue;
            }
            let (im, ig) = ncf_item_rows(file, index);
            let score = user.score(&dense, im, ig);
            if collector.may_enter(score) {
                collector.offer(Scored { index, score });
            }
        }
        Ok(collector.finish())
    }
}

fn ncf_dense<'a>(file: &BetFile<'a>) -> Result<bet_format::NcfDense<'a>, Error> {
    file.ncf_dense().ok_or(Error::Format(bet_format::Error::MissingSection { kind: bet_format::SectionKind::NcfDense }))
}

fn ncf_item_rows<'a>(file: &BetFile<'a>, item: u32) -> (Option<Row<'a>>, Option<Row<'a>>) {
    (file.items().row(item), file.item_gmf().and_then(|t| t.row(item)))
}
