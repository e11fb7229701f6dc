//! [`NatsAuth`]: how a network proves itself to the NATS server, beyond the seed's
//! `discovery_endpoints` and `auth_token`: TLS (a private CA, a client certificate),
//! a creds file (decentralised JWT auth), an NKey seed, a user and password, or a server
//! token apart from the peers' shared secret. A natscli context supplies the same.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};

/// How a network authenticates to the NATS server. Secrets are read from files (or, for
/// a password or token, given directly by code); nothing here is logged.
///
/// ```
/// use reflow_network::distributed_network::NatsAuth;
///
/// let auth = NatsAuth {
///     creds_file: Some("/etc/reflow/stats.creds".into()),
///     tls_ca_file: Some("/etc/reflow/ca.pem".into()),
///     ..NatsAuth::default()
/// };
/// assert!(auth.check().is_err(), "the files do not exist here");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsAuth {
    /// A `.creds` file: a user JWT and its NKey seed (operator mode, managed NATS).
    pub creds_file: Option<PathBuf>,
    /// A file holding a user NKey seed (`SU...`).
    pub nkey_seed_file: Option<PathBuf>,
    /// A user name, with [`password`](Self::password).
    pub user: Option<String>,
    /// The user's password.
    pub password: Option<String>,
    /// A token for the NATS server. Without it the server gets `auth_token`, which is
    /// then also the peers' shared secret; with it the two differ.
    pub token: Option<String>,
    /// PEM file of the CA that signed the server's certificate (a private CA).
    pub tls_ca_file: Option<PathBuf>,
    /// PEM file of this client's certificate, for servers that verify clients (mutual
    /// TLS); with [`tls_key_file`](Self::tls_key_file).
    pub tls_cert_file: Option<PathBuf>,
    /// PEM file of the client certificate's private key.
    pub tls_key_file: Option<PathBuf>,
    /// Refuse a server that does not speak TLS (implied by `tls://` URLs and by any
    /// TLS file above).
    pub tls_required: bool,
    /// Start with the TLS handshake, before the server's greeting (servers configured
    /// with `handshake_first`, and proxies that terminate TLS).
    pub tls_first: bool,
}

impl NatsAuth {
    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        *self == NatsAuth::default()
    }

    /// Whether TLS is asked for.
    pub fn wants_tls(&self) -> bool {
        self.tls_required
            || self.tls_first
            || self.tls_ca_file.is_some()
            || self.tls_cert_file.is_some()
            || self.tls_key_file.is_some()
    }

    /// Checks that the settings go together and every file named exists, naming the
    /// first that does not.
    pub fn check(&self) -> Result<()> {
        let files = [
            ("creds_file", &self.creds_file),
            ("nkey_seed_file", &self.nkey_seed_file),
            ("tls_ca_file", &self.tls_ca_file),
            ("tls_cert_file", &self.tls_cert_file),
            ("tls_key_file", &self.tls_key_file),
        ];
        for (field, path) in files {
            if let Some(path) = path
                && !path.is_file()
            {
                return Err(Error::invalid_config(
                    field,
                    format!("{} is not a readable file", path.display()),
                ));
            }
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Err(Error::invalid_config(
                "tls_cert_file",
                "a client certificate needs its key (tls_key_file), and a key its certificate",
            ));
        }
        if self.user.is_some() != self.password.is_some() {
            return Err(Error::invalid_config(
                "user",
                "a user needs a password, and a password a user",
            ));
        }
        let ways = [
            self.creds_file.is_some(),
            self.nkey_seed_file.is_some(),
            self.user.is_some(),
            self.token.is_some(),
        ];
        if ways.iter().filter(|set| **set).count() > 1 {
            return Err(Error::invalid_config(
                "creds_file",
                "choose one of creds_file, nkey_seed_file, user/password and token",
            ));
        }
        Ok(())
    }

    /// The settings of natscli context `name` (`~/.config/nats/context/{name}.json`, or
    /// under `$XDG_CONFIG_HOME`), with the server URL it names, if any.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn example() -> reflow_network::Result<()> {
    /// use reflow_network::distributed_network::{DistributedConfig, DistributedNetwork, NatsAuth};
    ///
    /// // ~/.config/nats/context/prod.json, as natscli writes it.
    /// let (auth, url) = NatsAuth::from_context("prod")?;
    /// let mut network = DistributedNetwork::new(DistributedConfig {
    ///     network_id: "billing".into(),
    ///     discovery_endpoints: url.into_iter().collect(),
    ///     ..DistributedConfig::default()
    /// })
    /// .await?;
    /// network.set_nats_auth(auth)?;
    /// network.start().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn from_context(name: &str) -> Result<(NatsAuth, Option<String>)> {
        let path = context_path(name)?;
        Self::from_context_file(&path)
    }

    /// The settings of the natscli context file at `path`, with the server URL it names.
    pub fn from_context_file(path: &Path) -> Result<(NatsAuth, Option<String>)> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::with_source(
                ErrorKind::InvalidConfig,
                format!("cannot read the NATS context {}", path.display()),
                e,
            )
        })?;
        let context: Context = serde_json::from_str(&text).map_err(|e| {
            Error::new(
                ErrorKind::InvalidConfig,
                format!("the NATS context {} is not valid: {e}", path.display()),
            )
        })?;
        let file = |value: String| (!value.is_empty()).then(|| PathBuf::from(value));
        let text = |value: String| (!value.is_empty()).then_some(value);
        let auth = NatsAuth {
            creds_file: file(context.creds),
            nkey_seed_file: file(context.nkey),
            user: text(context.user),
            password: text(context.password),
            token: text(context.token),
            tls_ca_file: file(context.ca),
            tls_cert_file: file(context.cert),
            tls_key_file: file(context.key),
            tls_required: false,
            tls_first: context.tls_first,
        };
        Ok((auth, text(context.url)))
    }
}

/// The fields of a natscli context file this crate reads; the rest are ignored.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Context {
    url: String,
    token: String,
    user: String,
    password: String,
    creds: String,
    nkey: String,
    cert: String,
    key: String,
    ca: String,
    tls_first: bool,
}

fn context_path(name: &str) -> Result<PathBuf> {
    if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
        return Err(Error::invalid_config(
            "context",
            format!("{name:?} is not a context name"),
        ));
    }
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))
        .ok_or_else(|| {
            Error::invalid_config("context", "neither XDG_CONFIG_HOME nor HOME is set")
        })?;
    let path = config
        .join("nats")
        .join("context")
        .join(format!("{name}.json"));
    if !path.is_file() {
        return Err(Error::invalid_config(
            "context",
            format!(
                "no NATS context {name:?} ({} does not exist)",
                path.display()
            ),
        ));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_context_file_maps_to_settings_and_a_url() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("prod.json");
        std::fs::write(
            &path,
            r#"{"description":"prod","url":"tls://nats.example:4222","creds":"/k/a.creds",
                "nkey":"","cert":"/k/c.pem","key":"/k/k.pem","ca":"/k/ca.pem",
                "jetstream_domain":""}"#,
        )
        .unwrap();
        let (auth, url) = NatsAuth::from_context_file(&path).unwrap();
        assert_eq!(url.as_deref(), Some("tls://nats.example:4222"));
        assert_eq!(auth.creds_file, Some(PathBuf::from("/k/a.creds")));
        assert_eq!(auth.nkey_seed_file, None);
        assert_eq!(auth.tls_ca_file, Some(PathBuf::from("/k/ca.pem")));
        assert!(auth.wants_tls());
    }

    #[test]
    fn settings_that_do_not_go_together_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        let missing = NatsAuth {
            creds_file: Some(dir.path().join("nope")),
            ..NatsAuth::default()
        };
        assert!(
            missing
                .check()
                .unwrap_err()
                .to_string()
                .contains("creds_file")
        );
        let half = NatsAuth {
            tls_cert_file: Some(file.clone()),
            ..NatsAuth::default()
        };
        assert!(
            half.check()
                .unwrap_err()
                .to_string()
                .contains("tls_key_file")
        );
        let two = NatsAuth {
            creds_file: Some(file.clone()),
            nkey_seed_file: Some(file),
            ..NatsAuth::default()
        };
        assert!(two.check().unwrap_err().to_string().contains("choose one"));
        assert!(NatsAuth::default().check().is_ok());
        assert!(NatsAuth::default().is_empty());
    }
}
