//! The workloads, each run inside a cell's namespaces and bounded in time and count:
//!
//! - `stream`: iperf3, client in one pod, server in the pod on the other node (Gbit/s);
//! - `request_response`: one TCP connection, 64-byte ping-pong as fast as it goes,
//!   every round trip timed (transactions/s, p50/p99 latency);
//! - `connection_rate`: a new TCP connection per request (connect, 1 byte each way,
//!   close), toward the internet host (through SNAT) or a ClusterIP;
//! - `first_packet_latency`: the time `connect` takes to a ClusterIP, each time from a
//!   new source port, so every SYN walks the service rules (the service sweep).
//!
//! Sockets are made inside the namespaces in-process (a socket stays in the namespace it
//! was made in); iperf3 is started from a thread inside the namespace, so it inherits
//! it, and is killed by its own handle if it outlives its bound.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::cells::Place;
use super::interrupt;
use super::stats;
use crate::netns;

/// Ports the workloads listen on inside the cells' namespaces.
pub const IPERF_PORT: u16 = 5201;
pub const RR_PORT: u16 = 17101;
pub const CONNECT_PORT: u16 = 17102;

/// Bytes each way per request/response transaction.
pub const RR_MESSAGE: usize = 64;

/// How long one connection attempt may take before it counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Request/response: transactions per second and round-trip latency.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RequestResponse {
    pub transactions_per_second: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

/// New connections per second, and how many attempts failed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ConnectionRate {
    pub per_second: f64,
    pub connections: usize,
    pub failures: usize,
}

/// First-packet latency (connect time) percentiles, microseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FirstPacket {
    pub p50_us: f64,
    pub p99_us: f64,
    pub failures: usize,
}

/// iperf3 from `client` to `server` for `seconds` (≥ 1; iperf3 counts whole seconds):
/// the receiver's rate in Gbit/s.
pub fn stream(client: &Place, server: &Place, seconds: u64) -> Result<f64> {
    let seconds = seconds.max(1);
    let bound = Duration::from_secs(seconds + 10);
    let port = IPERF_PORT.to_string();
    let server_child = netns::run_in(&server.namespace, || {
        Command::new("iperf3")
            .args(["-s", "-1", "-p", &port])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting iperf3 -s (is iperf3 installed? `cargo xtask setup` installs it)")
    })?;
    let mut server_child = Reaped(server_child);
    let address = server.address.to_string();
    let duration = seconds.to_string();
    // The server needs a moment to listen; a refused connection is retried (it never
    // reached the one-off server, so that still waits for the real test).
    for attempt in 0.. {
        let client_child = netns::run_in(&client.namespace, || {
            Command::new("iperf3")
                .args(["-c", &address, "-p", &port, "-t", &duration, "-J"])
                .args(["--connect-timeout", "1000"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .context("starting iperf3 -c")
        })?;
        let output = wait_bounded(client_child, bound)?;
        let text = String::from_utf8_lossy(&output.stdout);
        let report: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("iperf3 -c printed no JSON: {}", text.trim()))?;
        if let Some(error) = report["error"].as_str() {
            if error.contains("refused") && attempt < 40 {
                thread::sleep(Duration::from_millis(50));
                continue;
            }
            bail!("iperf3 from {} to {address}: {error}", client.namespace);
        }
        let bits = report["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .context("iperf3's JSON has no end.sum_received.bits_per_second")?;
        server_child.wait_bounded(Duration::from_secs(5));
        return Ok(bits / 1e9);
    }
    unreachable!("the loop returns or fails")
}

/// A child process killed and reaped when dropped, if it is still running.
struct Reaped(Child);

impl Reaped {
    fn wait_bounded(&mut self, bound: Duration) {
        let deadline = Instant::now() + bound;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Waits for `child` at most `bound` (and not past an interruption), killing it then.
fn wait_bounded(child: Child, bound: Duration) -> Result<std::process::Output> {
    let mut child = Reaped(child);
    let deadline = Instant::now() + bound;
    loop {
        if child.0.try_wait()?.is_some() {
            break;
        }
        if Instant::now() >= deadline {
            bail!(
                "iperf3 ran past its bound of {}s and was killed",
                bound.as_secs()
            );
        }
        interrupt::check()?;
        thread::sleep(Duration::from_millis(20));
    }
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    if let Some(mut out) = child.0.stdout.take() {
        out.read_to_end(&mut stdout)?;
    }
    if let Some(mut err) = child.0.stderr.take() {
        err.read_to_end(&mut stderr)?;
    }
    let status = child.0.wait()?;
    Ok(std::process::Output {
        status,
        stdout,
        stderr,
    })
}

/// A listener bound inside `place`'s namespace on `port`, non-blocking.
fn listen(place: &Place, port: u16) -> Result<TcpListener> {
    netns::run_in(&place.namespace, || {
        let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))
            .with_context(|| format!("listening on port {port}"))?;
        listener.set_nonblocking(true)?;
        Ok(listener)
    })
    .with_context(|| format!("starting a benchmark listener in {}", place.namespace))
}

/// Accepts connections until `stop`, handing each (blocking, with timeouts) to `serve`.
fn accept_until(listener: &TcpListener, stop: &AtomicBool, serve: impl Fn(TcpStream)) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_read_timeout(Some(CONNECT_TIMEOUT));
                let _ = stream.set_nodelay(true);
                serve(stream);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_micros(200));
            }
            Err(_) => thread::sleep(Duration::from_millis(1)),
        }
    }
}

/// One TCP connection from `client` to `server`, 64-byte messages echoed back, as many
/// as fit in `duration`.
pub fn request_response(
    client: &Place,
    server: &Place,
    duration: Duration,
) -> Result<RequestResponse> {
    let listener = listen(server, RR_PORT)?;
    let stop = AtomicBool::new(false);
    let target = SocketAddr::from((server.address, RR_PORT));
    let latencies = thread::scope(|scope| {
        scope.spawn(|| {
            accept_until(&listener, &stop, |mut stream| {
                let mut buffer = [0u8; RR_MESSAGE];
                while stream.read_exact(&mut buffer).is_ok() {
                    if stream.write_all(&buffer).is_err() {
                        break;
                    }
                }
            })
        });
        let result = netns::run_in(&client.namespace, || {
            let mut stream = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT)
                .with_context(|| format!("connecting to {target}"))?;
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(CONNECT_TIMEOUT))?;
            let message = [0x5au8; RR_MESSAGE];
            let mut answer = [0u8; RR_MESSAGE];
            let mut latencies = Vec::with_capacity(200_000);
            let started = Instant::now();
            while started.elapsed() < duration {
                let sent = Instant::now();
                stream.write_all(&message)?;
                stream
                    .read_exact(&mut answer)
                    .context("waiting for the echo")?;
                latencies.push(sent.elapsed().as_nanos() as f64 / 1000.0);
                if latencies.len() % 1024 == 0 {
                    interrupt::check()?;
                }
            }
            Ok((latencies, started.elapsed()))
        });
        stop.store(true, Ordering::Relaxed);
        result
    })
    .with_context(|| format!("request/response from {} to {target}", client.namespace))?;
    let (latencies, elapsed) = latencies;
    Ok(RequestResponse {
        transactions_per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50_us: stats::percentile(&latencies, 50.0).unwrap_or(f64::NAN),
        p99_us: stats::percentile(&latencies, 99.0).unwrap_or(f64::NAN),
    })
}

/// A new connection per request from `client` to `target_address:port`, answered by a
/// listener in `listener_place` on `listen_port` (they differ for a ClusterIP): as many
/// as fit in `duration`, at most `max_connections`.
pub fn connection_rate(
    client: &Place,
    listener_place: &Place,
    listen_port: u16,
    target: SocketAddr,
    duration: Duration,
    max_connections: usize,
) -> Result<ConnectionRate> {
    let listener = listen(listener_place, listen_port)?;
    let stop = AtomicBool::new(false);
    let (connections, failures, elapsed) = thread::scope(|scope| {
        scope.spawn(|| {
            accept_until(&listener, &stop, |mut stream| {
                let mut byte = [0u8; 1];
                if stream.read_exact(&mut byte).is_ok() {
                    let _ = stream.write_all(&byte);
                }
            })
        });
        let result = netns::run_in(&client.namespace, || {
            let (mut connections, mut failures) = (0usize, 0usize);
            let started = Instant::now();
            while started.elapsed() < duration && connections + failures < max_connections {
                match one_request(target) {
                    Ok(()) => connections += 1,
                    Err(_) => failures += 1,
                }
                if (connections + failures) % 256 == 0 {
                    interrupt::check()?;
                }
            }
            Ok((connections, failures, started.elapsed()))
        });
        stop.store(true, Ordering::Relaxed);
        result
    })
    .with_context(|| format!("connection rate from {} to {target}", client.namespace))?;
    if connections == 0 {
        bail!(
            "no connection from {} to {target} succeeded ({failures} attempts failed)",
            client.namespace
        );
    }
    Ok(ConnectionRate {
        per_second: connections as f64 / elapsed.as_secs_f64(),
        connections,
        failures,
    })
}

/// Connect, one byte there and back, close (the client closes first).
fn one_request(target: SocketAddr) -> Result<()> {
    let mut stream = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT)?;
    stream.set_read_timeout(Some(CONNECT_TIMEOUT))?;
    stream.set_nodelay(true)?;
    stream.write_all(b"x")?;
    let mut byte = [0u8; 1];
    stream.read_exact(&mut byte)?;
    Ok(())
}

/// `count` connections from `client` to `target`, each timed from `connect` to the
/// established socket (the SYN's trip, through the service rules, and the SYN-ACK's).
pub fn first_packet_latency(
    client: &Place,
    listener_place: &Place,
    listen_port: u16,
    target: SocketAddr,
    count: usize,
) -> Result<FirstPacket> {
    let listener = listen(listener_place, listen_port)?;
    let stop = AtomicBool::new(false);
    let (samples, failures) = thread::scope(|scope| {
        scope.spawn(|| accept_until(&listener, &stop, drop));
        let result = netns::run_in(&client.namespace, || {
            let mut samples = Vec::with_capacity(count);
            let mut failures = 0;
            for _ in 0..count {
                let started = Instant::now();
                match TcpStream::connect_timeout(&target, CONNECT_TIMEOUT) {
                    Ok(stream) => {
                        samples.push(started.elapsed().as_nanos() as f64 / 1000.0);
                        drop(stream);
                    }
                    Err(_) => failures += 1,
                }
                if failures > 3 && samples.is_empty() {
                    break;
                }
                interrupt::check()?;
            }
            Ok((samples, failures))
        });
        stop.store(true, Ordering::Relaxed);
        result
    })
    .with_context(|| format!("first-packet latency from {} to {target}", client.namespace))?;
    if samples.is_empty() {
        bail!(
            "no connection from {} to {target} succeeded",
            client.namespace
        );
    }
    Ok(FirstPacket {
        p50_us: stats::percentile(&samples, 50.0).unwrap_or(f64::NAN),
        p99_us: stats::percentile(&samples, 99.0).unwrap_or(f64::NAN),
        failures,
    })
}
