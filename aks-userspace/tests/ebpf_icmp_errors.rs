//! Privileged: an ICMP "fragmentation needed" about a masqueraded flow reaches the pod
//! on the eBPF datapath, so path-MTU discovery works through SNAT as it does with
//! iptables. The VNet's link to the internet host gets a smaller MTU; the VNet's router
//! answers a bigger packet that may not be fragmented with the error, addressed to the
//! node address the packet left with; the datapath translates it back to the pod.

mod common;

use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::time::Duration;

use aks_userspace::netns;
use aks_userspace::state::ClusterState;
use common::cluster::*;
use common::{ip, require_privileges};

const LINK_MTU: u32 = 1200;

fn set_int_option(socket: &UdpSocket, name: libc::c_int, value: libc::c_int) {
    // SAFETY: a valid socket and a pointer to an int of the size given.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(
        rc,
        0,
        "setsockopt {name}: {}",
        std::io::Error::last_os_error()
    );
}

/// The path MTU the pod's kernel holds for the socket's destination (`IP_MTU`).
fn path_mtu(socket: &UdpSocket) -> u32 {
    let mut mtu: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: a valid socket, an int and its size.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MTU,
            (&mut mtu as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    assert_eq!(
        rc,
        0,
        "getsockopt IP_MTU: {}",
        std::io::Error::last_os_error()
    );
    mtu as u32
}

#[test]
fn a_frag_needed_for_a_masqueraded_flow_reaches_the_pod() {
    require_privileges();
    let name = cluster_name("im");
    let _down = Down(name.clone());
    up_keep(&description(&name, "kubenet", "ebpf", 1, 1));
    let state = ClusterState::require(&name).expect("state");
    let pod = state.nodes[0].pods[0].namespace.clone();
    let internet = state.internet.address;
    ip(&[
        "-n",
        &state.vnet,
        "link",
        "set",
        "internet",
        "mtu",
        &LINK_MTU.to_string(),
    ]);

    let learned = netns::run_in(&pod, || {
        let socket = UdpSocket::bind("0.0.0.0:0")?;
        // Don't fragment: the path MTU must be discovered.
        set_int_option(&socket, libc::IP_MTU_DISCOVER, libc::IP_PMTUDISC_DO);
        socket.connect((internet, 9))?;
        let before = path_mtu(&socket);
        let mut learned = before;
        // A few tries, a second apart (routers rate-limit ICMP errors); bounded.
        for _ in 0..5 {
            // An EMSGSIZE once the smaller MTU is known is the point, not a failure.
            let _ = socket.send(&[0x5a; 1400]);
            std::thread::sleep(Duration::from_millis(1000));
            learned = path_mtu(&socket);
            if learned != before {
                break;
            }
        }
        Ok((before, learned))
    })
    .expect("sending from the pod");
    assert_eq!(learned.0, 1500, "the pod starts with its link's MTU");
    assert_eq!(
        learned.1, LINK_MTU,
        "the pod learned the smaller MTU from the translated ICMP error"
    );

    let out = aksnet_ok(&["inspect", "stats", "--cluster", &name, "--json"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("redirected-peer-icmp-error"),
        "the translated error is counted by name: {text}"
    );
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let counted = find_packets(&stats, "redirected-peer-icmp-error");
    assert!(counted >= 1, "counted {counted} times: {text}");
    aksnet_ok(&["down", &name]);
    assert_gone(&name);
}
