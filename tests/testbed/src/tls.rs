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
    let (ca_params, ca_key, ca_pem) = make_ca("redis-move test CA");
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
    std::fs::write(&certs.ca, ca_pem).expect("write CA");
    std::fs::write(&certs.cert, server_cert.pem()).expect("write certificate");
    std::fs::write(&certs.key, server_key.serialize_pem()).expect("write key");
    certs
}

/// Files of a mutual-TLS setup as Docker lays them out (`ca.pem`, `cert.pem`,
/// `key.pem` in one directory per party).
pub struct MutualTls {
    /// The server's: its CA (which signs the clients it accepts), certificate and key.
    pub server: PathBuf,
    /// A client the server accepts (signed by its CA).
    pub client: PathBuf,
    /// A client signed by another CA, which the server must refuse (its `ca.pem` is the
    /// server's CA, so that the client itself trusts the server).
    pub stranger: PathBuf,
}

fn make_ca(name: &str) -> (CertificateParams, KeyPair, String) {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let pem = params.self_signed(&key).expect("CA certificate").pem();
    (params, key, pem)
}

fn write_party(dir: &Path, ca_pem: &str, cert_pem: &str, key: &KeyPair) {
    std::fs::create_dir_all(dir).expect("TLS dir");
    std::fs::write(dir.join("ca.pem"), ca_pem).expect("write CA");
    std::fs::write(dir.join("cert.pem"), cert_pem).expect("write certificate");
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).expect("write key");
}

/// A CA, a server certificate for `127.0.0.1`/`localhost`, a client certificate it
/// signs, and a client certificate of another CA, under `dir`.
pub fn make_mutual_tls(dir: &Path) -> MutualTls {
    use rcgen::ExtendedKeyUsagePurpose;
    let (ca_params, ca_key, ca_pem) = make_ca("redis-move test CA");
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    let server_key = KeyPair::generate().expect("server key");
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("server params");
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = params
        .signed_by(&server_key, &issuer)
        .expect("server certificate");
    let client = |issuer: &Issuer<'_, &KeyPair>| {
        let key = KeyPair::generate().expect("client key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
        params
            .distinguished_name
            .push(DnType::CommonName, "redis-move");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, issuer).expect("client certificate");
        (cert.pem(), key)
    };
    let (client_pem, client_key) = client(&issuer);
    let (other_params, other_key, _) = make_ca("another CA");
    let other_issuer = Issuer::from_params(&other_params, &other_key);
    let (stranger_pem, stranger_key) = client(&other_issuer);
    let files = MutualTls {
        server: dir.join("server"),
        client: dir.join("client"),
        stranger: dir.join("stranger"),
    };
    write_party(&files.server, &ca_pem, &server_cert.pem(), &server_key);
    write_party(&files.client, &ca_pem, &client_pem, &client_key);
    write_party(&files.stranger, &ca_pem, &stranger_pem, &stranger_key);
    files
}
