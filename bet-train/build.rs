//! Records the git commit the `bet` binary is built from, for the provenance of exported files.
//!
//! `BET_GIT_COMMIT` set in the environment wins (release builds, or a build outside a checkout
//! that knows its commit). Otherwise `git rev-parse HEAD` is asked; without git or outside a
//! checkout the commit stays empty, never made up. Uncommitted changes are not marked: the
//! field names the commit the tree was at, which is what a reader can check out.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    println!("cargo:rerun-if-env-changed=BET_GIT_COMMIT");
    if std::env::var_os("BET_GIT_COMMIT").is_some() {
        return;
    }
    // Rebuild when HEAD moves: HEAD itself, the branch it points to, and packed refs.
    // (In a worktree HEAD lives in its own git dir, the refs in the common one.)
    if let (Some(dir), Some(common)) = (git(&["rev-parse", "--git-dir"]), git(&["rev-parse", "--git-common-dir"])) {
        let (dir, common) = (std::path::Path::new(&dir), std::path::Path::new(&common));
        println!("cargo:rerun-if-changed={}", dir.join("HEAD").display());
        println!("cargo:rerun-if-changed={}", common.join("packed-refs").display());
        if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={}", common.join(branch).display());
        }
    }
    let commit = git(&["rev-parse", "HEAD"]).unwrap_or_default();
    if commit.len() == 40 && commit.bytes().all(|b| b.is_ascii_hexdigit()) {
        println!("cargo:rustc-env=BET_GIT_COMMIT={commit}");
    }
}
