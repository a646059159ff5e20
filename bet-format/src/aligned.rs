//! An owned byte buffer with 8-byte alignment (feature `alloc`).
//!
//! `Vec<u8>` only promises alignment 1, and [`crate::BetFile::new_checked`]
//! refuses payloads whose address is misaligned for their element type. Reading
//! a file into an [`AlignedBytes`] makes every 64-aligned file offset at least
//! 8-aligned in memory, which covers every dtype of the format.

use alloc::vec::Vec;

/// Bytes stored in `u64` words, so the start is 8-aligned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AlignedBytes {
    words: Vec<u64>,
    len: usize,
}

impl AlignedBytes {
    /// Copies `bytes` into an aligned buffer.
    pub fn new(bytes: &[u8]) -> AlignedBytes {
        let mut words = alloc::vec![0u64; bytes.len().div_ceil(8)];
        let dst: &mut [u8] = bytemuck::cast_slice_mut(&mut words);
        if let Some(d) = dst.get_mut(..bytes.len()) {
            d.copy_from_slice(bytes);
        }
        AlignedBytes { words, len: bytes.len() }
    }
    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        let all: &[u8] = bytemuck::cast_slice(&self.words);
        all.get(..self.len).unwrap_or(&[])
    }
    /// Reads a whole file into an aligned buffer.
    #[cfg(feature = "std")]
    pub fn read_file(path: &std::path::Path) -> std::io::Result<AlignedBytes> {
        std::fs::read(path).map(|v| AlignedBytes::new(&v))
    }
}

impl From<Vec<u8>> for AlignedBytes {
    fn from(v: Vec<u8>) -> AlignedBytes {
        AlignedBytes::new(&v)
    }
}

impl AsRef<[u8]> for AlignedBytes {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}
