//! The one shape of a tracked flow, for both datapaths: what the sender sent and what
//! the answer must look like, and the translation that follows from the two.

use std::net::Ipv4Addr;

use serde::Serialize;

/// One direction of a flow. Ports are absent for protocols without them (ICMP).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FlowTuple {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
}

/// A tracked flow: what the sender sent (`original`) and what the answer must look like
/// (`reply`). When the reply is not the original mirrored, the flow was translated.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Flow {
    pub node: String,
    pub protocol: String,
    /// TCP state (`ESTABLISHED`, `TIME_WAIT`, …); absent for UDP and ICMP.
    pub state: Option<String>,
    /// Seconds until the entry expires.
    pub timeout_secs: u64,
    pub original: FlowTuple,
    pub reply: FlowTuple,
    /// `ASSURED`, `UNREPLIED`, …
    pub flags: Vec<String>,
    /// `snat`, `dnat` or `snat+dnat`; absent for untranslated flows.
    pub nat: Option<String>,
}

impl Flow {
    pub fn new(
        node: &str,
        protocol: &str,
        state: Option<String>,
        timeout_secs: u64,
        original: FlowTuple,
        reply: FlowTuple,
        flags: Vec<String>,
    ) -> Self {
        // The reply goes to whoever the source became, from whoever the destination became.
        let snat = reply.dst != original.src || reply.dport != original.sport;
        let dnat = reply.src != original.dst || reply.sport != original.dport;
        let nat = match (snat, dnat) {
            (true, true) => Some("snat+dnat"),
            (true, false) => Some("snat"),
            (false, true) => Some("dnat"),
            (false, false) => None,
        };
        Flow {
            node: node.to_owned(),
            protocol: protocol.to_owned(),
            state,
            timeout_secs,
            original,
            reply,
            flags,
            nat: nat.map(str::to_owned),
        }
    }
}
