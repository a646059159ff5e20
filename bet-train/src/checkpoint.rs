//! Checkpoints: the complete state of a training run, written atomically, read back with checks.
//!
//! A run killed at any moment (SIGKILL included, and in the middle of writing a checkpoint)
//! resumes from its last checkpoint and ends with the same model, byte for byte, as a run that
//! was never interrupted. Three things make that true:
//! - the state is complete: step, parameters, both Adam moments and their step count, the best
//!   state kept for early stopping, the validation history and the loss sum of the open round;
//! - nothing else carries over between steps: each step's batch is drawn from a generator seeded
//!   by `(seed, step)` (see [`crate::train::Sampler`]), so no generator state needs saving;
//! - the file is written by [`bet_format::write_atomic`] (temporary file, fsync, rename, fsync of
//!   the directory), so a reader sees the old checkpoint or the new one, never a torn one.
//!
//! Where checkpoints live: `--checkpoint-dir`, by default the user's cache directory
//! ([`default_dir`]), never the work tree. A run's file is named by a fingerprint of everything
//! that determines its result (data hash, split, model, widths, settings, seed), so a changed
//! setting starts a new run instead of resuming a different one.
//!
//! # Layout (little-endian)
//! `BETCKPT1`, `u64` header length, the header as JSON ([`CheckpointHeader`]), then four tensor
//! groups (parameters, Adam first moments, Adam second moments, best state), each a `u32` count
//! and per tensor a `u64` length and that many `f32`; last, the SHA-256 of everything before it.
//!
//! ```
//! use bet_train::checkpoint::{CheckpointHeader, TrainState};
//! let state = TrainState {
//!     header: CheckpointHeader { fingerprint: "abc".into(), ..Default::default() },
//!     params: vec![vec![1.0, 2.0]],
//!     adam_m: vec![vec![0.0, 0.0]],
//!     adam_v: vec![vec![0.0, 0.0]],
//!     best: vec![vec![1.0, 2.0]],
//! };
//! let bytes = state.to_bytes();
//! assert_eq!(TrainState::from_bytes(&bytes, "abc").unwrap(), state);
//! assert!(TrainState::from_bytes(&bytes, "other").is_err()); // another run's file
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

const MAGIC: &[u8; 8] = b"BETCKPT1";
/// Largest header accepted (the header is small; a bigger length means a damaged file).
const MAX_HEADER_BYTES: u64 = 64 << 20;

/// The scalar part of a training state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CheckpointHeader {
    /// Fingerprint of the run (what determines its result).
    pub fingerprint: String,
    /// Steps done.
    pub step: u64,
    /// Adam's step count.
    pub adam_t: i32,
    /// Loss summed over the steps of the open round.
    pub loss_sum: f64,
    /// Best validation eq. 13 so far (`-inf` before the first round, stored as `None`).
    pub best_score: Option<f64>,
    /// Step of the best state.
    pub best_step: u64,
    /// Rounds since the best one.
    pub since_best: u64,
    /// Validation after each round: step and the six metrics (Recall@5/10/20, NDCG@5/10/20).
    pub rounds: Vec<(u64, [f64; 6], usize)>,
    /// Mean loss of each finished round.
    pub round_losses: Vec<f64>,
    /// The run ended (early stopping or the step cap); the parameters are the final model.
    pub finished: bool,
    /// Wall seconds spent on this run up to this state, summed over every process that worked
    /// on it (a resumed run reports its whole cost, not only the time since the restart).
    /// Absent in checkpoints written before it existed.
    #[serde(default)]
    pub seconds: f64,
    /// The parameters are the last step's state, not the best state restored over it. True in
    /// every checkpoint but the final one of a run that stopped early; a run that reached its
    /// step cap keeps its last state (and the best one in its own group), so a longer cap can
    /// continue it ([`ShorterRun`]). False in checkpoints written before it existed, whose
    /// final state at the cap had the best state restored over the last one.
    #[serde(default)]
    pub last_state: bool,
}

/// A complete training state.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainState {
    /// Scalars.
    pub header: CheckpointHeader,
    /// Parameter tensors, in the backbone's order.
    pub params: Vec<Vec<f32>>,
    /// Adam first moments.
    pub adam_m: Vec<Vec<f32>>,
    /// Adam second moments.
    pub adam_v: Vec<Vec<f32>>,
    /// The best state (early stopping), or empty when none is kept.
    pub best: Vec<Vec<f32>>,
}

impl TrainState {
    /// The file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let header = serde_json::to_vec(&self.header).unwrap_or_default();
        let floats: usize = [&self.params, &self.adam_m, &self.adam_v, &self.best]
            .iter()
            .map(|g| g.iter().map(|t| t.len()).sum::<usize>())
            .sum();
        let mut out = Vec::with_capacity(header.len() + floats * 4 + 128);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(header.len() as u64).to_le_bytes());
        out.extend_from_slice(&header);
        for group in [&self.params, &self.adam_m, &self.adam_v, &self.best] {
            out.extend_from_slice(&(group.len() as u32).to_le_bytes());
            for t in group.iter() {
                out.extend_from_slice(&(t.len() as u64).to_le_bytes());
                for v in t {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
        let digest = Sha256::digest(&out);
        out.extend_from_slice(&digest);
        out
    }

    /// Parses and checks a checkpoint: magic, checksum, lengths, and that it belongs to the run
    /// with `fingerprint`.
    pub fn from_bytes(bytes: &[u8], fingerprint: &str) -> Result<TrainState> {
        let bad = |reason: &str| Error::Checkpoint(reason.to_string());
        if bytes.len() < MAGIC.len() + 8 + 32 || &bytes[..8] != MAGIC {
            return Err(bad("not a bet checkpoint (bad magic or too short)"));
        }
        let (body, digest) = bytes.split_at(bytes.len() - 32);
        if Sha256::digest(body).as_slice() != digest {
            return Err(bad("checksum mismatch (damaged file)"));
        }
        let mut reader = Reader { bytes: body, pos: 8 };
        let header_len = reader.u64()?;
        if header_len > MAX_HEADER_BYTES {
            return Err(bad("header length out of range"));
        }
        let header_bytes = reader.take(usize::try_from(header_len).map_err(|_| bad("header too long"))?)?;
        let header: CheckpointHeader =
            serde_json::from_slice(header_bytes).map_err(|e| Error::Checkpoint(format!("header: {e}")))?;
        if header.fingerprint != fingerprint {
            return Err(Error::Checkpoint(format!("belongs to run {}, not {fingerprint}", header.fingerprint)));
        }
        let mut groups = Vec::with_capacity(4);
        for _ in 0..4 {
            let count = reader.u32()?;
            let mut group = Vec::new();
            for _ in 0..count {
                let len = usize::try_from(reader.u64()?).map_err(|_| bad("tensor too long"))?;
                let raw = reader.take(len.checked_mul(4).ok_or_else(|| bad("tensor too long"))?)?;
                group.push(raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect());
            }
            groups.push(group);
        }
        if reader.pos != body.len() {
            return Err(bad("trailing bytes"));
        }
        let best = groups.pop().unwrap_or_default();
        let adam_v = groups.pop().unwrap_or_default();
        let adam_m = groups.pop().unwrap_or_default();
        let params = groups.pop().unwrap_or_default();
        Ok(TrainState { header, params, adam_m, adam_v, best })
    }

    /// Writes atomically (temporary file, fsync, rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
        }
        bet_format::write_atomic(path, &self.to_bytes())?;
        Ok(())
    }

    /// Reads `path` if it exists (`None` when there is no checkpoint yet).
    pub fn load(path: &Path, fingerprint: &str) -> Result<Option<TrainState>> {
        match std::fs::read(path) {
            Ok(bytes) => TrainState::from_bytes(&bytes, fingerprint)
                .map(Some)
                .map_err(|e| Error::Checkpoint(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::Io { path: path.to_path_buf(), source: e }),
        }
    }
}

impl CheckpointHeader {
    /// Reads only the header of the checkpoint at `path` (`None` when there is none): what
    /// `bet search --status` needs, without reading and hashing the tensors (hundreds of
    /// megabytes on Gowalla). The magic, the header length and the fingerprint are checked;
    /// the checksum is not (it covers the whole file), so a damaged file is found when the run
    /// resumes ([`TrainState::load`]), not here.
    pub fn peek(path: &Path, fingerprint: &str) -> Result<Option<CheckpointHeader>> {
        use std::io::Read;
        let located = |reason: String| Error::Checkpoint(format!("{}: {reason}", path.display()));
        let mut file = match std::fs::File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::Io { path: path.to_path_buf(), source: e }),
        };
        let mut prefix = [0u8; 16];
        // A file shorter than magic + length is not a checkpoint: the same refusal as `load`.
        if file.read_exact(&mut prefix).is_err() || &prefix[..8] != MAGIC {
            return Err(located("not a bet checkpoint (bad magic or too short)".into()));
        }
        let mut len = [0u8; 8];
        len.copy_from_slice(&prefix[8..]);
        let header_len = u64::from_le_bytes(len);
        if header_len > MAX_HEADER_BYTES {
            return Err(located("header length out of range".into()));
        }
        let mut header_bytes = Vec::new();
        file.take(header_len)
            .read_to_end(&mut header_bytes)
            .map_err(|e| Error::Io { path: path.to_path_buf(), source: e })?;
        if header_bytes.len() as u64 != header_len {
            return Err(located("truncated".into()));
        }
        let header: CheckpointHeader =
            serde_json::from_slice(&header_bytes).map_err(|e| located(format!("header: {e}")))?;
        if header.fingerprint != fingerprint {
            return Err(located(format!("belongs to run {}, not {fingerprint}", header.fingerprint)));
        }
        Ok(Some(header))
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| Error::Checkpoint("truncated".into()))?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }
    fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
    }
    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// Where checkpoints go by default: `$BET_CHECKPOINT_DIR`, else `$XDG_CACHE_HOME/bet/checkpoints`,
/// else `$HOME/.cache/bet/checkpoints`, else the system temporary directory's `bet-checkpoints`.
/// Never the work tree: a checkpoint is hundreds of megabytes on Gowalla.
pub fn default_dir() -> PathBuf {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(d) = env("BET_CHECKPOINT_DIR") {
        return d;
    }
    if let Some(d) = env("XDG_CACHE_HOME") {
        return d.join("bet").join("checkpoints");
    }
    if let Some(d) = env("HOME") {
        return d.join(".cache").join("bet").join("checkpoints");
    }
    std::env::temp_dir().join("bet-checkpoints")
}

/// A fingerprint of a run: the SHA-256 of a canonical description, in hex (first 16 bytes).
pub fn fingerprint(description: &str) -> String {
    Sha256::digest(description.as_bytes()).iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// Where and how often a run checkpoints.
#[derive(Clone, Debug)]
pub struct CheckpointPlan {
    /// The run's file.
    pub path: PathBuf,
    /// The run's fingerprint (checked on load).
    pub fingerprint: String,
    /// Also checkpoint when this much time passed since the last one (besides every round).
    pub every: std::time::Duration,
    /// Also checkpoint every this many steps (tests use it to checkpoint often).
    pub every_steps: Option<u64>,
    /// The same training under lower step caps, highest cap first: when this run has no
    /// checkpoint of its own, it starts from the first of these that is the same run as far as
    /// it went ([`crate::train::train`] decides which are), instead of from scratch.
    pub shorter: Vec<ShorterRun>,
}

/// The checkpoint of the same training under a lower step cap.
///
/// Up to its cap, a run capped at `c` is step for step the run capped higher: batches are drawn
/// by step, the learning rate is a function of the step, and validation happens at round
/// boundaries. So a longer run can take over a shorter one's checkpoint when the shorter run is
/// unfinished, stopped early (then it is the longer run's final state too), or reached its cap
/// at a round boundary with its last state stored. Raising `--retrain-max-steps` then costs only
/// the extra steps.
#[derive(Clone, Debug)]
pub struct ShorterRun {
    /// The shorter run's step cap.
    pub max_steps: usize,
    /// Its file.
    pub path: PathBuf,
    /// Its fingerprint.
    pub fingerprint: String,
}

impl CheckpointPlan {
    /// The plan for a run described by `description` in directory `dir`.
    pub fn new(dir: &Path, description: &str) -> CheckpointPlan {
        let fingerprint = fingerprint(description);
        CheckpointPlan {
            path: dir.join(format!("{fingerprint}.ckpt")),
            fingerprint,
            every: std::time::Duration::from_secs(60),
            every_steps: None,
            shorter: vec![],
        }
    }

    /// Adds `plan`, the same training capped at `max_steps`, to the shorter runs this one may
    /// continue (call with the highest cap first).
    pub fn with_shorter(mut self, max_steps: usize, plan: CheckpointPlan) -> CheckpointPlan {
        self.shorter.push(ShorterRun { max_steps, path: plan.path, fingerprint: plan.fingerprint });
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> TrainState {
        TrainState {
            header: CheckpointHeader {
                fingerprint: "f".into(),
                step: 7,
                adam_t: 7,
                loss_sum: 1.5,
                best_score: Some(0.25),
                best_step: 4,
                since_best: 1,
                rounds: vec![(4, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], 9)],
                round_losses: vec![0.7],
                finished: false,
                seconds: 12.5,
                last_state: true,
            },
            params: vec![vec![1.0, -0.0, f32::MIN_POSITIVE], vec![3.0]],
            adam_m: vec![vec![0.5; 3], vec![0.25]],
            adam_v: vec![vec![0.125; 3], vec![0.0625]],
            best: vec![],
        }
    }

    #[test]
    fn round_trip_and_every_damaged_byte_is_refused() {
        let s = sample();
        let bytes = s.to_bytes();
        assert_eq!(TrainState::from_bytes(&bytes, "f").unwrap(), s);
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x20;
            assert!(TrainState::from_bytes(&b, "f").is_err(), "byte {i} flipped and still accepted");
        }
        for cut in [0, 8, 20, bytes.len() - 1] {
            assert!(TrainState::from_bytes(&bytes[..cut], "f").is_err());
        }
    }

    #[test]
    fn save_load_and_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("run.ckpt");
        assert!(TrainState::load(&path, "f").unwrap().is_none());
        sample().save(&path).unwrap();
        assert_eq!(TrainState::load(&path, "f").unwrap().unwrap(), sample());
        let err = TrainState::load(&path, "g").unwrap_err().to_string();
        assert!(err.contains("belongs to run f"), "{err}");
    }

    #[test]
    fn peek_reads_the_header_alone_and_refuses_what_load_refuses_before_the_tensors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.ckpt");
        assert!(CheckpointHeader::peek(&path, "f").unwrap().is_none());
        let state = sample();
        let bytes = state.to_bytes();
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(CheckpointHeader::peek(&path, "f").unwrap().unwrap(), state.header);
        let err = CheckpointHeader::peek(&path, "g").unwrap_err().to_string();
        assert!(err.contains("belongs to run f"), "{err}");
        // Damage in the magic, the length or the header is refused; cut files too.
        for i in 0..16 + serde_json::to_vec(&state.header).unwrap().len() {
            let mut b = bytes.clone();
            b[i] ^= 0x80;
            std::fs::write(&path, &b).unwrap();
            let peeked = CheckpointHeader::peek(&path, "f");
            assert!(peeked.is_err() || peeked.unwrap().unwrap() != state.header, "byte {i} flipped and read the same");
        }
        for cut in [0, 8, 15, 20] {
            std::fs::write(&path, &bytes[..cut]).unwrap();
            assert!(CheckpointHeader::peek(&path, "f").is_err(), "cut at {cut} accepted");
        }
    }
}
