//! The check's servers: a socket inside a destination namespace that answers every TCP
//! connection or UDP datagram with `<name> <peer address>`, so the prober learns who
//! answered and which source address that side saw.
//!
//! Each listener runs on its own thread, blocked in `accept`/`recv_from` (no polling,
//! no sleeping); [`serve`] wakes them with `shutdown(2)` once the probes are done, which
//! makes a blocked `accept` or `recv_from` return at once.

use std::io::Write;
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use anyhow::{bail, Context, Result};
use nix::sys::socket::{shutdown, Shutdown};

use crate::model::Protocol;
use crate::netns;

enum Socket {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

/// A bound socket in a namespace, answering as `name`.
pub struct Listener {
    name: String,
    socket: Socket,
}

impl Listener {
    /// Binds `protocol` port `port` on every address inside `namespace`.
    pub fn open(namespace: &str, port: u16, protocol: Protocol, name: &str) -> Result<Self> {
        let address = (Ipv4Addr::UNSPECIFIED, port);
        let socket = netns::run_in(namespace, || {
            Ok(match protocol {
                Protocol::Tcp => Socket::Tcp(TcpListener::bind(address)?),
                Protocol::Udp => Socket::Udp(UdpSocket::bind(address)?),
            })
        })
        .with_context(|| format!("listening on {protocol} port {port} in {name} ({namespace})"))?;
        Ok(Self {
            name: name.to_owned(),
            socket,
        })
    }

    fn fd(&self) -> RawFd {
        match &self.socket {
            Socket::Tcp(s) => s.as_raw_fd(),
            Socket::Udp(s) => s.as_raw_fd(),
        }
    }

    /// Answers until `stop` is set and the socket is shut down.
    fn answer_until(&self, stop: &AtomicBool) {
        match &self.socket {
            Socket::Tcp(listener) => loop {
                match listener.accept() {
                    Ok((mut stream, peer)) => {
                        let _ = writeln!(stream, "{} {}", self.name, peer.ip());
                    }
                    Err(_) if stop.load(Ordering::Acquire) => return,
                    // ECONNABORTED and the like: the next connection may be fine.
                    Err(_) => {}
                }
            },
            Socket::Udp(socket) => {
                let mut buffer = [0u8; 64];
                loop {
                    let received = socket.recv_from(&mut buffer);
                    if stop.load(Ordering::Acquire) {
                        return;
                    }
                    if let Ok((_, peer)) = received {
                        let answer = format!("{} {}\n", self.name, peer.ip());
                        let _ = socket.send_to(answer.as_bytes(), peer);
                    }
                }
            }
        }
    }
}

/// Runs `work` while every listener answers on its own thread, then wakes and joins them.
pub fn serve<T: Send>(listeners: &[Listener], work: impl FnOnce() -> T + Send) -> T {
    let stop = AtomicBool::new(false);
    thread::scope(|scope| {
        for listener in listeners {
            let stop = &stop;
            scope.spawn(move || listener.answer_until(stop));
        }
        let result = work();
        stop.store(true, Ordering::Release);
        for listener in listeners {
            // Wakes the thread blocked on the socket (UDP sockets report ENOTCONN but
            // are woken all the same, hence the ignored result).
            let _ = shutdown(listener.fd(), Shutdown::Both);
        }
        result
    })
}

/// `<name> <seen source>`, as the listeners write it.
pub fn parse_answer(line: &str) -> Result<(String, Ipv4Addr)> {
    let mut words = line.split_whitespace();
    match (words.next(), words.next().map(str::parse::<Ipv4Addr>)) {
        (Some(name), Some(Ok(seen))) => Ok((name.to_owned(), seen)),
        _ => bail!("the destination answered {line:?}, not `<name> <address>`"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_name_the_listener_and_the_address_it_saw() {
        assert_eq!(
            parse_answer("kn-0-pod1 10.244.0.1\n").expect("valid"),
            ("kn-0-pod1".to_owned(), Ipv4Addr::new(10, 244, 0, 1))
        );
        assert!(parse_answer("hello\n").is_err());
    }
}
