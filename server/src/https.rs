//! The portal and the API over HTTPS (`serve --tls-cert FILE --tls-key FILE`): the operator's own certificate,
//! TLS 1.2/1.3 with rustls, HTTP/1.1. Without it the portal speaks plain HTTP, which is meant for localhost or
//! behind a TLS-terminating reverse proxy (see the README).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::HeaderMap;
use axum::Router;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Marks a request that reached this server over its own TLS.
#[derive(Clone, Copy, Debug)]
pub struct Https;

/// Whether the browser's request travelled over HTTPS: this server's own TLS, or a TLS-terminating reverse proxy
/// that says so with `X-Forwarded-Proto: https`. The session cookie is then `Secure`, so the browser never sends
/// it in clear. (Trusting the header can only add the flag: a forged one costs its sender their own session.)
pub fn over_https(https: Option<Https>, headers: &HeaderMap) -> bool {
    https.is_some()
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').next().is_some_and(|p| p.trim().eq_ignore_ascii_case("https")))
}

#[derive(Debug, thiserror::Error)]
pub enum TlsFileError {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("the certificate in {cert} and the key in {key} do not make a TLS identity: {reason}")]
    Pair { cert: PathBuf, key: PathBuf, reason: String },
}

/// The server configuration from a PEM certificate chain (leaf first) and its PEM private key; each mistake names
/// the file to fix.
pub fn load_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, TlsFileError> {
    let file = |path: &Path, reason: String| TlsFileError::File { path: path.to_path_buf(), reason };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| file(cert, format!("cannot read a PEM certificate chain: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| file(cert, format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(file(cert, "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| file(key, format!("holds no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {e}")))?;
    let mut config = rustls::ServerConfig::builder_with_provider(crate::pki::provider())
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key_der))
        .map_err(|e| TlsFileError::Pair { cert: cert.to_path_buf(), key: key.to_path_buf(), reason: e.to_string() })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Serves `router` over TLS until `shutdown` completes, then lets requests in flight finish (up to 10 s).
/// Each request carries the client's address (the sign-in throttle's key) and the [`Https`] mark.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: rustls::ServerConfig,
    router: Router,
    shutdown: impl std::future::Future<Output = ()>,
) -> io::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors and the like: pause instead of spinning.
                    tracing::warn!(error = %e, "portal: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => return tracing::debug!(peer = %addr, error = %e, "portal: TLS handshake failed"),
                Err(_) => return tracing::debug!(peer = %addr, "portal: TLS handshake timed out"),
            };
            let svc = tower::ServiceExt::map_request(router, move |mut req: axum::extract::Request<_>| {
                req.extensions_mut().insert(ConnectInfo(addr));
                req.extensions_mut().insert(Https);
                req
            });
            let svc = hyper_util::service::TowerToHyperService::new(svc);
            let conn =
                hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(tls), svc);
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(peer = %addr, error = %e, "portal: connection ended");
            }
        });
    }
    if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown()).await.is_err() {
        tracing::warn!("portal: requests still running 10 s after shutdown began; closing them");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_is_ours_or_a_proxys_word() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert("x-forwarded-proto", v.parse().unwrap());
            m
        };
        assert!(over_https(Some(Https), &HeaderMap::new()));
        assert!(!over_https(None, &HeaderMap::new()));
        assert!(over_https(None, &h("HTTPS")));
        assert!(over_https(None, &h("https, http")));
        assert!(!over_https(None, &h("http")));
    }

    #[test]
    fn tls_files_that_do_not_serve_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let e = load_config(&cert, &key).unwrap_err().to_string();
        assert!(e.contains("cert.pem") && e.contains("cannot read"), "{e}");
        std::fs::write(&cert, "not pem").unwrap();
        let e = load_config(&cert, &key).unwrap_err().to_string();
        assert!(e.contains("cert.pem") && e.contains("no PEM certificate"), "{e}");
        let a = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let b = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        std::fs::write(&cert, a.cert.pem()).unwrap();
        std::fs::write(&key, "").unwrap();
        let e = load_config(&cert, &key).unwrap_err().to_string();
        assert!(e.contains("key.pem") && e.contains("private key"), "{e}");
        std::fs::write(&key, b.signing_key.serialize_pem()).unwrap();
        let e = load_config(&cert, &key).unwrap_err().to_string();
        assert!(e.contains("do not make a TLS identity"), "{e}");
        std::fs::write(&key, a.signing_key.serialize_pem()).unwrap();
        load_config(&cert, &key).unwrap();
    }
}
