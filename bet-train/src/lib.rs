//! # bet-train: the host side of bet
//!
//! Today: the `bet` command line's library parts — [`report`] (`bet inspect`, `bet verify`,
//! the size-budget gate), [`synthetic`] (seeded budgeted models for the demo and benchmarks)
//! and [`mod@bench`] (`bet bench topk`). Training, the BET search and export arrive with the
//! trainer issues; they will write files through `bet_format::ModelContents` like the demo does.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod action;
pub mod backbone;
pub mod bench;
pub mod budget;
pub mod checkpoint;
pub mod data;
mod error;
pub mod eval;
pub mod export;
#[cfg(test)]
mod gradcheck;
pub mod graph;
pub mod lightgcn;
pub mod ncf;
pub mod ngcf;
pub mod predictor;
pub mod report;
pub mod search;
pub mod split;
pub mod synthetic;
pub mod train;

pub use error::{Error, Result};

/// `println!` for command-line output that ends the process quietly (exit 0) when stdout is
/// closed, as in `bet rank ... | head -1`, instead of panicking on the broken pipe.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if writeln!(std::io::stdout(), $($arg)*).is_err() {
            std::process::exit(0);
        }
    }};
}

/// The README's Rust examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
