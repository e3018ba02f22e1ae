//! The eBPF datapath: the embedded object, loading and attaching it in a node's
//! namespace, and reading and writing its maps.

mod attach;
mod conntrack;
mod loader;
mod logs;
mod maps;
mod object;
mod services;
mod stats;

pub use attach::TcAttachMode;
pub use conntrack::{monotonic_now_ns, read_pinned_flows, GcReport, Timeouts};
pub use loader::NodeDatapath;
pub use logs::{NodeLog, NodeLogStream};
pub use maps::map_addr;
pub use object::object_bytes;
pub use services::{protocol_number, ServiceMaps};
pub use stats::{read_pinned, ReasonTotals};
