//! `bet inspect` and `bet verify`: what a file holds, and the size-budget gate for CI.
//!
//! [`Inspection`] is the versioned JSON report (`schema: "bet-inspect/1"`); [`verify`] returns a
//! [`Verdict`] whose exit code is 0 (valid and within limits), 1 (valid, over a limit) or
//! 2 (unreadable or corrupt).

use std::path::Path;

use bet_format::{AlignedBytes, BetFile, Values};
use serde::Serialize;

/// Schema name of the inspect JSON; bumped on any incompatible change.
pub const INSPECT_SCHEMA: &str = "bet-inspect/1";

/// One section-table entry in a report.
#[derive(Debug, Serialize)]
pub struct SectionReport {
    /// Kind name (or `unknown-<code>`).
    pub kind: String,
    /// Dtype name (or the raw code).
    pub dtype: String,
    /// Whether the REQUIRED flag is set.
    pub required: bool,
    /// Payload offset.
    pub offset: u64,
    /// Payload bytes.
    pub bytes: u64,
    /// Stored CRC-32C, hex.
    pub crc32c: String,
}

/// Width histogram of one table: `counts[w]` rows of width `w`.
#[derive(Debug, Serialize)]
pub struct WidthHistogram {
    /// Rows.
    pub rows: u32,
    /// Stored values.
    pub values: u64,
    /// Smallest width.
    pub min: u32,
    /// Largest width.
    pub max: u32,
    /// Mean width.
    pub mean: f64,
    /// `counts[w]` for `w` in `0..=vector_width`.
    pub counts: Vec<u64>,
}

/// The budget as stored and as counted.
#[derive(Debug, Serialize)]
pub struct BudgetReport {
    /// Kept fraction, exact decimal text.
    pub keep: String,
    /// Integer limit.
    pub limit: u64,
    /// Embedding values stored (counted from the structure).
    pub stored: u64,
    /// `stored / limit`.
    pub used: f64,
}

/// Trainer-measured quality at k = 5, 10, 20.
#[derive(Debug, Serialize)]
pub struct QualityReport {
    /// Recall@5, @10, @20.
    pub recall: [f32; 3],
    /// NDCG@5, @10, @20.
    pub ndcg: [f32; 3],
}

/// Provenance fields.
#[derive(Debug, Serialize)]
pub struct ProvenanceReport {
    /// Dataset name.
    pub dataset: String,
    /// Dataset SHA-256, hex.
    pub dataset_sha256: String,
    /// Split protocol.
    pub split: String,
    /// Seed.
    pub seed: u64,
    /// Threads.
    pub threads: u32,
    /// Trainer version.
    pub trainer_version: String,
    /// Git commit.
    pub git_commit: String,
    /// Validation quality recorded by the writer (`bet search`: measured on the file by bet-runtime).
    pub validation: Option<QualityReport>,
    /// Test quality recorded by the writer (`bet search`: measured on the file by bet-runtime).
    pub test: Option<QualityReport>,
}

/// Everything `bet inspect` reports.
#[derive(Debug, Serialize)]
pub struct Inspection {
    /// Always [`INSPECT_SCHEMA`].
    pub schema: &'static str,
    /// The file.
    pub path: String,
    /// File length.
    pub file_bytes: u64,
    /// `major.minor`.
    pub format_version: String,
    /// Model kind.
    pub model: &'static str,
    /// Mask placement.
    pub placement: &'static str,
    /// Budget dimension.
    pub d_max: u32,
    /// Vector width.
    pub vector_width: u32,
    /// Users.
    pub n_users: u32,
    /// Items.
    pub n_items: u32,
    /// Embedding value dtype.
    pub value_dtype: &'static str,
    /// Embedding values (from the structure).
    pub embedding_values: u64,
    /// All parameters (embedding values + dense weights).
    pub parameters: u64,
    /// Budget, if any.
    pub budget: Option<BudgetReport>,
    /// User widths.
    pub user_widths: WidthHistogram,
    /// Item widths.
    pub item_widths: WidthHistogram,
    /// Sections.
    pub sections: Vec<SectionReport>,
    /// `"ok"` or the checksum error.
    pub checksums: String,
    /// `"finite"` or the value error.
    pub values: String,
    /// Whether external-id maps are present (users, items).
    pub external_ids: [bool; 2],
    /// The propagation graph of a LightGCN `input` file (`null` otherwise).
    pub graph: Option<GraphReport>,
    /// Provenance.
    pub provenance: ProvenanceReport,
}

/// The graph an `input` file's ego rows are propagated over when it is loaded.
#[derive(Clone, Debug, Serialize)]
pub struct GraphReport {
    /// Propagation layers.
    pub layers: u32,
    /// Training edges (user–item pairs).
    pub edges: u64,
    /// Memory the runtime allocates for the final vectors: `(n_users + n_items) · d_max · 4`.
    pub propagated_bytes: u64,
}

fn histogram(t: &bet_format::RaggedTable<'_>, vector_width: u32) -> WidthHistogram {
    let mut counts = vec![0u64; vector_width as usize + 1];
    t.width_histogram(&mut counts);
    let rows = t.rows();
    let min = counts.iter().position(|&c| c > 0).unwrap_or(0) as u32;
    let max = counts.iter().rposition(|&c| c > 0).unwrap_or(0) as u32;
    let values = t.stored_values();
    WidthHistogram {
        rows,
        values,
        min,
        max,
        mean: if rows == 0 { 0.0 } else { values as f64 / f64::from(rows) },
        counts,
    }
}

fn quality(q: Option<bet_format::Quality>) -> Option<QualityReport> {
    q.map(|q| QualityReport { recall: q.recall, ndcg: q.ndcg })
}

/// Reads and validates a file, then reports on it (checksums and values included).
pub fn inspect(path: &Path) -> Result<Inspection, FileProblem> {
    let bytes = AlignedBytes::read_file(path).map_err(|e| FileProblem::Unreadable(e.to_string()))?;
    let file = BetFile::new_checked(bytes.as_bytes()).map_err(FileProblem::Corrupt)?;
    let s = file.summary();
    let meta = file.metadata().map_err(FileProblem::Corrupt)?;
    let p = meta.provenance;
    let sections = file
        .sections()
        .map(|e| SectionReport {
            kind: e.kind.map_or_else(|| format!("unknown-{}", e.kind_code), |k| k.name().to_string()),
            dtype: bet_format::Dtype::from_code(e.dtype_code)
                .map_or_else(|| format!("code-{}", e.dtype_code), |d| d.to_string()),
            required: e.flags & bet_format::layout::FLAG_REQUIRED != 0,
            offset: e.offset,
            bytes: e.len,
            crc32c: format!("{:08x}", e.crc),
        })
        .collect();
    let value_dtype = match file.items().values() {
        Values::F32(_) => "f32",
        Values::F16(_) => "f16",
    };
    Ok(Inspection {
        schema: INSPECT_SCHEMA,
        path: path.display().to_string(),
        file_bytes: bytes.as_bytes().len() as u64,
        format_version: format!("{}.{}", bet_format::layout::MAJOR_VERSION, s.minor_version),
        model: s.model.name(),
        placement: s.placement.name(),
        d_max: s.d_max,
        vector_width: s.vector_width,
        n_users: s.n_users,
        n_items: s.n_items,
        value_dtype,
        embedding_values: file.embedding_values(),
        parameters: file.parameter_count(),
        budget: s.budget.map(|b| BudgetReport {
            keep: b.keep.to_string(),
            limit: b.limit,
            stored: b.stored,
            used: if b.limit == 0 { 0.0 } else { b.stored as f64 / b.limit as f64 },
        }),
        user_widths: histogram(&file.users(), s.vector_width),
        item_widths: histogram(&file.items(), s.vector_width),
        sections,
        checksums: file.verify_checksums().map_or_else(|e| e.to_string(), |()| "ok".into()),
        values: file.validate_values().map_or_else(|e| e.to_string(), |()| "finite".into()),
        external_ids: [file.user_ids().is_some(), file.item_ids().is_some()],
        // Both are `Some` exactly when the file carries a graph (an `input` file).
        graph: file.graph().zip(file.propagated_bytes()).map(|(g, propagated_bytes)| GraphReport {
            layers: g.layers,
            edges: g.edges() as u64,
            propagated_bytes,
        }),
        provenance: ProvenanceReport {
            dataset: p.dataset.into(),
            dataset_sha256: p.dataset_sha256.iter().map(|b| format!("{b:02x}")).collect(),
            split: p.split.into(),
            seed: p.seed,
            threads: p.threads,
            trainer_version: p.trainer_version.into(),
            git_commit: p.git_commit.into(),
            validation: quality(p.validation),
            test: quality(p.test),
        },
    })
}

/// Why a file could not be inspected or verified.
#[derive(Debug)]
pub enum FileProblem {
    /// The file could not be read.
    Unreadable(String),
    /// The file is not a valid `.bet` file.
    Corrupt(bet_format::Error),
}

impl std::fmt::Display for FileProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileProblem::Unreadable(e) => write!(f, "unreadable: {e}"),
            FileProblem::Corrupt(e) => write!(f, "corrupt: {e}"),
        }
    }
}

/// Compact bucket labels for the human-readable histogram: 0, 1, 2-3, 4-7, ...
fn buckets(counts: &[u64]) -> Vec<(String, u64)> {
    let mut out = vec![];
    let mut lo = 0usize;
    let mut hi = 0usize;
    while lo < counts.len() {
        let end = hi.min(counts.len() - 1);
        let n: u64 = counts[lo..=end].iter().sum();
        let label = if lo == end { format!("{lo}") } else { format!("{lo}-{end}") };
        out.push((label, n));
        lo = end + 1;
        hi = (lo * 2).saturating_sub(1).max(lo);
    }
    out
}

impl Inspection {
    /// The human-readable report.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        let _ = writeln!(
            o,
            "{}: .bet {}, {} bytes, {} sections",
            self.path,
            self.format_version,
            self.file_bytes,
            self.sections.len()
        );
        let _ = writeln!(
            o,
            "model      {} (placement {}), d_max {}, vector width {}, values {}",
            self.model, self.placement, self.d_max, self.vector_width, self.value_dtype
        );
        let _ = writeln!(o, "entities   {} users, {} items", self.n_users, self.n_items);
        match &self.budget {
            Some(b) => {
                let _ = writeln!(
                    o,
                    "budget     keep {} -> limit {} values; stored {} ({:.2}% of the limit)",
                    b.keep,
                    b.limit,
                    b.stored,
                    100.0 * b.used
                );
            }
            None => {
                let _ = writeln!(o, "budget     none");
            }
        }
        let _ = writeln!(
            o,
            "parameters {} embedding values + {} dense = {}",
            self.embedding_values,
            self.parameters - self.embedding_values,
            self.parameters
        );
        for (name, h) in [("users", &self.user_widths), ("items", &self.item_widths)] {
            let _ = writeln!(o, "widths     {name}: min {}, mean {:.2}, max {}", h.min, h.mean, h.max);
            let line: Vec<String> =
                buckets(&h.counts).into_iter().filter(|(_, n)| *n > 0).map(|(l, n)| format!("{l}:{n}")).collect();
            let _ = writeln!(o, "           {}", line.join("  "));
        }
        let _ = writeln!(o, "sections   {:<18} {:>5} {:>10} {:>12}  crc32c", "kind", "dtype", "offset", "bytes");
        for s in &self.sections {
            let _ = writeln!(
                o,
                "           {:<18} {:>5} {:>10} {:>12}  {}{}",
                s.kind,
                s.dtype,
                s.offset,
                s.bytes,
                s.crc32c,
                if s.required { "" } else { "  (optional)" }
            );
        }
        if let Some(g) = &self.graph {
            let _ = writeln!(
                o,
                "graph      {} layers over {} training edges: the runtime propagates the ego rows at load ({:.1} MB)",
                g.layers,
                g.edges,
                g.propagated_bytes as f64 / 1e6
            );
        }
        let _ = writeln!(o, "checksums  {}", self.checksums);
        let _ = writeln!(o, "values     {}", self.values);
        let p = &self.provenance;
        let _ = writeln!(
            o,
            "provenance dataset {} (sha256 {}), split {}, seed {}, threads {}, by {} {}",
            p.dataset,
            &p.dataset_sha256[..16],
            p.split,
            p.seed,
            p.threads,
            p.trainer_version,
            if p.git_commit.is_empty() { "(no commit)" } else { &p.git_commit }
        );
        for (name, q) in [("validation", &p.validation), ("test", &p.test)] {
            if let Some(q) = q {
                let _ = writeln!(
                    o,
                    "quality    {name} (recorded at export, measured on this file by bet-runtime): Recall@5/10/20 {:.4}/{:.4}/{:.4}  NDCG@5/10/20 {:.4}/{:.4}/{:.4}",
                    q.recall[0], q.recall[1], q.recall[2], q.ndcg[0], q.ndcg[1], q.ndcg[2]
                );
            }
        }
        o
    }
}

/// Size limits for [`verify`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Limits {
    /// Most parameters allowed (embedding values + dense weights).
    pub max_params: Option<u64>,
    /// Most file bytes allowed.
    pub max_bytes: Option<u64>,
    /// The file must be scoreable in place, with no heap: an `input`-placement file, whose ego
    /// rows the runtime propagates into allocated memory, is over this limit.
    pub no_heap: bool,
}

/// The outcome of [`verify`], with its exit code and its one line.
#[derive(Debug)]
pub struct Verdict {
    /// 0 valid and within limits, 1 over a limit, 2 unreadable or corrupt.
    pub exit_code: u8,
    /// The line to print.
    pub line: String,
}

/// Verifies structure, checksums and values, then the limits.
pub fn verify(path: &Path, limits: Limits) -> Verdict {
    let shown = path.display();
    let corrupt = |why: String| Verdict { exit_code: 2, line: format!("error: {shown}: {why}") };
    let bytes = match AlignedBytes::read_file(path) {
        Ok(b) => b,
        Err(e) => return corrupt(format!("unreadable: {e}")),
    };
    let file = match BetFile::new_checked(bytes.as_bytes()) {
        Ok(f) => f,
        Err(e) => return corrupt(format!("corrupt: {e}")),
    };
    if let Err(e) = file.verify_checksums() {
        return corrupt(format!("corrupt: {e}"));
    }
    if let Err(e) = file.validate_values() {
        return corrupt(format!("corrupt: {e}"));
    }
    let params = file.parameter_count();
    let size = bytes.as_bytes().len() as u64;
    let mut failures = vec![];
    if let Some(max) = limits.max_params
        && params > max
    {
        failures.push(format!("parameters {params} exceed --max-params {max} by {}", params - max));
    }
    if let Some(max) = limits.max_bytes
        && size > max
    {
        failures.push(format!("file size {size} bytes exceeds --max-bytes {max} by {}", size - max));
    }
    // What an `input` file's runtime allocates at load: the dense final vectors (spec §7.5).
    let load = file.propagated_bytes();
    if let (true, Some(load)) = (limits.no_heap, load) {
        failures.push(format!(
            "--no-heap: an input-placement file needs {load} bytes of heap at load for its propagated vectors"
        ));
    }
    if !failures.is_empty() {
        return Verdict { exit_code: 1, line: format!("over limit: {shown}: {}", failures.join("; ")) };
    }
    let budget = file
        .summary()
        .budget
        .map_or(String::new(), |b| format!(", budget {}/{} embedding values (keep {})", b.stored, b.limit, b.keep));
    let show = |v: Option<u64>| v.map_or("none".to_string(), |v| v.to_string());
    let heap = load.map_or(String::new(), |b| format!("; input placement: {b} bytes of heap at load"));
    Verdict {
        exit_code: 0,
        line: format!(
            "ok: {shown}: {params} parameters (limit {}), {size} bytes (limit {}){budget}; checksums ok, values finite{heap}",
            show(limits.max_params),
            show(limits.max_bytes)
        ),
    }
}
