//! The AF_XDP switch of data path `afxdp`: a process that owns one UMEM shared by an AF_XDP
//! socket per port and rx queue, and moves every frame `iqd_xsk` hands it to the destination
//! port's TX ring by its descriptor, with no copy inside the UMEM.
//!
//! - `xsk`: the sockets and rings (libc only).
//! - `frames`: the ledger of where every UMEM frame is.
//! - `counters`: the per-port counters, shared with the kernel's map.
//! - `engine`: the ring thread.
//! - `run`: the process: setup, registration in the XSKMAP, control (tokio).
//! - `process`: starting and stopping it from `iqd up` and `iqd down`, and its report.
pub mod counters;
pub mod engine;
pub mod frames;
pub mod process;
pub mod run;
pub mod xsk;

pub use process::{read_report, running_pid, start, stop, Report};
pub use run::run;
