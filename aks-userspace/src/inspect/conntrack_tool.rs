//! The kernel's connection tracking table of a namespace, read with the `conntrack`
//! tool (`conntrack -L -o extended`) and parsed into [`Flow`]s: how the iptables
//! datapath's flows and NAT look.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use super::flow::{Flow, FlowTuple};
use crate::netns;

/// The IPv4 flows the kernel tracks in `namespace`, labelled with `node`.
pub fn read(namespace: &str, node: &str) -> Result<Vec<Flow>> {
    let text = netns::run_in(namespace, || {
        // The child inherits the namespace of the thread that starts it.
        let out = Command::new("conntrack")
            .args(["-L", "-f", "ipv4", "-o", "extended"])
            .stdin(Stdio::null())
            .output()
            .context(
                "starting conntrack (is conntrack-tools installed? `apt-get install conntrack`)",
            )?;
        if !out.status.success() {
            bail!(
                "conntrack -L failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        String::from_utf8(out.stdout).context("conntrack printed something that is not UTF-8")
    })
    .with_context(|| format!("listing the connections of node {node} ({namespace})"))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            parse_line(node, line).with_context(|| format!("parsing conntrack line {line:?}"))
        })
        .collect()
}

/// Deletes the flows of `namespace` whose replies go to `address` (those translated to
/// it). `conntrack -D` exits with 1 when it deleted nothing, which is fine here.
pub fn delete_flows_to(namespace: &str, address: Ipv4Addr) -> Result<()> {
    netns::run_in(namespace, || {
        let out = Command::new("conntrack")
            .args(["-D", "-f", "ipv4", "--reply-dst", &address.to_string()])
            .stdin(Stdio::null())
            .output()
            .context(
                "starting conntrack (is conntrack-tools installed? `apt-get install conntrack`)",
            )?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() && !stderr.contains(" 0 flow entries") {
            bail!("conntrack -D failed ({}): {}", out.status, stderr.trim());
        }
        Ok(())
    })
    .with_context(|| format!("removing the flows translated to {address} in {namespace}"))
}

/// One line of `conntrack -L -o extended`:
/// `ipv4 2 tcp 6 117 TIME_WAIT src=… dst=… sport=… dport=… src=… dst=… sport=… dport=… [ASSURED] mark=0 use=1`.
/// The first `src=` opens the original direction, the second the reply.
pub fn parse_line(node: &str, line: &str) -> Result<Flow> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let [_l3, _l3_number, protocol, _protocol_number, timeout, rest @ ..] = words.as_slice() else {
        bail!("expected at least five fields");
    };
    let timeout_secs: u64 = timeout
        .parse()
        .with_context(|| format!("timeout {timeout:?} is not a number"))?;
    let mut state = None;
    let mut flags = Vec::new();
    let mut tuples: Vec<PartialTuple> = Vec::new();
    for word in rest {
        if let Some(flag) = word.strip_prefix('[').and_then(|w| w.strip_suffix(']')) {
            flags.push(flag.to_owned());
        } else if let Some((key, value)) = word.split_once('=') {
            if key == "src" {
                tuples.push(PartialTuple::default());
            }
            // Keys before the first tuple or after both (mark, use, zone) say nothing
            // about addresses.
            let in_tuples = tuples.len() <= 2;
            if let Some(tuple) = tuples.last_mut().filter(|_| in_tuples) {
                tuple.set(key, value)?;
            }
        } else if tuples.is_empty() {
            state = Some((*word).to_owned());
        }
    }
    let [original, reply] = <[PartialTuple; 2]>::try_from(tuples)
        .map_err(|t| anyhow::anyhow!("expected two tuples (original, reply), found {}", t.len()))?;
    Ok(Flow::new(
        node,
        protocol,
        state,
        timeout_secs,
        original.finish()?,
        reply.finish()?,
        flags,
    ))
}

#[derive(Default)]
struct PartialTuple {
    src: Option<Ipv4Addr>,
    dst: Option<Ipv4Addr>,
    sport: Option<u16>,
    dport: Option<u16>,
}

impl PartialTuple {
    fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let bad = || format!("{key}={value}");
        match key {
            "src" => self.src = Some(value.parse().with_context(bad)?),
            "dst" => self.dst = Some(value.parse().with_context(bad)?),
            "sport" => self.sport = Some(value.parse().with_context(bad)?),
            "dport" => self.dport = Some(value.parse().with_context(bad)?),
            // ICMP's type, code and id, and anything newer: not part of the tuple shown.
            _ => {}
        }
        Ok(())
    }

    fn finish(self) -> Result<FlowTuple> {
        Ok(FlowTuple {
            src: self.src.context("a tuple without src=")?,
            dst: self.dst.context("a tuple without dst=")?,
            sport: self.sport,
            dport: self.dport,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_masqueraded_tcp_flow_shows_its_translation() {
        let flow = parse_line(
            "nodepool1-0",
            "ipv4     2 tcp      6 117 TIME_WAIT src=10.244.0.2 dst=203.0.113.10 sport=40312 dport=17001 src=203.0.113.10 dst=10.224.0.4 sport=17001 dport=40312 [ASSURED] mark=0 use=1",
        )
        .expect("parses");
        assert_eq!(flow.protocol, "tcp");
        assert_eq!(flow.state.as_deref(), Some("TIME_WAIT"));
        assert_eq!(flow.timeout_secs, 117);
        assert_eq!(flow.original.src, Ipv4Addr::new(10, 244, 0, 2));
        assert_eq!(flow.original.dport, Some(17001));
        assert_eq!(flow.reply.dst, Ipv4Addr::new(10, 224, 0, 4));
        assert_eq!(flow.flags, ["ASSURED"]);
        assert_eq!(flow.nat.as_deref(), Some("snat"));
    }

    #[test]
    fn an_unreplied_icmp_flow_has_no_ports_and_no_nat() {
        let flow = parse_line(
            "n",
            "ipv4     2 icmp     1 29 src=10.244.0.2 dst=10.244.1.2 type=8 code=0 id=7 [UNREPLIED] src=10.244.1.2 dst=10.244.0.2 type=0 code=0 id=7 mark=0 use=1",
        )
        .expect("parses");
        assert_eq!(flow.state, None);
        assert_eq!(flow.original.sport, None);
        assert_eq!(flow.flags, ["UNREPLIED"]);
        assert_eq!(flow.nat, None);
    }

    #[test]
    fn a_service_flow_is_destination_natted() {
        let flow = parse_line(
            "n",
            "ipv4     2 tcp      6 86399 ESTABLISHED src=10.244.0.2 dst=10.0.0.10 sport=40000 dport=80 src=10.244.1.3 dst=10.244.0.2 sport=8080 dport=40000 [ASSURED] mark=0 use=1",
        )
        .expect("parses");
        assert_eq!(flow.nat.as_deref(), Some("dnat"));
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse_line("n", "conntrack v1.4.7").is_err());
    }
}
