//! [`PeerTls`]: mutual TLS between the nodes of a [`TcpTransport`](super::TcpTransport).
//!
//! Every node holds a certificate signed by the cluster's CA and naming it `node<ID>` (a DNS
//! subject alternative name, e.g. `node3`, or, for certificates made without one, the
//! subject's common name). Both ends of a connection present their
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
        let server_verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            roots,
            Arc::clone(&provider),
        )
        .build()
        .map_err(|error| TlsError::Pem(format!("unusable CA certificate: {error}")))?;
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NodeNameVerifier { inner: server_verifier }))
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

/// Whether `certificate` names `node<ID>`: as a DNS subject alternative name, or as the
/// subject's common name (webpki, like browsers, checks only the former).
pub(super) fn certificate_names_node(certificate: &CertificateDer<'_>, node: NodeId) -> bool {
    let Ok(parsed) = webpki::EndEntityCert::try_from(certificate) else { return false };
    parsed.verify_is_valid_for_subject_name(&node_name(node)).is_ok()
        || subject_common_names(certificate).iter().any(|name| *name == format!("node{}", node.0))
}

/// The dialler's check of a listener's certificate: rustls's (the chain to the CA, validity,
/// then the name), accepting a certificate whose subject common name is the node's name
/// when it has no matching subject alternative name. rustls checks the name last, so a
/// name error means everything else held.
#[derive(Debug)]
struct NodeNameVerifier {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
}

impl rustls::client::danger::ServerCertVerifier for NodeNameVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        use rustls::CertificateError::{NotValidForName, NotValidForNameContext};
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        match verified {
            Err(rustls::Error::InvalidCertificate(
                NotValidForName | NotValidForNameContext { .. },
            )) if matches!(server_name, ServerName::DnsName(name)
                    if subject_common_names(end_entity).iter().any(|common| common == name.as_ref())) =>
            {
                Ok(rustls::client::danger::ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, certificate, signature)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, certificate, signature)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The subject common names of a DER certificate (none if it does not parse: the TLS
/// handshake has already refused a certificate that is not well formed).
fn subject_common_names(certificate: &[u8]) -> Vec<String> {
    subject_common_names_of(certificate).unwrap_or_default()
}

fn subject_common_names_of(certificate: &[u8]) -> Option<Vec<String>> {
    const SEQUENCE: u8 = 0x30;
    const SET: u8 = 0x31;
    const OID: u8 = 0x06;
    /// 2.5.4.3, commonName.
    const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
    let (tag, certificate, _) = der_element(certificate)?;
    (tag == SEQUENCE).then_some(())?;
    let (tag, mut fields, _) = der_element(certificate)?;
    (tag == SEQUENCE).then_some(())?;
    // tbsCertificate: [0] version (optional), serial, signature algorithm, issuer, validity,
    // subject.
    let mut element = der_element(fields)?;
    if element.0 == 0xa0 {
        fields = element.2;
        element = der_element(fields)?;
    }
    for _ in 0..4 {
        fields = element.2;
        element = der_element(fields)?;
    }
    let (tag, mut names, _) = element;
    (tag == SEQUENCE).then_some(())?;
    let mut common_names = Vec::new();
    while !names.is_empty() {
        let (tag, mut set, rest) = der_element(names)?;
        (tag == SET).then_some(())?;
        names = rest;
        while !set.is_empty() {
            let (tag, attribute, rest) = der_element(set)?;
            (tag == SEQUENCE).then_some(())?;
            set = rest;
            let (tag, oid, value) = der_element(attribute)?;
            if tag == OID && oid == COMMON_NAME {
                let (_, text, _) = der_element(value)?;
                common_names.push(String::from_utf8(text.to_vec()).ok()?);
            }
        }
    }
    Some(common_names)
}

/// One DER element of `bytes`: its tag (single-byte tags only), its content, and the bytes
/// after it; `None` if it is malformed or runs past the end.
fn der_element(bytes: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = bytes.split_first()?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (length, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let length =
            rest[..count].iter().fold(0usize, |length, byte| length << 8 | usize::from(*byte));
        (length, &rest[count..])
    };
    (rest.len() >= length).then(|| (tag, &rest[..length], &rest[length..]))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Common names are read from a real certificate, and truncated or corrupted bytes give
    /// none rather than a panic.
    #[test]
    fn common_names_are_read_and_malformed_certificates_give_none() {
        let key = rcgen::KeyPair::generate().expect("a key");
        let mut params = rcgen::CertificateParams::new(vec![String::from("node9")]).expect("names");
        params.distinguished_name.push(rcgen::DnType::OrganizationName, "raft");
        params.distinguished_name.push(rcgen::DnType::CommonName, "node7");
        let der = params.self_signed(&key).expect("signed").der().to_vec();
        assert_eq!(subject_common_names(&der), ["node7"]);
        let certificate = CertificateDer::from(der.clone());
        assert!(certificate_names_node(&certificate, NodeId(7)), "by common name");
        assert!(certificate_names_node(&certificate, NodeId(9)), "by alternative name");
        assert!(!certificate_names_node(&certificate, NodeId(8)));
        for length in 0..der.len() {
            let _ = subject_common_names(&der[..length]);
        }
        for position in 0..der.len() {
            let mut corrupted = der.clone();
            corrupted[position] ^= 0xff;
            let _ = subject_common_names(&corrupted);
        }
    }

    /// A node's own certificate must name it: `check_names` says which node it does not name.
    #[test]
    fn a_node_checks_that_its_own_certificate_names_it() {
        let key = rcgen::KeyPair::generate().expect("a key");
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name.push(rcgen::DnType::CommonName, "raft test CA");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).expect("signed");
        let issuer = rcgen::Issuer::new(params, key);
        let node_key = rcgen::KeyPair::generate().expect("a key");
        let node = rcgen::CertificateParams::new(vec![String::from("node1")])
            .expect("names")
            .signed_by(&node_key, &issuer)
            .expect("signed");
        let tls = PeerTls::from_pem(
            node.pem().as_bytes(),
            node_key.serialize_pem().as_bytes(),
            ca.pem().as_bytes(),
        )
        .expect("a usable configuration");
        assert!(tls.check_names(NodeId(1)).is_ok());
        assert!(matches!(tls.check_names(NodeId(2)), Err(TlsError::WrongNode { node: 2 })));
        assert!(PeerTls::from_pem(b"", b"", ca.pem().as_bytes()).is_err(), "no certificate");
        assert_eq!(format!("{tls:?}"), "PeerTls { .. }", "no key material in logs");
    }

    /// DER elements: short and long lengths (up to four length bytes), and what is refused
    /// (indefinite lengths, more than four length bytes, high tag numbers, truncation).
    #[test]
    fn der_elements_are_read_within_their_bounds() {
        assert_eq!(der_element(&[0x04, 0x02, 7, 8, 9]), Some((0x04, &[7u8, 8][..], &[9u8][..])));
        assert_eq!(der_element(&[0x04, 0x7f]), None, "127 bytes announced, none there");
        let mut indefinite = vec![0x04, 0x80];
        indefinite.extend([0u8; 130]);
        assert_eq!(der_element(&indefinite), None, "an indefinite length");
        let mut long = vec![0x04, 0x81, 0x80];
        long.extend([5u8; 128]);
        assert_eq!(der_element(&long).map(|(_, content, _)| content.len()), Some(128));
        assert_eq!(der_element(&[0x04, 0x84, 0, 0, 0, 1, 6]), Some((0x04, &[6u8][..], &[][..])));
        assert_eq!(der_element(&[0x04, 0x85, 0, 0, 0, 0, 1, 6]), None, "five length bytes");
        assert_eq!(der_element(&[0x04, 0x82, 0x01]), None, "a truncated length");
        assert_eq!(der_element(&[0x1f, 0x01, 0x00]), None, "a high tag number");
        assert_eq!(der_element(&[0x3f, 0x01, 0x00]), None, "a high tag number, constructed");
        assert_eq!(der_element(&[0x1e, 0x01, 0x00]), Some((0x1e, &[0u8][..], &[][..])));
        assert_eq!(der_element(&[]), None);
    }
}
