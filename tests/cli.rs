//! End-to-end tests of the `bet` command line: inspect, and verify's exit codes (the CI gate).

use std::path::{Path, PathBuf};
use std::process::Command;

fn bet(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_bet")).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn golden(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../bet-format/tests/golden").join(name).display().to_string()
}

/// `bet train` of `model` on `dataset` with a tiny protocol (d_max 8, 50% sparsity, rounds of
/// 3 steps, checkpoints in `ckpt`), then `extra`.
fn tiny_train(dataset: &Path, model: &str, ckpt: &Path, extra: &[&str]) -> (i32, String, String) {
    let (dataset, ckpt) = (dataset.to_str().unwrap(), ckpt.to_str().unwrap());
    let common = ["train", "--dataset", dataset, "--model", model, "--d-max", "8", "--sparsity", "0.5"];
    bet(&[&common[..], &["--round-steps", "3", "--checkpoint-dir", ckpt], extra].concat())
}

fn temp_copy(dir: &tempfile::TempDir, name: &str, f: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut bytes = std::fs::read(golden(name)).unwrap();
    f(&mut bytes);
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn inspect_reports_the_file() {
    let (code, out, _) = bet(&["inspect", &golden("lightgcn_f16_width.bet")]);
    assert_eq!(code, 0);
    for needle in [
        "lightgcn (placement output)",
        "6 users, 24 items",
        "keep 0.6 -> limit 288",
        "checksums  ok",
        "split paper-50-25-25",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
    let (code, out, _) = bet(&["inspect", "--json", &golden("ncf_f16.bet")]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["schema"], "bet-inspect/1");
    assert_eq!(v["model"], "ncf");
    assert_eq!(v["parameters"].as_u64().unwrap(), v["embedding_values"].as_u64().unwrap() + 8 * 16 + 8 + 16 + 1);
    let hist: u64 = v["item_widths"]["counts"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap()).sum();
    assert_eq!(hist, 6);
    let (code, _, err) = bet(&["inspect", "/nonexistent/file.bet"]);
    assert_eq!(code, 2);
    assert!(err.contains("unreadable"), "{err}");
}

#[test]
fn verify_exit_codes_are_the_ci_contract() {
    let f = golden("mf_f32_ids.bet");
    let size = std::fs::metadata(&f).unwrap().len().to_string();
    // Valid and within limits (53 embedding values).
    let (code, out, _) = bet(&["verify", &f, "--max-params", "53", "--max-bytes", &size]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("ok: "), "{out}");
    // Over the parameter limit: exit 1 and one line saying by how much.
    let (code, _, err) = bet(&["verify", &f, "--max-params", "50"]);
    assert_eq!(code, 1);
    assert_eq!(err.lines().count(), 1);
    assert!(err.contains("parameters 53 exceed --max-params 50 by 3"), "{err}");
    let (code, _, err) = bet(&["verify", &f, "--max-bytes", "1000"]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!(
            "file size {size} bytes exceeds --max-bytes 1000 by {}",
            size.parse::<u64>().unwrap() - 1000
        )),
        "{err}"
    );
    // `--no-heap`: a file read in place passes; an `input` file (propagated into allocated memory
    // at load: 14 users + 19 items, 12 wide) is over that limit, and says how much heap it needs.
    let (code, out, _) = bet(&["verify", &f, "--no-heap"]);
    assert_eq!(code, 0, "{out}");
    let input = golden("lightgcn_input_graph.bet");
    let (code, out, _) = bet(&["verify", &input]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("input placement: 1584 bytes of heap at load"), "{out}");
    let (code, _, err) = bet(&["verify", &input, "--no-heap"]);
    assert_eq!(code, 1);
    assert!(err.contains("--no-heap: an input-placement file needs 1584 bytes of heap"), "{err}");
    // Corrupt: a flipped payload bit (CRC), a truncated file, non-finite values: exit 2.
    let dir = tempfile::tempdir().unwrap();
    let flipped = temp_copy(&dir, "mf_f32_ids.bet", |b| {
        let n = b.len();
        b[n - 3] ^= 1;
    });
    let (code, _, err) = bet(&["verify", flipped.to_str().unwrap(), "--max-params", "1000"]);
    assert_eq!(code, 2);
    assert!(err.contains("checksum mismatch"), "{err}");
    let truncated = temp_copy(&dir, "ngcf_f32_width.bet", |b| b.truncate(100));
    assert_eq!(bet(&["verify", truncated.to_str().unwrap()]).0, 2);
    let (code, _, err) = bet(&["verify", &golden("mf_special_values.bet")]);
    assert_eq!(code, 2);
    assert!(err.contains("non-finite"), "{err}");
    // A wrong flag is a usage error (clap: exit 2), never a silent pass.
    assert_eq!(bet(&["verify", &f, "--max-parms", "5"]).0, 2);
    assert_eq!(bet(&["verify", &f, "--max-params", "-5"]).0, 2);
}

#[test]
fn demo_runs_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = bet(&["demo", "--out", dir.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("(exit 0)") && out.contains("(exit 1)") && out.contains("user 2:"), "{out}");
    let (code, _, _) = bet(&["demo", "--out", dir.path().to_str().unwrap(), "--sparsity", "1.5"]);
    assert_eq!(code, 2);
}

#[test]
fn data_loads_splits_and_reports() {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/gowalla-sample");
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("data.json");
    let (code, out, err) = bet(&["data", sample.to_str().unwrap(), "--seed", "3", "--json", json.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("2440 users, 2887 items, 63698 interactions"), "{out}");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["schema"], "bet-data/1");
    let parts = v["train"].as_u64().unwrap() + v["validation"].as_u64().unwrap() + v["test"].as_u64().unwrap();
    assert_eq!(parts, 63_698);
    // A missing dataset and a bad line: one clear line, non-zero exit.
    let (code, _, err) = bet(&["data", "/nonexistent/data"]);
    assert_eq!(code, 2);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: /nonexistent/data: no such file or directory"), "{err}");
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "u,i,1\nu,j\nv\n").unwrap();
    let (code, _, err) = bet(&["data", bad.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("bad.csv:3: expected 2 to 4 fields"), "{err}");
    assert_ne!(bet(&["data", sample.to_str().unwrap(), "--protocol", "random"]).0, 0);
    let (code, _, err) = bet(&["data", sample.to_str().unwrap(), "--protocol", "temporal"]);
    assert_eq!(code, 2);
    assert!(err.contains("no timestamp"), "{err}");
}

#[test]
fn train_runs_reports_and_refuses_bad_settings() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("tiny.csv");
    let mut rows = String::new();
    for u in 0..60 {
        for i in 0..40 {
            if (u * 7 + i * 11) % 5 < 2 {
                rows.push_str(&format!("user{u},item{i}\n"));
            }
        }
    }
    std::fs::write(&csv, rows).unwrap();
    let report = dir.path().join("r.json");
    let ckpt = dir.path().join("checkpoints");
    let args = [
        "train",
        "--dataset",
        csv.to_str().unwrap(),
        "--model",
        "lightgcn",
        "--d-max",
        "16",
        "--sparsity",
        "0.5",
        "--checkpoint-dir",
        ckpt.to_str().unwrap(),
    ];
    let run = |extra: &[&str]| bet(&[&args[..], extra].concat());
    // A short seeded run writing its report to `report`, plus `extra` flags.
    let seeded = |report: &Path, extra: &[&str]| {
        let flags = ["--round-steps", "5", "--max-steps", "10", "--seed", "4", "--threads", "1", "--report"];
        run(&[&flags[..], &[report.to_str().unwrap()], extra].concat())
    };
    let (code, out, err) = seeded(&report, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("test (trainer-evaluated): Recall@5/10/20"), "{out}");
    assert!(err.lines().any(|l| l.starts_with('[') && l.contains(" s] train: ") && l.contains("loss")), "{err}");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(v["schema"], "bet-train/1");
    assert!(v["provenance"]["trainer"].as_str().unwrap().starts_with("bet "), "{v}");
    assert_eq!(v["limit"].as_u64().unwrap(), 100 * 16 / 2);
    assert_eq!(v["evaluated_by"], "trainer");
    // LightGCN's default placement, the best exportable one on validation (docs/training.md).
    assert_eq!(v["placement"], "input");
    // `--out` ships the trained model: the file is measured by bet-runtime, and for f32 its
    // metrics equal the trainer's own evaluation of the model.
    let shipped = dir.path().join("shipped.bet");
    let report_out = dir.path().join("r-out.json");
    let (code, out, err) = seeded(&report_out, &["--out", shipped.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains(&format!("test (from {} by bet-runtime)", shipped.display())), "{out}");
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report_out).unwrap()).unwrap();
    let file = &r["file"];
    assert_eq!(file["evaluated_by"], "bet-runtime (the exported file)");
    assert_eq!(file["parity"]["agrees"], true, "{file}");
    assert_eq!(file["bytes"].as_u64().unwrap(), std::fs::metadata(&shipped).unwrap().len());
    for target in ["validation", "test"] {
        for metric in ["recall", "ndcg"] {
            for k in 0..3 {
                let (a, b) = (file[target][metric][k].as_f64().unwrap(), r[target][metric][k].as_f64().unwrap());
                assert!((a - b).abs() <= 1e-6, "{target} {metric}[{k}]: file {a} vs trainer {b}");
            }
        }
    }
    let (code, _, err) = bet(&["verify", shipped.to_str().unwrap(), "--max-params", &(100 * 16 / 2).to_string()]);
    assert_eq!(code, 0, "{err}");
    // `bet compare`: the same model written as f16 (the run resumes from its last checkpoint)
    // against the f32 file; a file against itself agrees everywhere; two files of different
    // models are refused.
    let shipped16 = dir.path().join("shipped16.bet");
    let (code, out, err) =
        seeded(&dir.path().join("r16.json"), &["--out", shipped16.to_str().unwrap(), "--dtype", "f16"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let compared = dir.path().join("compare.json");
    let (code, out, err) =
        bet(&["compare", shipped.to_str().unwrap(), shipped16.to_str().unwrap(), "--json", compared.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let c: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&compared).unwrap()).unwrap();
    assert_eq!(c["schema"], "bet-compare/1");
    assert_eq!(c["k"], 20);
    let (users, list, set) =
        (c["users"].as_u64().unwrap(), c["same_list"].as_u64().unwrap(), c["same_set"].as_u64().unwrap());
    assert!(users > 0 && list <= set && set <= users, "{c}");
    assert!(out.contains(&format!("{users} users, top 20: same list {list}")), "{out}");
    let (code, out, _) = bet(&["compare", shipped.to_str().unwrap(), shipped.to_str().unwrap(), "--k", "5"]);
    assert_eq!(code, 0);
    assert!(
        out.contains(&format!("same list {users} (100.0%), same set {users} (100.0%), mean overlap 5.00 of 5")),
        "{out}"
    );
    let (code, _, err) = bet(&["compare", shipped.to_str().unwrap(), &golden("lightgcn_f16_width.bet")]);
    assert_eq!(code, 2);
    assert!(err.contains("not two files of one model"), "{err}");
    // The paper's input placement: LightGCN ships ego rows and its graph, which `bet rank` and
    // `bet compare` propagate when they load the file.
    let input = dir.path().join("input.bet");
    let (code, out, err) = run(&[
        "--placement",
        "input",
        "--round-steps",
        "5",
        "--max-steps",
        "10",
        "--threads",
        "1",
        "--out",
        input.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    let (code, out, _) = bet(&["inspect", input.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(out.contains("lightgcn (placement input)") && out.contains("graph      3 layers over "), "{out}");
    let (code, out, err) = bet(&["rank", input.to_str().unwrap(), "--users", "0,1", "--k", "3"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().filter(|l| l.starts_with("user ")).count(), 2, "{out}");
    let (code, out, _) = bet(&["compare", input.to_str().unwrap(), input.to_str().unwrap(), "--k", "5"]);
    assert_eq!(code, 0);
    assert!(out.contains("(100.0%)"), "{out}");
    // NGCF's input placement has no budgeted file: refused before any training.
    let mut ngcf = args.to_vec();
    ngcf[4] = "ngcf";
    let (code, _, err) = bet(&[&ngcf[..], &["--placement", "input", "--out", shipped.to_str().unwrap()]].concat());
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--out") && err.contains("input placement is not exportable"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    // Same seed and threads: the same report figures (`--fresh`: not resumed from the first run).
    let report2 = dir.path().join("r2.json");
    let (code, _, _) = seeded(&report2, &["--fresh"]);
    assert_eq!(code, 0);
    let w: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report2).unwrap()).unwrap();
    assert_eq!(v["test"], w["test"]);
    assert_eq!(v["rounds"], w["rounds"]);
    // Every backbone trains (NCF's two tables halve the widths), and a saved model fine-tunes
    // for a given number of epochs from its state.
    let state = dir.path().join("model.state");
    for model in ["mf", "ngcf", "ncf"] {
        let r = dir.path().join(format!("{model}.json"));
        let (code, out, err) = tiny_train(
            &csv,
            model,
            &ckpt,
            &["--max-steps", "3", "--report", r.to_str().unwrap(), "--save-state", state.to_str().unwrap()],
        );
        assert_eq!(code, 0, "{model}: {out}\n{err}");
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&r).unwrap()).unwrap();
        assert_eq!(v["model"], model);
        // MF and NCF have no mask placement; NGCF trains with the default, `output`.
        assert_eq!(v["placement"], if model == "ngcf" { "output" } else { "none" }, "{model}");
        let per_table = if model == "ncf" { 100 * 8 / 2 / 2 } else { 100 * 8 / 2 };
        let tables = if model == "ncf" { 2 } else { 1 };
        assert_eq!(v["stored_values"].as_u64().unwrap(), per_table * tables, "{model}");
        assert!(v["stored_values"].as_u64().unwrap() <= v["limit"].as_u64().unwrap());
    }
    let (code, out, err) = bet(&[
        "train",
        "--dataset",
        csv.to_str().unwrap(),
        "--model",
        "ncf",
        "--d-max",
        "8",
        "--sparsity",
        "0.5",
        "--init",
        state.to_str().unwrap(),
        "--epochs",
        "2",
        "--checkpoint-dir",
        ckpt.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("trained 2 steps"), "2 epochs of one 10,000-user batch each: {out}");
    let (code, _, err) = bet(&[
        "train",
        "--dataset",
        csv.to_str().unwrap(),
        "--model",
        "mf",
        "--d-max",
        "8",
        "--init",
        state.to_str().unwrap(),
        "--checkpoint-dir",
        ckpt.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "an NCF state does not fit MF: {err}");
    assert!(err.contains("do not fit this model"), "{err}");
    // An impossible budget, conflicting flags, a missing dataset: one line, non-zero exit.
    let (code, _, err) = bet(&["train", "--dataset", csv.to_str().unwrap(), "--d-max", "16", "--keep", "0.01"]);
    assert_eq!(code, 2);
    assert!(err.contains("needs width at least 1"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(bet(&["train", "--dataset", csv.to_str().unwrap(), "--sparsity", "0.9", "--keep", "0.1"]).0, 2);
    assert_eq!(bet(&["train", "--dataset", "/nonexistent/x.csv"]).0, 2);
    assert_eq!(bet(&["train", "--dataset", csv.to_str().unwrap(), "--sparsity", "1.5"]).0, 2);
    // A width no .bet file can hold is refused before anything is trained or allocated.
    for (model, d_max) in [("lightgcn", "0"), ("lightgcn", "1025"), ("ncf", "257")] {
        let (code, _, err) = bet(&["train", "--dataset", csv.to_str().unwrap(), "--model", model, "--d-max", d_max]);
        assert_eq!(code, 2, "{model} {d_max}: {err}");
        assert!(err.contains(&format!("--d-max {d_max}: {model} takes 1 to")), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    // MF and NCF have no mask placement: asking for one is a flag error, not silently ignored.
    for model in ["mf", "ncf"] {
        let (code, _, err) =
            bet(&["train", "--dataset", csv.to_str().unwrap(), "--model", model, "--placement", "both"]);
        assert_eq!(code, 2, "{model}: {err}");
        assert!(err.contains(&format!("{model} has no mask placement")), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}

/// Training gives the same parameters, bit for bit, with any thread count: every parallel sum
/// is cut into fixed chunks added in order. The pretraining cache relies on it (its key leaves
/// the thread count out, so a search with 2 threads may start from a model pretrained with 1).
#[test]
fn training_does_not_depend_on_the_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/gowalla-sample");
    for model in ["lightgcn", "ngcf", "ncf", "mf"] {
        let states: Vec<Vec<u8>> = ["1", "3"]
            .iter()
            .map(|threads| {
                let state = dir.path().join(format!("{model}-{threads}.state"));
                let ckpt = dir.path().join(format!("ckpt-{threads}"));
                let (code, out, err) = tiny_train(
                    &sample,
                    model,
                    &ckpt,
                    &["--max-steps", "6", "--seed", "5", "--threads", threads, "--save-state", state.to_str().unwrap()],
                );
                assert_eq!(code, 0, "{model} {threads}: {out}\n{err}");
                std::fs::read(&state).unwrap()
            })
            .collect();
        assert!(!states[0].is_empty());
        assert!(states[0] == states[1], "{model}: 1 and 3 threads trained different models");
    }
}

/// `bet train` with a raised `--max-steps` continues the lower cap's run and ends with the model
/// the higher cap trains from scratch; `--fresh` starts over instead.
#[test]
fn a_raised_step_cap_continues_the_lower_caps_training() {
    let dir = tempfile::tempdir().unwrap();
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/gowalla-sample");
    let train = |ckpt: &str, steps: &str, extra: &[&str]| {
        let state = dir.path().join(format!("{ckpt}-{steps}.state"));
        let args = [&["--max-steps", steps, "--patience", "9", "--save-state", state.to_str().unwrap()][..], extra];
        let (code, out, err) = tiny_train(&sample, "lightgcn", &dir.path().join(ckpt), &args.concat());
        assert_eq!(code, 0, "{out}\n{err}");
        (std::fs::read(&state).unwrap(), err)
    };
    let (_, first) = train("a", "6", &[]);
    assert!(!first.contains("continued"), "{first}");
    let (longer, err) = train("a", "12", &[]);
    assert!(err.contains("continued the run capped at 6 steps from step 6"), "{err}");
    let (scratch, err) = train("b", "12", &[]);
    assert!(!err.contains("continued") && !err.contains("resumed"), "{err}");
    assert!(longer == scratch, "the continued run trained another model");
    let (_, err) = train("a", "9", &["--fresh"]);
    assert!(!err.contains("continued"), "--fresh must start from scratch: {err}");
}

/// Runs `bet ARGS` again and again, each attempt SIGKILLed after `delay_ms(attempt)` unless it
/// ends first; every restart resumes from the checkpoints, so the work moves on until one
/// attempt lives to the end (which must succeed). Returns the number of kills and the last
/// attempt's stderr.
fn kill_until_done(args: &[String], attempts: u64, delay_ms: impl Fn(u64) -> u64) -> (usize, String) {
    let mut kills = 0;
    for attempt in 0..attempts {
        let mut child = Command::new(env!("CARGO_BIN_EXE_bet"))
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(delay_ms(attempt));
        while std::time::Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                let mut err = String::new();
                std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
                assert!(status.success(), "{err}");
                return (kills, err);
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
        kills += 1;
    }
    panic!("no attempt of {attempts} lived to the end ({kills} kills)");
}

/// A run killed with SIGKILL again and again (at every moment, mid-checkpoint included) and
/// restarted each time ends with the same parameters, byte for byte, as an uninterrupted run.
#[test]
fn killed_training_resumes_to_the_same_model() {
    let dir = tempfile::tempdir().unwrap();
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/gowalla-sample");
    let common = |ckpt: &Path, state: &Path| -> Vec<String> {
        [
            "train",
            "--dataset",
            sample.to_str().unwrap(),
            "--model",
            "lightgcn",
            "--d-max",
            "8",
            "--sparsity",
            "0.5",
            "--round-steps",
            "6",
            "--max-steps",
            "30",
            "--patience",
            "9",
            "--seed",
            "3",
            "--threads",
            "2",
            "--checkpoint-every",
            "1",
            "--checkpoint-dir",
            ckpt.to_str().unwrap(),
            "--save-state",
            state.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let straight = dir.path().join("straight.state");
    let args = common(&dir.path().join("ckpt-a"), &straight);
    let started = std::time::Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_bet")).args(&args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The delays are fractions of this run's length, so that kills land inside the run whether
    // the binary is a debug build (seconds) or a release build on an idle machine (a fraction of
    // a second); fixed delays let a fast run end before the first kill.
    let straight_ms = u64::try_from(started.elapsed().as_millis()).unwrap().max(20);

    let killed = dir.path().join("killed.state");
    let ckpt = dir.path().join("ckpt-b");
    let args = common(&ckpt, &killed);
    // Kill after varying delays (10% to 79% of the uninterrupted run), so kills land at
    // different points of the run: before the first checkpoint, between steps, and during
    // checkpoint writes.
    let (kills, err) = kill_until_done(&args, 100, |attempt| straight_ms * (10 + attempt * 37 % 70) / 100);
    let resumed = usize::from(err.contains("resumed from step"));
    assert!(kills >= 2, "the run ended before it could be killed twice ({kills})");
    assert_eq!(resumed, 1, "the last run did not resume from a checkpoint");
    let (a, b) = (std::fs::read(&straight).unwrap(), std::fs::read(&killed).unwrap());
    assert!(a == b, "resumed model differs from the uninterrupted one ({} vs {} bytes)", a.len(), b.len());
    // The checkpoint lives where it was told to, and nothing was left half-written.
    let names: Vec<String> =
        std::fs::read_dir(&ckpt).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(names.iter().all(|n| n.ends_with(".ckpt") || n.ends_with(".tmp")), "{names:?}");
}

/// Arguments of `bet search` on the shipped sample with a tiny protocol (d_max 8, 80% sparsity,
/// a few steps per phase), then `extra` (method, placement, T, m, top).
fn tiny_search_args(ckpt: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/gowalla-sample");
    let common = [
        "search",
        "--dataset",
        sample.to_str().unwrap(),
        "--d-max",
        "8",
        "--sparsity",
        "0.8",
        "--finetune-epochs",
        "1",
        "--round-steps",
        "4",
        "--max-steps",
        "8",
        "--threads",
        "2",
        "--checkpoint-dir",
        ckpt.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    common.iter().chain(extra).map(|s| s.to_string()).collect()
}

/// `bet search` end to end on the shipped sample with a tiny protocol: a model within the
/// budget, its report and plot; the same seed gives the same file, byte for byte, whether the
/// search runs straight through, is killed and resumed, or starts from an empty checkpoint
/// directory.
#[test]
fn search_exports_a_budgeted_model_and_resumes_to_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let args = |ckpt: &Path, out: &Path| {
        tiny_search_args(ckpt, out, &["--iterations", "5", "--candidates", "6", "--retrain-top", "2"])
    };
    let straight = dir.path().join("straight.bet");
    let started = std::time::Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_bet")).args(args(&dir.path().join("a"), &straight)).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Kill delays are fractions of this run's length (debug or release build alike).
    let straight_ms = u64::try_from(started.elapsed().as_millis()).unwrap().max(20);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("test (from"), "{stdout}");
    // Without a terminal the bar is hidden and each phase logs a plain line.
    let stderr = String::from_utf8_lossy(&out.stderr);
    for phase in ["pretrain", "search", "retrain"] {
        assert!(stderr.lines().any(|l| l.starts_with('[') && l.contains(&format!(" s] {phase}"))), "{stderr}");
    }
    // The gate accepts it: within its limit, valid, checksums right.
    let (code, _, err) = bet(&["verify", straight.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(straight.with_extension("json")).unwrap()).unwrap();
    assert_eq!(report["schema"], "bet-search/1");
    assert!(report["provenance"]["trainer"].as_str().unwrap().starts_with("bet "), "{report}");
    // The commit is the build's (40 hex digits) or empty when unknown, never something else.
    let commit = report["provenance"]["git_commit"].as_str().unwrap();
    assert!(commit.is_empty() || (commit.len() == 40 && commit.bytes().all(|b| b.is_ascii_hexdigit())), "{report}");
    assert_eq!(report["evaluated"].as_array().unwrap().len(), 5);
    let limit = report["limit"].as_u64().unwrap();
    assert_eq!(report["stored_values"].as_u64().unwrap(), limit, "BET actions use the whole limit");
    assert_eq!(report["parity"]["same_top20"], report["parity"]["users"]);
    assert_eq!(report["parity"]["agrees"], true);
    assert!(std::fs::read_to_string(straight.with_extension("svg")).unwrap().starts_with("<svg"));

    // Killed at varying moments and restarted until it finishes.
    let killed = dir.path().join("killed.bet");
    let ckpt = dir.path().join("b");
    let (kills, _) = kill_until_done(&args(&ckpt, &killed), 60, |attempt| {
        straight_ms * (15 + attempt * 10 + attempt * 37 % 40) / 100
    });
    assert!(kills >= 1, "the search ended before it could be killed");
    let (a, b) = (std::fs::read(&straight).unwrap(), std::fs::read(&killed).unwrap());
    assert!(a == b, "a resumed search wrote a different file");
    // And again from nothing: the same bytes.
    let again = dir.path().join("again.bet");
    let out = Command::new(env!("CARGO_BIN_EXE_bet")).args(args(&dir.path().join("c"), &again)).output().unwrap();
    assert!(out.status.success());
    assert!(std::fs::read(&again).unwrap() == a, "same seed, same threads, different file");
}

/// Every baseline and ablation runs through the same pipeline on the sample: each writes a
/// valid file at exactly its limit, with the candidates its method defines; the paper's input
/// placement ships ego rows and the graph, measured on the file after the runtime propagates it.
#[test]
fn every_method_fills_its_limit_and_input_placement_is_measured_on_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt");
    let run = |method: &str, placement: &str| -> (std::process::Output, PathBuf) {
        let out = dir.path().join(format!("{method}-{placement}.bet"));
        let extra = ["--method", method, "--placement", placement];
        let extra = [&extra[..], &["--iterations", "4", "--candidates", "5", "--retrain-top", "1"]].concat();
        let output =
            Command::new(env!("CARGO_BIN_EXE_bet")).args(tiny_search_args(&ckpt, &out, &extra)).output().unwrap();
        (output, out)
    };
    let report = |out: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(out.with_extension("json")).unwrap()).unwrap()
    };
    for (method, candidates, strategy) in [
        ("es", 1, Some("es")),
        ("mr", 1, Some("mr")),
        ("freq", 3, None),
        ("bet-random", 4, Some("random")),
        ("bet-plain", 4, None),
    ] {
        let (output, out) = run(method, "output");
        assert!(output.status.success(), "{method}: {}", String::from_utf8_lossy(&output.stderr));
        let (code, _, err) = bet(&["verify", out.to_str().unwrap()]);
        assert_eq!(code, 0, "{method}: {err}");
        let r = report(&out);
        assert_eq!(r["method"], method);
        assert_eq!(r["stored_values"], r["limit"], "{method} leaves part of its limit unused");
        assert_eq!(r["evaluated_by"], "bet-runtime (the exported file)");
        let evaluated = r["evaluated"].as_array().unwrap();
        assert_eq!(evaluated.len(), candidates, "{method}");
        if let Some(strategy) = strategy {
            assert!(evaluated.iter().all(|e| e["strategy"] == strategy), "{method}: {evaluated:?}");
        }
        // Every evaluated action has a measured fitness, the baselines' single one included.
        assert!(
            evaluated.iter().all(|e| e["fitness"].as_f64().is_some_and(|f| f.is_finite() && f > 0.0)),
            "{method}: {evaluated:?}"
        );
        let histogram: Vec<u64> =
            r["width_histogram"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
        let used: Vec<usize> = (0..histogram.len()).filter(|&w| histogram[w] > 0).collect();
        match method {
            // Equal widths: one width, plus one more for the most frequent that take the remainder.
            "es" => assert!(used.len() <= 2 && used.last().unwrap() - used[0] <= 1, "{histogram:?}"),
            "freq" => {
                let names: Vec<&str> = evaluated.iter().map(|e| e["strategy"].as_str().unwrap()).collect();
                assert_eq!(names, ["freq^0.25", "freq^0.5", "freq^1"]);
                assert!(evaluated.iter().all(|e| e["fitness"].as_f64().is_some_and(f64::is_finite)));
            }
            "bet-plain" => assert!(evaluated.iter().any(|e| e["strategy"] == "greedy"), "{evaluated:?}"),
            _ => assert!(used.len() > 2, "{method} gave nearly equal widths: {histogram:?}"),
        }
    }
    // The paper's placement: searched and retrained the same way; the file stores the ego rows
    // (exactly the limit) and the graph, and is measured by the runtime after propagation.
    let (output, out) = run("bet", "input");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains("by bet-runtime"));
    let (code, _, err) = bet(&["verify", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let r = report(&out);
    assert_eq!(r["evaluated_by"], "bet-runtime (the exported file)");
    assert_eq!(r["placement"], "input");
    assert_eq!(r["stored_values"], r["limit"]);
    assert_eq!(r["parity"]["agrees"], true, "{}", r["parity"]);
    assert!(r["test"]["recall"][2].as_f64().unwrap() > 0.0);
}

/// `--retrain-max-steps` lifts the cap of the selective retraining alone: the second run reuses
/// the first one's pretraining (same steps, one new checkpoint: the longer retraining's) and
/// retrains past `--max-steps`.
#[test]
fn retraining_can_run_longer_than_the_shared_pretraining() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt");
    let checkpoints = || {
        std::fs::read_dir(&ckpt)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "ckpt"))
            .count()
    };
    let run_in = |ckpt: &Path, name: &str, extra: &[&str]| -> serde_json::Value {
        let out = dir.path().join(name);
        let extra = [&["--method", "es", "--retrain-top", "1"][..], extra].concat();
        let output =
            Command::new(env!("CARGO_BIN_EXE_bet")).args(tiny_search_args(ckpt, &out, &extra)).output().unwrap();
        assert!(output.status.success(), "{name}: {}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_str(&std::fs::read_to_string(out.with_extension("json")).unwrap()).unwrap()
    };
    let run = |name: &str, extra: &[&str]| run_in(&ckpt, name, extra);
    let capped = run("capped.bet", &[]);
    let before = checkpoints();
    let longer = run("longer.bet", &["--retrain-max-steps", "16"]);
    assert_eq!(checkpoints(), before + 1, "only the longer retraining is new; the pretraining is reused");
    // The longer retraining took over the capped one's checkpoint and trained only the extra
    // steps, ending with the file a search with the higher cap writes from scratch.
    assert_eq!(longer["retrained"][0]["extended_from"].as_u64(), Some(8), "{longer}");
    let scratch = run_in(&dir.path().join("scratch"), "scratch.bet", &["--retrain-max-steps", "16"]);
    assert!(scratch["retrained"][0]["extended_from"].is_null());
    assert_eq!(scratch["retrained"][0]["best_step"], longer["retrained"][0]["best_step"]);
    let bytes = |name: &str| std::fs::read(dir.path().join(name)).unwrap();
    assert!(bytes("longer.bet") == bytes("scratch.bet"), "the continued retraining shipped another model");
    assert_eq!((capped["max_steps"].as_u64(), capped["retrain_max_steps"].as_u64()), (Some(8), Some(8)));
    assert_eq!((longer["max_steps"].as_u64(), longer["retrain_max_steps"].as_u64()), (Some(8), Some(16)));
    let steps = |r: &serde_json::Value| r["retrained"][0]["steps"].as_u64().unwrap();
    assert!(capped["pretrain_steps"].as_u64().unwrap() <= 8);
    assert_eq!(longer["pretrain_steps"], capped["pretrain_steps"]);
    assert!(steps(&capped) <= 8, "{capped}");
    // Rounds of 4 steps and a patience of 2 rounds: at least 12 steps unless the cap stops it.
    assert!((12..=16).contains(&steps(&longer)), "{longer}");
}

/// `--refit` trains the chosen widths once more on train ∪ validation for the step count the
/// chosen retraining kept, and ships that model: its file differs from the unrefit one, its
/// provenance names the refit split, it has no validation figure of its own, and its test is
/// measured on the file. `bet train --refit` does the same for equal widths.
#[test]
fn refit_ships_a_model_trained_on_train_and_validation() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt");
    let run = |name: &str, extra: &[&str]| -> (PathBuf, serde_json::Value) {
        let out = dir.path().join(name);
        let extra = [&["--method", "es", "--retrain-top", "1"][..], extra].concat();
        let output =
            Command::new(env!("CARGO_BIN_EXE_bet")).args(tiny_search_args(&ckpt, &out, &extra)).output().unwrap();
        assert!(output.status.success(), "{name}: {}", String::from_utf8_lossy(&output.stderr));
        let report = serde_json::from_str(&std::fs::read_to_string(out.with_extension("json")).unwrap()).unwrap();
        (out, report)
    };
    let (plain_file, plain) = run("plain.bet", &[]);
    let (refit_file, refit) = run("refit.bet", &["--refit"]);
    assert!(plain["refit"].is_null() && plain["validation"]["recall"][2].as_f64().is_some(), "{plain}");
    let kept = refit["retrained"][0]["best_step"].as_u64().unwrap();
    assert!(kept > 0);
    assert_eq!(refit["refit"]["steps"].as_u64(), Some(kept), "{refit}");
    assert_eq!(refit["refit"]["split"], "paper-50-25-25+refit-train-validation");
    assert!(refit["validation"].is_null(), "a refit model has no validation of its own: {refit}");
    assert_eq!(refit["evaluated_by"], "bet-runtime (the exported file)");
    assert!(refit["test"]["recall"][2].as_f64().unwrap() > 0.0);
    assert_eq!(refit["stored_values"], refit["limit"]);
    assert_eq!(refit["parity"]["agrees"], true);
    // The same widths, trained on other data: other values.
    let (code, out, err) = bet(&["compare", plain_file.to_str().unwrap(), refit_file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("same list 2440 (100.0%)"), "the refit changed nothing: {out}");
    let (code, out, _) = bet(&["inspect", refit_file.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(out.contains("split paper-50-25-25+refit-train-validation"), "{out}");
    // The file's metadata records the test figures it was measured at, and no validation
    // figure (the refit trained on validation); the unrefit file records both.
    let quality = |text: &str, target: &str| text.lines().any(|l| l.starts_with("quality") && l.contains(target));
    assert!(quality(&out, "test (recorded at export") && !quality(&out, "validation"), "{out}");
    let (code, plain_out, _) = bet(&["inspect", plain_file.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(quality(&plain_out, "validation (recorded at export") && quality(&plain_out, "test"), "{plain_out}");

    // bet train --refit: the early-stopped run's kept step, then the refit.
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/gowalla-sample");
    let report = dir.path().join("train.json");
    let flags = ["--max-steps", "9", "--refit", "--report", report.to_str().unwrap()];
    let (code, out, err) = tiny_train(&sample, "lightgcn", &ckpt, &flags);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("refit on train+validation"), "{out}");
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(r["refit"]["steps"], r["best_step"], "{r}");
    assert!(r["best_step"].as_u64().unwrap() > 0);
    let (code, _, err) = tiny_train(&sample, "lightgcn", &ckpt, &["--refit", "--epochs", "1"]);
    assert_ne!(code, 0);
    assert!(err.contains("--epochs"), "{err}");
}

/// `bet search --status` reads what a search's checkpoints hold, trains and writes nothing, and
/// agrees with the report of the run it watches: before it starts, after it ends, and with its
/// search record cut back as a kill in the middle of the search leaves it.
#[test]
fn search_status_reports_what_finished_without_training() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt");
    let out = dir.path().join("m.bet");
    let extra = ["--iterations", "4", "--candidates", "5", "--retrain-top", "2", "--refit"];
    let args = tiny_search_args(&ckpt, &out, &extra);
    let status = |json: bool| -> (String, serde_json::Value) {
        let mut with = args.clone();
        with.push("--status".into());
        if json {
            with.push("--json".into());
        }
        let output = Command::new(env!("CARGO_BIN_EXE_bet")).args(&with).output().unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let text = String::from_utf8(output.stdout).unwrap();
        let value = if json { serde_json::from_str(&text).unwrap() } else { serde_json::Value::Null };
        (text, value)
    };

    let (_, before) = status(true);
    assert_eq!(before["schema"], "bet-search-status/1");
    assert_eq!(before["phase"], "pretrain", "{before}");
    assert!(before["status"]["pretrain"].is_null() && before["status"]["evaluated"] == serde_json::json!([]));
    assert!(!ckpt.exists() && !out.exists(), "--status wrote something");

    let run = Command::new(env!("CARGO_BIN_EXE_bet")).args(&args).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.with_extension("json")).unwrap()).unwrap();
    let (_, after) = status(true);
    let s = &after["status"];
    assert_eq!(after["phase"], "export", "{after}");
    assert_eq!(s["evaluated"], report["evaluated"], "the replayed search differs from the run's");
    let retrained = report["retrained"].as_array().unwrap();
    let retrain = s["retrain"].as_array().unwrap();
    assert_eq!(retrain.len(), retrained.len());
    for (r, t) in retrained.iter().zip(retrain) {
        assert_eq!(r["evaluated"], t["evaluated"], "{after}");
        assert_eq!(r["steps"], t["training"]["steps"], "{after}");
        assert_eq!(r["best_step"], t["training"]["best_step"], "{after}");
        assert_eq!(t["training"]["finished"], true);
    }
    assert_eq!(s["refit"]["training"]["steps"], report["refit"]["steps"], "{after}");
    assert_eq!(s["pretrain"]["steps"], report["pretrain_steps"]);
    // The report's phases also count what follows the last save (restoring the best state, the
    // last predictor update, the retrained models' validations): the status's are at most those.
    for phase in ["pretrain", "search", "retrain"] {
        let (a, b) = (after["seconds"][phase].as_f64().unwrap(), report["seconds"][phase].as_f64().unwrap());
        assert!(a > 0.0 && a <= b, "{phase}: status {a} s, report {b} s");
    }
    let (text, _) = status(false);
    assert!(text.starts_with("phase: export\npretrain: finished,"), "{text}");
    assert!(text.contains("retrain 2 of 2 (action ") && text.contains("refit (action "), "{text}");

    // A search killed after two of its four iterations: its record holds two fitness values.
    let record_path = std::fs::read_dir(&ckpt)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_str().unwrap().starts_with("search-"))
        .unwrap();
    let mut record: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&record_path).unwrap()).unwrap();
    for field in ["fitness_bits", "seconds"] {
        record[field].as_array_mut().unwrap().truncate(2);
    }
    std::fs::write(&record_path, serde_json::to_vec(&record).unwrap()).unwrap();
    let (_, cut) = status(true);
    assert_eq!(cut["phase"], "search", "{cut}");
    assert_eq!(cut["status"]["evaluated"].as_array().unwrap()[..], report["evaluated"].as_array().unwrap()[..2]);
    assert_eq!(cut["status"]["retrain"], serde_json::json!([]), "{cut}");
    let (text, _) = status(false);
    assert!(text.contains("search: 2 of 4 evaluated"), "{text}");

    // Counts of zero are refused as the flags are read (exit 2), before any data is loaded.
    for flag in ["--iterations", "--candidates", "--finetune-epochs", "--retrain-top", "--round-steps", "--max-steps"] {
        let output = Command::new(env!("CARGO_BIN_EXE_bet")).args(["search", flag, "0"]).output().unwrap();
        let err = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{flag}: {err}");
        assert!(err.contains(flag) && err.contains("at least 1"), "{flag}: {err}");
    }
    let (code, _, err) = bet(&["train", "--epochs", "0"]);
    assert!(code == 2 && err.contains("--epochs") && err.contains("at least 1"), "{err}");

    // --json means nothing without --status.
    let mut wrong = args.clone();
    wrong.push("--json".into());
    let output = Command::new(env!("CARGO_BIN_EXE_bet")).args(&wrong).output().unwrap();
    assert!(!output.status.success() && String::from_utf8_lossy(&output.stderr).contains("--status"));
}

/// Output into a closed pipe (`bet rank ... | head -1`) ends quietly instead of panicking.
#[test]
fn a_closed_stdout_is_not_a_panic() {
    let users: Vec<String> = (0..6).map(|u| u.to_string()).collect();
    let mut child = Command::new(env!("CARGO_BIN_EXE_bet"))
        .args(["rank", &golden("lightgcn_f16_width.bet"), "--users", &users.join(","), "--k", "10"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader goes away before anything is written
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(0), "{err}");
}
