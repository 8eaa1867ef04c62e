//! Docker for tests: the engine (or a loud skip), images built locally as root
//! filesystems of Debian binaries and their shared libraries, and guards that remove
//! what a test created.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use bollard::Docker;
use bollard::query_parameters::{CreateImageOptionsBuilder, RemoveContainerOptionsBuilder};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use crate::redis::{redis_server_binary, which};

/// The Docker Engine, or `None` with a loud message when there is none. With
/// `REDIS_MOVE_REQUIRE_DOCKER=1` (CI) a missing engine fails the test instead.
pub async fn engine() -> Option<Docker> {
    let docker = match Docker::connect_with_defaults() {
        Ok(d) => d,
        Err(e) => return skip(&format!("cannot connect: {e}")),
    };
    match docker.ping().await {
        Ok(_) => Some(docker),
        Err(e) => skip(&format!("the engine does not answer: {e}")),
    }
}

fn skip(reason: &str) -> Option<Docker> {
    if std::env::var("REDIS_MOVE_REQUIRE_DOCKER").is_ok_and(|v| v == "1") {
        panic!("REDIS_MOVE_REQUIRE_DOCKER=1 but there is no Docker Engine: {reason}");
    }
    eprintln!("\n!!!! SKIPPED: this test needs a Docker Engine ({reason}) !!!!\n");
    None
}

/// An image built locally from binaries and their libraries.
#[derive(Clone, Debug)]
pub struct TestImage {
    /// `repository:tag`.
    pub reference: String,
}

/// The Redis image: `redis-server` and `redis-cli` from the host, with the libraries
/// they link, in an otherwise empty root filesystem. Built once per content (the tag is
/// a hash of the files), reused afterwards.
pub async fn redis_image(docker: &Docker) -> TestImage {
    let server = redis_server_binary();
    let mut files = vec![(server.clone(), server)];
    if let Some(cli) = which("redis-cli") {
        files.push((cli.clone(), cli));
    }
    // `df`, for the pre-flight's free-disk check of the data directory.
    if let Some(df) = which("df") {
        files.push((df.clone(), df));
    }
    // A shell, for CMD-SHELL health checks and `docker exec ... sh -c`.
    if let Some(sh) = which("dash").or_else(|| which("sh")) {
        let real = std::fs::canonicalize(&sh).unwrap_or(sh);
        files.push((real, PathBuf::from("/bin/sh")));
    }
    image_of(docker, "rmtest/redis", &files).await
}

/// Builds (or reuses) an image containing `files` (host path, path in the image) and
/// the libraries they link.
pub async fn image_of(
    docker: &Docker,
    repository: &str,
    files: &[(PathBuf, PathBuf)],
) -> TestImage {
    let tar = rootfs_tar(files);
    let tag = hex(&Sha256::digest(&tar))[..16].to_owned();
    let reference = format!("{repository}:{tag}");
    if docker.inspect_image(&reference).await.is_ok() {
        return TestImage { reference };
    }
    let options = CreateImageOptionsBuilder::default()
        .from_src("-")
        .repo(repository)
        .tag(&tag)
        .build();
    let mut stream = docker.create_image(Some(options), Some(bollard::body_full(tar.into())), None);
    while let Some(step) = stream.next().await {
        step.unwrap_or_else(|e| panic!("importing {reference}: {e}"));
    }
    TestImage { reference }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The shared libraries `binary` needs (and the loader), from `ldd`.
fn libraries(binary: &Path) -> Vec<PathBuf> {
    let out = Command::new("ldd").arg(binary).output().expect("ldd runs");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter_map(|line| {
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// A root filesystem (tar) holding `binaries` (host path, path in the image), their
/// libraries at their host paths, `/tmp`, `/data`, and minimal `/etc/passwd` and
/// `/etc/group`.
pub fn rootfs_tar(binaries: &[(PathBuf, PathBuf)]) -> Vec<u8> {
    let mut files: BTreeSet<(PathBuf, PathBuf)> = BTreeSet::new();
    for (host, inside) in binaries {
        files.insert((host.clone(), inside.clone()));
        files.extend(libraries(host).into_iter().map(|lib| (lib.clone(), lib)));
    }
    let mut builder = tar::Builder::new(Vec::new());
    builder.mode(tar::HeaderMode::Deterministic);
    for dir in ["bin", "tmp", "data", "etc", "usr/local/etc/redis"] {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(if dir == "tmp" { 0o1777 } else { 0o755 });
        header.set_size(0);
        builder
            .append_data(&mut header, format!("{dir}/"), std::io::empty())
            .expect("tar dir");
    }
    for (path, content) in [
        (
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
        ),
        ("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        header.set_size(content.len() as u64);
        builder
            .append_data(&mut header, path, content.as_bytes())
            .expect("tar file");
    }
    for (host, inside) in files {
        let data =
            std::fs::read(&host).unwrap_or_else(|e| panic!("reading {}: {e}", host.display()));
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o755);
        header.set_size(data.len() as u64);
        let relative = inside.strip_prefix("/").unwrap_or(&inside);
        builder
            .append_data(&mut header, relative, data.as_slice())
            .expect("tar binary");
    }
    builder.into_inner().expect("tar finished")
}

/// Removes containers (by name) when dropped, even when the test panicked.
pub struct ContainerGuard {
    names: Vec<String>,
}

impl ContainerGuard {
    /// A guard for these container names.
    pub fn new(names: impl IntoIterator<Item = String>) -> Self {
        ContainerGuard {
            names: names.into_iter().collect(),
        }
    }

    /// Also remove `name`.
    pub fn add(&mut self, name: impl Into<String>) {
        self.names.push(name.into());
    }
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        let names = std::mem::take(&mut self.names);
        // A runtime of its own: the test's runtime may be gone or busy.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let Ok(docker) = Docker::connect_with_defaults() else {
                    return;
                };
                for name in names {
                    let options = RemoveContainerOptionsBuilder::default()
                        .force(true)
                        .v(true)
                        .build();
                    let _ = docker.remove_container(&name, Some(options)).await;
                }
            });
        })
        .join();
    }
}
