//! A stop signal (Ctrl-C, `aksnet down`'s SIGTERM) is honoured inside
//! `datapath::install` too, not only while namespaces are built: loading every node
//! and programming thousands of services is work between whose steps `up` must be able
//! to stop. A rollback's install (`OnStop::Finish`, `aksnet update` undoing a node)
//! is not stopped. Its own test binary: the signal it raises is this process's.

use aks_userspace::datapath::{self, OnStop};
use aks_userspace::stop::{self, Stopped};
use aks_userspace::topology::layout;
use aks_userspace::{model, plan};
use nix::sys::signal::{raise, Signal};

fn description(datapath: &str) -> String {
    format!(
        "name: stopinst\nnetworkPlugin: kubenet\ndatapath: {datapath}\nvnet:\n  addressSpace: 10.224.0.0/12\n  nodeSubnet: 10.224.0.0/24\nnodePools:\n  - {{ name: nodepool1, count: 2, osType: Linux }}\npodsPerNode: 1\nservices:\n  - {{ name: web, clusterIP: 10.0.0.20, port: 80, targetPort: 8080, backends: 2 }}\n"
    )
}

#[test]
fn install_stops_before_its_first_node_once_a_stop_was_requested() {
    stop::install().expect("catching the stop signals");
    raise(Signal::SIGTERM).expect("SIGTERM to this test process");
    assert_eq!(stop::requested(), Some(Signal::SIGTERM));
    for datapath in ["ebpf", "iptables"] {
        let cluster = model::load(&description(datapath)).expect("a valid description");
        let plan = plan::plan(&cluster).expect("plannable");
        // The layout names namespaces that were never built: any step install took
        // before looking for the stop would fail on them with another error.
        let layout = layout::layout(&plan);
        let stopped = |on_stop| match datapath::install(&plan, &layout, on_stop) {
            Ok(_) => panic!("{datapath}: install of namespaces that do not exist succeeded"),
            Err(err) => err.chain().any(|e| e.downcast_ref::<Stopped>().is_some()),
        };
        assert!(
            stopped(OnStop::Stop),
            "{datapath}: stopped before its first node"
        );
        // A rollback's install (`OnStop::Finish`) goes on: here it fails on the first
        // namespace instead, for another reason than the stop.
        assert!(
            !stopped(OnStop::Finish),
            "{datapath}: a rollback is not stopped"
        );
        // A failed install leaves no pinned BPF objects behind.
        let pins = std::path::Path::new("/sys/fs/bpf/aksnet/stopinst");
        assert!(!pins.exists(), "{datapath}: {} left behind", pins.display());
    }
}
