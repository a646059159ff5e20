//! Packages `bet-runtime`'s C API (feature `capi`) as `libbet_capi.a`. The functions are
//! defined in `bet_runtime::capi`; the header is `bet-runtime/include/bet.h` (cbindgen, checked
//! in; `.ci/run` fails when it is stale). Link with `-lpthread -ldl -lm` on Linux.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub use bet_runtime::capi;
