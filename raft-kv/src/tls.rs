//! TLS for raft-kv's HTTP side: the server's configuration (`--http-cert`, `--http-key`,
//! and `--http-ca` to require client certificates), the client's (`--cacert`, `--cert`,
//! `--key`, like curl), and `raft-kv certs init`, which writes a CA, node certificates and a
//! client certificate for trying TLS locally.
//!
//! Everything uses rustls with the `ring` provider, like the library's peer transport.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;

/// rustls's `ring` provider (see the library's `transport/tls.rs` for why ring, and what its
/// deprecation in rustls 0.23.48 means).
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(what: &str, path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading the {what} {}", path.display()))
}

fn certificates(what: &str, path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = read(what, path)?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("the {what} {} is not PEM", path.display()))?;
    if certificates.is_empty() {
        bail!("the {what} {} holds no certificate", path.display());
    }
    Ok(certificates)
}

fn private_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(&read("private key", path)?)
        .with_context(|| format!("the private key {} holds no usable PEM key", path.display()))
}

fn roots(path: &Path) -> anyhow::Result<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    for certificate in certificates("CA certificate", path)? {
        roots.add(certificate).with_context(|| format!("the CA certificate {}", path.display()))?;
    }
    Ok(Arc::new(roots))
}

/// The HTTPS server's TLS: its certificate and key, and possibly a CA for client
/// certificates.
#[derive(Clone)]
pub struct HttpTls {
    pub(crate) acceptor: tokio_rustls::TlsAcceptor,
    /// Whether clients must present a certificate.
    pub requires_client_certificates: bool,
}

impl std::fmt::Debug for HttpTls {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("HttpTls")
            .field("requires_client_certificates", &self.requires_client_certificates)
            .finish_non_exhaustive()
    }
}

/// The HTTPS server's configuration: its certificate and key, and, with `client_ca`, the CA
/// every client certificate must chain to (clients without one are refused in the handshake).
pub fn server_config(
    certificate: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> anyhow::Result<HttpTls> {
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match client_ca {
        Some(ca) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider)
                .build()
                .with_context(|| format!("the client CA {}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certificates("certificate", certificate)?, private_key(key)?)
        .context("the HTTP certificate and key do not match")?;
    // ALPN: the client chooses; a client that offers none gets HTTP/1.1 or, if it opens
    // with HTTP/2's preface, HTTP/2 (http_server.rs tells them apart either way).
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(HttpTls {
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        requires_client_certificates: client_ca.is_some(),
    })
}

/// A client's TLS settings: the CA that signs the servers' certificates and, for servers
/// started with `--http-ca`, the client's own certificate and key.
#[derive(Clone)]
pub struct ClientTls {
    /// Offers `http/1.1` in ALPN.
    connector: tokio_rustls::TlsConnector,
    /// Offers `h2` in ALPN.
    http2_connector: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("ClientTls { .. }")
    }
}

impl ClientTls {
    /// From PEM files: `ca` (required), and `certificate` with `key` (both or neither).
    pub fn from_pem_files(
        ca: &Path,
        certificate: Option<&Path>,
        key: Option<&Path>,
    ) -> anyhow::Result<ClientTls> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_root_certificates(roots(ca)?);
        let mut config = match (certificate, key) {
            (Some(certificate), Some(key)) => builder
                .with_client_auth_cert(certificates("certificate", certificate)?, private_key(key)?)
                .context("the client certificate and key do not match")?,
            (None, None) => builder.with_no_client_auth(),
            _ => bail!("--cert and --key go together"),
        };
        let mut http2 = config.clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        http2.alpn_protocols = vec![b"h2".to_vec()];
        Ok(ClientTls {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            http2_connector: tokio_rustls::TlsConnector::from(Arc::new(http2)),
        })
    }

    /// Opens a TLS session to `address` over `stream`; the server's certificate must name the
    /// address's IP (certificates from `raft-kv certs init` carry 127.0.0.1 and the hosts
    /// given).
    pub async fn connect(
        &self,
        address: SocketAddr,
        stream: tokio::net::TcpStream,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        self.connector.connect(ServerName::IpAddress(address.ip().into()), stream).await
    }

    /// Like [`connect`](Self::connect), offering HTTP/2 in ALPN; fails when the server does
    /// not choose it.
    pub async fn connect_http2(
        &self,
        address: SocketAddr,
        stream: tokio::net::TcpStream,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let server = ServerName::IpAddress(address.ip().into());
        let session = self.http2_connector.connect(server, stream).await?;
        if session.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                format!("{address} did not agree to HTTP/2 in the TLS handshake (ALPN)"),
            ));
        }
        Ok(session)
    }
}

/// What `raft-kv certs init` writes.
pub struct CertsPlan {
    /// The directory the files go to (created if missing).
    pub directory: PathBuf,
    /// Node certificates for ids 1..=nodes.
    pub nodes: u64,
    /// Extra subject alternative names on every node certificate (DNS names or IPs).
    pub hosts: Vec<String>,
}

/// Writes `ca.pem` and `ca-key.pem`, `node<ID>.pem` and `node<ID>-key.pem` for each node
/// (names: `node<ID>`, 127.0.0.1, `localhost` and the hosts given), and `client.pem` and
/// `client-key.pem`. Refuses to overwrite an existing CA. Returns the files written.
pub fn init_certs(plan: &CertsPlan) -> anyhow::Result<Vec<PathBuf>> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    if plan.nodes == 0 || plan.nodes > raft_consensus::config::MAX_MEMBERS as u64 {
        bail!("--nodes must be between 1 and {}", raft_consensus::config::MAX_MEMBERS);
    }
    let ca_path = plan.directory.join("ca.pem");
    if ca_path.exists() {
        bail!("{} exists already: remove the directory's certificates first", ca_path.display());
    }
    std::fs::create_dir_all(&plan.directory)
        .with_context(|| format!("creating {}", plan.directory.display()))?;
    let mut written = Vec::new();
    let mut write = |name: String, contents: String, secret: bool| -> anyhow::Result<()> {
        let path = plan.directory.join(name);
        write_file(&path, contents.as_bytes(), secret)?;
        written.push(path);
        Ok(())
    };

    let ca_key = KeyPair::generate().context("generating the CA key")?;
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name.push(DnType::CommonName, "raft-kv local CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    set_validity(&mut ca_params);
    let ca_certificate = ca_params.self_signed(&ca_key).context("signing the CA")?;
    write(String::from("ca.pem"), ca_certificate.pem(), false)?;
    write(String::from("ca-key.pem"), ca_key.serialize_pem(), true)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf = |common_name: &str, names: Vec<String>, usages: Vec<ExtendedKeyUsagePurpose>| {
        let key = KeyPair::generate().context("generating a key")?;
        let mut params = CertificateParams::new(names)
            .with_context(|| format!("the names of {common_name}'s certificate"))?;
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = usages;
        set_validity(&mut params);
        let certificate = params
            .signed_by(&key, &issuer)
            .with_context(|| format!("signing {common_name}'s certificate"))?;
        anyhow::Ok((certificate.pem(), key.serialize_pem()))
    };
    for node in 1..=plan.nodes {
        let name = format!("node{node}");
        let mut names = vec![name.clone(), String::from("localhost"), String::from("127.0.0.1")];
        for host in &plan.hosts {
            if !names.contains(host) {
                names.push(host.clone());
            }
        }
        // Peers both dial and accept, and the HTTP side serves: client and server use.
        let usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let (certificate, key) = leaf(&name, names, usages)?;
        write(format!("{name}.pem"), certificate, false)?;
        write(format!("{name}-key.pem"), key, true)?;
    }
    let (certificate, key) = leaf(
        "raft-kv client",
        vec![String::from("client")],
        vec![ExtendedKeyUsagePurpose::ClientAuth],
    )?;
    write(String::from("client.pem"), certificate, false)?;
    write(String::from("client-key.pem"), key, true)?;
    Ok(written)
}

/// Sets a validity from the start of last year to ten years ahead (whole years, UTC): long
/// enough to try things, short enough that a forgotten certificate expires.
fn set_validity(params: &mut rcgen::CertificateParams) {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    // A year is 365.2425 days on average; off by a day at most near New Year.
    let year = 1970 + (seconds / 31_556_952) as i32;
    params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + 10, 1, 1);
}

/// Writes `contents` to `path`; private keys readable by their owner only.
fn write_file(path: &Path, contents: &[u8], secret: bool) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(path).with_context(|| format!("creating {}", path.display()))?;
    file.write_all(contents).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
