//! TLS for site APIs. A vCenter usually presents a self-signed certificate, so, as vSphere's own tools do, the
//! administrator pins its thumbprint; a storage account presents a public certificate (verified against the web's
//! roots) unless a thumbprint is pinned, which is how the emulator's self-signed one is trusted in tests.

use std::sync::{Arc, Mutex};

use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

/// A certificate's SHA-1 (vSphere's usual form) or SHA-256 thumbprint: hex pairs, with or without colons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thumbprint(Vec<u8>);

impl Thumbprint {
    pub fn parse(text: &str) -> Result<Thumbprint, String> {
        let hex: String = text.chars().filter(|c| !matches!(c, ':' | ' ' | '-')).collect();
        if hex.len() != 40 && hex.len() != 64 {
            return Err(format!(
                "a thumbprint is 20 (SHA-1) or 32 (SHA-256) hex pairs such as 2C:11:ED:…; {text:?} has {} hex digits",
                hex.len()
            ));
        }
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|_| format!("a thumbprint holds only hex digits and colons; {text:?} does not"))?;
        Ok(Thumbprint(bytes))
    }

    fn matches(&self, der: &[u8]) -> bool {
        let algorithm =
            if self.0.len() == 20 { &ring::digest::SHA1_FOR_LEGACY_USE_ONLY } else { &ring::digest::SHA256 };
        ring::digest::digest(algorithm, der).as_ref() == self.0.as_slice()
    }
}

impl std::fmt::Display for Thumbprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pairs: Vec<String> = self.0.iter().map(|b| format!("{b:02X}")).collect();
        f.write_str(&pairs.join(":"))
    }
}

/// The SHA-1 thumbprint of a certificate, as vSphere prints it.
pub(crate) fn sha1_thumbprint(der: &[u8]) -> String {
    Thumbprint(ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, der).as_ref().to_vec()).to_string()
}

/// The thumbprint of the last certificate refused, so the error can show the administrator what to check.
pub(crate) type Seen = Arc<Mutex<Option<String>>>;

/// The crypto every TLS client of Homeward uses (ring: no cmake or nasm to build).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The handshake-signature half of a `ServerCertVerifier`, the same for every verifier that decides only which
/// certificate to trust (a pinned thumbprint here, the vault's CA for agents): the signatures are checked with
/// [`provider`]'s algorithms.
#[macro_export]
macro_rules! signature_checks {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            let algorithms = $crate::connectors::provider().signature_verification_algorithms;
            rustls::crypto::verify_tls12_signature(message, cert, dss, &algorithms)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            let algorithms = $crate::connectors::provider().signature_verification_algorithms;
            rustls::crypto::verify_tls13_signature(message, cert, dss, &algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            $crate::connectors::provider().signature_verification_algorithms.supported_schemes()
        }
    };
}

/// A client config that accepts exactly the certificate with `pin`; with no pin it accepts none, so the first
/// connection reports the thumbprint for the administrator to confirm.
pub(crate) fn pinned(pin: Option<Thumbprint>, seen: Seen) -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned { pin, seen }))
        .with_no_client_auth()
}

/// A client config for a public endpoint (Azure Storage): the system's trusted roots (Debian's ca-certificates),
/// or exactly the certificate with `pin` when one is given.
pub(crate) fn public_or_pinned(pin: Option<Thumbprint>, seen: Seen) -> rustls::ClientConfig {
    if pin.is_some() {
        return pinned(pin, seen);
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        // One unreadable system certificate must not stop the others from being trusted.
        let _ = roots.add(cert);
    }
    rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

#[derive(Debug)]
struct Pinned {
    pin: Option<Thumbprint>,
    seen: Seen,
}

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        match &self.pin {
            Some(pin) if pin.matches(end_entity) => Ok(rustls::client::danger::ServerCertVerified::assertion()),
            _ => {
                *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(sha1_thumbprint(end_entity));
                Err(rustls::Error::General("the certificate's thumbprint is not the pinned one".into()))
            }
        }
    }

    crate::signature_checks!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprints_parse_in_the_forms_vsphere_prints_and_refuse_the_rest() {
        let t = Thumbprint::parse("2c:11:ED:D7:13:87:7D:B5:74:18:B8:1C:42:C2:56:1F:0D:B9:5B:B9").unwrap();
        assert_eq!(t.to_string(), "2C:11:ED:D7:13:87:7D:B5:74:18:B8:1C:42:C2:56:1F:0D:B9:5B:B9");
        assert_eq!(Thumbprint::parse("2C11EDD713877DB57418B81C42C2561F0DB95BB9").unwrap(), t);
        assert!(Thumbprint::parse(&"AB".repeat(32)).is_ok());
        assert!(Thumbprint::parse("2C:11").unwrap_err().contains("20 (SHA-1)"));
        assert!(Thumbprint::parse(&"ZZ".repeat(20)).unwrap_err().contains("hex digits"));
    }
}
