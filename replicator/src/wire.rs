//! The replication stream: frames on a byte stream, versioned, with the bytes counted per direction.
//!
//! A frame is `kind: u8, len: u32 (LE), payload`. The same bytes travel over the in-process transport (a bounded
//! channel of encoded frames, so a sync costs no socket copies) and over TCP between two processes.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

use crate::hashes::BlockHash;
use crate::{Error, Result};

pub const PROTOCOL_VERSION: u16 = 1;
const HEADER: usize = 5;
/// Largest payload accepted: a 16 MiB block plus its header, or a batch of hashes.
const MAX_PAYLOAD: usize = (16 << 20) + 64;

/// One message. Source → target: Hello, Start, Data, Zero, Mark, Done, Commit. Target → source: Welcome, Hashes,
/// Verified, Committed. Either way: Error.
#[derive(Clone, Debug, PartialEq)]
pub enum Frame {
    Hello(Hello),
    Welcome(Welcome),
    Start(Start),
    Hashes { first_block: u64, hashes: Vec<BlockHash> },
    Data { block: u64, bytes: Vec<u8> },
    Zero { first_block: u64, count: u64 },
    Mark { next_block: u64 },
    Done { digest: BlockHash },
    Verified { digest: BlockHash },
    Commit { generation: u64 },
    Committed { point_json: String },
    Error { message: String },
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Hello {
    pub version: u16,
    pub token: String,
    pub size: u64,
    pub block_size: u32,
    /// The source's trusted change-tracking generation, 0 when it has none.
    pub source_generation: u64,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Welcome {
    pub version: u16,
    /// Generation of the source the target last committed a cycle from (0: none).
    pub target_generation: u64,
    /// The target holds a block-hash table for its current bytes.
    pub has_hashes: bool,
    /// The target holds no data at all (a new, sparse disk): a full copy is the cheapest.
    pub empty: bool,
    /// An interrupted cycle's cursor: (mode, next block, source generation).
    pub resume: Option<(String, u64, u64)>,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Start {
    pub mode: String,
    pub from_block: u64,
    pub point_id: String,
    pub consistency: String,
    pub created_at_ms: u64,
    pub source_generation: u64,
}

const K_HELLO: u8 = 1;
const K_WELCOME: u8 = 2;
const K_START: u8 = 3;
const K_HASHES: u8 = 4;
const K_DATA: u8 = 5;
const K_ZERO: u8 = 6;
const K_MARK: u8 = 7;
const K_DONE: u8 = 8;
const K_VERIFIED: u8 = 9;
const K_COMMIT: u8 = 10;
const K_COMMITTED: u8 = 11;
const K_ERROR: u8 = 12;

fn frame(kind: u8, payload_len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(HEADER + payload_len);
    v.push(kind);
    v.extend_from_slice(&(payload_len as u32).to_le_bytes());
    v
}

fn json_frame(kind: u8, value: &impl serde::Serialize) -> Vec<u8> {
    let body = serde_json::to_vec(value).expect("frame structs serialise");
    let mut v = frame(kind, body.len());
    v.extend_from_slice(&body);
    v
}

impl Frame {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Frame::Hello(h) => json_frame(K_HELLO, h),
            Frame::Welcome(w) => json_frame(K_WELCOME, w),
            Frame::Start(s) => json_frame(K_START, s),
            Frame::Hashes { first_block, hashes } => {
                let mut v = frame(K_HASHES, 8 + hashes.len() * 32);
                v.extend_from_slice(&first_block.to_le_bytes());
                hashes.iter().for_each(|h| v.extend_from_slice(h));
                v
            }
            Frame::Data { block, bytes } => encode_data(*block, bytes),
            Frame::Zero { first_block, count } => {
                let mut v = frame(K_ZERO, 16);
                v.extend_from_slice(&first_block.to_le_bytes());
                v.extend_from_slice(&count.to_le_bytes());
                v
            }
            Frame::Mark { next_block } => u64_frame(K_MARK, *next_block),
            Frame::Commit { generation } => u64_frame(K_COMMIT, *generation),
            Frame::Done { digest } => digest_frame(K_DONE, digest),
            Frame::Verified { digest } => digest_frame(K_VERIFIED, digest),
            Frame::Committed { point_json } => text_frame(K_COMMITTED, point_json),
            Frame::Error { message } => text_frame(K_ERROR, message),
        }
    }

    pub fn decode(buf: Vec<u8>) -> Result<Frame> {
        if buf.len() < HEADER {
            return Err(Error::Protocol(format!("short frame of {} bytes", buf.len())));
        }
        let kind = buf[0];
        let len = u32::from_le_bytes(buf[1..5].try_into().unwrap()) as usize;
        if buf.len() != HEADER + len {
            return Err(Error::Protocol(format!("frame length {len} does not match its {} bytes", buf.len())));
        }
        let p = &buf[HEADER..];
        let need = |n: usize| {
            if p.len() < n {
                Err(Error::Protocol(format!("frame kind {kind} too short")))
            } else {
                Ok(())
            }
        };
        let u64_at = |i: usize| u64::from_le_bytes(p[i..i + 8].try_into().unwrap());
        let text = |p: &[u8]| String::from_utf8_lossy(p).into_owned();
        Ok(match kind {
            K_HELLO => Frame::Hello(json(p)?),
            K_WELCOME => Frame::Welcome(json(p)?),
            K_START => Frame::Start(json(p)?),
            K_HASHES => {
                need(8)?;
                if !(p.len() - 8).is_multiple_of(32) {
                    return Err(Error::Protocol("hash batch is not a whole number of hashes".into()));
                }
                Frame::Hashes {
                    first_block: u64_at(0),
                    hashes: p[8..].chunks_exact(32).map(|c| c.try_into().unwrap()).collect(),
                }
            }
            K_DATA => {
                need(8)?;
                let block = u64_at(0);
                let mut buf = buf;
                buf.drain(..HEADER + 8); // keeps the allocation: no copy of the block's bytes
                Frame::Data { block, bytes: buf }
            }
            K_ZERO => {
                need(16)?;
                Frame::Zero { first_block: u64_at(0), count: u64_at(8) }
            }
            K_MARK => {
                need(8)?;
                Frame::Mark { next_block: u64_at(0) }
            }
            K_COMMIT => {
                need(8)?;
                Frame::Commit { generation: u64_at(0) }
            }
            K_DONE | K_VERIFIED => {
                need(32)?;
                let digest = p[..32].try_into().unwrap();
                if kind == K_DONE {
                    Frame::Done { digest }
                } else {
                    Frame::Verified { digest }
                }
            }
            K_COMMITTED => Frame::Committed { point_json: text(p) },
            K_ERROR => Frame::Error { message: text(p) },
            other => return Err(Error::Protocol(format!("unknown frame kind {other}"))),
        })
    }
}

fn json<T: serde::de::DeserializeOwned>(p: &[u8]) -> Result<T> {
    serde_json::from_slice(p).map_err(|e| Error::Protocol(format!("bad frame body: {e}")))
}

fn encode_data(block: u64, bytes: &[u8]) -> Vec<u8> {
    let mut v = frame(K_DATA, 8 + bytes.len());
    v.extend_from_slice(&block.to_le_bytes());
    v.extend_from_slice(bytes);
    v
}
fn u64_frame(kind: u8, x: u64) -> Vec<u8> {
    let mut v = frame(kind, 8);
    v.extend_from_slice(&x.to_le_bytes());
    v
}
fn digest_frame(kind: u8, d: &BlockHash) -> Vec<u8> {
    let mut v = frame(kind, 32);
    v.extend_from_slice(d);
    v
}
fn text_frame(kind: u8, s: &str) -> Vec<u8> {
    let mut v = frame(kind, s.len());
    v.extend_from_slice(s.as_bytes());
    v
}

/// Bytes one direction of the stream has carried.
#[derive(Clone, Debug, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
    fn add(&self, n: usize) {
        self.0.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// The sending half of one direction.
pub struct Tx {
    inner: TxInner,
    pub sent: Counter,
}
enum TxInner {
    Chan(SyncSender<Vec<u8>>),
    Stream(Box<dyn Write + Send>),
}

/// The receiving half of one direction.
pub struct Rx {
    inner: RxInner,
    pub received: Counter,
}
enum RxInner {
    Chan(Receiver<Vec<u8>>),
    Stream(Box<dyn Read + Send>),
}

impl Tx {
    pub fn send(&mut self, f: &Frame) -> Result<()> {
        self.send_encoded(f.encode())
    }
    pub fn send_encoded(&mut self, bytes: Vec<u8>) -> Result<()> {
        let n = bytes.len();
        match &mut self.inner {
            TxInner::Chan(s) => s.send(bytes).map_err(|_| Error::Protocol("the peer hung up".into()))?,
            TxInner::Stream(s) => s.write_all(&bytes).map_err(|e| Error::Protocol(format!("send: {e}")))?,
        }
        self.sent.add(n);
        Ok(())
    }
}

impl Rx {
    pub fn recv(&mut self) -> Result<Frame> {
        let buf = match &mut self.inner {
            RxInner::Chan(r) => r.recv().map_err(|_| Error::Protocol("the peer hung up".into()))?,
            RxInner::Stream(s) => {
                let mut head = [0u8; HEADER];
                s.read_exact(&mut head).map_err(|e| Error::Protocol(format!("receive: {e}")))?;
                let len = u32::from_le_bytes(head[1..5].try_into().unwrap()) as usize;
                if len > MAX_PAYLOAD {
                    return Err(Error::Protocol(format!("frame of {len} bytes exceeds the limit")));
                }
                let mut buf = vec![0u8; HEADER + len];
                buf[..HEADER].copy_from_slice(&head);
                s.read_exact(&mut buf[HEADER..]).map_err(|e| Error::Protocol(format!("receive: {e}")))?;
                buf
            }
        };
        self.received.add(buf.len());
        match Frame::decode(buf)? {
            Frame::Error { message } => Err(Error::Peer(message)),
            f => Ok(f),
        }
    }
}

/// One end of a duplex stream.
pub struct End {
    pub tx: Tx,
    pub rx: Rx,
}

/// Two connected in-process ends: (source end, target end). `depth` frames may be in flight each way.
pub fn in_process(depth: usize) -> (End, End) {
    let (a_tx, b_rx) = sync_channel(depth);
    let (b_tx, a_rx) = sync_channel(depth);
    (
        End {
            tx: Tx { inner: TxInner::Chan(a_tx), sent: Counter::default() },
            rx: Rx { inner: RxInner::Chan(a_rx), received: Counter::default() },
        },
        End {
            tx: Tx { inner: TxInner::Chan(b_tx), sent: Counter::default() },
            rx: Rx { inner: RxInner::Chan(b_rx), received: Counter::default() },
        },
    )
}

/// An end over a connected TCP stream.
pub fn tcp(stream: TcpStream) -> Result<End> {
    let _ = stream.set_nodelay(true);
    let rx = stream.try_clone().map_err(|e| Error::Protocol(format!("socket: {e}")))?;
    Ok(stream_end(Box::new(rx), Box::new(stream)))
}

/// An end over a local socket whose other end relays elsewhere (TLS between agents: the relay encrypts, the
/// replicator's threads keep their blocking reads and writes).
pub fn unix(stream: std::os::unix::net::UnixStream) -> Result<End> {
    let rx = stream.try_clone().map_err(|e| Error::Protocol(format!("socket: {e}")))?;
    Ok(stream_end(Box::new(rx), Box::new(stream)))
}

fn stream_end(read: Box<dyn Read + Send>, write: Box<dyn Write + Send>) -> End {
    End {
        tx: Tx { inner: TxInner::Stream(write), sent: Counter::default() },
        rx: Rx { inner: RxInner::Stream(read), received: Counter::default() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_frame_round_trips() {
        let frames = vec![
            Frame::Hello(Hello {
                version: 1,
                token: "t".into(),
                size: 1 << 20,
                block_size: 4096,
                source_generation: 3,
            }),
            Frame::Welcome(Welcome {
                version: 1,
                target_generation: 3,
                has_hashes: true,
                empty: false,
                resume: Some(("delta".into(), 5, 3)),
            }),
            Frame::Hashes { first_block: 9, hashes: vec![[1; 32], [2; 32]] },
            Frame::Data { block: 4, bytes: vec![7; 100] },
            Frame::Zero { first_block: 1, count: 2 },
            Frame::Mark { next_block: 8 },
            Frame::Done { digest: [3; 32] },
            Frame::Verified { digest: [4; 32] },
            Frame::Commit { generation: 11 },
            Frame::Committed { point_json: "{}".into() },
        ];
        for f in frames {
            assert_eq!(Frame::decode(f.encode()).unwrap(), f);
        }
    }

    #[test]
    fn damaged_frames_are_refused() {
        let mut b = Frame::Mark { next_block: 1 }.encode();
        b.pop();
        assert!(Frame::decode(b).is_err());
        assert!(Frame::decode(vec![99, 0, 0, 0, 0]).is_err());
        assert!(Frame::decode(vec![K_HASHES, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]).is_err());
    }

    #[test]
    fn an_error_frame_surfaces_as_a_peer_error_and_bytes_are_counted() {
        let (mut a, mut b) = in_process(4);
        a.tx.send(&Frame::Error { message: "disk full".into() }).unwrap();
        assert!(matches!(b.rx.recv(), Err(Error::Peer(m)) if m == "disk full"));
        assert_eq!(a.tx.sent.get(), 5 + 9);
    }
}
