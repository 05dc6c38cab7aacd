//! The cluster CA and the certificates it issues, as pure functions over PEM text (no
//! files, no network), so every rule here is unit-tested.
//!
//! - The CA is an ECDSA P-256 key with a self-signed certificate. Its fingerprint is the
//!   SHA-256 of its public key (SubjectPublicKeyInfo), not of the certificate: a CA
//!   certificate re-signed with the same key (as every node of an orchestrated bootstrap
//!   does with the key derived from the shared token) keeps its fingerprint.
//! - A node makes its own key and a certificate signing request; the CA signs it with
//!   both server and client authentication, the node's names as SANs, and `node-<id>` as
//!   the subject's common name (which is how a peer route learns who is calling).

use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use sha2::{Digest, Sha256};

/// Default lifetime of a node certificate.
pub const DEFAULT_CERT_TTL: Duration = Duration::from_secs(90 * 86_400);
/// Lifetime of a CA certificate.
const CA_TTL: Duration = Duration::from_secs(10 * 365 * 86_400);
/// Most SANs a signing request may ask for.
const MAX_SANS: usize = 32;
/// Issued certificates start a little in the past, so clocks a bit apart agree.
const BACKDATE: Duration = Duration::from_secs(300);

/// What went wrong with certificate material; the message says what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CertError(pub String);

fn err(what: &str) -> impl Fn(rcgen::Error) -> CertError + '_ {
    move |e| CertError(format!("{what}: {e}"))
}

/// A CA: its certificate and private key, both PEM.
#[derive(Clone)]
pub struct CaMaterial {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for CaMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaMaterial").field("cert_pem", &self.cert_pem).finish_non_exhaustive()
    }
}

/// `generation` tells the CAs of one cluster apart (a rotation's CA names the time it was
/// made), so that certificates name which one issued them.
fn ca_params(cluster_id: &str, generation: Option<u64>) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Panal");
    dn.push(
        DnType::CommonName,
        match generation {
            None => format!("Panal cluster {cluster_id} CA"),
            Some(g) => format!("Panal cluster {cluster_id} CA {g}"),
        },
    );
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let now = SystemTime::now();
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + CA_TTL).into();
    params
}

impl CaMaterial {
    /// A new CA with a random key.
    pub fn generate(cluster_id: &str) -> Result<Self, CertError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(err("CA key"))?;
        Self::self_signed(ca_params(cluster_id, None), key)
    }

    /// The CA a rotation moves to (a random key, a name of its own), and its certificate
    /// signed by this CA: presented after the certificates the new CA issues, it lets nodes
    /// that trust only this CA yet (down or lagging when the rotation began) accept them.
    pub fn successor(&self, cluster_id: &str) -> Result<(Self, String), CertError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(err("CA key"))?;
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        let params = ca_params(cluster_id, Some(now.as_millis() as u64));
        let own = KeyPair::from_pem(&self.key_pem).map_err(err("CA key"))?;
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, own).map_err(err("CA certificate"))?;
        let cross = params.signed_by(&key, &issuer).map_err(err("cross-signed CA certificate"))?;
        Ok((Self::self_signed(params, key)?, cross.pem()))
    }

    /// The CA whose key every node derives from the same `seed` (the orchestrated
    /// bootstrap's shared token): same key, hence same fingerprint, everywhere.
    pub fn derive(cluster_id: &str, seed: &str) -> Result<Self, CertError> {
        Self::self_signed(ca_params(cluster_id, None), derived_key(seed)?)
    }

    fn self_signed(params: CertificateParams, key: KeyPair) -> Result<Self, CertError> {
        let cert = params.self_signed(&key).map_err(err("CA certificate"))?;
        Ok(Self { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    pub fn fingerprint(&self) -> Result<String, CertError> {
        fingerprint(&self.cert_pem)
    }

    /// Signs `csr_pem` for node `node_id`, valid for `ttl`. The request's SANs are kept
    /// (at most [`MAX_SANS`]); everything else is the CA's decision.
    pub fn issue(&self, csr_pem: &str, node_id: u64, ttl: Duration) -> Result<String, CertError> {
        let key = KeyPair::from_pem(&self.key_pem).map_err(err("CA key"))?;
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, key).map_err(err("CA certificate"))?;
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(err("signing request"))?;
        if csr.params.subject_alt_names.len() > MAX_SANS {
            return Err(CertError(format!("a signing request may name at most {MAX_SANS} hosts")));
        }
        let sans = std::mem::take(&mut csr.params.subject_alt_names);
        csr.params = node_params(sans, node_id, ttl);
        Ok(csr.signed_by(&issuer).map_err(err("signing"))?.pem())
    }
}

fn node_params(sans: Vec<SanType>, node_id: u64, ttl: Duration) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Panal");
    dn.push(DnType::CommonName, format!("node-{node_id}"));
    params.distinguished_name = dn;
    params.subject_alt_names = sans;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    let now = SystemTime::now();
    params.not_before = (now - BACKDATE.min(ttl / 10)).into();
    params.not_after = (now + ttl).into();
    let mut serial = [0u8; 16];
    rand::fill(&mut serial[..]);
    serial[0] &= 0x7f;
    params.serial_number = Some(serial.to_vec().into());
    params
}

/// A node's fresh key and the signing request for `hosts` (names or IP addresses; empty
/// and duplicate entries dropped).
pub fn node_request(hosts: &[String]) -> Result<(String, String), CertError> {
    let mut names: Vec<String> = hosts.iter().map(|h| h.trim().to_string()).filter(|h| !h.is_empty()).collect();
    names.sort();
    names.dedup();
    let params = CertificateParams::new(names).map_err(err("host names"))?;
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(err("node key"))?;
    let csr = params.serialize_request(&key).map_err(err("signing request"))?;
    Ok((key.serialize_pem(), csr.pem().map_err(err("signing request"))?))
}

/// P-256 private key from a seed: the scalar is SHA-256 of the seed (again with a counter
/// in the unlikely case it is not a valid scalar), wrapped as an RFC 5915 key.
fn derived_key(seed: &str) -> Result<KeyPair, CertError> {
    use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
    for counter in 0u8..16 {
        let scalar = Sha256::new()
            .chain_update(b"panal-cluster-ca-v1\0")
            .chain_update(seed.as_bytes())
            .chain_update([counter])
            .finalize();
        // ECPrivateKey { version 1, privateKey OCTET STRING, [0] prime256v1 }
        let mut der = vec![0x30, 0x31, 0x02, 0x01, 0x01, 0x04, 0x20];
        der.extend_from_slice(&scalar);
        der.extend_from_slice(&[0xa0, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]);
        let Ok(pair) = EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_ASN1_SIGNING, &der) else { continue };
        let pkcs8 = pair.to_pkcs8v1().map_err(|_| CertError("cannot encode the derived CA key".into()))?;
        return KeyPair::try_from(pkcs8.as_ref()).map_err(err("derived CA key"));
    }
    Err(CertError("cannot derive a CA key from this token".into()))
}

/// The certificates of a PEM bundle, in order.
pub fn certificates(pem: &str) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, CertError> {
    use rustls_pki_types::pem::PemObject;
    let certs = rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError(format!("unreadable certificate: {e}")))?;
    if certs.is_empty() {
        return Err(CertError("no certificate in the PEM text".into()));
    }
    Ok(certs)
}

/// What a certificate says, as far as the cluster cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSummary {
    /// SHA-256 of the public key, hex.
    pub fingerprint: String,
    pub subject: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl CertSummary {
    pub fn of_der(der: &[u8]) -> Result<Self, CertError> {
        let (_, cert) =
            x509_parser::parse_x509_certificate(der).map_err(|e| CertError(format!("unreadable certificate: {e}")))?;
        let at = |t: x509_parser::time::ASN1Time| {
            let secs = t.timestamp();
            if secs >= 0 {
                SystemTime::UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
            } else {
                SystemTime::UNIX_EPOCH
            }
        };
        Ok(Self {
            fingerprint: hex::encode(Sha256::digest(cert.tbs_certificate.subject_pki.raw)),
            subject: cert.subject().to_string(),
            not_before: at(cert.validity().not_before),
            not_after: at(cert.validity().not_after),
        })
    }

    /// The first certificate of `pem`.
    pub fn of_pem(pem: &str) -> Result<Self, CertError> {
        Self::of_der(certificates(pem)?[0].as_ref())
    }

    /// The node id of a certificate this CA issued (`CN=node-<id>`).
    pub fn node_id(&self) -> Option<u64> {
        self.subject.split(',').find_map(|part| part.trim().strip_prefix("CN=node-")?.parse().ok())
    }
}

/// Fingerprint of the public key of a private key (PEM): equal to the fingerprint of its
/// certificate.
pub fn key_fingerprint(key_pem: &str) -> Result<String, CertError> {
    use rcgen::PublicKeyData;
    let key = KeyPair::from_pem(key_pem).map_err(err("CA key"))?;
    Ok(hex::encode(Sha256::digest(key.subject_public_key_info())))
}

/// Fingerprint of the first certificate in `pem` (see the module docs).
pub fn fingerprint(pem: &str) -> Result<String, CertError> {
    Ok(CertSummary::of_pem(pem)?.fingerprint)
}

/// When to renew a certificate valid from `not_before` to `not_after`: at `fraction`
/// (0.5 to 0.8, drawn at random by the caller) of its life.
pub fn renewal_time(not_before: SystemTime, not_after: SystemTime, fraction: f64) -> SystemTime {
    let life = not_after.duration_since(not_before).unwrap_or_default();
    not_before + life.mul_f64(fraction.clamp(0.5, 0.8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_derived_ca_has_the_same_fingerprint_everywhere_and_a_random_one_does_not() {
        let a = CaMaterial::derive("c1", "token-0123456789abcdef").unwrap();
        let b = CaMaterial::derive("c1", "token-0123456789abcdef").unwrap();
        let other = CaMaterial::derive("c1", "token-other-0123456789").unwrap();
        assert_eq!(a.fingerprint().unwrap(), b.fingerprint().unwrap());
        assert_ne!(a.fingerprint().unwrap(), other.fingerprint().unwrap());
        let random = CaMaterial::generate("c1").unwrap();
        assert_ne!(random.fingerprint().unwrap(), CaMaterial::generate("c1").unwrap().fingerprint().unwrap());
        assert_eq!(a.fingerprint().unwrap().len(), 64);
        for ca in [&a, &random, &random.successor("c1").unwrap().0] {
            assert_eq!(key_fingerprint(&ca.key_pem).unwrap(), ca.fingerprint().unwrap(), "a key names its CA");
        }
    }

    #[test]
    fn an_issued_certificate_names_the_node_and_its_hosts_and_lasts_its_ttl() {
        let ca = CaMaterial::generate("c1").unwrap();
        let (_key, csr) = node_request(&["10.0.0.1".into(), "node-a.example".into(), "".into()]).unwrap();
        let cert = ca.issue(&csr, 7, Duration::from_secs(3600)).unwrap();
        let summary = CertSummary::of_pem(&cert).unwrap();
        assert_eq!(summary.node_id(), Some(7));
        let life = summary.not_after.duration_since(SystemTime::now()).unwrap();
        assert!(life > Duration::from_secs(3500) && life <= Duration::from_secs(3600), "{life:?}");
        let der = certificates(&cert).unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(der[0].as_ref()).unwrap();
        let sans = parsed.subject_alternative_name().unwrap().unwrap().value.general_names.len();
        assert_eq!(sans, 2);
        assert_eq!(CertSummary::of_pem(&ca.cert_pem).unwrap().node_id(), None);
    }

    #[test]
    fn garbage_is_refused_with_a_message() {
        let ca = CaMaterial::generate("c1").unwrap();
        assert!(ca.issue("not a csr", 2, DEFAULT_CERT_TTL).is_err());
        assert!(fingerprint("nothing here").is_err());
        let many: Vec<String> = (0..40).map(|i| format!("h{i}.example")).collect();
        let (_, csr) = node_request(&many).unwrap();
        assert!(ca.issue(&csr, 2, DEFAULT_CERT_TTL).unwrap_err().0.contains("at most"));
    }

    #[test]
    fn renewal_falls_between_half_and_four_fifths_of_the_life() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let end = start + Duration::from_secs(100);
        assert_eq!(renewal_time(start, end, 0.6), start + Duration::from_secs(60));
        assert_eq!(renewal_time(start, end, 0.1), start + Duration::from_secs(50));
        assert_eq!(renewal_time(start, end, 0.99), start + Duration::from_secs(80));
    }
}
