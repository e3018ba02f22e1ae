//! The eBPF datapath: the embedded object, loading and attaching it in a node's
//! namespace, and reading its maps back.

mod loader;
mod object;
mod stats;

pub use loader::NodeDatapath;
pub use object::object_bytes;
pub use stats::ReasonTotals;
