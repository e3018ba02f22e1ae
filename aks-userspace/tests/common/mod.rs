//! Shared pieces of the privileged tests: the privilege check and a pair of network
//! namespaces joined by a veth, removed again when the guard drops.
//!
//! These tests need root (network namespaces, BPF). They never skip: without privileges
//! they fail and say how to run them (`cargo xtask test` runs them as root).

#![allow(dead_code)] // each test binary uses a different subset

pub mod cluster;

/// One `#[test]` per cell (or case), each calling `$check` with that cell's arguments
/// (usually plugin, datapath and a cluster tag): the cells run in parallel, and a
/// failure names its cell.
#[macro_export]
macro_rules! cell_tests {
    ($check:ident: $($test:ident($($arg:expr),* $(,)?)),+ $(,)?) => {
        $(
            #[test]
            fn $test() {
                $check($($arg),*);
            }
        )+
    };
}

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Panics, naming the reason and the fix, unless this process can create network
/// namespaces and load BPF programs.
pub fn require_privileges() {
    let euid = nix::unistd::geteuid().as_raw();
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
    assert_eq!(
        euid,
        0,
        "privileged test run as uid {euid}: it needs root for network namespaces and BPF. \
         Run `cargo xtask test` (it uses sudo when not root){}",
        if in_ci {
            "; CI=true expects privileges, so this is an environment error"
        } else {
            ""
        }
    );
    let mounts = std::fs::read_to_string("/proc/mounts").expect("reading /proc/mounts");
    assert!(
        mounts
            .lines()
            .any(|l| l.split_whitespace().nth(2) == Some("bpf")),
        "bpffs is not mounted: run `cargo xtask setup` (or `mount -t bpf bpf /sys/fs/bpf`)"
    );
}

/// Runs `ip` with `args`, panicking with its stderr if it fails.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("running ip (iproute2)");
    assert!(
        out.status.success(),
        "`ip {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// Namespace names currently listed by `ip netns list`.
pub fn netns_list() -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("running ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// Two namespaces, `a` and `b`, joined by a veth pair (`a_if` in `a`, `b_if` in `b`),
/// addressed `A_IP/30` and `B_IP/30`. Nothing of it lives in the root namespace: the
/// veth is created inside `a` with its peer placed straight into `b`.
pub struct VethPair {
    pub a: String,
    pub b: String,
    pub a_if: String,
    pub b_if: String,
}

impl VethPair {
    /// Addresses that exist only inside the two test namespaces.
    pub const A_IP: &'static str = "10.250.0.1";
    pub const B_IP: &'static str = "10.250.0.2";
    pub const A_MAC: &'static str = "02:aa:00:00:00:01";
    pub const B_MAC: [u8; 6] = [0x02, 0xaa, 0, 0, 0, 0x02];

    /// Creates the pair with names unique to this process and call, so tests running in
    /// parallel (or a leftover from a killed run) never collide.
    pub fn create(tag: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}{n}", std::process::id());
        let pair = Self {
            a: format!("aks-test-{tag}-{id}-a"),
            b: format!("aks-test-{tag}-{id}-b"),
            a_if: format!("ta{id}"),
            b_if: format!("tb{id}"),
        };
        assert!(
            pair.a_if.len() <= 15,
            "interface name {} too long",
            pair.a_if
        );
        // From here on Drop cleans up whatever was made, even if a step below panics.
        ip(&["netns", "add", &pair.a]);
        ip(&["netns", "add", &pair.b]);
        let b_mac = aks_userspace::topology::spec::format_mac(&Self::B_MAC);
        ip(&[
            "-n",
            &pair.a,
            "link",
            "add",
            &pair.a_if,
            "address",
            Self::A_MAC,
            "type",
            "veth",
            "peer",
            "name",
            &pair.b_if,
            "address",
            &b_mac,
            "netns",
            &pair.b,
        ]);
        ip(&[
            "-n",
            &pair.a,
            "addr",
            "add",
            &format!("{}/30", Self::A_IP),
            "dev",
            &pair.a_if,
        ]);
        ip(&[
            "-n",
            &pair.b,
            "addr",
            "add",
            &format!("{}/30", Self::B_IP),
            "dev",
            &pair.b_if,
        ]);
        ip(&["-n", &pair.a, "link", "set", &pair.a_if, "up"]);
        ip(&["-n", &pair.b, "link", "set", &pair.b_if, "up"]);
        pair
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        // Deleting a namespace destroys the veth pair with it.
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Sends `frame` as is on `interface` through an AF_PACKET socket (the calling thread's
/// network namespace).
pub fn send_raw(interface: &str, dst_mac: [u8; 6], frame: &[u8]) -> anyhow::Result<()> {
    let name = std::ffi::CString::new(interface)?;
    // SAFETY: plain libc calls with valid pointers and lengths; the fd is closed below.
    unsafe {
        let ifindex = libc::if_nametoindex(name.as_ptr());
        anyhow::ensure!(ifindex != 0, "no interface {interface}");
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
        anyhow::ensure!(
            fd >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&dst_mac);
        let sent = libc::sendto(
            fd,
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        );
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        anyhow::ensure!(sent == frame.len() as isize, "sendto: {err}");
    }
    Ok(())
}

/// Sets DF on every datagram `socket` sends (`IP_MTU_DISCOVER` = `IP_PMTUDISC_DO`): the
/// kernel refuses one larger than the path MTU it knows instead of fragmenting it.
pub fn set_dont_fragment(socket: &std::net::UdpSocket) {
    use std::os::fd::AsRawFd;
    let value: libc::c_int = libc::IP_PMTUDISC_DO;
    // SAFETY: a valid socket and a pointer to an int of the size given.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(
        rc,
        0,
        "setsockopt IP_MTU_DISCOVER: {}",
        std::io::Error::last_os_error()
    );
}

/// The path MTU the kernel holds for a connected socket's destination (`IP_MTU`).
pub fn path_mtu(socket: &std::net::UdpSocket) -> u32 {
    let mtu = nix::sys::socket::getsockopt(socket, nix::sys::socket::sockopt::IpMtu)
        .expect("getsockopt IP_MTU");
    mtu as u32
}
