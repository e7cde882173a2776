//! The TCP transport with mutual TLS ([`PeerTls`]): nodes with certificates from the cluster's
//! CA talk; a peer without a certificate, with one from another CA, or claiming another
//! node's id never gets a message through. And the listener's bounds: a connection that does
//! not finish its handshake in time is closed, and connections over the cap are closed at
//! once. Waits are for conditions, with deadlines.

use std::net::SocketAddr;
use std::time::Duration;

use raft_consensus::transport::{PeerTls, TcpConfig, TcpTransport, Transport};
use raft_consensus::{LogId, Message, MessageBody, NodeId, Term};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use rustls::pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const DEADLINE: Duration = Duration::from_secs(20);

/// A certificate authority that signs node certificates.
struct Authority {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Authority {
    fn new(name: &str) -> Authority {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let pem = params.self_signed(&key).unwrap().pem();
        Authority { pem, issuer: Issuer::new(params, key) }
    }

    /// A certificate naming `name` (e.g. `node3`), and its key, in PEM.
    fn certificate(&self, name: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        (params.signed_by(&key, &self.issuer).unwrap().pem(), key.serialize_pem())
    }

    /// A certificate whose only name is its subject common name `name` (no alternative
    /// names), and its key, in PEM.
    fn common_name_only(&self, name: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::OrganizationName, "raft");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        (params.signed_by(&key, &self.issuer).unwrap().pem(), key.serialize_pem())
    }

    fn tls_common_name_only(&self, name: &str) -> PeerTls {
        let (certificate, key) = self.common_name_only(name);
        PeerTls::from_pem(certificate.as_bytes(), key.as_bytes(), self.pem.as_bytes()).unwrap()
    }

    /// TLS for a node holding a certificate naming `name` from this CA, trusting `trusted`.
    fn tls(&self, name: &str, trusted: &Authority) -> PeerTls {
        let (certificate, key) = self.certificate(name);
        PeerTls::from_pem(certificate.as_bytes(), key.as_bytes(), trusted.pem.as_bytes()).unwrap()
    }
}

fn config(tls: PeerTls) -> TcpConfig {
    TcpConfig { tls: Some(tls), ..TcpConfig::new(1) }
}

fn vote_request(from: u64, to: u64, term: u64) -> Message {
    Message {
        from: NodeId(from),
        to: NodeId(to),
        term: Term(term),
        body: MessageBody::PreVote { last_log_id: LogId::default() },
    }
}

async fn listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    (listener, address)
}

/// A transport for node `id` with `tls`, dialling nothing.
async fn node(id: u64, tls: PeerTls) -> (TcpTransport, SocketAddr) {
    let (listener, address) = listener().await;
    let transport = TcpTransport::start(NodeId(id), listener, [], config(tls)).unwrap();
    (transport, address)
}

/// Starts node `from` (with `tls`) dialling `to` at `address`, and sends it a vote request
/// of `term`, kept alive (it redials) until the returned transport drops.
async fn send_from(
    from: u64,
    tls: PeerTls,
    to: u64,
    address: SocketAddr,
    term: u64,
) -> TcpTransport {
    let (listener, _) = listener().await;
    let mut transport =
        TcpTransport::start(NodeId(from), listener, [(NodeId(to), address)], config(tls)).unwrap();
    transport.send(vote_request(from, to, term));
    transport
}

/// Receives messages until one of `term` arrives; returns those before it.
async fn receive_until_term(transport: &mut TcpTransport, term: u64) -> Vec<Message> {
    let mut before = Vec::new();
    loop {
        let message = tokio::time::timeout(DEADLINE, transport.recv())
            .await
            .expect("the expected message arrives in time")
            .expect("the transport runs");
        if message.term == Term(term) {
            return before;
        }
        before.push(message);
    }
}

/// Nodes with certificates from the cluster's CA, each naming its node, exchange messages.
#[tokio::test]
async fn nodes_with_the_cluster_cas_certificates_talk() {
    let ca = Authority::new("cluster");
    let (mut node2, address) = node(2, ca.tls("node2", &ca)).await;
    let _node1 = send_from(1, ca.tls("node1", &ca), 2, address, 5).await;
    assert!(receive_until_term(&mut node2, 5).await.is_empty());
}

/// A peer whose certificate another CA signed, or that names another node than the id it
/// claims, never gets a message through; a genuine node sent after them does.
#[tokio::test]
async fn a_foreign_or_impersonating_certificate_is_refused() {
    let ca = Authority::new("cluster");
    let stranger = Authority::new("stranger");
    let (mut node2, address) = node(2, ca.tls("node2", &ca)).await;
    // Signed by another CA (but trusting the cluster's, so it gets as far as it can).
    let _foreign = send_from(1, stranger.tls("node1", &ca), 2, address, 7).await;
    // The cluster CA's certificate for node 3, claiming to be node 1.
    let _impersonator = send_from(1, ca.tls("node3", &ca), 2, address, 8).await;
    // Wait until both have been refused at least once: a refused dial redials, so give them
    // until the genuine node's message arrives after several refusals.
    let _genuine = send_from(1, ca.tls("node1", &ca), 2, address, 9).await;
    let before = receive_until_term(&mut node2, 9).await;
    assert!(before.is_empty(), "refused peers' messages arrived: {before:?}");
    // Messages keep coming only from the genuine node.
    assert!(node2.try_recv().is_none_or(|message| message.term == Term(9)));
}

/// A dialler checks the certificate it is shown: a listener for node 2 holding node 3's
/// certificate gets nothing, while the same dialler's messages to a genuine node arrive.
#[tokio::test]
async fn a_dialler_refuses_a_listener_with_another_nodes_certificate() {
    let ca = Authority::new("cluster");
    let (mut impostor, impostor_address) = node(2, ca.tls("node3", &ca)).await;
    let (mut genuine, genuine_address) = node(4, ca.tls("node4", &ca)).await;
    let (listener, _) = listener().await;
    let peers = [(NodeId(2), impostor_address), (NodeId(4), genuine_address)];
    let mut node1 =
        TcpTransport::start(NodeId(1), listener, peers, config(ca.tls("node1", &ca))).unwrap();
    for term in [4, 5] {
        node1.send(vote_request(1, 2, term));
        node1.send(vote_request(1, 4, term));
        let before = receive_until_term(&mut genuine, term).await;
        assert!(before.is_empty());
    }
    assert!(impostor.try_recv().is_none(), "the dialler sent to another node's certificate");
}

/// A peer without a certificate cannot connect: plain TCP speaking the transport's handshake
/// is closed, and so is a TLS client presenting no certificate; neither gets a message through.
#[tokio::test]
async fn a_peer_without_a_certificate_is_closed() {
    let ca = Authority::new("cluster");
    let (mut node2, address) = node(2, ca.tls("node2", &ca)).await;
    let mut plain = TcpStream::connect(address).await.unwrap();
    let _ = plain.write_all(&greeting(1)).await;
    let _ = plain.write_all(&frame(&vote_request(1, 2, 11))).await;
    assert_closed(&mut plain).await;

    let mut roots = rustls::RootCertStore::empty();
    for certificate in rustls::pki_types::CertificateDer::pem_slice_iter(ca.pem.as_bytes()) {
        roots.add(certificate.unwrap()).unwrap();
    }
    #[allow(deprecated, reason = "the provider the transport uses")]
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(client));
    let stream = TcpStream::connect(address).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("node2").unwrap();
    // TLS 1.3 reports the missing certificate after the client's side of the handshake.
    if let Ok(mut anonymous) = connector.connect(name, stream).await {
        let _ = anonymous.write_all(&greeting(1)).await;
        let _ = anonymous.write_all(&frame(&vote_request(1, 2, 12))).await;
        let _ = anonymous.flush().await;
        let mut rest = Vec::new();
        let read = tokio::time::timeout(DEADLINE, anonymous.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "the connection without a certificate stayed open");
    }

    let _genuine = send_from(1, ca.tls("node1", &ca), 2, address, 3).await;
    let before = receive_until_term(&mut node2, 3).await;
    assert!(before.is_empty(), "a peer without a certificate got through: {before:?}");
}

/// Node `node`'s transport handshake for cluster 1 (not bootstrapping, no address).
fn greeting(node: u64) -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(b"RAFTNET\0");
    let version = u32::from(raft_consensus::transport::codec::WIRE_FORMAT_VERSION);
    bytes.extend_from_slice(&version.to_le_bytes());
    bytes.extend_from_slice(&1u64.to_le_bytes());
    bytes.extend_from_slice(&node.to_le_bytes());
    bytes.extend_from_slice(&0u64.to_le_bytes());
    bytes.extend_from_slice(&0u16.to_le_bytes());
    bytes
}

fn frame(message: &Message) -> Vec<u8> {
    let mut body = Vec::new();
    raft_consensus::transport::codec::encode_message(message, &mut body);
    [(body.len() as u32).to_le_bytes().to_vec(), body].concat()
}

/// A connection that never finishes its handshake is closed after the handshake timeout.
#[tokio::test]
async fn a_silent_connection_is_closed_after_the_handshake_timeout() {
    let (listener, address) = listener().await;
    let config = TcpConfig { handshake_timeout_ms: 200, ..TcpConfig::new(1) };
    let _node = TcpTransport::start(NodeId(1), listener, [], config).unwrap();
    let mut silent = TcpStream::connect(address).await.unwrap();
    assert_closed(&mut silent).await;
}

/// Connections beyond the listener's cap are closed at once; those within it are kept.
#[tokio::test]
async fn connections_over_the_cap_are_closed() {
    let (listener, address) = listener().await;
    let config = TcpConfig {
        max_inbound_connections: 2,
        handshake_timeout_ms: 3_600_000,
        ..TcpConfig::new(1)
    };
    let _node = TcpTransport::start(NodeId(1), listener, [], config).unwrap();
    let _held =
        [TcpStream::connect(address).await.unwrap(), TcpStream::connect(address).await.unwrap()];
    let mut third = TcpStream::connect(address).await.unwrap();
    assert_closed(&mut third).await;
}

/// Waits until the node closes `stream` (after whatever it answers, e.g. a TLS alert).
async fn assert_closed(stream: &mut TcpStream) {
    let mut answer = Vec::new();
    let read = tokio::time::timeout(DEADLINE, stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the connection stayed open");
}

/// A certificate that names its node only in the subject's common name is accepted both
/// ways, and one naming another node that way is refused.
#[tokio::test]
async fn a_common_name_names_a_node_too() {
    let ca = Authority::new("cluster");
    let (mut node2, address) = node(2, ca.tls_common_name_only("node2")).await;
    let _impersonator = send_from(1, ca.tls_common_name_only("node3"), 2, address, 6).await;
    let _node1 = send_from(1, ca.tls_common_name_only("node1"), 2, address, 5).await;
    let before = receive_until_term(&mut node2, 5).await;
    assert!(before.is_empty(), "a certificate naming node3 spoke as node1: {before:?}");
}
