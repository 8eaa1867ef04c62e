//! A throwaway certificate authority and a server certificate for `127.0.0.1` and
//! `localhost`, written as PEM files (for redis-server's TLS port).

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// PEM files of a test CA and a server certificate signed by it.
pub struct TestCerts {
    /// CA certificate.
    pub ca: PathBuf,
    /// Server certificate.
    pub cert: PathBuf,
    /// Server key.
    pub key: PathBuf,
}

/// Writes `ca.pem`, `server.pem`, `server.key` into `dir`.
pub fn make_certs(dir: &Path) -> TestCerts {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "redis-move test CA");
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    let server_key = KeyPair::generate().expect("server key");
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("server params");
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let server_cert = params
        .signed_by(&server_key, &issuer)
        .expect("server certificate");
    let certs = TestCerts {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    };
    std::fs::write(&certs.ca, ca_cert.pem()).expect("write CA");
    std::fs::write(&certs.cert, server_cert.pem()).expect("write certificate");
    std::fs::write(&certs.key, server_key.serialize_pem()).expect("write key");
    certs
}
