//! Profiling helper: builds the Gowalla-sized 10% file once and runs only top-20 queries, so
//! `perf stat` / `perf record` see the runtime alone. `cargo run --release -p bet-train --example
//! topk_profile -- [queries] [keep]`.
use bet_format::{AlignedBytes, Decimal, ValueDtype};
use bet_runtime::{Filter, Model, Scored};
use bet_train::synthetic::{SplitMix, SyntheticModel, zipf_frequencies};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let queries: usize = args.next().map_or(Ok(20_000), |a| a.parse())?;
    let keep = Decimal::parse(&args.next().unwrap_or_else(|| "0.1".into()))?;
    let m = SyntheticModel::budgeted(&zipf_frequencies(29_858, 1), &zipf_frequencies(40_981, 2), 128, keep, 5)?;
    let bytes = AlignedBytes::new(&m.to_bytes(ValueDtype::F16, "profile")?);
    let model = Model::new(bytes.as_bytes())?;
    let mut rng = SplitMix(3);
    let mut out = [Scored::EMPTY; 20];
    let t = std::time::Instant::now();
    let mut sum = 0usize;
    for _ in 0..queries {
        let u = (rng.next_u64() % 29_858) as u32;
        sum += model.top_k(u, 20, &Filter::NONE, &mut out)?;
    }
    let per = t.elapsed().as_secs_f64() / queries as f64;
    println!("{queries} queries, {:.1} us/query (mean), {sum} results", per * 1e6);
    Ok(())
}
