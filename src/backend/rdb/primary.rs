//! redis-move as the primary of one replica, for one full sync: a target told
//! `REPLICAOF` redis-move's address connects, asks for a sync, and is sent an RDB that
//! redis-move writes key by key (the keys of another server's RDB, filtered and renamed:
//! the value bytes as they came). The target loads it as it loads its primary's RDB, at
//! its own native speed, instead of one `RESTORE` per key. Only for an empty target (a
//! replica's full sync replaces its whole dataset); the target is told `REPLICAOF NO ONE`
//! once loaded.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};

use super::entries::RdbEntry;
use crate::backend::BackendError;

fn unexpected(what: &str) -> BackendError {
    BackendError::Unexpected(format!("serving an RDB to the target: {what}"))
}

/// A listening socket for the target to sync from.
pub struct RdbPrimary {
    listener: TcpListener,
}

impl RdbPrimary {
    /// Listens on `address` (`127.0.0.1:0`: a free port).
    pub async fn bind(address: &str) -> Result<RdbPrimary, BackendError> {
        let listener = TcpListener::bind(address)
            .await
            .map_err(|e| BackendError::Local(format!("listening on {address}: {e}")))?;
        Ok(RdbPrimary { listener })
    }

    /// The port it listens on.
    pub fn port(&self) -> Result<u16, BackendError> {
        self.listener
            .local_addr()
            .map(|a| a.port())
            .map_err(|e| BackendError::Local(format!("the listening address: {e}")))
    }

    /// Checks that a connection to `announce` arrives here (a probe with a nonce): the
    /// address the target will be told leads to redis-move, not to another server.
    pub async fn check_reaches(&self, announce: &str) -> Result<(), BackendError> {
        let nonce = unique_hex("probe");
        let wrong = |why: String| {
            BackendError::Config(format!(
                "`announce: {announce}` does not lead to redis-move's listener ({why}): the target would follow whatever is there"
            ))
        };
        let probe = async {
            let mut stream = TcpStream::connect(announce)
                .await
                .map_err(|e| wrong(e.to_string()))?;
            stream
                .write_all(format!("redis-move-probe {nonce}\r\n").as_bytes())
                .await
                .map_err(|e| wrong(e.to_string()))?;
            // Kept open until the listener has read it.
            std::future::pending::<()>().await;
            Ok::<(), BackendError>(())
        };
        let arrival = async {
            loop {
                let (stream, _) = self
                    .listener
                    .accept()
                    .await
                    .map_err(|e| BackendError::Local(format!("accepting the probe: {e}")))?;
                let mut line = String::new();
                let read = tokio::time::timeout(
                    Duration::from_secs(2),
                    BufReader::new(stream).read_line(&mut line),
                )
                .await;
                if matches!(read, Ok(Ok(_)))
                    && line.trim_end() == format!("redis-move-probe {nonce}")
                {
                    return Ok(());
                }
            }
        };
        let limit = Duration::from_secs(5);
        match tokio::time::timeout(limit, async {
            tokio::select! {
                failed = probe => failed,
                arrived = arrival => arrived,
            }
        })
        .await
        {
            Ok(outcome) => outcome,
            Err(_) => Err(wrong(format!(
                "a connection to it did not arrive within {}s",
                limit.as_secs()
            ))),
        }
    }

    /// Waits (up to `limit`) for the replica, answers its handshake (`PING`, `REPLCONF`,
    /// `PSYNC`) with a full sync of a diskless RDB, and gives the writer of that RDB.
    pub async fn accept(&self, limit: Duration) -> Result<RdbWriter, BackendError> {
        let (stream, _) = tokio::time::timeout(limit, self.listener.accept())
            .await
            .map_err(|_| {
                BackendError::Timeout(format!(
                    "the target did not connect within {}s to sync from redis-move",
                    limit.as_secs()
                ))
            })?
            .map_err(|e| BackendError::Local(format!("accepting the target: {e}")))?;
        stream.set_nodelay(true).ok();
        let mut conn = BufReader::new(stream);
        loop {
            let args = tokio::time::timeout(limit, read_command(&mut conn))
                .await
                .map_err(|_| unexpected("the target stopped in its handshake"))??;
            let name = args
                .first()
                .map(|a| a.to_ascii_uppercase())
                .unwrap_or_default();
            match name.as_slice() {
                b"PING" => conn.get_mut().write_all(b"+PONG\r\n").await,
                b"REPLCONF" | b"AUTH" => conn.get_mut().write_all(b"+OK\r\n").await,
                b"PSYNC" | b"SYNC" => break,
                other => {
                    return Err(unexpected(&format!(
                        "the target sent {}",
                        String::from_utf8_lossy(other)
                    )));
                }
            }
            .map_err(|e| unexpected(&e.to_string()))?;
        }
        let replid = unique_hex("replid");
        let mark: [u8; 40] = unique_hex("mark").as_bytes()[..40]
            .try_into()
            .expect("40 bytes");
        let mut head = format!("+FULLRESYNC {replid} 0\r\n$EOF:").into_bytes();
        head.extend_from_slice(&mark);
        head.extend_from_slice(b"\r\n");
        let (read, write) = conn.into_inner().into_split();
        let mut out = BufWriter::with_capacity(1 << 18, write);
        out.write_all(&head)
            .await
            .map_err(|e| unexpected(&e.to_string()))?;
        Ok(RdbWriter {
            out,
            _acks: read,
            mark,
            db: None,
            crc: super::entries::crc64_digest(),
        })
    }
}

/// 40 hex digits no one else writes (a replication id, the mark that ends the RDB).
fn unique_hex(what: &str) -> String {
    use sha2::Digest;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let digest = sha2::Sha256::digest(format!("{what} {now} {}", std::process::id()));
    super::hex(&digest)[..40].to_owned()
}

/// One RESP command of the replica's handshake.
async fn read_command(conn: &mut BufReader<TcpStream>) -> Result<Vec<Vec<u8>>, BackendError> {
    let mut line = Vec::new();
    let mut next_line = async |conn: &mut BufReader<TcpStream>| -> Result<Vec<u8>, BackendError> {
        line.clear();
        conn.read_until(b'\n', &mut line)
            .await
            .map_err(|e| unexpected(&e.to_string()))?;
        if line.is_empty() {
            return Err(unexpected("the target closed the connection"));
        }
        Ok(line.trim_ascii_end().to_vec())
    };
    let first = next_line(conn).await?;
    let Some(count) = first.strip_prefix(b"*") else {
        // An inline command.
        return Ok(first.split(|b| *b == b' ').map(<[u8]>::to_vec).collect());
    };
    let count: usize = std::str::from_utf8(count)
        .ok()
        .and_then(|c| c.parse().ok())
        .filter(|c| *c <= 64)
        .ok_or_else(|| unexpected("a malformed command"))?;
    let mut args = Vec::with_capacity(count);
    for _ in 0..count {
        let head = next_line(conn).await?;
        let len: usize = head
            .strip_prefix(b"$")
            .and_then(|l| std::str::from_utf8(l).ok()?.parse().ok())
            .filter(|l| *l <= 1 << 16)
            .ok_or_else(|| unexpected("a malformed argument"))?;
        let mut arg = vec![0u8; len + 2];
        conn.read_exact(&mut arg)
            .await
            .map_err(|e| unexpected(&e.to_string()))?;
        arg.truncate(len);
        args.push(arg);
    }
    Ok(args)
}

/// The RDB sent to the replica, written key by key.
pub struct RdbWriter {
    out: BufWriter<tokio::net::tcp::OwnedWriteHalf>,
    /// The replica's acknowledgements (not read: the load is watched with INFO).
    _acks: tokio::net::tcp::OwnedReadHalf,
    mark: [u8; 40],
    db: Option<u64>,
    crc: crc::Digest<'static, u64, crc::Table<16>>,
}

fn length(n: u64, out: &mut Vec<u8>) {
    if n < 1 << 6 {
        out.push(n as u8);
    } else if n < 1 << 14 {
        out.extend_from_slice(&[0x40 | (n >> 8) as u8, n as u8]);
    } else if n <= u64::from(u32::MAX) {
        out.push(0x80);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    } else {
        out.push(0x81);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

impl RdbWriter {
    async fn put(&mut self, bytes: &[u8]) -> Result<(), BackendError> {
        self.crc.update(bytes);
        self.out
            .write_all(bytes)
            .await
            .map_err(|e| unexpected(&format!("the target's link broke: {e}")))
    }

    /// The RDB header, of format `version` (the source's: the values are its bytes).
    pub async fn header(&mut self, version: u16) -> Result<(), BackendError> {
        self.put(format!("REDIS{version:04}").as_bytes()).await
    }

    /// One key, named `name`, in database `db`, with the value and expiry of `entry`.
    pub async fn key(
        &mut self,
        name: &[u8],
        entry: &RdbEntry,
        db: u64,
        buf: &mut Vec<u8>,
    ) -> Result<(), BackendError> {
        buf.clear();
        if self.db != Some(db) {
            self.db = Some(db);
            buf.push(0xFE);
            length(db, buf);
        }
        if let Some(at) = entry.expires_at_ms {
            buf.push(0xFC);
            buf.extend_from_slice(&at.to_le_bytes());
        }
        buf.push(entry.value_type);
        length(name.len() as u64, buf);
        buf.extend_from_slice(name);
        self.crc.update(buf);
        self.out
            .write_all(buf)
            .await
            .map_err(|e| unexpected(&format!("the target's link broke: {e}")))?;
        self.put(&entry.value).await
    }

    /// Ends the RDB (its checksum and the mark) and sends it all.
    pub async fn finish(mut self) -> Result<RdbServed, BackendError> {
        self.put(&[0xFF]).await?;
        let crc = self.crc.clone().finalize().to_le_bytes();
        let mark = self.mark;
        self.put(&crc).await?;
        self.put(&mark).await?;
        self.out
            .flush()
            .await
            .map_err(|e| unexpected(&format!("the target's link broke: {e}")))?;
        Ok(RdbServed {
            _out: self.out,
            _acks: self._acks,
        })
    }
}

/// A replica that has been sent its RDB: the link stays open until it is dropped (the
/// target, told `REPLICAOF NO ONE`, closes it).
pub struct RdbServed {
    _out: BufWriter<tokio::net::tcp::OwnedWriteHalf>,
    _acks: tokio::net::tcp::OwnedReadHalf,
}
