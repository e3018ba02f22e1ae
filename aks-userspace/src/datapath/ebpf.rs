//! The eBPF datapath: one loaded object per node, `from_pod` on every pod veth, maps and
//! links pinned under `/sys/fs/bpf/aksnet/<cluster>/<node>/`.

use anyhow::{Context, Result};

use super::Datapath;
use crate::ebpf::NodeDatapath;
use crate::model;
use crate::plan::Plan;
use crate::state::ClusterState;
use crate::topology::layout::Layout;

pub struct EbpfDatapath {
    nodes: Vec<NodeDatapath>,
    attachments: usize,
}

impl EbpfDatapath {
    pub fn install(plan: &Plan, layout: &Layout) -> Result<Self> {
        let pin_root = ClusterState::pin_dir(&plan.name);
        let mut nodes = Vec::with_capacity(layout.nodes.len());
        let mut attachments = 0;
        for node in &layout.nodes {
            let pin_dir = pin_root.join(&node.name);
            let mut datapath = NodeDatapath::load(&node.namespace, Some(&pin_dir))
                .with_context(|| format!("loading the eBPF datapath for node {}", node.name))?;
            for pod in &node.pods {
                datapath
                    .attach_from_pod(&pod.host_interface)
                    .with_context(|| {
                        format!("attaching to pod {} on node {}", pod.name, node.name)
                    })?;
                attachments += 1;
            }
            nodes.push(datapath);
        }
        Ok(Self { nodes, attachments })
    }
}

impl Datapath for EbpfDatapath {
    fn kind(&self) -> model::Datapath {
        model::Datapath::Ebpf
    }

    fn summary(&self) -> String {
        format!(
            "ebpf: from_pod on {} pod veths in {} nodes (counting by reason; kernel routing forwards)",
            self.attachments,
            self.nodes.len()
        )
    }
}
