//! The vault's own certificate authority and the TLS configurations of every agent link.
//!
//! The CA's key is made at the first start in `<data-dir>/pki/ca.key` (0600) and never leaves that folder: agents
//! send a certificate request and get back a certificate, never a key. Names are fixed rather than taken from
//! the network: the control plane's certificate carries [`CONTROL_PLANE_NAME`] and agents verify that name whatever
//! address they dial (NAT, namespaces, several names), while an agent's certificate carries
//! `<agent name>.agent.homeward.invalid`, so an agent can never pass for the control plane.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// The name every agent verifies on the control plane's certificate.
pub const CONTROL_PLANE_NAME: &str = "control-plane.homeward.invalid";
/// How long an agent's certificate is valid.
const AGENT_CERT_DAYS: i64 = 397;

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("certificate: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("{0}")]
    Invalid(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io { path: path.to_path_buf(), source }
}

/// The crypto every TLS configuration here uses (ring: pure Rust and C, no cmake).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// SHA-256 of a certificate's DER, as lower-case hex (what `openssl x509 -fingerprint -sha256` prints, without
/// colons).
pub fn fingerprint(der: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The first certificate of a PEM text, as DER.
pub fn cert_der(pem: &str) -> Result<CertificateDer<'static>, PkiError> {
    CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| PkiError::Invalid(format!("not a PEM certificate: {e}")))
}

/// Writes `bytes` to `path` readable by the owner only, atomically (a crash leaves the old file or the new one).
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), PkiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    // An hour of slack for clocks that disagree a little between sites.
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days);
}

pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub cert_pem: String,
    pub cert: CertificateDer<'static>,
}

impl Ca {
    /// The vault's CA from `<dir>/ca.key` and `<dir>/ca.pem`, made on the first call.
    pub fn load_or_create(dir: &Path) -> Result<Ca, PkiError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let (key_path, cert_path) = (dir.join("ca.key"), dir.join("ca.pem"));
        if !key_path.exists() {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::default();
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, "Homeward vault CA");
            params.distinguished_name = dn;
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            validity(&mut params, 20 * 365);
            let cert = params.self_signed(&key)?;
            // The certificate first: a crash between the two writes leaves no key without its certificate.
            write_private(&cert_path, cert.pem().as_bytes())?;
            write_private(&key_path, key.serialize_pem().as_bytes())?;
        }
        let key_pem = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
        let cert_pem = std::fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
        let key = KeyPair::from_pem(&key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)?;
        let cert = cert_der(&cert_pem)?;
        Ok(Ca { issuer, cert_pem, cert })
    }

    pub fn fingerprint(&self) -> String {
        fingerprint(&self.cert)
    }

    fn roots(&self) -> Result<Arc<RootCertStore>, PkiError> {
        let mut roots = RootCertStore::empty();
        roots.add(self.cert.clone())?;
        Ok(Arc::new(roots))
    }

    /// Signs an agent's certificate request. Only the request's public key is used (after its signature is
    /// checked): the name, the validity and the uses are the CA's, so a request cannot ask to be a CA or the
    /// control plane. Returns the certificate's PEM and fingerprint.
    pub fn sign_agent(&self, csr_pem: &str, agent_name: &str) -> Result<(String, String), PkiError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| PkiError::Invalid(format!("the certificate request does not parse or verify: {e}")))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, agent_name);
        params.distinguished_name = dn;
        params.subject_alt_names = vec![SanType::DnsName(format!("{agent_name}.agent.homeward.invalid").try_into()?)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth, ExtendedKeyUsagePurpose::ServerAuth];
        validity(&mut params, AGENT_CERT_DAYS);
        let cert = params.signed_by(&csr.public_key, &self.issuer)?;
        Ok((cert.pem(), fingerprint(cert.der())))
    }

    /// The control plane's side of the agent links: its own certificate (made fresh at each start), and every
    /// client must present a certificate of this CA. Which agent it is, and whether it is revoked, is decided per
    /// request from the certificate's fingerprint.
    pub fn control_plane_config(&self) -> Result<ServerConfig, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![CONTROL_PLANE_NAME.to_owned()])?;
        params.distinguished_name.push(DnType::CommonName, "Homeward control plane");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        validity(&mut params, 397);
        let cert = params.signed_by(&key, &self.issuer)?;
        // Unauthenticated clients get through the handshake only to enroll (their token is the credential, and it
        // travels encrypted); every other route needs a certificate of this CA.
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(self.roots()?, provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| PkiError::Invalid(format!("client verifier: {e}")))?;
        let key_der = PrivateKeyDer::try_from(key.serialize_der()).map_err(|e| PkiError::Invalid(e.to_owned()))?;
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![cert.der().clone(), self.cert.clone()], key_der)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// An agent's identity on disk: its key, its certificate and the vault's CA.
pub struct Identity {
    pub key_pem: String,
    pub cert_pem: String,
    pub ca_pem: String,
}

impl Identity {
    /// The agent's side of its link to the control plane: trusts only the vault's CA, checks the control plane's
    /// fixed name, and presents the agent's certificate.
    pub fn control_plane_client(&self) -> Result<ClientConfig, PkiError> {
        let mut roots = RootCertStore::empty();
        roots.add(cert_der(&self.ca_pem)?)?;
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| PkiError::Invalid(format!("server verifier: {e}")))?;
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| PkiError::Invalid(format!("the agent's key: {e}")))?;
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ControlPlane { ca: TrustedCa::Known(inner) }))
            .with_client_auth_cert(vec![cert_der(&self.cert_pem)?], key)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

impl Identity {
    fn key(&self) -> Result<PrivateKeyDer<'static>, PkiError> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| PkiError::Invalid(format!("the agent's key: {e}")))
    }

    fn roots(&self) -> Result<Arc<RootCertStore>, PkiError> {
        let mut roots = RootCertStore::empty();
        roots.add(cert_der(&self.ca_pem)?)?;
        Ok(Arc::new(roots))
    }

    /// The receiving agent's side of a replication link: its own certificate, and the sender must present one of
    /// the vault's CA (which agent it is, and whether it may send, the control plane says).
    pub fn link_server(&self) -> Result<ServerConfig, PkiError> {
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(self.roots()?, provider())
            .build()
            .map_err(|e| PkiError::Invalid(format!("client verifier: {e}")))?;
        Ok(ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![cert_der(&self.cert_pem)?], self.key()?)?)
    }

    /// The sending agent's side: the receiver must hold the vault CA's certificate for the agent name expected
    /// (see [`agent_server_name`]), and the sender presents its own.
    pub fn link_client(&self) -> Result<ClientConfig, PkiError> {
        Ok(ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(vec![cert_der(&self.cert_pem)?], self.key()?)?)
    }
}

/// The TLS name an agent's certificate carries.
pub fn agent_server_name(agent: &str) -> Result<ServerName<'static>, PkiError> {
    ServerName::try_from(format!("{agent}.agent.homeward.invalid"))
        .map_err(|_| PkiError::Invalid(format!("{agent:?} is not an agent name")))
}

/// The agent's first connection, before it has a certificate: the control plane must present a chain ending in
/// the CA whose fingerprint the Administrator gave, so the token is sent to the vault and nobody else.
pub fn enrollment_client(ca_fingerprint: &str) -> Result<ClientConfig, PkiError> {
    let verifier = ControlPlane { ca: TrustedCa::Pinned(ca_fingerprint.to_owned()) };
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Which CA an agent trusts for the control plane.
#[derive(Debug)]
enum TrustedCa {
    /// The vault's CA it was given at enrollment.
    Known(Arc<rustls::client::WebPkiServerVerifier>),
    /// Before enrollment: the CA in the presented chain whose fingerprint the Administrator gave.
    Pinned(String),
}

/// Verifies the control plane's chain for [`CONTROL_PLANE_NAME`], whatever host was dialled.
#[derive(Debug)]
struct ControlPlane {
    ca: TrustedCa,
}

impl ControlPlane {
    fn verifier(
        &self,
        chain: &[CertificateDer<'_>],
    ) -> Result<Arc<rustls::client::WebPkiServerVerifier>, rustls::Error> {
        let fp = match &self.ca {
            TrustedCa::Known(v) => return Ok(v.clone()),
            TrustedCa::Pinned(fp) => fp,
        };
        let ca = chain.iter().find(|c| fingerprint(c) == *fp).ok_or_else(|| {
            rustls::Error::General(format!(
                "the control plane's CA is not the one with fingerprint {fp}: refusing to trust it (a wrong \
                 address, a mistyped fingerprint, or someone in between)"
            ))
        })?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))
    }
}

impl rustls::client::danger::ServerCertVerifier for ControlPlane {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _dialled: &ServerName<'_>,
        ocsp: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let name = ServerName::try_from(CONTROL_PLANE_NAME).map_err(|_| rustls::Error::General("name".into()))?;
        self.verifier(intermediates)?.verify_server_cert(end_entity, intermediates, &name, ocsp, now)
    }

    orchestrator::signature_checks!();
}

/// A new key and a certificate request for an agent called `name`.
pub fn agent_request(name: &str) -> Result<(String, String), PkiError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    let csr = params.serialize_request(&key)?;
    Ok((key.serialize_pem(), csr.pem()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_signs_only_the_public_key_of_a_request() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(dir.path()).unwrap();
        // Asking to be a CA and the control plane changes nothing: the CA decides names and uses.
        let key = KeyPair::generate().unwrap();
        let mut greedy = CertificateParams::new(vec![CONTROL_PLANE_NAME.to_owned()]).unwrap();
        greedy.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let csr = greedy.serialize_request(&key).unwrap().pem().unwrap();
        let (pem, fp) = ca.sign_agent(&csr, "mt-01").unwrap();
        assert_eq!(fp, fingerprint(&cert_der(&pem).unwrap()));
        let der = cert_der(&pem).unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
        assert!(!parsed.is_ca());
        let sans = format!("{:?}", parsed.subject_alternative_name().unwrap().unwrap().value);
        assert!(sans.contains("mt-01.agent.homeward.invalid") && !sans.contains(CONTROL_PLANE_NAME), "{sans}");
        // The same CA after a restart, and its key is the owner's only.
        let again = Ca::load_or_create(dir.path()).unwrap();
        assert_eq!(again.fingerprint(), ca.fingerprint());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("ca.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(ca
            .sign_agent("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n", "x")
            .is_err());
    }
}
