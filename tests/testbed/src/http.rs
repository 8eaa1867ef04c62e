//! A small HTTP(S) server for tests and the managed-Redis sandboxes: fixed answers per
//! path (a REST ping, a health endpoint, an API), over TLS with the test CA when asked,
//! each request recorded.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::tls::TestCerts;

/// One fixed answer: requests to `path` (query ignored) get `status` and `body` (JSON).
#[derive(Clone, Debug)]
pub struct Route {
    /// The path, `/api/v1/health/redis`.
    pub path: String,
    /// The status code.
    pub status: u16,
    /// The body.
    pub body: String,
}

impl Route {
    /// A route.
    pub fn new(path: &str, status: u16, body: &str) -> Route {
        Route {
            path: path.into(),
            status,
            body: body.into(),
        }
    }
}

/// A running stub; it stops with the test process.
pub struct HttpStub {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Request lines received (`POST /api/messages/send`), in order.
    pub requests: Arc<Mutex<Vec<String>>>,
    /// Their bodies, in the same order.
    pub bodies: Arc<Mutex<Vec<String>>>,
}

impl HttpStub {
    /// Serves `routes` on a free port; over TLS with `certs` when given.
    pub fn start(routes: Vec<Route>, tls: Option<&TestCerts>) -> HttpStub {
        HttpStub::start_at(0, routes, tls)
    }

    /// [`HttpStub::start`] on `port` (0: a free one).
    pub fn start_at(port: u16, routes: Vec<Route>, tls: Option<&TestCerts>) -> HttpStub {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("cannot listen on 127.0.0.1:{port}: {e}"));
        let port = listener.local_addr().expect("local address").port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let config = tls.map(|certs| {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&certs.cert)
                .expect("server certificate")
                .map(|c| c.expect("PEM certificate"))
                .collect();
            let key = PrivateKeyDer::from_pem_file(&certs.key).expect("server key");
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            Arc::new(
                rustls::ServerConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .expect("TLS versions")
                    .with_no_client_auth()
                    .with_single_cert(chain, key)
                    .expect("TLS server configuration"),
            )
        });
        let seen = (requests.clone(), bodies.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (routes, seen, config) = (routes.clone(), seen.clone(), config.clone());
                std::thread::spawn(move || match config {
                    Some(config) => {
                        let Ok(connection) = rustls::ServerConnection::new(config) else {
                            return;
                        };
                        serve(rustls::StreamOwned::new(connection, stream), &routes, &seen);
                    }
                    None => serve(stream, &routes, &seen),
                });
            }
        });
        HttpStub {
            port,
            requests,
            bodies,
        }
    }

    /// `http(s)://127.0.0.1:<port>`.
    pub fn url(&self, tls: bool) -> String {
        format!(
            "{}://127.0.0.1:{}",
            if tls { "https" } else { "http" },
            self.port
        )
    }
}

/// Where requests are recorded: their lines and their bodies.
type Seen = (Arc<Mutex<Vec<String>>>, Arc<Mutex<Vec<String>>>);

fn serve<S: Read + Write>(stream: S, routes: &[Route], seen: &Seen) {
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).is_err() || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length];
    let _ = reader.read_exact(&mut body);
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
    let path = target.split('?').next().unwrap_or("/");
    if let (Ok(mut lines), Ok(mut bodies)) = (seen.0.lock(), seen.1.lock()) {
        lines.push(format!("{method} {path}"));
        bodies.push(String::from_utf8_lossy(&body).into_owned());
    }
    let (status, answer) = routes
        .iter()
        .find(|r| r.path == path)
        .map_or((404, "{\"error\":\"not found\"}".to_owned()), |r| {
            (r.status, r.body.clone())
        });
    let reply = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
        answer.len()
    );
    let mut stream = reader.into_inner();
    let _ = stream.write_all(reply.as_bytes());
    let _ = stream.flush();
}
