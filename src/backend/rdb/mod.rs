//! RDB files: receiving a server's dataset over the replication protocol (what
//! `redis-cli --rdb` does: `SYNC`, the server forks and streams a point-in-time RDB),
//! so that a snapshot works where the server's disk is out of reach, and reading an RDB
//! file's header and digest.

use std::path::Path;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

pub mod entries;
pub mod primary;
pub mod replica;
pub mod values;

use super::BackendError;
use super::redis::RedisEndpoint;

/// How long the stream may stay silent: while it prepares the RDB the server sends a
/// newline every second, and then the data flows.
const SILENCE: Duration = Duration::from_secs(60);

/// One read of the stream, failing after [`SILENCE`] without a byte.
async fn read_some(
    reader: &mut BufReader<Box<dyn Stream>>,
    buf: &mut [u8],
) -> Result<usize, BackendError> {
    tokio::time::timeout(SILENCE, reader.read(buf))
        .await
        .map_err(|_| {
            BackendError::Timeout(format!(
                "the server sent nothing for {}s while streaming the RDB",
                SILENCE.as_secs()
            ))
        })?
        .map_err(|e| BackendError::Unreachable(format!("receiving the RDB: {e}")))
}

/// What was received or read: the file's size, SHA-256 and RDB format version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RdbFile {
    /// Bytes.
    pub bytes: u64,
    /// SHA-256, hex.
    pub sha256: String,
    /// The format version of its header (`REDIS0010` -> 10).
    pub version: u32,
}

/// The RDB format version of a file's first bytes (`REDIS` and four digits).
pub fn header_version(head: &[u8]) -> Option<u32> {
    let digits = head.strip_prefix(b"REDIS")?.get(..4)?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Reads the size, digest and format version of the RDB file at `path`.
pub async fn inspect(path: &Path) -> Result<RdbFile, BackendError> {
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|e| BackendError::Local(format!("cannot read `{}`: {e}", path.display())))?;
    let mut hasher = Sha256::new();
    let mut head = Vec::new();
    let mut bytes = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file
            .read(&mut buf)
            .await
            .map_err(|e| BackendError::Local(format!("cannot read `{}`: {e}", path.display())))?;
        if n == 0 {
            break;
        }
        if head.len() < 9 {
            head.extend_from_slice(&buf[..n.min(9 - head.len())]);
        }
        hasher.update(&buf[..n]);
        bytes += n as u64;
    }
    let version = header_version(&head).ok_or_else(|| {
        BackendError::Unexpected(format!("`{}` is not an RDB file", path.display()))
    })?;
    Ok(RdbFile {
        bytes,
        sha256: hex(&hasher.finalize()),
        version,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

async fn reply_line(reader: &mut BufReader<Box<dyn Stream>>) -> Result<String, BackendError> {
    let mut line = Vec::new();
    reader
        .read_until(b'\n', &mut line)
        .await
        .map_err(|e| BackendError::Unreachable(format!("reading a reply: {e}")))?;
    if line.is_empty() {
        return Err(BackendError::Unreachable(
            "the server closed the connection".into(),
        ));
    }
    Ok(String::from_utf8_lossy(&line).trim_end().to_owned())
}

/// A connection to the server of `endpoint`, authenticated, for the replication
/// protocol (the redis crate's connections cannot carry it).
async fn open_link(endpoint: &RedisEndpoint) -> Result<Link, BackendError> {
    let info = endpoint.connection_info()?;
    let connect = async {
        let stream: Box<dyn Stream> = match info.addr() {
            redis::ConnectionAddr::Tcp(host, port) => Box::new(
                tokio::net::TcpStream::connect((host.as_str(), *port))
                    .await
                    .map_err(|e| BackendError::Unreachable(format!("{host}:{port}: {e}")))?,
            ),
            redis::ConnectionAddr::Unix(path) => Box::new(
                tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(|e| BackendError::Unreachable(format!("{}: {e}", path.display())))?,
            ),
            _ => {
                return Err(BackendError::Config(
                    "an RDB cannot be streamed over TLS yet: give `method: bgsave`".into(),
                ));
            }
        };
        Ok(stream)
    };
    let stream = tokio::time::timeout(endpoint.connect_timeout, connect)
        .await
        .map_err(|_| BackendError::Timeout("connecting took too long".into()))??;
    let mut reader = BufReader::with_capacity(1 << 16, stream);
    let settings = info.redis_settings();
    let password = endpoint
        .password
        .clone()
        .or_else(|| settings.password().map(str::to_owned));
    let username = endpoint
        .username
        .clone()
        .or_else(|| settings.username().map(str::to_owned));
    if let Some(password) = &password {
        let auth = match &username {
            Some(user) => command(&[b"AUTH", user.as_bytes(), password.as_bytes()]),
            None => command(&[b"AUTH", password.as_bytes()]),
        };
        write(&mut reader, &auth).await?;
        expect_ok(&mut reader, endpoint.timeout, "authentication").await?;
    }
    Ok(reader)
}

/// Reads the answer to a command just sent, which must be `+...`; else an error saying
/// `what` was refused, and why.
async fn expect_ok(link: &mut Link, limit: Duration, what: &str) -> Result<(), BackendError> {
    let answer = tokio::time::timeout(limit, reply_line(link))
        .await
        .map_err(|_| BackendError::Timeout(format!("{what}: the server did not answer")))??;
    if answer.starts_with('+') {
        Ok(())
    } else {
        Err(BackendError::Command(format!(
            "{what} refused: {}",
            answer.trim_start_matches('-')
        )))
    }
}

/// A raw connection to a server, buffered.
type Link = BufReader<Box<dyn Stream>>;

/// `link` with `ahead` (bytes read from it beyond what was used) put back in front.
fn unread(link: Link, ahead: Vec<u8>) -> Link {
    let mut front = ahead;
    front.extend_from_slice(link.buffer());
    BufReader::new(Box::new(Prefixed {
        front,
        at: 0,
        inner: link.into_inner(),
    }))
}

/// A stream whose first bytes are already in memory.
struct Prefixed {
    front: Vec<u8>,
    at: usize,
    inner: Box<dyn Stream>,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.at < self.front.len() {
            let n = buf.remaining().min(self.front.len() - self.at);
            let at = self.at;
            buf.put_slice(&self.front[at..at + n]);
            self.at += n;
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Receives a point-in-time RDB of the server at `endpoint` into `out`, over the
/// replication protocol. The server forks as for a replica's full sync.
pub async fn receive(
    endpoint: &RedisEndpoint,
    out: &Path,
    progress: &(dyn Fn(u64, Option<u64>) + Send + Sync),
) -> Result<RdbFile, BackendError> {
    let mut reader = open_link(endpoint).await?;
    // Redis 7+: the server streams only the RDB, not the command stream after it.
    write(&mut reader, &command(&[b"REPLCONF", b"rdb-only", b"1"])).await?;
    tokio::time::timeout(endpoint.timeout, reply_line(&mut reader))
        .await
        .map_err(|_| BackendError::Timeout("REPLCONF got no answer".into()))??;
    write(&mut reader, &command(&[b"SYNC"])).await?;
    // While the server prepares the RDB it sends newlines to keep the link alive.
    let header = loop {
        let line = tokio::time::timeout(SILENCE, reply_line(&mut reader))
            .await
            .map_err(|_| {
                BackendError::Timeout(format!(
                    "the server sent nothing for {}s instead of an RDB",
                    SILENCE.as_secs()
                ))
            })??;
        if !line.is_empty() {
            break line;
        }
    };
    let Some(header) = header.strip_prefix('$') else {
        return Err(BackendError::Command(format!(
            "SYNC refused: {}",
            header.trim_start_matches('-')
        )));
    };
    let mut file = tokio::fs::File::create(out)
        .await
        .map_err(|e| BackendError::Local(format!("cannot write `{}`: {e}", out.display())))?;
    let mut hasher = Sha256::new();
    let mut head = Vec::new();
    let mut written = 0u64;
    let mut keep = |chunk: &[u8], file_chunks: &mut Vec<u8>| {
        if head.len() < 9 {
            head.extend_from_slice(&chunk[..chunk.len().min(9 - head.len())]);
        }
        hasher.update(chunk);
        file_chunks.extend_from_slice(chunk);
    };
    let mut buf = vec![0u8; 1 << 16];
    let mut last_report = std::time::Instant::now();
    match header.strip_prefix("EOF:") {
        // Diskless: the payload ends with a 40-byte mark.
        Some(mark) => {
            let mark = mark.as_bytes().to_vec();
            let mut tail: Vec<u8> = Vec::new();
            loop {
                let n = read_some(&mut reader, &mut buf).await?;
                if n == 0 {
                    return Err(BackendError::Unreachable(
                        "the server closed the connection before the end of the RDB".into(),
                    ));
                }
                tail.extend_from_slice(&buf[..n]);
                if let Some(at) = find(&tail, &mark) {
                    let mut chunk = Vec::new();
                    keep(&tail[..at], &mut chunk);
                    written += chunk.len() as u64;
                    write_file(&mut file, &chunk, out).await?;
                    break;
                }
                // Everything but the last bytes, which may hold the start of the mark.
                let safe = tail.len().saturating_sub(mark.len());
                let mut chunk = Vec::new();
                keep(&tail[..safe], &mut chunk);
                written += chunk.len() as u64;
                write_file(&mut file, &chunk, out).await?;
                tail.drain(..safe);
                if last_report.elapsed() >= Duration::from_secs(1) {
                    last_report = std::time::Instant::now();
                    progress(written, None);
                }
            }
        }
        None => {
            let total: u64 = header
                .parse()
                .map_err(|_| BackendError::Unexpected(format!("SYNC answered `${header}`")))?;
            while written < total {
                let want = ((total - written) as usize).min(buf.len());
                let n = read_some(&mut reader, &mut buf[..want]).await?;
                if n == 0 {
                    return Err(BackendError::Unreachable(format!(
                        "the server closed the connection after {written} of {total} bytes"
                    )));
                }
                let mut chunk = Vec::new();
                keep(&buf[..n], &mut chunk);
                written += n as u64;
                write_file(&mut file, &chunk, out).await?;
                if last_report.elapsed() >= Duration::from_secs(1) {
                    last_report = std::time::Instant::now();
                    progress(written, Some(total));
                }
            }
        }
    }
    file.sync_all()
        .await
        .map_err(|e| BackendError::Local(format!("cannot write `{}`: {e}", out.display())))?;
    let version = header_version(&head)
        .ok_or_else(|| BackendError::Unexpected("the server did not send an RDB".into()))?;
    Ok(RdbFile {
        bytes: written,
        sha256: hex(&hasher.finalize()),
        version,
    })
}

async fn write(reader: &mut Link, bytes: &[u8]) -> Result<(), BackendError> {
    reader
        .get_mut()
        .write_all(bytes)
        .await
        .map_err(|e| BackendError::Unreachable(format!("sending a command: {e}")))
}

async fn write_file(
    file: &mut tokio::fs::File,
    bytes: &[u8],
    path: &Path,
) -> Result<(), BackendError> {
    file.write_all(bytes)
        .await
        .map_err(|e| BackendError::Local(format!("cannot write `{}`: {e}", path.display())))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_versions() {
        assert_eq!(header_version(b"REDIS0010\xfa"), Some(10));
        assert_eq!(header_version(b"REDIS0009"), Some(9));
        assert_eq!(header_version(b"REDIS"), None);
        assert_eq!(header_version(b"NOTRDB0010"), None);
    }

    #[test]
    fn commands_are_resp_arrays() {
        assert_eq!(command(&[b"SYNC"]), b"*1\r\n$4\r\nSYNC\r\n".to_vec());
    }
}
