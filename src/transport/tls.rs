//! [`PeerTls`]: mutual TLS between the nodes of a [`TcpTransport`](super::TcpTransport).
//!
//! Every node holds a certificate signed by the cluster's CA and naming it `node<ID>` (a DNS
//! subject alternative name, e.g. `node3`). Both ends of a connection present their
//! certificates and check the other's against the CA; the dialler also checks that the
//! certificate it is shown names the node it meant to reach, and the acceptor checks that the
//! certificate names the node id the dialler then claims in the transport's handshake. A
//! certificate from another CA, no certificate, or another node's certificate ends the
//! connection before any message is read.
//!
//! Built on rustls with its `ring` provider (TLS 1.3 and 1.2). Certificates and keys are read
//! from PEM.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;

use crate::types::NodeId;

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read.
    #[error("cannot read {what} from {path}: {source}")]
    Read {
        /// Which file: "certificate", "private key" or "CA certificate".
        what: &'static str,
        /// Its path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A PEM document held nothing usable.
    #[error("{0}")]
    Pem(String),
    /// rustls refused the certificates or key.
    #[error("invalid TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    /// The node's own certificate does not name it.
    #[error(
        "the certificate does not name node {node} (it needs a DNS subject alternative name \"node{node}\")"
    )]
    WrongNode {
        /// The node whose certificate it should be.
        node: u64,
    },
}

/// A node's TLS identity and trust: its certificate chain and key, and the cluster's CA.
///
/// ```no_run
/// use raft_consensus::transport::{PeerTls, TcpConfig};
/// use raft_consensus::NodeId;
///
/// let tls = PeerTls::from_pem_files(
///     "certs/node1.pem".as_ref(),
///     "certs/node1-key.pem".as_ref(),
///     "certs/ca.pem".as_ref(),
/// )?;
/// tls.check_names(NodeId(1))?;
/// let config = TcpConfig { tls: Some(tls), ..TcpConfig::new(1) };
/// # Ok::<(), raft_consensus::transport::TlsError>(())
/// ```
#[derive(Clone)]
pub struct PeerTls {
    acceptor: tokio_rustls::TlsAcceptor,
    connector: tokio_rustls::TlsConnector,
    certificate: CertificateDer<'static>,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("PeerTls { .. }")
    }
}

impl PartialEq for PeerTls {
    fn eq(&self, other: &Self) -> bool {
        self.certificate == other.certificate
    }
}

impl Eq for PeerTls {}

impl PeerTls {
    /// Reads a certificate chain, its private key and the CA certificate(s) from PEM files.
    pub fn from_pem_files(certificate: &Path, key: &Path, ca: &Path) -> Result<PeerTls, TlsError> {
        let read = |what: &'static str, path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                what,
                path: path.display().to_string(),
                source,
            })
        };
        PeerTls::from_pem(
            &read("certificate", certificate)?,
            &read("private key", key)?,
            &read("CA certificate", ca)?,
        )
    }

    /// Builds from PEM text: the node's certificate chain (its certificate first), its
    /// private key, and the CA certificate(s) peers' certificates must chain to.
    pub fn from_pem(certificate_chain: &[u8], key: &[u8], ca: &[u8]) -> Result<PeerTls, TlsError> {
        let chain = certificates_from_pem(certificate_chain, "certificate")?;
        let key = PrivateKeyDer::from_pem_slice(key)
            .map_err(|error| TlsError::Pem(format!("no usable private key in PEM: {error}")))?;
        let roots = Arc::new(root_store(ca)?);
        let provider = Arc::new(ring_provider());
        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), Arc::clone(&provider))
                .build()
                .map_err(|error| TlsError::Pem(format!("unusable CA certificate: {error}")))?;
        let server = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(chain.clone(), key.clone_key())?;
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain.clone(), key)?;
        Ok(PeerTls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
            connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
            certificate: chain[0].clone(),
        })
    }

    /// Checks that this node's own certificate names `node` (so that peers will accept it):
    /// run it at start for a clear error rather than refused connections later.
    pub fn check_names(&self, node: NodeId) -> Result<(), TlsError> {
        if certificate_names_node(&self.certificate, node) {
            Ok(())
        } else {
            Err(TlsError::WrongNode { node: node.0 })
        }
    }

    pub(super) fn acceptor(&self) -> &tokio_rustls::TlsAcceptor {
        &self.acceptor
    }

    pub(super) fn connector(&self) -> &tokio_rustls::TlsConnector {
        &self.connector
    }
}

/// rustls's `ring` provider: TLS 1.3 and 1.2 with X25519, P-256 and P-384 key exchange.
/// rustls 0.23.48 deprecates it because it lacks the post-quantum hybrid X25519MLKEM768 (its
/// aws-lc-rs provider has it, at the price of building AWS-LC's C and assembly); SECURITY.md
/// records the trade.
#[allow(deprecated)]
fn ring_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// The name a node's certificate carries: `node<ID>`.
pub(super) fn node_name(node: NodeId) -> ServerName<'static> {
    // "node" followed by decimal digits is always a valid DNS name.
    ServerName::try_from(format!("node{}", node.0))
        .expect("node<digits> is a syntactically valid DNS name")
}

/// Whether `certificate` is valid for the DNS name `node<ID>` (a subject alternative name;
/// webpki, like browsers, no longer falls back to the subject's common name).
pub(super) fn certificate_names_node(certificate: &CertificateDer<'_>, node: NodeId) -> bool {
    let Ok(parsed) = webpki::EndEntityCert::try_from(certificate) else { return false };
    parsed.verify_is_valid_for_subject_name(&node_name(node)).is_ok()
}

fn certificates_from_pem(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsError::Pem(format!("unreadable {what} PEM: {error}")))?;
    if certificates.is_empty() {
        return Err(TlsError::Pem(format!("no {what} in the PEM text")));
    }
    Ok(certificates)
}

fn root_store(ca: &[u8]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for certificate in certificates_from_pem(ca, "CA certificate")? {
        roots.add(certificate)?;
    }
    Ok(roots)
}
