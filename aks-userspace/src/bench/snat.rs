//! `aksnet bench --snat-exhaustion`: how fast one pod opens connections to the internet
//! through the load balancer's outbound rule, and how many it opens before its node's
//! SNAT ports run out (outboundType loadBalancer, `allocatedOutboundPorts`).
//!
//! Kept apart from the cell matrix: each cell here is a whole cluster with the load
//! balancer's outbound rule (kubenet/iptables and azure/ebpf; the fabric that SNATs is
//! the same in both, the node's own masquerade differs). A round opens connections from
//! one pod to one port of the internet host, one after another, and holds every one,
//! until a connection gets no answer within [`CONNECT_TIMEOUT`]: the port budget of the
//! node is spent. Each round uses its own server port, so the tuples of the previous
//! round (in TIME_WAIT in the fabric) cannot collide. Rounds alternate between cells.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::socket::{shutdown, Shutdown};
use serde::Serialize;

use crate::netns;
use crate::state::ClusterState;

/// How long a connection may take before it counts as refused: far beyond a round trip
/// here, short of TCP's first SYN retransmission (1 s).
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(300);
/// The first server port; round r uses `SERVER_PORT + r`.
const SERVER_PORT: u16 = 18200;
/// Connections past the budget a round tries before it gives up looking for the refusal.
const PAST_BUDGET: usize = 8;

/// The cells: network plugin and datapath.
pub const CELLS: [(&str, &str); 2] = [("kubenet", "iptables"), ("azure", "ebpf")];

/// One round of one cell.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SnatRound {
    pub cell: String,
    pub round: usize,
    /// The node's `allocatedOutboundPorts`.
    pub ports: u32,
    /// Connections answered before the first refusal.
    pub opened: usize,
    /// Whether a connection was refused (false: the budget did not hold).
    pub exhausted: bool,
    /// From the first connect to the last answered one.
    pub seconds: f64,
    pub connections_per_second: f64,
}

/// The description of cell `(plugin, datapath)` named `name`.
pub fn description(name: &str, (plugin, datapath): (&str, &str), ports: u32) -> String {
    let max_pods = if plugin == "kubenet" { 110 } else { 30 };
    format!(
        "name: {name}\nnetworkPlugin: {plugin}\ndatapath: {datapath}\nvnet:\n  addressSpace: 10.224.0.0/12\n  nodeSubnet: 10.224.0.0/24\nmaxPods: {max_pods}\nnodePools:\n  - {{ name: nodepool1, count: 2 }}\npodsPerNode: 1\nloadBalancerProfile: {{ allocatedOutboundPorts: {ports} }}\n"
    )
}

/// Runs `rounds` rounds on each of `clusters` (already up, named as the cells), in turn.
pub fn run(
    clusters: &[(String, ClusterState)],
    ports: u32,
    rounds: usize,
    progress: &dyn Fn(&str),
) -> Result<Vec<SnatRound>> {
    let mut results = Vec::new();
    for round in 0..rounds {
        for (cell, state) in clusters {
            super::interrupt::check()?;
            settle(state)?;
            let port = SERVER_PORT + u16::try_from(round).context("too many rounds")?;
            let measured = exhaust(state, port, ports as usize)
                .with_context(|| format!("{cell}, round {}", round + 1))?;
            let row = SnatRound {
                cell: cell.clone(),
                round,
                ports,
                ..measured
            };
            progress(&format!(
                "{cell} round {}: {} connections in {:.3} s ({:.0}/s), then {}",
                round + 1,
                row.opened,
                row.seconds,
                row.connections_per_second,
                if row.exhausted {
                    "refused"
                } else {
                    "no refusal"
                }
            ));
            results.push(row);
        }
    }
    Ok(results)
}

/// Waits (at most 10 s) until the previous round's flows are closed in the fabric, so
/// every round starts with the node's ports free.
fn settle(state: &ClusterState) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let open = crate::inspect::open_flows(state)?;
        if open == 0 {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{open} flows of the previous round are still open in the fabric after 10 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Opens connections from the first pod of the first node to the internet host's `port`
/// until one is refused or `budget + PAST_BUDGET` are open.
fn exhaust(state: &ClusterState, port: u16, budget: usize) -> Result<SnatRound> {
    let pod = state
        .nodes
        .first()
        .and_then(|n| n.pods.first())
        .context("the cluster has no pod")?;
    let listener = netns::run_in(&state.internet.namespace, || {
        Ok(TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))?)
    })
    .context("listening on the internet host")?;
    let target = SocketAddr::from((state.internet.address, port));
    let limit = budget + PAST_BUDGET;
    let accepted = AtomicUsize::new(0);
    std::thread::scope(|scope| -> Result<SnatRound> {
        // Accepts and holds every connection until the listener is shut down.
        let server = scope.spawn(|| {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept() {
                held.push(stream);
                accepted.fetch_add(1, Ordering::Release);
            }
            held.len()
        });
        let client = netns::run_in(&pod.namespace, || {
            let mut open: Vec<TcpStream> = Vec::with_capacity(limit);
            let started = Instant::now();
            let mut last = started;
            let mut exhausted = false;
            while open.len() < limit {
                match TcpStream::connect_timeout(&target, CONNECT_TIMEOUT) {
                    Ok(stream) => {
                        last = Instant::now();
                        open.push(stream);
                    }
                    Err(_) => {
                        exhausted = true;
                        break;
                    }
                }
            }
            let seconds = last.duration_since(started).as_secs_f64();
            // Held open until the server has taken every one from its queue.
            let deadline = Instant::now() + Duration::from_secs(5);
            while accepted.load(Ordering::Acquire) < open.len() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok((open.len(), exhausted, seconds))
        });
        // Wakes the blocked accept.
        let _ = shutdown(listener.as_raw_fd(), Shutdown::Both);
        let accepted = server
            .join()
            .map_err(|_| anyhow::anyhow!("the server panicked"))?;
        let (opened, exhausted, seconds) = client?;
        anyhow::ensure!(
            accepted >= opened,
            "the server accepted {accepted} connections, the client opened {opened}"
        );
        Ok(SnatRound {
            cell: String::new(),
            round: 0,
            ports: 0,
            opened,
            exhausted,
            seconds,
            connections_per_second: if seconds > 0.0 {
                opened as f64 / seconds
            } else {
                0.0
            },
        })
    })
}

/// The table of `rounds`: per cell, the median rate and what was opened.
pub fn render(rounds: &[SnatRound]) -> String {
    let mut table = crate::table::Table::new(&[
        "CELL",
        ">PORTS/NODE",
        ">OPENED (MIN-MAX)",
        ">CONN/S (MEDIAN)",
        ">S TO EXHAUSTION (MEDIAN)",
        "EVERY ROUND REFUSED",
    ]);
    let mut cells: Vec<&str> = rounds.iter().map(|r| r.cell.as_str()).collect();
    cells.dedup();
    cells.sort();
    cells.dedup();
    for cell in cells {
        let of: Vec<&SnatRound> = rounds.iter().filter(|r| r.cell == cell).collect();
        let opened: Vec<usize> = of.iter().map(|r| r.opened).collect();
        let rates: Vec<f64> = of.iter().map(|r| r.connections_per_second).collect();
        let seconds: Vec<f64> = of.iter().map(|r| r.seconds).collect();
        let median = |v: &[f64]| super::stats::median(v).unwrap_or(0.0);
        table.row(vec![
            cell.to_owned(),
            of.first().map_or(0, |r| r.ports).to_string(),
            format!(
                "{}-{}",
                opened.iter().min().copied().unwrap_or(0),
                opened.iter().max().copied().unwrap_or(0)
            ),
            format!("{:.0}", median(&rates)),
            format!("{:.3}", median(&seconds)),
            if of.iter().all(|r| r.exhausted) {
                "yes"
            } else {
                "NO"
            }
            .to_owned(),
        ]);
    }
    table.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_describe_valid_clusters_with_the_asked_budget() {
        for cell in CELLS {
            let yaml = description("sn0", cell, 64);
            let cluster = crate::model::validate(&crate::model::parse(&yaml).expect("parses"))
                .expect("validates");
            let rule = cluster
                .outbound
                .outbound_rule
                .expect("load balancer egress");
            assert_eq!(rule.allocated_outbound_ports, 64);
        }
    }

    #[test]
    fn the_table_reports_medians_and_refusals_per_cell() {
        let round = |cell: &str, opened, exhausted, seconds| SnatRound {
            cell: cell.into(),
            round: 0,
            ports: 64,
            opened,
            exhausted,
            seconds,
            connections_per_second: opened as f64 / seconds,
        };
        let table = render(&[
            round("kubenet/iptables", 64, true, 0.5),
            round("kubenet/iptables", 64, true, 0.25),
            round("kubenet/iptables", 64, true, 0.125),
            round("azure/ebpf", 72, false, 1.0),
        ]);
        assert!(table.contains("64-64"), "{table}");
        assert!(table.contains("NO"), "{table}");
        assert!(
            table.contains(" 256 "),
            "median of 128, 256, 512/s: {table}"
        );
    }
}
