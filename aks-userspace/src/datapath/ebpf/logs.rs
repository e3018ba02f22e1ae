//! Streaming the datapath's aya-log records to stderr, each line prefixed with the node
//! it came from. The level is the process's `log::max_level()`, which `aksnet up
//! --log-level` sets; it is also written into the object at load time, so records above
//! it are never produced in the kernel.

use anyhow::{Context, Result};
use aya_log::EbpfLogger;

use super::NodeDatapath;

/// A `log::Log` that writes `[node] LEVEL message` to stderr.
pub struct NodeLog {
    node: String,
}

impl log::Log for NodeLog {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            // Never panics on a closed stderr: `up` must reach its teardown.
            crate::errln!("[{}] {:<5} {}", self.node, record.level(), record.args());
        }
    }

    fn flush(&self) {}
}

/// The log records of one node's programs; `flush` prints what has arrived.
pub type NodeLogStream = EbpfLogger<NodeLog>;

impl NodeDatapath {
    /// Starts reading this datapath's log records, to be printed under `node`'s name.
    pub fn take_log_stream(&mut self, node: &str) -> Result<NodeLogStream> {
        EbpfLogger::init_with_logger(
            &mut self.ebpf,
            NodeLog {
                node: node.to_owned(),
            },
        )
        .with_context(|| format!("reading the datapath logs of node {node}"))
    }
}
