//! The load check of `ftbudget serve`: the release binary listens on 127.0.0.1 (a free port),
//! and [`CONNECTIONS`] keep-alive connections, one thread each, send the same estimate request
//! back to back for a fixed time. Every answer must be a 200 with the body of the first answer;
//! the result is requests per second over the whole run and the latency percentiles of single
//! requests. The loop is bounded twice, by the duration and by [`MAX_REQUESTS_PER_CONNECTION`],
//! and the server is killed when the check ends, whatever happens.

use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Concurrent keep-alive connections.
pub const CONNECTIONS: usize = 8;
/// A bound on each connection's loop besides the duration.
const MAX_REQUESTS_PER_CONNECTION: usize = 2_000_000;
/// The request timed: one LoRA estimate of Llama-2-7B (peft's own example).
pub const PATH: &str =
    "/api/estimate?model=llama-2-7b&regime=lora%3Ar%3D8%2Ctargets%3Dq_proj%2Bv_proj";

pub struct LoadResult {
    pub requests: usize,
    pub seconds: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
}

impl LoadResult {
    pub fn per_second(&self) -> f64 {
        self.requests as f64 / self.seconds
    }
}

/// The server process, killed when dropped.
struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_server(binary: &Path) -> Result<(Served, SocketAddr)> {
    let mut child = Command::new(binary)
        .args(["serve", "--addr", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let stderr = child.stderr.take().context("server stderr")?;
    let served = Served(child);
    let mut line = String::new();
    BufReader::new(stderr).read_line(&mut line)?;
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|a| a.parse().ok())
        .with_context(|| format!("no address in the server's first line: {line:?}"))?;
    Ok((served, addr))
}

/// One request on a kept-alive connection: the status and the body.
fn exchange(stream: &mut TcpStream, request: &[u8], buf: &mut Vec<u8>) -> Result<(u16, usize)> {
    stream.write_all(request)?;
    buf.clear();
    let mut chunk = [0u8; 16 * 1024];
    let header_end = loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            bail!("the server closed the connection");
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = std::str::from_utf8(&buf[..header_end])?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status line")?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .context("no content-length")?;
    while buf.len() < header_end + length {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            bail!("the server closed the connection mid-body");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok((status, length))
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    f64::from(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Load `binary`'s server for `duration` and measure it.
pub fn measure(binary: &Path, duration: Duration) -> Result<LoadResult> {
    let (_served, addr) = start_server(binary)?;
    let request = format!("GET {PATH} HTTP/1.1\r\nHost: {addr}\r\n\r\n").into_bytes();
    // The expected answer, once, before the clock starts.
    let expected_length = {
        let mut stream = TcpStream::connect(addr)?;
        let (status, length) = exchange(&mut stream, &request, &mut Vec::new())?;
        if status != 200 {
            bail!("GET {PATH} answered {status}");
        }
        length
    };
    let start = Instant::now();
    let deadline = start + duration;
    let workers: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let request = request.clone();
            std::thread::spawn(move || -> Result<Vec<u32>> {
                let mut stream = TcpStream::connect(addr)?;
                stream.set_nodelay(true)?;
                stream.set_read_timeout(Some(Duration::from_secs(10)))?;
                let mut latencies = Vec::with_capacity(1 << 16);
                let mut buf = Vec::with_capacity(16 * 1024);
                while latencies.len() < MAX_REQUESTS_PER_CONNECTION {
                    let sent = Instant::now();
                    if sent >= deadline {
                        break;
                    }
                    let (status, length) = exchange(&mut stream, &request, &mut buf)?;
                    if status != 200 || length != expected_length {
                        bail!("answer {status} with {length} bytes, expected 200 with {expected_length}");
                    }
                    let micros = sent.elapsed().as_micros();
                    latencies.push(u32::try_from(micros).unwrap_or(u32::MAX));
                }
                Ok(latencies)
            })
        })
        .collect();
    let mut all = Vec::new();
    for worker in workers {
        let latencies = worker
            .join()
            .map_err(|_| anyhow::anyhow!("a load thread panicked"))??;
        all.extend(latencies);
    }
    let seconds = start.elapsed().as_secs_f64();
    all.sort_unstable();
    Ok(LoadResult {
        requests: all.len(),
        seconds,
        p50_us: percentile(&all, 50.0),
        p99_us: percentile(&all, 99.0),
        max_us: all.last().map_or(f64::NAN, |&m| f64::from(m)),
    })
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentiles_are_nearest_rank() {
        let sorted: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&sorted, 50.0), 50.0);
        assert_eq!(percentile(&sorted, 99.0), 99.0);
        assert_eq!(percentile(&sorted, 100.0), 100.0);
        assert_eq!(percentile(&[7], 99.0), 7.0);
    }
}
