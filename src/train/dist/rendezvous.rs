//! The rendezvous of a data-parallel job: rank 0 listens at `MASTER_ADDR:MASTER_PORT` and hands
//! every other rank the same opaque bytes (NCCL's 128-byte unique id); nothing else travels over
//! this socket (gradients go through NCCL). Bounded in time on both sides, with errors that name
//! the ranks that did not show up.
//!
//! Wire format (one exchange per connection): the rank sends one line
//! `adiff-rendezvous 1 <rank> <world>\n`; rank 0 answers with a 4-byte little-endian length and
//! the payload.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::error::{AdiffError, Result};

const MAGIC: &str = "adiff-rendezvous 1";

/// Rank 0: waits for ranks 1..world to connect to `listener` and sends each `payload`. Fails
/// after `timeout`, naming the ranks that did not connect.
pub fn serve(
    listener: &TcpListener,
    world: usize,
    payload: &[u8],
    timeout: Duration,
) -> Result<()> {
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into());
    listener
        .set_nonblocking(true)
        .map_err(|e| AdiffError::Invalid(format!("rendezvous at {addr}: {e}")))?;
    let deadline = Instant::now() + timeout;
    let mut joined = vec![false; world];
    joined[0] = true;
    while joined.iter().any(|j| !j) {
        match listener.accept() {
            Ok((stream, peer)) => {
                // A stray or malformed connection is dropped, not fatal.
                if let Ok(rank) = greet(stream, world, payload, deadline) {
                    if rank > 0 && rank < world {
                        joined[rank] = true;
                    }
                } else {
                    eprintln!("rendezvous at {addr}: ignored a connection from {peer}");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    let missing: Vec<usize> = (0..world).filter(|&r| !joined[r]).collect();
                    return Err(AdiffError::Invalid(format!(
                        "rendezvous at {addr}: rank(s) {missing:?} of {world} did not connect \
                         within {:.0} s (check that every rank was started, with the same \
                         MASTER_ADDR/MASTER_PORT and WORLD_SIZE)",
                        timeout.as_secs_f64()
                    )));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(AdiffError::Invalid(format!("rendezvous at {addr}: {e}"))),
        }
    }
    Ok(())
}

/// Reads one rank's greeting and answers with the payload; returns the rank.
fn greet(stream: TcpStream, world: usize, payload: &[u8], deadline: Instant) -> Result<usize> {
    let io = |e: std::io::Error| AdiffError::Invalid(format!("rendezvous: {e}"));
    stream.set_nonblocking(false).map_err(io)?;
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(100));
    stream.set_read_timeout(Some(left)).map_err(io)?;
    let mut line = String::new();
    BufReader::new(&stream)
        .take(200)
        .read_line(&mut line)
        .map_err(io)?;
    let rest = line
        .trim()
        .strip_prefix(MAGIC)
        .ok_or_else(|| AdiffError::Invalid("rendezvous: not an adiff rank".into()))?;
    let nums: Vec<usize> = rest
        .split_whitespace()
        .map(|s| s.parse().unwrap_or(usize::MAX))
        .collect();
    let [rank, their_world] = nums[..] else {
        return Err(AdiffError::Invalid("rendezvous: malformed greeting".into()));
    };
    if their_world != world {
        return Err(AdiffError::Invalid(format!(
            "rendezvous: rank {rank} was started with a world of {their_world}, rank 0 with {world}"
        )));
    }
    let mut w = &stream;
    w.write_all(&(payload.len() as u32).to_le_bytes())
        .and_then(|_| w.write_all(payload))
        .map_err(io)?;
    Ok(rank)
}

/// Ranks 1..world: connects to rank 0 at `addr` (retrying until `timeout`, since rank 0 may
/// start later) and returns its payload.
pub fn join(addr: &str, rank: usize, world: usize, timeout: Duration) -> Result<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let fail = |why: String| {
        AdiffError::Invalid(format!(
            "rank {rank}: could not get the rendezvous from rank 0 at {addr} within {:.0} s: {why}",
            timeout.as_secs_f64()
        ))
    };
    loop {
        let attempt = (|| -> std::io::Result<Vec<u8>> {
            let sock = addr.to_socket_addrs()?.next().ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::NotFound, "no address for the host")
            })?;
            let left = deadline.saturating_duration_since(Instant::now());
            let mut s = TcpStream::connect_timeout(&sock, left.max(Duration::from_millis(50)))?;
            s.set_read_timeout(Some(left.max(Duration::from_millis(50))))?;
            s.write_all(format!("{MAGIC} {rank} {world}\n").as_bytes())?;
            let mut len = [0u8; 4];
            s.read_exact(&mut len)?;
            let mut payload = vec![0u8; u32::from_le_bytes(len) as usize];
            s.read_exact(&mut payload)?;
            Ok(payload)
        })();
        match attempt {
            Ok(p) => return Ok(p),
            Err(e) if Instant::now() >= deadline => return Err(fail(e.to_string())),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rank_gets_the_payload() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let payload: Vec<u8> = (0..128).map(|i| i as u8).collect();
        let got: Vec<Vec<u8>> = std::thread::scope(|s| {
            let hs: Vec<_> = (1..4)
                .map(|r| {
                    let a = addr.clone();
                    s.spawn(move || join(&a, r, 4, Duration::from_secs(10)).unwrap())
                })
                .collect();
            serve(&listener, 4, &payload, Duration::from_secs(10)).unwrap();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(got.iter().all(|p| p == &payload));
    }

    #[test]
    fn a_missing_rank_is_named() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let e = std::thread::scope(|s| {
            let a = addr.clone();
            s.spawn(move || join(&a, 2, 3, Duration::from_secs(10)).unwrap());
            serve(&listener, 3, b"id", Duration::from_millis(700)).unwrap_err()
        })
        .to_string();
        assert!(e.contains("rank(s) [1] of 3 did not connect"), "{e}");
    }

    #[test]
    fn no_rank_zero_times_out() {
        // A port nobody listens on: bind then drop.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = join(
            &format!("127.0.0.1:{port}"),
            1,
            2,
            Duration::from_millis(500),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("rank 1: could not get the rendezvous from rank 0"),
            "{e}"
        );
    }
}
