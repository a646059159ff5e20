//! Writes the golden fixtures into `bet-format/tests/golden/`. Run once, on purpose, when the
//! format changes; the tests never regenerate them, they only compare.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    std::fs::create_dir_all(&dir)?;
    for case in bet_format::testing::golden_cases()? {
        bet_format::write_atomic(&dir.join(case.name), &case.bytes)?;
        println!("wrote {} ({} bytes)", case.name, case.bytes.len());
    }
    Ok(())
}
