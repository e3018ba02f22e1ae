//! Streaming the datapath's aya-log records to stderr, each line prefixed with the node
//! it came from. The level is the process's `log::max_level()`, which `aksnet up
//! --log-level` sets; it is also written into the object at load time, so records above
//! it are never produced in the kernel.

use aks_ebpf_common::Reason;
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
            let message = with_reason_name(record.args().to_string());
            crate::errln!("[{}] {:<5} {message}", self.node, record.level());
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

/// The kernel logs a drop as `drop reason N` (see aks-ebpf's `account`): puts the
/// reason's name in its place, as `aksnet inspect stats` and `monitor` print it.
fn with_reason_name(message: String) -> String {
    const MARK: &str = "drop reason ";
    let Some(at) = message.find(MARK) else {
        return message;
    };
    let start = at + MARK.len();
    let digits = message[start..]
        .bytes()
        .take_while(u8::is_ascii_digit)
        .count();
    match message[start..start + digits]
        .parse()
        .ok()
        .and_then(Reason::from_index)
    {
        Some(reason) => format!(
            "{}{}{}",
            &message[..at],
            reason.name(),
            &message[start + digits..]
        ),
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_logged_drop_reason_gets_its_name() {
        let index = Reason::DropSpoofedSource.index();
        assert_eq!(
            with_reason_name(format!("from_pod: drop reason {index} (74 bytes)")),
            "from_pod: drop-spoofed-source (74 bytes)"
        );
        assert_eq!(
            with_reason_name("from_pod: drop reason 999 (74 bytes)".into()),
            "from_pod: drop reason 999 (74 bytes)",
            "an unknown number stays a number"
        );
        assert_eq!(with_reason_name("other".into()), "other");
    }
}
