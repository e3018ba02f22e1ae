//! `aksnet check`: TCP probes between the cluster's namespaces, reporting for each
//! source and destination whether a connection was made and which source address the
//! destination saw. This is where NAT (or its absence) becomes visible.
//!
//! Every probe runs in-process: the listener socket is created inside the destination's
//! namespace and the client socket inside the source's (a socket stays in the namespace
//! it was created in), so no helper processes are started.
//!
//! `service` probes ClusterIPs the same way: listeners in every backend pod, a client
//! that connects N times and counts which backend answered.

mod matrix;
mod probe;
mod report;
mod service;

pub use matrix::cluster_matrix;
pub use probe::{run, Endpoint, EndpointKind, Probe, ProbeResult, CHECK_PORT};
pub use report::{render_service_table, render_table};
pub use service::{
    probe_service, probe_services, BackendAnswers, BackendListener, ServiceProbeResult,
    DEFAULT_ATTEMPTS,
};
