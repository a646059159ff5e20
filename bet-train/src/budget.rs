//! The parameter budget from the command line: `--sparsity 0.9` or `--keep 0.1`, exact decimals.
//!
//! The limit is `floor(keep · d_max · (|U| + |V|))`, computed in integers
//! ([`bet_format::Budget::limit_for`]) and never recomputed with floats. A budget that cannot give
//! every user and item width 1 — in every table: NCF has two, GMF and MLP, sharing one limit — is
//! refused.
//!
//! ```
//! use bet_train::budget::{keep_from_flags, limit};
//! let keep = keep_from_flags(Some("0.9"), None).unwrap();
//! assert_eq!(keep.to_string(), "0.1");
//! assert_eq!(limit(keep, 128, 29_858, 40_981, 1).unwrap(), 906_739);
//! assert!(limit(keep, 128, 29_858, 40_981, 2).is_ok()); // NCF: two tables, still feasible
//! assert!(limit(bet_format::Decimal::parse("0.001").unwrap(), 128, 29_858, 40_981, 1).is_err());
//! ```

use bet_format::{Budget, Decimal};

use crate::error::{Error, Result};

/// The kept fraction from `--sparsity` or `--keep` (exactly one of them).
pub fn keep_from_flags(sparsity: Option<&str>, keep: Option<&str>) -> Result<Decimal> {
    match (sparsity, keep) {
        (Some(s), None) => Decimal::from_sparsity(s).map_err(|e| Error::Budget(format!("--sparsity {s}: {e}"))),
        (None, Some(k)) => Decimal::parse(k).map_err(|e| Error::Budget(format!("--keep {k}: {e}"))),
        (Some(_), Some(_)) => Err(Error::Budget("give --sparsity or --keep, not both".into())),
        (None, None) => Err(Error::Budget("give --sparsity (e.g. 0.9) or --keep (e.g. 0.1)".into())),
    }
}

/// The integer limit, refused when it cannot give every entity width 1 in each of `tables`.
pub fn limit(keep: Decimal, d_max: u32, n_users: usize, n_items: usize, tables: u32) -> Result<u64> {
    let entities = (n_users + n_items) as u64;
    let limit = Budget::limit_for(keep, d_max, entities)?;
    let needed = entities * u64::from(tables);
    if limit < needed {
        return Err(Error::Budget(format!(
            "keep {keep} gives a limit of {limit} values for {n_users} users and {n_items} items (d_max {d_max}), \
             but every one of them needs width at least 1{}: {needed} values; raise --keep or lower --sparsity",
            if tables > 1 { format!(" in each of {tables} tables") } else { String::new() }
        )));
    }
    Ok(limit)
}
