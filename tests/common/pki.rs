//! Certificates made at test time: a CA, a server certificate for 127.0.0.1, a client
//! certificate, and a CA that signed none of them.

use std::path::PathBuf;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use reflow_network::distributed_network::NatsAuth;

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files.
pub(crate) struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    pub(crate) fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki { dir };
        let ca = pki.ca("ca");
        pki.leaf(&ca, "server", ExtendedKeyUsagePurpose::ServerAuth);
        pki.leaf(&ca, "client", ExtendedKeyUsagePurpose::ClientAuth);
        // A CA that signed nothing here.
        pki.ca("other_ca");
        pki
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.pem"))
    }

    fn ca(&self, name: &str) -> CertifiedIssuer<'static, KeyPair> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(self.path(name), ca.pem()).unwrap();
        ca
    }

    fn leaf(
        &self,
        ca: &CertifiedIssuer<'static, KeyPair>,
        name: &str,
        use_: ExtendedKeyUsagePurpose,
    ) {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        params.extended_key_usages = vec![use_];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, ca).unwrap();
        std::fs::write(self.path(name), cert.pem()).unwrap();
        std::fs::write(self.path(&format!("{name}_key")), key.serialize_pem()).unwrap();
    }

    /// The server's `tls` block; with `verify`, clients must show a certificate the CA
    /// signed.
    pub(crate) fn server_tls(&self, verify: bool) -> String {
        let quote = |p: PathBuf| format!("{:?}", p.display().to_string());
        format!(
            "tls {{\n  cert_file: {}\n  key_file: {}\n  ca_file: {}\n  verify: {verify}\n}}\n",
            quote(self.path("server")),
            quote(self.path("server_key")),
            quote(self.path("ca")),
        )
    }

    pub(crate) fn auth(&self, ca: &str, client: bool) -> NatsAuth {
        NatsAuth {
            tls_ca_file: Some(self.path(ca)),
            tls_cert_file: client.then(|| self.path("client")),
            tls_key_file: client.then(|| self.path("client_key")),
            ..NatsAuth::default()
        }
    }
}
