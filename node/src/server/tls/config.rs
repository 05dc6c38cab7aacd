//! rustls configurations built from a node's credentials: the peer port (client
//! certificate optional, checked per route), the mesh port (client certificate required),
//! the public API port (server authentication only), the client side of peer and mesh
//! connections, and the pinned client a joining node uses before it has a certificate.
//!
//! Peers authenticate each other as "holds a certificate from this cluster's CA"; host
//! names are not checked, because a node is often reached by an address it cannot know
//! (a Swarm task's IP behind `tasks.panal`, a NAT): the CA only ever signs members.

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use super::ca::{certificates, CertError, CertSummary};

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The node ids whose certificates are refused (removed members), shared by every
/// verifier of a node and updated in place from the replicated state.
#[derive(Debug, Clone, Default)]
pub struct Revoked(Arc<RwLock<BTreeSet<u64>>>);

impl Revoked {
    pub fn set(&self, ids: &BTreeSet<u64>) {
        let mut current = self.0.write().unwrap_or_else(|p| p.into_inner());
        if *current != *ids {
            *current = ids.clone();
        }
    }

    /// Refuses a certificate naming a revoked node (after its chain was verified).
    fn check(&self, end_entity: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        let id = CertSummary::of_der(end_entity.as_ref()).ok().and_then(|s| s.node_id());
        match id {
            Some(id) if self.0.read().unwrap_or_else(|p| p.into_inner()).contains(&id) => {
                Err(rustls::Error::InvalidCertificate(CertificateError::Revoked))
            }
            _ => Ok(()),
        }
    }
}

/// A node's certificate chain (its certificate, then the CA that issued it), its key, and
/// the CAs it trusts.
#[derive(Debug)]
pub struct Credentials {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    roots: Arc<RootCertStore>,
    bundle_pem: String,
    revoked: Revoked,
}

impl Clone for Credentials {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            roots: self.roots.clone(),
            bundle_pem: self.bundle_pem.clone(),
            revoked: self.revoked.clone(),
        }
    }
}

fn roots_of(bundle_pem: &str) -> Result<Arc<RootCertStore>, CertError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(bundle_pem)? {
        roots.add(cert).map_err(|e| CertError(format!("unusable CA certificate: {e}")))?;
    }
    Ok(Arc::new(roots))
}

impl Credentials {
    /// From PEM: the node certificate (optionally followed by the CA that issued it), its
    /// key, and the trust bundle (the CA that signs now first). Without the issuer, the
    /// bundle's first CA is taken as the issuer.
    pub fn from_pem(cert_pem: &str, key_pem: &str, bundle_pem: &str) -> Result<Self, CertError> {
        use rustls_pki_types::pem::PemObject;
        let mut chain = certificates(cert_pem)?;
        chain.truncate(2);
        if chain.len() == 1 {
            chain.push(certificates(bundle_pem)?[0].clone());
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| CertError(format!("unreadable node key: {e}")))?;
        Ok(Self {
            chain,
            key,
            roots: roots_of(bundle_pem)?,
            bundle_pem: bundle_pem.to_string(),
            revoked: Revoked::default(),
        })
    }

    /// The same certificate refusing the peers `revoked` names.
    pub fn with_revoked(mut self, revoked: Revoked) -> Self {
        self.revoked = revoked;
        self
    }

    /// The same certificate and key, trusting the CAs of `bundle_pem` (a CA rotation).
    pub fn with_bundle(&self, bundle_pem: &str) -> Result<Self, CertError> {
        Ok(Self { roots: roots_of(bundle_pem)?, bundle_pem: bundle_pem.to_string(), ..self.clone() })
    }

    pub fn bundle_pem(&self) -> &str {
        &self.bundle_pem
    }

    /// The fingerprint of the CA that issued this node's certificate.
    pub fn issuer_fingerprint(&self) -> Result<String, CertError> {
        Ok(CertSummary::of_der(self.chain[1].as_ref())?.fingerprint)
    }

    /// Until a node has its certificate (a node joining, a node initialising): a
    /// self-signed one that no member trusts, so nothing but the open join routes work.
    pub fn self_signed_interim() -> Result<Self, CertError> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| CertError(format!("interim key: {e}")))?;
        let cert = rcgen::CertificateParams::new(vec!["panal-not-yet-issued".to_string()])
            .and_then(|p| p.self_signed(&key))
            .map_err(|e| CertError(format!("interim certificate: {e}")))?;
        Self::from_pem(&cert.pem(), &key.serialize_pem(), &cert.pem())
    }

    pub fn summary(&self) -> Result<CertSummary, CertError> {
        CertSummary::of_der(self.chain[0].as_ref())
    }

    fn server(&self, client_auth: ClientAuth) -> Result<ServerConfig, CertError> {
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| CertError(e.to_string()))?;
        let builder = match client_auth {
            ClientAuth::None => builder.with_no_client_auth(),
            ClientAuth::Optional | ClientAuth::Required => {
                let verifier = WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider());
                let verifier = if matches!(client_auth, ClientAuth::Optional) {
                    verifier.allow_unauthenticated()
                } else {
                    verifier
                };
                let inner = verifier.build().map_err(|e| CertError(e.to_string()))?;
                builder.with_client_cert_verifier(Arc::new(MemberVerifier { inner, revoked: self.revoked.clone() }))
            }
        };
        let mut config = builder
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| CertError(format!("node certificate and key do not match: {e}")))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }

    /// The peer port: a client certificate is verified when presented; routes other than
    /// the join protocol require one (see `tls::require_client_certificate`).
    pub fn peer_server(&self) -> Result<ServerConfig, CertError> {
        self.server(ClientAuth::Optional)
    }

    /// The mesh port: no certificate from this cluster's CA, no session.
    pub fn mesh_server(&self) -> Result<ServerConfig, CertError> {
        let mut config = self.server(ClientAuth::Required)?;
        config.alpn_protocols.clear();
        Ok(config)
    }

    /// The public API port (HTTPS with the node's certificate, no client certificates).
    pub fn api_server(&self) -> Result<ServerConfig, CertError> {
        self.server(ClientAuth::None)
    }

    /// Peer and mesh connections to other members: their certificate must come from a
    /// trusted CA; this node presents its own.
    pub fn client(&self) -> Result<ClientConfig, CertError> {
        let verifier = ClusterVerifier::new(self.roots.clone())?.with_revoked(self.revoked.clone());
        ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| CertError(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| CertError(format!("node certificate and key do not match: {e}")))
    }
}

#[derive(Debug, Clone, Copy)]
enum ClientAuth {
    None,
    Optional,
    Required,
}

/// Verifies a client's chain against the trusted CAs, then refuses revoked nodes.
#[derive(Debug)]
struct MemberVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    revoked: Revoked,
}

impl ClientCertVerifier for MemberVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        self.revoked.check(end_entity)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Verifies a server's chain against the trusted CAs, whatever name it was reached by,
/// and refuses revoked nodes.
#[derive(Debug)]
struct ClusterVerifier {
    inner: Arc<WebPkiServerVerifier>,
    revoked: Revoked,
}

impl ClusterVerifier {
    fn new(roots: Arc<RootCertStore>) -> Result<Self, CertError> {
        let inner = WebPkiServerVerifier::builder_with_provider(roots, provider())
            .build()
            .map_err(|e| CertError(format!("cannot verify with this trust bundle: {e}")))?;
        Ok(Self { inner, revoked: Revoked::default() })
    }

    fn with_revoked(mut self, revoked: Revoked) -> Self {
        self.revoked = revoked;
        self
    }
}

impl ServerCertVerifier for ClusterVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = match self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            // The chain was verified before the name (see the module docs).
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => ServerCertVerified::assertion(),
            other => other?,
        };
        self.revoked.check(end_entity)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A joining node's verifier: the member must present a chain whose CA has the
/// fingerprint of the join token, and a certificate that CA issued — checked during the
/// handshake, before the token's secret is sent.
#[derive(Debug)]
struct PinnedVerifier {
    fingerprint: String,
    schemes: Vec<SignatureScheme>,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let pinned = intermediates.iter().find(|c| {
            CertSummary::of_der(c.as_ref())
                .is_ok_and(|s| panal_raft::constant_time_eq(&s.fingerprint, &self.fingerprint))
        });
        let Some(ca) = pinned else {
            return Err(rustls::Error::General(
                "the member's CA does not match the fingerprint in the join token (wrong cluster, or someone in between)"
                    .into(),
            ));
        };
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned()).map_err(|e| rustls::Error::General(e.to_string()))?;
        let verifier = ClusterVerifier::new(Arc::new(roots)).map_err(|e| rustls::Error::General(e.to_string()))?;
        verifier.verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &provider().signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &provider().signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes.clone()
    }
}

/// The client a node without a certificate joins with: no client certificate, the
/// member pinned by the CA fingerprint of the join token.
pub fn join_client(fingerprint: &str) -> Result<ClientConfig, CertError> {
    let schemes = provider().signature_verification_algorithms.supported_schemes();
    let verifier = PinnedVerifier { fingerprint: fingerprint.to_ascii_lowercase(), schemes };
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| CertError(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::tls::ca::{node_request, CaMaterial, DEFAULT_CERT_TTL};

    fn member_of(ca: &CaMaterial, node_id: u64) -> Credentials {
        let (key, csr) = node_request(&["10.1.2.3".into()]).unwrap();
        Credentials::from_pem(&ca.issue(&csr, node_id, DEFAULT_CERT_TTL).unwrap(), &key, &ca.cert_pem).unwrap()
    }

    /// A TLS handshake over an in-memory pipe: Ok once both sides finished it and the
    /// server read what the client wrote.
    async fn handshake(server: ServerConfig, client: ClientConfig) -> Result<(), String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (a, b) = tokio::io::duplex(1 << 16);
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        // Reached by a name the certificate does not hold: peers are checked by their CA.
        let name = ServerName::try_from("elsewhere.example").unwrap();
        let serve = async move {
            let mut s = acceptor.accept(a).await.map_err(|e| e.to_string())?;
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
            Ok::<_, String>(())
        };
        let call = async move {
            let mut c = connector.connect(name, b).await.map_err(|e| e.to_string())?;
            c.write_all(b"hello").await.map_err(|e| e.to_string())?;
            c.flush().await.map_err(|e| e.to_string())?;
            Ok::<_, String>(c)
        };
        let (served, called) = tokio::join!(serve, call);
        called?;
        served
    }

    #[tokio::test]
    async fn members_of_one_ca_talk_and_strangers_do_not() {
        let ca = CaMaterial::generate("c1").unwrap();
        let (a, b) = (member_of(&ca, 1), member_of(&ca, 2));
        assert_eq!(handshake(a.mesh_server().unwrap(), b.client().unwrap()).await, Ok(()));
        let stranger = member_of(&CaMaterial::generate("c2").unwrap(), 1);
        assert!(handshake(a.mesh_server().unwrap(), stranger.client().unwrap()).await.is_err(), "foreign client");
        assert!(handshake(stranger.mesh_server().unwrap(), b.client().unwrap()).await.is_err(), "foreign server");
    }

    #[tokio::test]
    async fn a_revoked_node_is_refused_both_ways_and_a_rotated_bundle_trusts_both_cas() {
        let ca = CaMaterial::generate("c1").unwrap();
        let revoked = Revoked::default();
        let a = member_of(&ca, 1).with_revoked(revoked.clone());
        let b = member_of(&ca, 2);
        assert_eq!(handshake(a.mesh_server().unwrap(), b.client().unwrap()).await, Ok(()));
        revoked.set(&BTreeSet::from([2]));
        assert!(handshake(a.mesh_server().unwrap(), b.client().unwrap()).await.is_err(), "revoked client");
        assert!(handshake(a.peer_server().unwrap(), b.client().unwrap()).await.is_err(), "revoked on the peer port");
        assert!(handshake(b.peer_server().unwrap(), a.client().unwrap()).await.is_err(), "revoked server");
        assert_eq!(handshake(a.mesh_server().unwrap(), member_of(&ca, 3).client().unwrap()).await, Ok(()));

        // Rotation: the new CA first in the bundle, the old one still trusted; the new
        // certificates come with the new CA cross-signed by the old one.
        let (new, cross) = ca.successor("c1").unwrap();
        let bundle = format!("{}{}", new.cert_pem, ca.cert_pem);
        let (key, csr) = node_request(&[]).unwrap();
        let chain = format!("{}{}", new.issue(&csr, 4, DEFAULT_CERT_TTL).unwrap(), cross);
        let renewed = Credentials::from_pem(&chain, &key, &bundle).unwrap();
        let old = member_of(&ca, 5).with_bundle(&bundle).unwrap();
        let lagging = member_of(&ca, 6);
        assert_eq!(renewed.issuer_fingerprint().unwrap(), new.fingerprint().unwrap());
        assert_eq!(old.issuer_fingerprint().unwrap(), ca.fingerprint().unwrap(), "retrusting keeps the issuer");
        assert_eq!(handshake(renewed.mesh_server().unwrap(), old.client().unwrap()).await, Ok(()));
        assert_eq!(handshake(old.mesh_server().unwrap(), renewed.client().unwrap()).await, Ok(()));
        // A node that trusts only the old CA yet accepts the new certificates both ways.
        assert_eq!(
            handshake(lagging.mesh_server().unwrap(), renewed.client().unwrap()).await,
            Ok(()),
            "lagging server"
        );
        assert_eq!(
            handshake(renewed.peer_server().unwrap(), lagging.client().unwrap()).await,
            Ok(()),
            "lagging client"
        );
        // Once the old CA is dropped, its certificates are strangers.
        let after = renewed.with_bundle(&new.cert_pem).unwrap();
        assert!(handshake(after.mesh_server().unwrap(), old.client().unwrap()).await.is_err(), "old CA dropped");
        assert_eq!(handshake(after.mesh_server().unwrap(), renewed.client().unwrap()).await, Ok(()), "new chain");
        let pinned = join_client(&new.fingerprint().unwrap()).unwrap();
        assert_eq!(handshake(after.peer_server().unwrap(), pinned).await, Ok(()), "tokens name the new CA");
    }

    #[tokio::test]
    async fn a_joining_node_talks_only_to_the_ca_of_its_token() {
        let ca = CaMaterial::generate("c1").unwrap();
        let member = member_of(&ca, 1);
        let pinned = join_client(&ca.fingerprint().unwrap()).unwrap();
        assert_eq!(handshake(member.peer_server().unwrap(), pinned).await, Ok(()), "no client certificate needed");
        let other = join_client(&CaMaterial::generate("c2").unwrap().fingerprint().unwrap()).unwrap();
        let refused = handshake(member.peer_server().unwrap(), other).await.unwrap_err();
        assert!(refused.contains("fingerprint"), "{refused}");
        let no_cert = join_client(&ca.fingerprint().unwrap()).unwrap();
        assert!(handshake(member.mesh_server().unwrap(), no_cert).await.is_err(), "the mesh needs a certificate");
    }
}
