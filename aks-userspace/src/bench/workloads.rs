//! The workloads, each run inside a cell's namespaces and bounded in time and count:
//!
//! - `stream`: iperf3, client in one pod, server in the pod on the other node (Gbit/s);
//! - `request_response`: one TCP connection, 64-byte ping-pong as fast as it goes,
//!   every round trip timed (transactions/s, p50/p99 latency);
//! - `connection_rate`: a new TCP connection per request (connect, 1 byte each way,
//!   the server closes, the client closes after the server's FIN), one at a time or
//!   several clients at once;
//! - `first_packet_latency`: the time `connect` takes to a ClusterIP, each time from a
//!   new source port, so every SYN walks the service rules (the service sweep).
//!
//! Every server is real: threads blocked in `accept(2)` on one listener, never a poll
//! with a sleep (a 200 µs sleep takes ~290 µs here and capped every cell alike at about
//! 3,400 connections/s). The server closes first, so TIME_WAIT stays with the server
//! and the client's ephemeral ports never run out (above ~10k connections/s they would
//! within seconds).
//!
//! Each workload runs in one of two [`View`]s: as a user sees it (the scheduler places
//! the threads), or its datapath cost (client and server threads pinned to one CPU, as
//! netperf's `-T` does, so no round trip waits for the other vCPU to wake: that wake-up
//! costs ~60 µs here, more than the whole datapath).
//!
//! Sockets are made inside the namespaces in-process (a socket stays in the namespace it
//! was made in, and threads inherit their creator's namespace); iperf3 is started from a
//! thread inside the namespace, so it inherits it, and is killed by its own handle if it
//! outlives its bound.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

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

/// Client threads of the concurrent connection workload (and server threads of every
/// connection workload).
pub const CONCURRENCY: usize = 4;

/// How long one connection attempt, or one wait for an answer, may take before the
/// attempt counts as failed.
const IO_TIMEOUT: Duration = Duration::from_secs(1);

/// How a workload is scheduled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum View {
    /// Threads where the scheduler puts them: what an application sees.
    User,
    /// Client and server threads pinned to one CPU: the datapath's own cost, without
    /// cross-CPU wake-ups.
    #[serde(rename = "pinned")]
    Datapath,
}

impl View {
    pub const ALL: [View; 2] = [Self::User, Self::Datapath];

    pub fn name(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Datapath => "pinned",
        }
    }

    /// The CPU every thread of the workload runs on, if pinned: the last one.
    pub fn cpu(self) -> Option<usize> {
        match self {
            Self::User => None,
            Self::Datapath => Some(thread::available_parallelism().map_or(1, |n| n.get()) - 1),
        }
    }
}

/// What one workload run measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Measured {
    /// The workload's rate in its unit (Gbit/s, transactions/s, connections/s).
    pub rate: f64,
    /// How long the rate was measured over, seconds.
    pub seconds: f64,
    /// What the CPU cost is divided by: bytes (stream), transactions, connections.
    pub work: f64,
    /// Every single operation timed, µs (round trips; connects), or none.
    pub latencies_us: Vec<f64>,
    pub failures: usize,
}

impl Measured {
    /// One measurement out of slices of it taken in turn with other cells' (a round's
    /// slices): the rate over their summed time, their work, latencies and failures
    /// together. `None` without slices.
    pub fn merged(slices: Vec<Measured>) -> Option<Measured> {
        if slices.is_empty() {
            return None;
        }
        let seconds: f64 = slices.iter().map(|m| m.seconds).sum();
        let mut merged = Measured {
            rate: slices.iter().map(|m| m.rate * m.seconds).sum::<f64>() / seconds,
            seconds,
            work: slices.iter().map(|m| m.work).sum(),
            latencies_us: Vec::new(),
            failures: slices.iter().map(|m| m.failures).sum(),
        };
        for slice in slices {
            merged.latencies_us.extend(slice.latencies_us);
        }
        Some(merged)
    }

    /// The median single operation, µs, if operations were timed.
    pub fn p50_us(&self) -> Option<f64> {
        stats::percentile(&self.latencies_us, 50.0)
    }

    pub fn p99_us(&self) -> Option<f64> {
        stats::percentile(&self.latencies_us, 99.0)
    }
}

/// Pins the calling thread to `cpu`, if given.
fn pin(cpu: Option<usize>) -> Result<()> {
    let Some(cpu) = cpu else { return Ok(()) };
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu).context("choosing the CPU to pin to")?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        .with_context(|| format!("pinning a benchmark thread to CPU {cpu}"))
}

/// iperf3 from `client` to `server` for `seconds` (≥ 1; iperf3 counts whole seconds),
/// both processes on one CPU in the datapath view (iperf3's own `-A`).
pub fn stream(client: &Place, server: &Place, seconds: u64, view: View) -> Result<Measured> {
    let seconds = seconds.max(1);
    let bound = Duration::from_secs(seconds + 10);
    let port = IPERF_PORT.to_string();
    let affinity: Vec<String> = view
        .cpu()
        .map(|cpu| vec!["-A".to_owned(), cpu.to_string()])
        .unwrap_or_default();
    let server_child = netns::run_in(&server.namespace, || {
        Command::new("iperf3")
            .args(["-s", "-1", "-p", &port])
            .args(&affinity)
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
                .args(&affinity)
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
        let received = &report["end"]["sum_received"];
        let bits = received["bits_per_second"]
            .as_f64()
            .context("iperf3's JSON has no end.sum_received.bits_per_second")?;
        let bytes = received["bytes"]
            .as_f64()
            .context("iperf3's JSON has no end.sum_received.bytes")?;
        let measured_seconds = received["seconds"].as_f64().unwrap_or(seconds as f64);
        // Reaped here, so its CPU time is in the caller's children's usage.
        server_child.wait_bounded(Duration::from_secs(5));
        return Ok(Measured {
            rate: bits / 1e9,
            seconds: measured_seconds,
            work: bytes,
            latencies_us: Vec::new(),
            failures: 0,
        });
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

/// Runs `client` while a server listens in `place` on `port`: `threads` threads blocked
/// in `accept(2)`, each handing its connection to `handler`. When `client` returns, the
/// listener is shut down, which wakes every blocked `accept` (Linux fails it with
/// EINVAL), and the threads end.
fn with_server<R: Send>(
    place: &Place,
    port: u16,
    threads: usize,
    cpu: Option<usize>,
    handler: fn(TcpStream),
    client: impl FnOnce() -> Result<R> + Send,
) -> Result<R> {
    let listener = netns::run_in(&place.namespace, || {
        TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))
            .with_context(|| format!("listening on port {port}"))
    })
    .with_context(|| format!("starting a benchmark server in {}", place.namespace))?;
    thread::scope(|scope| {
        let servers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    pin(cpu)?;
                    loop {
                        match listener.accept() {
                            Ok((stream, _)) => {
                                let _ = stream.set_nodelay(true);
                                let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
                                handler(stream);
                            }
                            Err(e) if e.kind() == ErrorKind::Interrupted => {}
                            // The shutdown below (or a resource error, whose effect the
                            // clients count as failed connections).
                            Err(_) => return Ok(()),
                        }
                    }
                })
            })
            .collect();
        let result = client();
        let _ = nix::sys::socket::shutdown(listener.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        for server in servers {
            server
                .join()
                .map_err(|_| anyhow::anyhow!("a server thread panicked"))??;
        }
        result
    })
}

/// The request/response server: 64-byte messages echoed until the client closes.
fn echo(mut stream: TcpStream) {
    let mut buffer = [0u8; RR_MESSAGE];
    while stream.read_exact(&mut buffer).is_ok() {
        if stream.write_all(&buffer).is_err() {
            break;
        }
    }
}

/// The connection server: one byte read, one byte answered, then the server closes
/// (first), so the TIME_WAIT socket is the server's.
fn answer_and_close(mut stream: TcpStream) {
    let mut byte = [0u8; 1];
    if stream.read_exact(&mut byte).is_ok() {
        let _ = stream.write_all(&byte);
    }
}

/// The first-packet server: accepts and closes.
fn close(_stream: TcpStream) {}

/// One TCP connection from `client` to `server`, 64-byte messages echoed back, as many
/// as fit in `duration`.
pub fn request_response(
    client: &Place,
    server: &Place,
    duration: Duration,
    view: View,
) -> Result<Measured> {
    let target = SocketAddr::from((server.address, RR_PORT));
    let cpu = view.cpu();
    let (latencies, elapsed) = with_server(server, RR_PORT, 1, cpu, echo, || {
        netns::run_in(&client.namespace, || {
            pin(cpu)?;
            let mut stream = TcpStream::connect_timeout(&target, IO_TIMEOUT)
                .with_context(|| format!("connecting to {target}"))?;
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(IO_TIMEOUT))?;
            let message = [0x5au8; RR_MESSAGE];
            let mut answer = [0u8; RR_MESSAGE];
            let mut latencies = Vec::with_capacity(400_000);
            let started = Instant::now();
            // At least one round trip, however late a busy machine runs this.
            while latencies.is_empty() || started.elapsed() < duration {
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
        })
    })
    .with_context(|| format!("request/response from {} to {target}", client.namespace))?;
    Ok(Measured {
        rate: latencies.len() as f64 / elapsed.as_secs_f64(),
        seconds: elapsed.as_secs_f64(),
        work: latencies.len() as f64,
        latencies_us: latencies,
        failures: 0,
    })
}

/// Where a connection workload connects to, and where its server listens.
pub struct ConnectTarget<'a> {
    pub client: &'a Place,
    /// The namespace the server listens in (a backend, for a ClusterIP).
    pub server: &'a Place,
    pub listen_port: u16,
    /// What the client connects to (the ClusterIP, for a service).
    pub address: SocketAddr,
}

/// New connections from `target.client` to `target.address` by `clients` threads at
/// once (1 = one at a time), as many as fit in `duration`, at most `max_connections`.
pub fn connection_rate(
    target: &ConnectTarget,
    clients: usize,
    duration: Duration,
    max_connections: usize,
    view: View,
) -> Result<Measured> {
    let cpu = view.cpu();
    let address = target.address;
    let budget = max_connections.div_ceil(clients.max(1));
    let (connections, failures, elapsed) = with_server(
        target.server,
        target.listen_port,
        CONCURRENCY,
        cpu,
        answer_and_close,
        || {
            netns::run_in(&target.client.namespace, || {
                let started = Instant::now();
                let counts = thread::scope(|scope| {
                    let workers: Vec<_> = (0..clients.max(1))
                        .map(|_| {
                            scope.spawn(move || -> Result<(usize, usize)> {
                                pin(cpu)?;
                                let (mut done, mut failed) = (0usize, 0usize);
                                // At least one attempt each, however late a busy
                                // machine starts this thread (a short slice can be
                                // over before it runs).
                                while done + failed == 0
                                    || (started.elapsed() < duration && done + failed < budget)
                                {
                                    match one_connection(address) {
                                        Ok(()) => done += 1,
                                        Err(_) => failed += 1,
                                    }
                                    if (done + failed) % 256 == 0 {
                                        interrupt::check()?;
                                    }
                                }
                                Ok((done, failed))
                            })
                        })
                        .collect();
                    workers
                        .into_iter()
                        .map(|w| {
                            w.join()
                                .map_err(|_| anyhow::anyhow!("a client thread panicked"))?
                        })
                        .collect::<Result<Vec<_>>>()
                })?;
                let elapsed = started.elapsed();
                let (done, failed) = counts
                    .iter()
                    .fold((0, 0), |(d, f), (dd, ff)| (d + dd, f + ff));
                Ok((done, failed, elapsed))
            })
        },
    )
    .with_context(|| {
        format!(
            "connection rate from {} to {address}",
            target.client.namespace
        )
    })?;
    if connections == 0 {
        bail!(
            "no connection from {} to {address} succeeded ({failures} attempts failed)",
            target.client.namespace
        );
    }
    Ok(Measured {
        rate: connections as f64 / elapsed.as_secs_f64(),
        seconds: elapsed.as_secs_f64(),
        work: connections as f64,
        latencies_us: Vec::new(),
        failures,
    })
}

/// Connect, one byte there and back, then wait for the server's FIN before closing, so
/// the client's side never enters TIME_WAIT.
fn one_connection(target: SocketAddr) -> Result<()> {
    let mut stream = TcpStream::connect_timeout(&target, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_nodelay(true)?;
    stream.write_all(b"x")?;
    let mut buffer = [0u8; 2];
    stream.read_exact(&mut buffer[..1])?;
    match stream.read(&mut buffer)? {
        0 => Ok(()),
        n => bail!("the server sent {n} more bytes instead of closing"),
    }
}

/// `count` connections from `target.client`, each timed from `connect` to the
/// established socket (the SYN's trip, through the service rules, and the SYN-ACK's).
pub fn first_packet_latency(target: &ConnectTarget, count: usize) -> Result<Measured> {
    let address = target.address;
    let (samples, failures) = with_server(
        target.server,
        target.listen_port,
        CONCURRENCY,
        None,
        close,
        || {
            netns::run_in(&target.client.namespace, || {
                let mut samples = Vec::with_capacity(count);
                let mut failures = 0;
                for _ in 0..count {
                    let started = Instant::now();
                    match TcpStream::connect_timeout(&address, IO_TIMEOUT) {
                        Ok(stream) => {
                            samples.push(started.elapsed().as_nanos() as f64 / 1000.0);
                            // Waits for the server's close, so the client never holds
                            // TIME_WAIT here either.
                            let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
                            let _ = (&stream).read(&mut [0u8; 1]);
                        }
                        Err(_) => failures += 1,
                    }
                    if failures > 3 && samples.is_empty() {
                        break;
                    }
                    interrupt::check()?;
                }
                Ok((samples, failures))
            })
        },
    )
    .with_context(|| {
        format!(
            "first-packet latency from {} to {address}",
            target.client.namespace
        )
    })?;
    if samples.is_empty() {
        bail!(
            "no connection from {} to {address} succeeded",
            target.client.namespace
        );
    }
    Ok(Measured {
        rate: f64::NAN,
        seconds: f64::NAN,
        work: samples.len() as f64,
        latencies_us: samples,
        failures,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(rate: f64, seconds: f64, latencies_us: Vec<f64>) -> Measured {
        Measured {
            rate,
            seconds,
            work: rate * seconds,
            latencies_us,
            failures: 1,
        }
    }

    #[test]
    fn slices_merge_into_the_rate_over_their_summed_time() {
        let merged = Measured::merged(vec![
            slice(1000.0, 0.25, vec![3.0, 1.0]),
            slice(3000.0, 0.75, vec![2.0]),
        ])
        .expect("two slices");
        // 250 + 2250 operations in one second.
        assert_eq!(merged.rate, 2500.0);
        assert_eq!(
            (merged.seconds, merged.work, merged.failures),
            (1.0, 2500.0, 2)
        );
        assert_eq!(merged.p50_us(), Some(2.0), "latencies pooled");
        assert_eq!(Measured::merged(Vec::new()), None);
    }
}
