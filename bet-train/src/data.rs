//! Loading interaction data: the LightGCN format, CSV/TSV with arbitrary string ids, MovieLens.
//!
//! Every loader returns a [`Dataset`]: users and items numbered `0..n` (the index space of the
//! trainer and the runtime), their external ids (kept for export), one [`Interaction`] per
//! distinct (user, item) pair with the part of the source it came from and its timestamp, a
//! SHA-256 of the bytes read, and a [`LoadReport`].
//!
//! Policies (documented in `docs/training.md`):
//! - A line that does not parse is an error naming the file, the line and the reason.
//! - A (user, item) pair seen more than once is kept once (the first occurrence's part, the
//!   earliest timestamp); how many were merged is in the report and printed by the CLI.
//! - Every row is an implicit positive; a rating column is checked to be a number and ignored.
//! - Users with few interactions are kept; the split gives them what its rounding gives (a user
//!   with one interaction is train-only), and evaluation skips users without held-out items.
//!
//! ```
//! # fn main() -> Result<(), bet_train::Error> {
//! let dir = std::env::temp_dir().join(format!("bet-data-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! std::fs::write(dir.join("ratings.csv"), "user,item,rating\nann,apple,5\nbob,apple,3\nann,pear,4\n").unwrap();
//! let data = bet_train::data::load_csv(&dir.join("ratings.csv"))?;
//! assert_eq!((data.n_users, data.n_items), (2, 2));
//! assert_eq!(data.user_ids, ["ann", "bob"]);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Which part of the source files a pair came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Part {
    /// `train.txt`, or a single-file source.
    Train,
    /// `test.txt`.
    Test,
}

/// One distinct (user, item) pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interaction {
    /// User index.
    pub user: u32,
    /// Item index.
    pub item: u32,
    /// Source part.
    pub part: Part,
    /// Timestamp, when the source has one.
    pub timestamp: Option<i64>,
}

/// What loading saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Data lines read (headers and blank lines excluded).
    pub lines: usize,
    /// Rows read (pairs, before merging duplicates).
    pub rows: usize,
    /// Duplicate (user, item) rows merged into one.
    pub duplicates: usize,
    /// Whether a header line was recognised and skipped.
    pub header: bool,
}

/// A loaded dataset.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// A short name (the directory or file stem).
    pub name: String,
    /// Users.
    pub n_users: usize,
    /// Items.
    pub n_items: usize,
    /// External user ids by index.
    pub user_ids: Vec<String>,
    /// External item ids by index.
    pub item_ids: Vec<String>,
    /// Distinct pairs, in the order first seen.
    pub interactions: Vec<Interaction>,
    /// SHA-256 of the bytes read (files in a fixed order).
    pub sha256: [u8; 32],
    /// What loading saw.
    pub report: LoadReport,
}

impl Dataset {
    /// A dataset from in-memory training pairs (tests and examples): integer ids, every pair in
    /// the source's training part, no timestamps.
    pub fn from_pairs(name: &str, n_users: usize, n_items: usize, pairs: &[(u32, u32)]) -> Dataset {
        Dataset {
            name: name.to_string(),
            n_users,
            n_items,
            user_ids: vec![],
            item_ids: vec![],
            interactions: pairs
                .iter()
                .map(|&(user, item)| Interaction { user, item, part: Part::Train, timestamp: None })
                .collect(),
            sha256: [0; 32],
            report: LoadReport::default(),
        }
    }
}

/// Interns external ids as indices in order of first appearance.
#[derive(Default)]
struct Ids {
    index: HashMap<String, u32>,
    names: Vec<String>,
}

impl Ids {
    fn get(&mut self, id: &str) -> u32 {
        if let Some(&i) = self.index.get(id) {
            return i;
        }
        let i = self.names.len() as u32;
        self.index.insert(id.to_string(), i);
        self.names.push(id.to_string());
        i
    }
}

/// Collects rows, merging duplicate pairs.
#[derive(Default)]
struct Builder {
    seen: HashMap<(u32, u32), usize>,
    interactions: Vec<Interaction>,
    report: LoadReport,
    hasher: Sha256,
}

impl Builder {
    fn push(&mut self, user: u32, item: u32, part: Part, timestamp: Option<i64>) {
        self.report.rows += 1;
        match self.seen.get(&(user, item)) {
            Some(&at) => {
                self.report.duplicates += 1;
                let kept = &mut self.interactions[at];
                kept.timestamp = match (kept.timestamp, timestamp) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
            None => {
                self.seen.insert((user, item), self.interactions.len());
                self.interactions.push(Interaction { user, item, part, timestamp });
            }
        }
    }

    fn read(&mut self, path: &Path) -> Result<String> {
        let bytes = std::fs::read(path).map_err(Error::io(path))?;
        self.hasher.update(&bytes);
        String::from_utf8(bytes).map_err(|e| Error::BadData { path: path.into(), reason: format!("not UTF-8: {e}") })
    }

    fn finish(self, name: String, path: &Path, users: Ids, items: Ids) -> Result<Dataset> {
        if self.interactions.is_empty() {
            return Err(Error::BadData { path: path.into(), reason: "no interactions".into() });
        }
        Ok(Dataset {
            name,
            n_users: users.names.len(),
            n_items: items.names.len(),
            user_ids: users.names,
            item_ids: items.names,
            interactions: self.interactions,
            sha256: self.hasher.finalize().into(),
            report: self.report,
        })
    }
}

fn bad(path: &Path, line: usize, reason: impl Into<String>) -> Error {
    Error::BadLine { path: path.into(), line, reason: reason.into() }
}

fn stem(path: &Path) -> String {
    path.file_stem().or(path.file_name()).map_or_else(|| "data".into(), |s| s.to_string_lossy().into_owned())
}

/// Loads a LightGCN-format directory: `train.txt` and `test.txt`, lines `user item item ...`
/// (non-negative integers, any whitespace, CRLF tolerated, blank lines skipped). A user line with
/// no items is allowed. Indices are the file's ids; users and items are `0..=max id`.
pub fn load_lightgcn(dir: &Path) -> Result<Dataset> {
    let mut b = Builder::default();
    let (mut max_user, mut max_item) = (None::<u32>, None::<u32>);
    for (file, part) in [("train.txt", Part::Train), ("test.txt", Part::Test)] {
        let path = dir.join(file);
        let text = b.read(&path)?;
        for (n, line) in text.lines().enumerate() {
            let mut tokens = line.split_whitespace();
            let Some(first) = tokens.next() else { continue };
            b.report.lines += 1;
            let parse = |t: &str, what: &str| {
                t.parse::<u32>()
                    .map_err(|_| bad(&path, n + 1, format!("{what} id {t:?} is not a non-negative integer")))
            };
            let user = parse(first, "user")?;
            max_user = max_user.max(Some(user));
            for t in tokens {
                let item = parse(t, "item")?;
                max_item = max_item.max(Some(item));
                b.push(user, item, part, None);
            }
        }
    }
    let n_users = max_user.map_or(0, |m| m as usize + 1);
    let n_items = max_item.map_or(0, |m| m as usize + 1);
    let users = Ids { index: HashMap::new(), names: (0..n_users).map(|i| i.to_string()).collect() };
    let items = Ids { index: HashMap::new(), names: (0..n_items).map(|i| i.to_string()).collect() };
    let name = dir.file_name().map_or_else(|| "data".into(), |s| s.to_string_lossy().into_owned());
    b.finish(name, dir, users, items)
}

/// Loads `user,item[,rating[,timestamp]]` rows (comma, or tab when the first data line has a tab
/// and no comma). Ids are arbitrary non-empty strings, numbered in order of first appearance. A
/// first line whose first field is `user`, `user_id`, `userid` or `uid` (any case) is a header.
pub fn load_csv(path: &Path) -> Result<Dataset> {
    let mut b = Builder::default();
    let text = b.read(path)?;
    let delimiter = match text.lines().find(|l| !l.trim().is_empty()) {
        Some(l) if l.contains('\t') && !l.contains(',') => '\t',
        _ => ',',
    };
    let (mut users, mut items) = (Ids::default(), Ids::default());
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(delimiter).map(str::trim).collect();
        if b.report.lines == 0 && !b.report.header {
            let first = fields[0].to_ascii_lowercase();
            if matches!(first.as_str(), "user" | "user_id" | "userid" | "uid") {
                b.report.header = true;
                continue;
            }
        }
        b.report.lines += 1;
        if !(2..=4).contains(&fields.len()) {
            return Err(bad(
                path,
                n + 1,
                format!("expected 2 to 4 fields (user, item[, rating[, timestamp]]), found {}", fields.len()),
            ));
        }
        if fields[0].is_empty() || fields[1].is_empty() {
            return Err(bad(path, n + 1, "empty user or item id"));
        }
        if let Some(r) = fields.get(2)
            && r.parse::<f64>().map_or(true, |v| !v.is_finite())
        {
            return Err(bad(path, n + 1, format!("rating {r:?} is not a number")));
        }
        let timestamp = match fields.get(3) {
            Some(t) => {
                Some(t.parse::<i64>().map_err(|_| bad(path, n + 1, format!("timestamp {t:?} is not an integer")))?)
            }
            None => None,
        };
        let (u, i) = (users.get(fields[0]), items.get(fields[1]));
        b.push(u, i, Part::Train, timestamp);
    }
    b.finish(stem(path), path, users, items)
}

/// Loads a MovieLens `ratings.dat`: `user::item::rating::timestamp`.
pub fn load_movielens(path: &Path) -> Result<Dataset> {
    let mut b = Builder::default();
    let text = b.read(path)?;
    let (mut users, mut items) = (Ids::default(), Ids::default());
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        b.report.lines += 1;
        let fields: Vec<&str> = line.split("::").collect();
        if fields.len() != 4 {
            return Err(bad(
                path,
                n + 1,
                format!("expected user::item::rating::timestamp, found {} fields", fields.len()),
            ));
        }
        if fields[2].trim().parse::<f64>().is_err() {
            return Err(bad(path, n + 1, format!("rating {:?} is not a number", fields[2])));
        }
        let t = fields[3].trim();
        let timestamp = t.parse::<i64>().map_err(|_| bad(path, n + 1, format!("timestamp {t:?} is not an integer")))?;
        let (u, i) = (users.get(fields[0].trim()), items.get(fields[1].trim()));
        b.push(u, i, Part::Train, Some(timestamp));
    }
    b.finish(stem(path), path, users, items)
}

/// Loads `path` by its shape: a directory with `train.txt` (LightGCN), a `.dat` file
/// (MovieLens), or any other file (CSV/TSV).
pub fn load(path: &Path) -> Result<Dataset> {
    if path.is_dir() {
        if path.join("train.txt").is_file() {
            return load_lightgcn(path);
        }
        return Err(Error::BadData {
            path: path.into(),
            reason: "a dataset directory needs train.txt and test.txt (LightGCN format)".into(),
        });
    }
    if !path.exists() {
        // Said in words: an `io::Error` made from a bare kind would print "entity not found".
        return Err(Error::BadData {
            path: PathBuf::from(path),
            reason: "no such file or directory (a relative path is read from the current directory)".into(),
        });
    }
    match path.extension().and_then(|e| e.to_str()) {
        Some("dat") => load_movielens(path),
        _ => load_csv(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A temporary directory holding `files`, removed when dropped (so the tests leave nothing in
    /// the system's temporary directory); derefs to its path.
    struct TestDir(tempfile::TempDir);

    impl std::ops::Deref for TestDir {
        type Target = Path;
        fn deref(&self) -> &Path {
            self.0.path()
        }
    }

    fn dir_with(files: &[(&str, &str)]) -> TestDir {
        let d = tempfile::Builder::new().prefix("bet-data-").tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(d.path().join(name), text).unwrap();
        }
        TestDir(d)
    }

    #[test]
    fn lightgcn_any_whitespace_crlf_and_duplicates() {
        let d = dir_with(&[("train.txt", "0 1\t2  3\r\n\n1 0\r\n2\n"), ("test.txt", "0 4 1\n1 2\n")]);
        let data = load_lightgcn(&d).unwrap();
        assert_eq!((data.n_users, data.n_items), (3, 5));
        assert_eq!(data.report.duplicates, 1); // (0, 1) in both files: kept once, as train
        assert_eq!(data.interactions.len(), 6);
        assert!(data.interactions.contains(&Interaction { user: 0, item: 1, part: Part::Train, timestamp: None }));
        assert!(data.interactions.contains(&Interaction { user: 1, item: 2, part: Part::Test, timestamp: None }));
    }

    #[test]
    fn bad_lines_name_file_line_and_reason() {
        let d = dir_with(&[("train.txt", "0 1 2\n1 x\n"), ("test.txt", "")]);
        let e = load_lightgcn(&d).unwrap_err().to_string();
        assert!(e.ends_with("train.txt:2: item id \"x\" is not a non-negative integer"), "{e}");
        let d = dir_with(&[("train.txt", "0 1\n"), ("test.txt", "-1 2\n")]);
        assert!(load_lightgcn(&d).unwrap_err().to_string().contains("test.txt:1: user id \"-1\""));
        let d = dir_with(&[("r.csv", "u1,i1,5,100\nu2,i1,five,100\n")]);
        let e = load_csv(&d.join("r.csv")).unwrap_err().to_string();
        assert!(e.ends_with("r.csv:2: rating \"five\" is not a number"), "{e}");
        let d = dir_with(&[("r.csv", "u1\n")]);
        assert!(load_csv(&d.join("r.csv")).unwrap_err().to_string().contains("r.csv:1: expected 2 to 4 fields"));
        let d = dir_with(&[("r.csv", "u1,i1,1,yesterday\n")]);
        assert!(load_csv(&d.join("r.csv")).unwrap_err().to_string().contains("timestamp \"yesterday\""));
        let d = dir_with(&[("ratings.dat", "1::2::5::978300760\n1::3::4\n")]);
        let e = load_movielens(&d.join("ratings.dat")).unwrap_err().to_string();
        assert!(e.ends_with("ratings.dat:2: expected user::item::rating::timestamp, found 3 fields"), "{e}");
        let missing = load(Path::new("/nonexistent/bet-data")).unwrap_err().to_string();
        assert!(missing.contains("/nonexistent/bet-data"), "{missing}");
    }

    #[test]
    fn csv_string_ids_tsv_header_and_timestamps() {
        let d = dir_with(&[(
            "r.tsv",
            "userId\titemId\trating\ttimestamp\nzed\tX-1\t4\t30\namy\tX-1\t3\t10\nzed\tX-1\t5\t20\nzed\ty\t1\t5\n",
        )]);
        let data = load_csv(&d.join("r.tsv")).unwrap();
        assert!(data.report.header);
        assert_eq!(data.user_ids, ["zed", "amy"]);
        assert_eq!(data.item_ids, ["X-1", "y"]);
        assert_eq!(data.report.duplicates, 1);
        // The duplicate keeps the earliest timestamp.
        assert_eq!(data.interactions[0], Interaction { user: 0, item: 0, part: Part::Train, timestamp: Some(20) });
        let d = dir_with(&[("ratings.dat", "1::10::5::3\n2::10::4::1\n")]);
        let ml = load(&d.join("ratings.dat")).unwrap();
        assert_eq!((ml.n_users, ml.n_items, ml.interactions[1].timestamp), (2, 1, Some(1)));
    }

    #[test]
    fn the_shipped_sample_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/gowalla-sample");
        let data = load(&dir).unwrap();
        assert_eq!((data.n_users, data.n_items, data.interactions.len()), (2440, 2887, 63_698));
        assert_eq!(data.report.duplicates, 0);
    }
}
