//! The metadata section: model kind, widths, counts, the exact budget and provenance.
//!
//! Encoded with postcard as the enum [`MetadataRepr`] (so a later layout is a
//! new variant, never a trailing field). Strings borrow from the file, so
//! decoding needs no allocator. The section is capped at
//! [`crate::MAX_METADATA_BYTES`] before it is decoded.
//!
//! The budget is integer arithmetic end to end:
//!
//! ```
//! use bet_format::{Budget, Decimal};
//! let keep = Decimal::parse("0.1").unwrap();
//! // floor(0.1 * 128 * (29_858 + 40_981))
//! assert_eq!(Budget::limit_for(keep, 128, 29_858 + 40_981).unwrap(), 906_739);
//! assert_eq!(Decimal::from_sparsity("0.9").unwrap(), keep);
//! ```

use serde::{Deserialize, Serialize};

use crate::Error;

/// Which scoring function a file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ModelKind {
    /// Matrix factorisation: score is the dot product of the stored rows.
    Mf,
    /// LightGCN: stored rows are final (propagated) vectors; score is their dot product.
    LightGcn,
    /// NGCF: stored rows are the final 4·d vectors, columns layer-interleaved; dot product.
    Ngcf,
    /// NCF (NeuMF with one hidden layer): see the spec for the exact function.
    Ncf,
}

impl ModelKind {
    /// Lower-case name used by the command line and reports.
    pub const fn name(self) -> &'static str {
        match self {
            ModelKind::Mf => "mf",
            ModelKind::LightGcn => "lightgcn",
            ModelKind::Ngcf => "ngcf",
            ModelKind::Ncf => "ncf",
        }
    }
    /// Whether the score is a plain dot product of the stored rows.
    pub const fn is_dot_product(self) -> bool {
        !matches!(self, ModelKind::Ncf)
    }
}

/// Where a propagating model's width mask was applied during training.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MaskPlacement {
    /// No propagation (MF, NCF): the stored rows are the trained rows.
    NotApplicable,
    /// The ego table was cut; final vectors are dense (the paper's). LightGCN only: the file
    /// stores the ego rows and the training graph, and a runtime propagates them (spec §7.5).
    Input,
    /// Full-width ego table, final vectors cut to each width.
    Output,
    /// Ego table and final vectors both cut.
    Both,
}

impl MaskPlacement {
    /// Lower-case name.
    pub const fn name(self) -> &'static str {
        match self {
            MaskPlacement::NotApplicable => "n/a",
            MaskPlacement::Input => "input",
            MaskPlacement::Output => "output",
            MaskPlacement::Both => "both",
        }
    }
}

/// An exact non-negative decimal `units / 10^scale` (e.g. the kept fraction 0.1 = 1/10^1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decimal {
    /// The integer numerator.
    pub units: u64,
    /// The power of ten in the denominator, at most [`Decimal::MAX_SCALE`].
    pub scale: u8,
}

impl Decimal {
    /// Most decimal places accepted (10^18 fits a `u64`).
    pub const MAX_SCALE: u8 = 18;

    /// Parses `"0.1"`, `".05"`, `"1"`: digits with at most one point, no sign, no exponent.
    /// The value must lie in (0, 1]. Trailing zeros are dropped so equal values compare equal.
    pub fn parse(text: &str) -> Result<Decimal, Error> {
        Decimal::parse_raw(text)?.checked_fraction()
    }

    /// Parses digits with at most one point into a normalised decimal, any value.
    fn parse_raw(text: &str) -> Result<Decimal, Error> {
        let bytes = text.as_bytes();
        if bytes.is_empty() {
            return Err(Error::InvalidDecimal { reason: "empty" });
        }
        let mut units: u64 = 0;
        let mut scale: u8 = 0;
        let mut seen_point = false;
        let mut seen_digit = false;
        for &b in bytes {
            match b {
                b'.' if !seen_point => seen_point = true,
                b'0'..=b'9' => {
                    seen_digit = true;
                    if seen_point {
                        if scale == Self::MAX_SCALE {
                            return Err(Error::InvalidDecimal { reason: "more than 18 decimal places" });
                        }
                        scale += 1;
                    }
                    units = units
                        .checked_mul(10)
                        .and_then(|u| u.checked_add(u64::from(b - b'0')))
                        .ok_or(Error::InvalidDecimal { reason: "too many digits" })?;
                }
                _ => {
                    return Err(Error::InvalidDecimal { reason: "only digits and one '.' are allowed" });
                }
            }
        }
        if !seen_digit {
            return Err(Error::InvalidDecimal { reason: "no digits" });
        }
        Ok(Decimal { units, scale }.normalized())
    }

    /// The kept fraction for a sparsity given as a decimal: `keep = 1 - sparsity`, exactly.
    pub fn from_sparsity(text: &str) -> Result<Decimal, Error> {
        let s = Decimal::parse_raw(text)?;
        let one = pow10(s.scale).ok_or(Error::InvalidDecimal { reason: "scale" })?;
        let units = one.checked_sub(s.units).ok_or(Error::InvalidDecimal { reason: "sparsity above 1" })?;
        Decimal { units, scale: s.scale }.normalized().checked_fraction()
    }

    fn normalized(mut self) -> Decimal {
        while self.scale > 0 && self.units.is_multiple_of(10) {
            self.units /= 10;
            self.scale -= 1;
        }
        self
    }

    fn checked_fraction(self) -> Result<Decimal, Error> {
        if self.units == 0 {
            return Err(Error::InvalidDecimal { reason: "must be above 0" });
        }
        let one = pow10(self.scale).ok_or(Error::InvalidDecimal { reason: "scale" })?;
        if self.units > one {
            return Err(Error::InvalidDecimal { reason: "must be at most 1" });
        }
        Ok(self)
    }

    /// `floor(self * factor)`, exactly, `None` on overflow.
    pub fn floor_mul(self, factor: u64) -> Option<u64> {
        let den = u128::from(pow10(self.scale)?);
        let num = u128::from(self.units).checked_mul(u128::from(factor))?;
        u64::try_from(num / den).ok()
    }
}

impl core::fmt::Display for Decimal {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let Some(den) = pow10(self.scale) else {
            return f.write_str("?");
        };
        let whole = self.units / den;
        let frac = self.units % den;
        if self.scale == 0 {
            write!(f, "{whole}")
        } else {
            write!(f, "{whole}.{frac:0width$}", width = usize::from(self.scale))
        }
    }
}

fn pow10(scale: u8) -> Option<u64> {
    10u64.checked_pow(u32::from(scale))
}

/// The parameter budget of a file: the kept fraction, the integer limit and what is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    /// Kept fraction (0.2, 0.1, 0.05 for 80, 90, 95% sparsity).
    pub keep: Decimal,
    /// `floor(keep · d_max · (n_users + n_items))`, computed in integers.
    pub limit: u64,
    /// Embedding values stored (every table, both NCF tables); must equal the structure's count.
    pub stored: u64,
}

impl Budget {
    /// The limit `floor(keep · d_max · entities)`, in integers.
    pub fn limit_for(keep: Decimal, d_max: u32, entities: u64) -> Result<u64, Error> {
        let factor = u64::from(d_max).checked_mul(entities).ok_or(Error::OverCap {
            what: "d_max * entities",
            value: u64::MAX,
            max: u64::MAX,
        })?;
        keep.floor_mul(factor).ok_or(Error::InvalidDecimal { reason: "limit overflows u64" })
    }
}

/// Ranking quality at k = 5, 10, 20 (Recall@k and NDCG@k) of the model the file holds.
///
/// `bet search` measures it on the exported bytes with `bet-runtime` (training and validation
/// items excluded for test) and checks that it equals its own evaluation of the shipped values,
/// before writing it here; the reader does not recompute it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Quality {
    /// Recall@5, @10, @20.
    pub recall: [f32; 3],
    /// NDCG@5, @10, @20.
    pub ndcg: [f32; 3],
}

/// Where a file came from.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Provenance<'a> {
    /// Dataset name (e.g. `gowalla`).
    pub dataset: &'a str,
    /// SHA-256 of the dataset files as the trainer read them.
    pub dataset_sha256: [u8; 32],
    /// Split protocol (e.g. `paper-50-25-25`).
    pub split: &'a str,
    /// The seed of the run.
    pub seed: u64,
    /// Worker threads of the run (results are reproducible per seed and thread count).
    pub threads: u32,
    /// Version of the program that wrote the file.
    pub trainer_version: &'a str,
    /// Git commit of that program (empty if unknown).
    pub git_commit: &'a str,
    /// Validation quality of this file's model, if recorded.
    pub validation: Option<Quality>,
    /// Test quality of this file's model, if recorded.
    pub test: Option<Quality>,
}

/// The decoded metadata section (layout version 1).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metadata<'a> {
    /// Which scoring function.
    pub model: ModelKind,
    /// Mask placement for LightGCN/NGCF; [`MaskPlacement::NotApplicable`] otherwise.
    pub placement: MaskPlacement,
    /// The budget dimension d_max (128 in the paper).
    pub d_max: u32,
    /// Full width of a stored vector: d_max, or 4·d_max for NGCF. Every row width is at most this.
    pub vector_width: u32,
    /// Number of users.
    pub n_users: u32,
    /// Number of items.
    pub n_items: u32,
    /// The parameter budget, if the model has one.
    pub budget: Option<Budget>,
    /// Provenance.
    #[serde(borrow)]
    pub provenance: Provenance<'a>,
}

/// The versioned wire form of the metadata section.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum MetadataRepr<'a> {
    /// Layout version 1.
    #[serde(borrow)]
    V1(Metadata<'a>),
}

impl<'a> Metadata<'a> {
    /// Decodes a metadata payload: the whole payload, nothing left over.
    pub fn decode(bytes: &'a [u8]) -> Result<Metadata<'a>, Error> {
        if bytes.len() as u64 > crate::MAX_METADATA_BYTES {
            return Err(Error::MetadataTooLarge { len: bytes.len() as u64, max: crate::MAX_METADATA_BYTES });
        }
        let (repr, rest) = postcard::take_from_bytes::<MetadataRepr<'a>>(bytes)
            .map_err(|e| Error::MetadataDecode { reason: postcard_reason(&e) })?;
        if !rest.is_empty() {
            return Err(Error::MetadataDecode { reason: "trailing bytes after the metadata" });
        }
        let MetadataRepr::V1(meta) = repr;
        Ok(meta)
    }

    /// Encodes as the metadata payload.
    #[cfg(feature = "alloc")]
    pub fn encode(&self) -> Result<alloc::vec::Vec<u8>, Error> {
        postcard::to_allocvec(&MetadataRepr::V1(*self))
            .map_err(|_| Error::InvalidInput { reason: "metadata does not encode" })
    }

    /// The vector width the spec requires for `model` and `d_max`.
    pub fn expected_vector_width(model: ModelKind, d_max: u32) -> Option<u32> {
        match model {
            ModelKind::Ngcf => d_max.checked_mul(4),
            _ => Some(d_max),
        }
    }

    /// Checks the rules that involve only the metadata itself.
    pub fn check_self(&self) -> Result<(), Error> {
        let placement_ok = match self.model {
            ModelKind::Mf | ModelKind::Ncf => self.placement == MaskPlacement::NotApplicable,
            ModelKind::LightGcn | ModelKind::Ngcf => self.placement != MaskPlacement::NotApplicable,
        };
        if !placement_ok {
            return Err(Error::InvalidMetadata { reason: "mask placement does not fit the model kind" });
        }
        // The input placement stores ego rows that a runtime propagates; only LightGCN's
        // propagation is parameter-free (NGCF's has weights the format does not carry).
        if self.placement == MaskPlacement::Input && self.model != ModelKind::LightGcn {
            return Err(Error::InvalidMetadata { reason: "the input placement is stored for LightGCN only" });
        }
        if self.d_max == 0 {
            return Err(Error::InvalidMetadata { reason: "d_max is 0" });
        }
        if Metadata::expected_vector_width(self.model, self.d_max) != Some(self.vector_width) {
            return Err(Error::InvalidMetadata { reason: "vector width must be d_max (4 * d_max for NGCF)" });
        }
        if self.vector_width > crate::MAX_VECTOR_WIDTH {
            return Err(Error::OverCap {
                what: "vector width",
                value: u64::from(self.vector_width),
                max: u64::from(crate::MAX_VECTOR_WIDTH),
            });
        }
        if self.model == ModelKind::Ncf && self.d_max > crate::layout::MAX_NCF_WIDTH {
            return Err(Error::OverCap {
                what: "NCF width",
                value: u64::from(self.d_max),
                max: u64::from(crate::layout::MAX_NCF_WIDTH),
            });
        }
        if let Some(b) = self.budget {
            let entities = u64::from(self.n_users) + u64::from(self.n_items);
            let limit = Budget::limit_for(b.keep, self.d_max, entities)?;
            if limit != b.limit {
                return Err(Error::MetadataMismatch { field: "budget.limit", claimed: b.limit, actual: limit });
            }
            if b.keep.checked_fraction().is_err() {
                return Err(Error::InvalidMetadata { reason: "budget.keep is not in (0, 1]" });
            }
        }
        Ok(())
    }
}

fn postcard_reason(e: &postcard::Error) -> &'static str {
    use postcard::Error as P;
    match e {
        P::DeserializeUnexpectedEnd => "unexpected end",
        P::DeserializeBadVarint => "bad varint",
        P::DeserializeBadBool => "bad bool",
        P::DeserializeBadChar => "bad char",
        P::DeserializeBadUtf8 => "bad UTF-8",
        P::DeserializeBadOption => "bad option tag",
        // serde reports an out-of-range variant index through its custom error.
        P::DeserializeBadEnum | P::SerdeDeCustom => "unknown enum variant (unknown metadata version?)",
        P::DeserializeBadEncoding => "bad encoding",
        _ => "malformed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_parse_and_sparsity() {
        assert_eq!(Decimal::parse("0.10").unwrap(), Decimal { units: 1, scale: 1 });
        assert_eq!(Decimal::parse(".05").unwrap(), Decimal { units: 5, scale: 2 });
        assert_eq!(Decimal::parse("1").unwrap(), Decimal { units: 1, scale: 0 });
        assert_eq!(Decimal::from_sparsity("0.95").unwrap(), Decimal { units: 5, scale: 2 });
        assert_eq!(Decimal::from_sparsity("0").unwrap(), Decimal { units: 1, scale: 0 });
        assert!(Decimal::parse("0").is_err());
        assert!(Decimal::parse("1.5").is_err());
        assert!(Decimal::parse("-0.1").is_err());
        assert!(Decimal::parse("1e-1").is_err());
        assert!(Decimal::parse("0.1.2").is_err());
        assert!(Decimal::from_sparsity("1").is_err());
        assert!(Decimal::from_sparsity("1.2").is_err());
        assert_eq!(Decimal { units: 5, scale: 2 }.to_string(), "0.05");
    }

    #[test]
    fn limit_is_floor_in_integers() {
        // 0.1 is not representable in binary; 0.1 * 10 * 3 must still be exactly 3.
        let keep = Decimal::parse("0.1").unwrap();
        assert_eq!(Budget::limit_for(keep, 10, 3).unwrap(), 3);
        assert_eq!(Budget::limit_for(Decimal::parse("0.05").unwrap(), 128, 70_839).unwrap(), 453_369);
        assert_eq!(Budget::limit_for(Decimal::parse("0.2").unwrap(), 128, 70_839).unwrap(), 1_813_478);
        assert_eq!(Budget::limit_for(Decimal::parse("0.333").unwrap(), 1, 1000).unwrap(), 333);
    }
}
