//! PostgreSQL connections, over TLS as the URL's `sslmode` says.
//!
//! `database.url` takes libpq's `sslmode` and `sslrootcert` (a PEM file of
//! trusted certificates). tokio-postgres knows only three of the modes and no
//! `sslrootcert`, so [`PgUrl::parse`] takes both out of the URL, leaves the
//! rest to tokio-postgres, and the mode decides how rustls checks the server:
//!
//! | `sslmode` | TLS | server certificate |
//! |---|---|---|
//! | `disable` | never | — |
//! | `prefer` (default) | tried first; a failed attempt is retried without | not checked |
//! | `require` | always | not checked |
//! | `verify-ca` | always | chain to a trusted root |
//! | `verify-full` | always | chain, and the host name |
//!
//! As in libpq, an explicit `sslrootcert` makes `prefer` and `require` check
//! the chain too. Trusted roots are `sslrootcert`'s certificates, else the
//! Mozilla roots (webpki-roots): a private CA (AWS RDS, a self-signed
//! server) needs `sslrootcert`. The crypto provider is rustls's `ring`, the
//! one reqwest already uses.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use diesel_async::AsyncPgConnection;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{WebPkiServerVerifier, verify_server_cert_signed_by_trust_anchor};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::SslMode as WireMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's `sslmode`, the values Frontdesk supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP.
    Disable,
    /// TLS when the server offers it, plain otherwise (libpq's default).
    Prefer,
    /// TLS or nothing; the certificate is not checked.
    Require,
    /// TLS, with a certificate that chains to a trusted root.
    VerifyCa,
    /// Like `VerifyCa`, and the certificate names the host connected to.
    VerifyFull,
}

impl SslMode {
    /// Every accepted value, for messages.
    pub const VALUES: &'static str = "disable, prefer, require, verify-ca, verify-full";

    fn parse(text: &str) -> Result<Self, PgUrlError> {
        Ok(match text {
            "disable" => Self::Disable,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            other => return Err(PgUrlError::Mode(other.to_owned())),
        })
    }
}

/// Why a PostgreSQL URL or its TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PgUrlError {
    /// An `sslmode` Frontdesk does not know.
    #[error("sslmode `{0}` is not one of {values}", values = SslMode::VALUES)]
    Mode(String),
    /// tokio-postgres refused the rest of the URL.
    #[error("{0}")]
    Url(String),
    /// The `sslrootcert` file is unusable.
    #[error("sslrootcert {}: {reason}", path.display())]
    RootCert {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS set-up: {0}")]
    Tls(#[from] rustls::Error),
}

/// A PostgreSQL URL taken apart: the TLS policy, and the rest for tokio-postgres.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgUrl {
    /// The URL without `sslmode` and `sslrootcert`.
    pub rest: String,
    /// `sslmode`, `prefer` when absent.
    pub mode: SslMode,
    /// `sslrootcert`, percent-decoded.
    pub root_cert: Option<PathBuf>,
}

impl PgUrl {
    /// Splits `url` (`postgres://…?sslmode=…&sslrootcert=…&…`) and checks
    /// that tokio-postgres accepts the rest. Reads no file.
    pub fn parse(url: &str) -> Result<Self, PgUrlError> {
        let (base, query) = match url.split_once('?') {
            Some((base, query)) => (base, query),
            None => (url, ""),
        };
        let mut mode = SslMode::Prefer;
        let mut root_cert = None;
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "sslmode" => mode = SslMode::parse(&percent_decode(value)?)?,
                "sslrootcert" => root_cert = Some(PathBuf::from(percent_decode(value)?)),
                _ => kept.push(pair),
            }
        }
        let rest = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        tokio_postgres::Config::from_str(&rest).map_err(|e| PgUrlError::Url(chain(&e)))?;
        Ok(Self {
            rest,
            mode,
            root_cert,
        })
    }
}

fn percent_decode(text: &str) -> Result<String, PgUrlError> {
    let bad = || PgUrlError::Url(format!("bad percent-encoding in `{text}`"));
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3).ok_or_else(bad)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

/// An error and its sources on one line: tokio-postgres's `Display` leaves
/// the cause out ("error performing TLS handshake"), and the cause is what
/// an operator needs ("invalid peer certificate: UnknownIssuer").
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        source = cause.source();
    }
    text
}

/// Opens PostgreSQL connections as a [`PgUrl`] says. Cheap to clone.
#[derive(Clone)]
pub struct PgConnector {
    config: tokio_postgres::Config,
    mode: SslMode,
    tls: MakeRustlsConnect,
}

impl std::fmt::Debug for PgConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConnector")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl PgConnector {
    /// Parses `url` and loads its `sslrootcert`.
    pub fn new(url: &str) -> Result<Self, PgUrlError> {
        let url = PgUrl::parse(url)?;
        let config =
            tokio_postgres::Config::from_str(&url.rest).map_err(|e| PgUrlError::Url(chain(&e)))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let explicit_roots = url.root_cert.is_some();
        let roots = match &url.root_cert {
            Some(path) => Arc::new(load_roots(path)?),
            None => Arc::new(RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            }),
        };
        let check = match url.mode {
            SslMode::VerifyFull => None,
            SslMode::VerifyCa => Some(Check::Chain(roots.clone())),
            SslMode::Disable | SslMode::Prefer | SslMode::Require if explicit_roots => {
                Some(Check::Chain(roots.clone()))
            }
            SslMode::Disable | SslMode::Prefer | SslMode::Require => Some(Check::Nothing),
        };
        let verifier: Arc<dyn ServerCertVerifier> = match check {
            Some(check) => Arc::new(Verifier {
                check,
                provider: provider.clone(),
            }),
            None => WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| PgUrlError::Tls(rustls::Error::General(e.to_string())))?,
        };
        let tls = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(Self {
            config,
            mode: url.mode,
            tls: MakeRustlsConnect::new(tls),
        })
    }

    /// The `sslmode` in force.
    pub fn mode(&self) -> SslMode {
        self.mode
    }

    /// One new connection. Errors carry their causes (the rustls reason of
    /// a refused certificate, say) on one line.
    pub async fn connect(&self) -> diesel::ConnectionResult<AsyncPgConnection> {
        let wire = match self.mode {
            SslMode::Disable => WireMode::Disable,
            SslMode::Prefer => WireMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => WireMode::Require,
        };
        let first = self.attempt(wire).await;
        let bad = diesel::ConnectionError::BadConnection;
        match first {
            Ok(conn) => Ok(conn),
            // libpq's prefer: "first try an SSL connection; if that fails,
            // try a non-SSL connection".
            Err(with_tls) if self.mode == SslMode::Prefer => {
                match self.attempt(WireMode::Disable).await {
                    Ok(conn) => {
                        tracing::warn!(error = %with_tls, "PostgreSQL over TLS failed; connected without TLS (sslmode=prefer)");
                        Ok(conn)
                    }
                    Err(plain) if plain == with_tls => Err(bad(plain)),
                    Err(plain) => Err(bad(format!("{with_tls} (without TLS: {plain})"))),
                }
            }
            Err(e) => Err(bad(e)),
        }
    }

    async fn attempt(&self, wire: WireMode) -> Result<AsyncPgConnection, String> {
        let mut config = self.config.clone();
        config.ssl_mode(wire);
        let (client, connection) = config
            .connect(self.tls.clone())
            .await
            .map_err(|e| chain(&e))?;
        AsyncPgConnection::try_from_client_and_connection(client, connection)
            .await
            .map_err(|e| chain(&e))
    }
}

fn load_roots(path: &std::path::Path) -> Result<RootCertStore, PgUrlError> {
    let fail = |reason: String| PgUrlError::RootCert {
        path: path.to_path_buf(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path).map_err(|e| fail(e.to_string()))?;
    for cert in certs {
        let cert = cert.map_err(|e| fail(e.to_string()))?;
        roots.add(cert).map_err(|e| fail(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(fail("holds no PEM certificate".into()));
    }
    Ok(roots)
}

/// What [`Verifier`] checks of the server's certificate.
#[derive(Debug)]
enum Check {
    /// Nothing: encryption against passive eavesdroppers only (`require`).
    Nothing,
    /// That it chains to one of these roots, whatever name it carries (`verify-ca`).
    Chain(Arc<RootCertStore>),
}

/// The certificate check of `prefer`, `require` and `verify-ca`. The
/// handshake signatures are verified in every case, so the server still
/// proves it holds the key of the certificate it sent.
#[derive(Debug)]
struct Verifier {
    check: Check,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Check::Chain(roots) = &self.check {
            let cert = ParsedCertificate::try_from(end_entity)?;
            verify_server_cert_signed_by_trust_anchor(
                &cert,
                roots,
                intermediates,
                now,
                self.provider.signature_verification_algorithms.all,
            )?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
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
    fn modes_and_root_cert_are_taken_out_of_the_url() {
        let url = PgUrl::parse(
            "postgres://app:pw@db:5432/fd?application_name=fd&sslmode=verify-full&sslrootcert=%2Fetc%2Fca%20x.pem",
        )
        .expect("parses");
        assert_eq!(url.mode, SslMode::VerifyFull);
        assert_eq!(url.root_cert, Some(PathBuf::from("/etc/ca x.pem")));
        assert_eq!(url.rest, "postgres://app:pw@db:5432/fd?application_name=fd");

        for (text, mode) in [
            ("disable", SslMode::Disable),
            ("prefer", SslMode::Prefer),
            ("require", SslMode::Require),
            ("verify-ca", SslMode::VerifyCa),
            ("verify-full", SslMode::VerifyFull),
        ] {
            let url = PgUrl::parse(&format!("postgresql://h/d?sslmode={text}")).expect(text);
            assert_eq!(url.mode, mode);
            assert_eq!(url.rest, "postgresql://h/d");
            assert_eq!(url.root_cert, None);
        }
    }

    #[test]
    fn prefer_is_the_default() {
        let url = PgUrl::parse("postgres://postgres@127.0.0.1:5432/postgres").expect("parses");
        assert_eq!(url.mode, SslMode::Prefer);
        assert_eq!(url.rest, "postgres://postgres@127.0.0.1:5432/postgres");
    }

    #[test]
    fn unknown_mode_names_the_valid_ones() {
        for bad in ["allow", "verify_full", "REQUIRE", ""] {
            let err = PgUrl::parse(&format!("postgres://h/d?sslmode={bad}")).expect_err(bad);
            assert_eq!(
                err.to_string(),
                format!(
                    "sslmode `{bad}` is not one of disable, prefer, require, verify-ca, verify-full"
                )
            );
        }
    }

    #[test]
    fn other_bad_urls_are_refused_without_panicking() {
        for bad in [
            "postgres://h/d?sslrootcert=%zz",
            "postgres://h/d?sslrootcert=%",
            "postgres://h/d?sslrootcert=%ff",
            "postgres://h/d?no_such_option=1",
            "postgres://h:notaport/d",
        ] {
            assert!(PgUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unusable_root_cert_files_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.pem");
        let err = PgConnector::new(&format!(
            "postgres://h/d?sslmode=verify-ca&sslrootcert={}",
            missing.display()
        ))
        .expect_err("missing file");
        assert!(
            err.to_string()
                .starts_with(&format!("sslrootcert {}:", missing.display())),
            "{err}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let err = PgConnector::new(&format!(
            "postgres://h/d?sslmode=verify-full&sslrootcert={}",
            empty.display()
        ))
        .expect_err("no certificate");
        assert!(
            err.to_string().ends_with("holds no PEM certificate"),
            "{err}"
        );
    }

    #[test]
    fn connectors_build_for_every_mode() {
        for mode in ["disable", "prefer", "require", "verify-ca", "verify-full"] {
            let connector =
                PgConnector::new(&format!("postgres://h/d?sslmode={mode}")).expect(mode);
            assert_eq!(
                format!("{:?}", connector.mode()).to_lowercase(),
                mode.replace('-', "")
            );
        }
    }
}
