//! TLS to PostgreSQL with libpq's `sslmode` meanings, over rustls.
//!
//! tokio-postgres reads `sslmode=disable|prefer|require` and nothing about
//! certificates, so `verify-ca`, `verify-full` and `sslrootcert` are taken out
//! of the URL here and become the rustls verifier:
//!
//! | sslmode | encrypted | certificate checked |
//! |---|---|---|
//! | `disable` | never | — |
//! | `prefer` (default) | if the server offers it | no |
//! | `require` | always | no; with `sslrootcert`, as `verify-ca` (as libpq does) |
//! | `verify-ca` | always | signed by `sslrootcert` (else the Mozilla roots) |
//! | `verify-full` | always | as `verify-ca`, and issued for the host |

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::DbError;

/// What a URL asks of the connection's security.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// The connection settings of `url` and the TLS connector its `sslmode`
/// and `sslrootcert` call for.
pub fn connector(url: &str) -> Result<(tokio_postgres::Config, MakeRustlsConnect), DbError> {
    let (rest, mode, root) = take_tls_params(url)?;
    let mut config: tokio_postgres::Config =
        rest.parse().map_err(|e| DbError::Url(format!("{e}")))?;
    let mode = match (mode, &root) {
        (Mode::Require, Some(_)) => Mode::VerifyCa,
        (mode, _) => mode,
    };
    config.ssl_mode(match mode {
        Mode::Disable => SslMode::Disable,
        Mode::Prefer => SslMode::Prefer,
        Mode::Require | Mode::VerifyCa | Mode::VerifyFull => SslMode::Require,
    });
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let chain = match mode {
        Mode::Disable | Mode::Prefer | Mode::Require => None,
        Mode::VerifyCa | Mode::VerifyFull => {
            let roots = roots(root.as_deref())?;
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| DbError::Url(format!("sslrootcert: {e}")))?;
            Some((webpki, mode == Mode::VerifyFull))
        }
    };
    let verifier = Arc::new(Verifier {
        provider: provider.clone(),
        chain,
    });
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| DbError::Url(format!("TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok((config, MakeRustlsConnect::new(tls)))
}

/// `url` without `sslmode` and `sslrootcert`, and what they said. Both URL
/// (`postgres://…?sslmode=require`) and key-value (`host=… sslmode=require`)
/// forms.
fn take_tls_params(url: &str) -> Result<(String, Mode, Option<String>), DbError> {
    let mut mode = None;
    let mut root = None;
    let mut take = |key: &str, value: String| -> Result<bool, DbError> {
        match key {
            "sslmode" => {
                mode = Some(match value.as_str() {
                    "disable" => Mode::Disable,
                    "allow" | "prefer" => Mode::Prefer,
                    "require" => Mode::Require,
                    "verify-ca" => Mode::VerifyCa,
                    "verify-full" => Mode::VerifyFull,
                    other => {
                        return Err(DbError::Url(format!(
                            "sslmode={other} is not one of disable, prefer, require, verify-ca, verify-full"
                        )));
                    }
                });
                Ok(true)
            }
            "sslrootcert" => {
                root = Some(value);
                Ok(true)
            }
            _ => Ok(false),
        }
    };
    let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        match url.split_once('?') {
            None => url.to_owned(),
            Some((base, query)) => {
                let mut kept = Vec::new();
                for pair in query.split('&').filter(|p| !p.is_empty()) {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    if !take(key, percent_decode(value))? {
                        kept.push(pair);
                    }
                }
                if kept.is_empty() {
                    base.to_owned()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
        }
    } else {
        let mut kept = Vec::new();
        for part in url.split_whitespace() {
            let (key, value) = part.split_once('=').unwrap_or((part, ""));
            if !take(key.trim(), value.trim_matches('\'').to_owned())? {
                kept.push(part);
            }
        }
        kept.join(" ")
    };
    Ok((rest, mode.unwrap_or(Mode::Prefer), root))
}

fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The CAs in the PEM file `path`, or the Mozilla roots.
fn roots(path: Option<&str>) -> Result<Arc<RootCertStore>, DbError> {
    let Some(path) = path else {
        return Ok(Arc::new(RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        }));
    };
    let mut store = RootCertStore::empty();
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| DbError::Url(format!("sslrootcert {path}: {e}")))?;
    for certificate in certificates {
        let certificate =
            certificate.map_err(|e| DbError::Url(format!("sslrootcert {path}: {e}")))?;
        store
            .add(certificate)
            .map_err(|e| DbError::Url(format!("sslrootcert {path}: {e}")))?;
    }
    if store.is_empty() {
        return Err(DbError::Url(format!(
            "sslrootcert {path}: no certificate in the file"
        )));
    }
    Ok(Arc::new(store))
}

/// How a server's certificate is judged. The handshake's own signatures
/// are checked by the provider's algorithms under either policy.
#[derive(Debug)]
struct Verifier {
    provider: Arc<CryptoProvider>,
    /// `None`: any certificate will do (`prefer`, `require`, as libpq).
    /// `Some`: the chain must lead to a trusted CA; with `names`, it must
    /// also be issued for the host (`verify-full`), else not (`verify-ca`).
    chain: Option<(Arc<WebPkiServerVerifier>, bool)>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some((webpki, names)) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !names => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_are_taken_out_of_either_form() {
        let (rest, mode, root) = take_tls_params(
            "postgres://u:p@db:5432/mart?application_name=x&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem",
        )
        .expect("url");
        assert_eq!(rest, "postgres://u:p@db:5432/mart?application_name=x");
        assert_eq!(mode, Mode::VerifyFull);
        assert_eq!(root.as_deref(), Some("/etc/ca.pem"));

        let (rest, mode, root) =
            take_tls_params("host=db user=u sslmode=require dbname=mart").expect("key-value");
        assert_eq!(rest, "host=db user=u dbname=mart");
        assert_eq!((mode, root), (Mode::Require, None));

        let (rest, mode, _) = take_tls_params("postgres://db/mart").expect("plain");
        assert_eq!((rest.as_str(), mode), ("postgres://db/mart", Mode::Prefer));

        assert!(
            take_tls_params("postgres://db/mart?sslmode=sometimes")
                .is_err_and(|e| e.to_string().contains("sslmode=sometimes"))
        );
    }
}
