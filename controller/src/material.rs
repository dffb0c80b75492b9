//! TLS material from Secrets: which Secrets the LoadBalancers name, whether each holds a
//! usable certificate and key or CA bundle, and the last valid contents of each, so the
//! nodes keep serving while a bad update is reported on the LoadBalancer.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use halo_crds::LoadBalancer;
use halo_crds::load_balancer::Upstream;
use halo_crds::render::{Material, MaterialRef, ObjectRef, load_balancer_ref};
use kube::ResourceExt;
use tokio_rustls::rustls::RootCertStore;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{Error as TlsError, InconsistentKeys};

pub const TLS_CERT: &str = "tls.crt";
pub const TLS_KEY: &str = "tls.key";
pub const CA_CERT: &str = "ca.crt";
/// The Secret type certificates must have, and the field selector of its watch.
pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";
/// Marks a Secret of another type (e.g. Opaque with only `ca.crt`) as a CA bundle.
pub const CA_BUNDLE_LABEL: &str = "halo.dev/ca-bundle";

/// The keys of a Secret's `data`, decoded.
pub type SecretData = BTreeMap<String, Vec<u8>>;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SecretKey {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl SecretKey {
    pub fn material_ref(&self) -> MaterialRef {
        MaterialRef::Secret {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }
}

/// What a reference needs from its Secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Usage {
    /// `tls.crt` and `tls.key` of a `kubernetes.io/tls` Secret, served to clients.
    Certificate,
    /// `ca.crt`, the CAs a backend's certificate must chain to.
    Ca,
}

/// One field of a LoadBalancer that names a Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    pub object: ObjectRef,
    pub field: String,
    pub secret: SecretKey,
    pub usage: Usage,
}

/// Why a Secret cannot be used; the LoadBalancer's Ready reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    SecretNotFound,
    InvalidCertificate,
    InvalidKey,
    CertificateKeyMismatch,
    InvalidCA,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SecretNotFound => "SecretNotFound",
            Self::InvalidCertificate => "InvalidCertificate",
            Self::InvalidKey => "InvalidKey",
            Self::CertificateKeyMismatch => "CertificateKeyMismatch",
            Self::InvalidCA => "InvalidCA",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    pub reason: Reason,
    pub message: String,
}

fn invalid(reason: Reason, message: impl Into<String>) -> Invalid {
    Invalid {
        reason,
        message: message.into(),
    }
}

/// A problem of one referencing field, for the LoadBalancer's status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretProblem {
    pub field: String,
    /// The Secret the field names.
    pub secret: SecretKey,
    pub reason: Reason,
    pub message: String,
    /// The nodes keep the Secret's last valid contents meanwhile.
    pub kept_previous: bool,
}

impl fmt::Display for SecretProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)?;
        if self.kept_previous {
            write!(f, " (the nodes keep its last valid contents)")?;
        }
        Ok(())
    }
}

fn ca_field(prefix: String, upstream: &Upstream) -> Option<(String, &str, Usage)> {
    let name = upstream.backend_tls.as_ref()?.ca_secret_name.as_deref()?;
    Some((format!("{prefix}.backendTls.caSecretName"), name, Usage::Ca))
}

/// Every Secret the LoadBalancers name, with the field that names it.
pub fn references(lbs: &[Arc<LoadBalancer>]) -> Vec<Reference> {
    let mut out = Vec::new();
    for lb in lbs {
        let namespace = lb.namespace().unwrap_or_default();
        // (field, namespace, name, usage)
        let mut named: Vec<(String, &str, &str, Usage)> = Vec::new();
        for (i, l) in lb.spec.listeners.iter().enumerate() {
            for (j, c) in l.tls.iter().flat_map(|t| t.certificates.iter()).enumerate() {
                if let Some(name) = &c.secret_name {
                    named.push((
                        format!("spec.listeners[{i}].tls.certificates[{j}].secretName"),
                        c.secret_namespace.as_deref().unwrap_or(&namespace),
                        name,
                        Usage::Certificate,
                    ));
                }
            }
            named.extend(
                ca_field(format!("spec.listeners[{i}]"), &l.upstream)
                    .map(|(f, n, u)| (f, namespace.as_str(), n, u)),
            );
        }
        for (k, g) in lb.spec.backend_groups.iter().enumerate() {
            named.extend(
                ca_field(format!("spec.backendGroups[{k}]"), &g.upstream)
                    .map(|(f, n, u)| (f, namespace.as_str(), n, u)),
            );
        }
        let object = load_balancer_ref(lb);
        out.extend(named.into_iter().map(|(field, ns, name, usage)| Reference {
            object: object.clone(),
            field,
            secret: SecretKey {
                namespace: ns.to_string(),
                name: name.to_string(),
            },
            usage,
        }));
    }
    out
}

fn text<'a>(data: &'a SecretData, key: &str, reason: Reason) -> Result<&'a str, Invalid> {
    let bytes = data
        .get(key)
        .ok_or_else(|| invalid(reason, format!("the Secret has no key {key}")))?;
    std::str::from_utf8(bytes).map_err(|_| invalid(reason, format!("{key} is not PEM text")))
}

fn certificates(
    pem: &str,
    key: &str,
    reason: Reason,
) -> Result<Vec<CertificateDer<'static>>, Invalid> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(reason, format!("{key}: {e}")))?;
    if chain.is_empty() {
        return Err(invalid(reason, format!("{key} holds no PEM certificate")));
    }
    Ok(chain)
}

/// A certificate chain and its key: both parse and the key is the certificate's.
fn validate_certificate(data: &SecretData) -> Result<BTreeMap<String, String>, Invalid> {
    let cert_pem = text(data, TLS_CERT, Reason::InvalidCertificate)?;
    let key_pem = text(data, TLS_KEY, Reason::InvalidKey)?;
    let chain = certificates(cert_pem, TLS_CERT, Reason::InvalidCertificate)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| invalid(Reason::InvalidKey, format!("{TLS_KEY}: {e}")))?;
    let signing = ring::default_provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| invalid(Reason::InvalidKey, format!("{TLS_KEY}: {e}")))?;
    match CertifiedKey::new(chain, signing).keys_match() {
        // Keys whose public half the provider cannot tell are let through, as rustls does.
        Ok(()) | Err(TlsError::InconsistentKeys(InconsistentKeys::Unknown)) => {}
        Err(TlsError::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            return Err(invalid(
                Reason::CertificateKeyMismatch,
                format!("{TLS_KEY} is not the key of the certificate in {TLS_CERT}"),
            ));
        }
        Err(e) => {
            return Err(invalid(
                Reason::InvalidCertificate,
                format!("{TLS_CERT}: {e}"),
            ));
        }
    }
    Ok(BTreeMap::from([
        (TLS_CERT.to_string(), cert_pem.to_string()),
        (TLS_KEY.to_string(), key_pem.to_string()),
    ]))
}

/// A CA bundle: at least one certificate, every one usable as a trust anchor.
fn validate_ca(data: &SecretData) -> Result<BTreeMap<String, String>, Invalid> {
    let pem = text(data, CA_CERT, Reason::InvalidCA)?;
    let mut roots = RootCertStore::empty();
    for (i, cert) in certificates(pem, CA_CERT, Reason::InvalidCA)?
        .into_iter()
        .enumerate()
    {
        roots.add(cert).map_err(|e| {
            invalid(
                Reason::InvalidCA,
                format!("{CA_CERT}: certificate {}: {e}", i + 1),
            )
        })?;
    }
    Ok(BTreeMap::from([(CA_CERT.to_string(), pem.to_string())]))
}

/// The keys `usage` needs, as text, once they are checked.
pub fn validate(usage: Usage, data: &SecretData) -> Result<BTreeMap<String, String>, Invalid> {
    match usage {
        Usage::Certificate => validate_certificate(data),
        Usage::Ca => validate_ca(data),
    }
}

fn not_found(secret: &SecretKey, usage: Usage) -> Invalid {
    let message = match usage {
        Usage::Certificate => format!("no Secret {secret} of type {TLS_SECRET_TYPE}"),
        Usage::Ca => format!(
            "no Secret {secret} of type {TLS_SECRET_TYPE} or labelled {CA_BUNDLE_LABEL}=true"
        ),
    };
    invalid(Reason::SecretNotFound, message)
}

/// What one resolve found.
#[derive(Debug, Default)]
pub struct Resolved {
    /// For render: per Secret, the checked keys (current or last valid), or why none.
    pub material: Material,
    /// For status: the referencing fields whose Secret is unusable now.
    pub problems: BTreeMap<ObjectRef, Vec<SecretProblem>>,
    /// Secrets whose state changed since the last resolve (`None`: usable again), to log.
    pub changes: Vec<(SecretKey, Usage, Option<Invalid>)>,
}

/// Keeps, per Secret and usage, the last contents that passed validation.
#[derive(Debug, Default)]
pub struct Resolver {
    last_good: BTreeMap<(SecretKey, Usage), BTreeMap<String, String>>,
    last_state: BTreeMap<(SecretKey, Usage), Option<Reason>>,
}

impl Resolver {
    /// Checks every referenced Secret (`lookup` gives a Secret's data as the watch
    /// holds it, `None`: no such Secret) and forgets Secrets nothing references.
    pub fn resolve(
        &mut self,
        refs: &[Reference],
        lookup: impl Fn(&SecretKey, Usage) -> Option<Arc<SecretData>>,
    ) -> Resolved {
        let wanted: BTreeSet<(SecretKey, Usage)> =
            refs.iter().map(|r| (r.secret.clone(), r.usage)).collect();
        let mut current: BTreeMap<(SecretKey, Usage), Result<(), Invalid>> = BTreeMap::new();
        let mut changes = Vec::new();
        for (secret, usage) in &wanted {
            let checked = match lookup(secret, *usage) {
                Some(data) => validate(*usage, &data),
                None => Err(not_found(secret, *usage)),
            };
            let key = (secret.clone(), *usage);
            let state = checked.as_ref().err().map(|e| e.reason);
            if self.last_state.insert(key.clone(), state) != Some(state) {
                changes.push((secret.clone(), *usage, checked.as_ref().err().cloned()));
            }
            current.insert(
                key.clone(),
                checked.map(|keys| {
                    self.last_good.insert(key, keys);
                }),
            );
        }
        self.last_good.retain(|k, _| wanted.contains(k));
        self.last_state.retain(|k, _| wanted.contains(k));

        // Per Secret: the keys of every usage that has valid contents (now or before);
        // an error only when no usage has any.
        let mut merged: BTreeMap<&SecretKey, (BTreeMap<String, String>, Option<String>)> =
            BTreeMap::new();
        for ((secret, usage), checked) in &current {
            let slot = merged.entry(secret).or_default();
            match (self.last_good.get(&(secret.clone(), *usage)), checked) {
                (Some(keys), _) => slot.0.extend(keys.clone()),
                (None, Err(e)) => {
                    slot.1.get_or_insert_with(|| e.message.clone());
                }
                (None, Ok(())) => {}
            }
        }
        let material: Material = merged
            .into_iter()
            .map(|(secret, (keys, error))| {
                let value = match error {
                    Some(message) if keys.is_empty() => Err(message),
                    _ => Ok(keys),
                };
                (secret.material_ref(), value)
            })
            .collect();

        let mut problems: BTreeMap<ObjectRef, Vec<SecretProblem>> = BTreeMap::new();
        for r in refs {
            if let Some(Err(e)) = current.get(&(r.secret.clone(), r.usage)) {
                problems
                    .entry(r.object.clone())
                    .or_default()
                    .push(SecretProblem {
                        field: r.field.clone(),
                        secret: r.secret.clone(),
                        reason: e.reason,
                        message: e.message.clone(),
                        kept_previous: self.last_good.contains_key(&(r.secret.clone(), r.usage)),
                    });
            }
        }
        Resolved {
            material,
            problems,
            changes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use halo_crds::load_balancer::{
        BackendGroup, BackendTls, CertificateRef, Listener, ListenerTls, Protocol,
    };
    use halo_crds::{LoadBalancerSpec, render::MaterialRef};
    use kube::api::ObjectMeta;

    fn self_signed(name: &str) -> (String, String) {
        let c = rcgen::generate_simple_self_signed(vec![name.to_string()]).expect("cert");
        (c.cert.pem(), c.signing_key.serialize_pem())
    }

    fn tls_data(cert: &str, key: &str) -> SecretData {
        BTreeMap::from([
            (TLS_CERT.to_string(), cert.as_bytes().to_vec()),
            (TLS_KEY.to_string(), key.as_bytes().to_vec()),
        ])
    }

    fn ca_data(pem: &str) -> SecretData {
        BTreeMap::from([(CA_CERT.to_string(), pem.as_bytes().to_vec())])
    }

    fn reason(r: Result<BTreeMap<String, String>, Invalid>) -> Option<Reason> {
        r.err().map(|e| e.reason)
    }

    #[test]
    fn certificate_secrets_are_checked() {
        let (cert, key) = self_signed("web.example");
        let (other_cert, other_key) = self_signed("other.example");
        let garbage = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n";
        let cases: Vec<(&str, SecretData, Option<Reason>)> = vec![
            ("valid", tls_data(&cert, &key), None),
            (
                "chain with an intermediate",
                tls_data(&format!("{cert}{other_cert}"), &key),
                None,
            ),
            (
                "key of another certificate",
                tls_data(&cert, &other_key),
                Some(Reason::CertificateKeyMismatch),
            ),
            (
                "no certificate in tls.crt",
                tls_data("hello", &key),
                Some(Reason::InvalidCertificate),
            ),
            (
                "certificate that is no X.509",
                tls_data(garbage, &key),
                Some(Reason::InvalidCertificate),
            ),
            (
                "no key in tls.key",
                tls_data(&cert, "hello"),
                Some(Reason::InvalidKey),
            ),
            (
                "a certificate as key",
                tls_data(&cert, &cert),
                Some(Reason::InvalidKey),
            ),
            (
                "no tls.key",
                ca_data(&cert)
                    .into_iter()
                    .chain([(TLS_CERT.to_string(), cert.as_bytes().to_vec())])
                    .collect(),
                Some(Reason::InvalidKey),
            ),
            ("empty", SecretData::new(), Some(Reason::InvalidCertificate)),
        ];
        for (what, data, want) in cases {
            assert_eq!(reason(validate(Usage::Certificate, &data)), want, "{what}");
        }
        let ok = validate(Usage::Certificate, &tls_data(&cert, &key)).expect("valid");
        assert_eq!(ok[TLS_CERT], cert);
        assert_eq!(ok[TLS_KEY], key);
    }

    #[test]
    fn ca_secrets_are_checked() {
        let (a, _) = self_signed("ca-a");
        let (b, _) = self_signed("ca-b");
        let garbage = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n";
        let cases: Vec<(&str, SecretData, Option<Reason>)> = vec![
            ("one", ca_data(&a), None),
            ("a bundle", ca_data(&format!("{a}{b}")), None),
            ("no ca.crt", tls_data(&a, "x"), Some(Reason::InvalidCA)),
            ("not PEM", ca_data("hello"), Some(Reason::InvalidCA)),
            (
                "one bad in the bundle",
                ca_data(&format!("{a}{garbage}")),
                Some(Reason::InvalidCA),
            ),
        ];
        for (what, data, want) in cases {
            assert_eq!(reason(validate(Usage::Ca, &data)), want, "{what}");
        }
    }

    fn lb() -> Arc<LoadBalancer> {
        let mut https = Listener::new("https", 443, Protocol::Https, Upstream::default());
        https.tls = Some(ListenerTls {
            certificates: vec![
                CertificateRef {
                    secret_name: Some("web-tls".into()),
                    cert_file: None,
                    key_file: None,
                    secret_namespace: None,
                },
                CertificateRef {
                    secret_name: None,
                    cert_file: Some("/c".into()),
                    key_file: Some("/k".into()),
                    secret_namespace: None,
                },
                CertificateRef {
                    secret_name: Some("api-tls".into()),
                    cert_file: None,
                    key_file: None,
                    secret_namespace: None,
                },
            ],
            ..Default::default()
        });
        https.upstream.backend_tls = Some(BackendTls {
            ca_secret_name: Some("internal-ca".into()),
            ..Default::default()
        });
        let mut lb = LoadBalancer::new(
            "web",
            LoadBalancerSpec {
                virtual_ip: Some("vip".into()),
                addresses: None,
                listeners: vec![https],
                backend_groups: vec![BackendGroup {
                    name: "api".into(),
                    upstream: Upstream {
                        backend_tls: Some(BackendTls {
                            ca_secret_name: Some("internal-ca".into()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                }],
            },
        );
        lb.metadata = ObjectMeta {
            name: Some("web".into()),
            namespace: Some("shop".into()),
            ..Default::default()
        };
        Arc::new(lb)
    }

    fn secret(name: &str) -> SecretKey {
        SecretKey {
            namespace: "shop".into(),
            name: name.into(),
        }
    }

    #[test]
    fn references_name_every_secret_field() {
        let found: Vec<(String, String, Usage)> = references(&[lb()])
            .into_iter()
            .map(|r| (r.field, r.secret.to_string(), r.usage))
            .collect();
        assert_eq!(
            found,
            vec![
                (
                    "spec.listeners[0].tls.certificates[0].secretName".into(),
                    "shop/web-tls".into(),
                    Usage::Certificate
                ),
                (
                    "spec.listeners[0].tls.certificates[2].secretName".into(),
                    "shop/api-tls".into(),
                    Usage::Certificate
                ),
                (
                    "spec.listeners[0].backendTls.caSecretName".into(),
                    "shop/internal-ca".into(),
                    Usage::Ca
                ),
                (
                    "spec.backendGroups[0].backendTls.caSecretName".into(),
                    "shop/internal-ca".into(),
                    Usage::Ca
                ),
            ]
        );
    }

    fn cert_pem(m: &Material, name: &str) -> Result<Option<String>, String> {
        m[&secret(name).material_ref()]
            .clone()
            .map(|keys| keys.get(TLS_CERT).cloned())
    }

    #[test]
    fn the_last_valid_contents_keep_serving_while_the_problem_is_reported() {
        let (cert1, key1) = self_signed("v1");
        let (cert2, key2) = self_signed("v2");
        let (ca, _) = self_signed("ca");
        let refs = references(&[lb()]);
        let mut store: BTreeMap<String, SecretData> = BTreeMap::from([
            ("web-tls".to_string(), tls_data(&cert1, &key1)),
            ("internal-ca".to_string(), ca_data(&ca)),
        ]);
        let mut resolver = Resolver::default();
        let mut run = |store: &BTreeMap<String, SecretData>| {
            resolver.resolve(&refs, |k, _| store.get(&k.name).cloned().map(Arc::new))
        };
        let object = load_balancer_ref(&lb());
        let summary = |r: &Resolved| -> Vec<(String, Reason, bool)> {
            r.problems
                .get(&object)
                .into_iter()
                .flatten()
                .map(|p| (p.field.clone(), p.reason, p.kept_previous))
                .collect()
        };

        // api-tls never existed: an error for render, a problem for status.
        let r = run(&store);
        assert_eq!(cert_pem(&r.material, "web-tls"), Ok(Some(cert1.clone())));
        assert!(cert_pem(&r.material, "api-tls").is_err());
        assert_eq!(
            r.material[&secret("internal-ca").material_ref()]
                .as_ref()
                .map(|k| k.contains_key(CA_CERT)),
            Ok(true)
        );
        assert_eq!(
            summary(&r),
            [(
                "spec.listeners[0].tls.certificates[2].secretName".to_string(),
                Reason::SecretNotFound,
                false
            )]
        );
        assert_eq!(
            r.changes.len(),
            3,
            "first sight of every Secret is a change"
        );

        // A rotation is taken; a broken update keeps the rotated contents.
        store.insert("web-tls".into(), tls_data(&cert2, &key2));
        store.insert("api-tls".into(), tls_data(&cert2, &key2));
        let r = run(&store);
        assert_eq!(cert_pem(&r.material, "web-tls"), Ok(Some(cert2.clone())));
        assert!(summary(&r).is_empty());
        store.insert("web-tls".into(), tls_data(&cert1, &key2));
        let r = run(&store);
        assert_eq!(cert_pem(&r.material, "web-tls"), Ok(Some(cert2.clone())));
        assert_eq!(
            summary(&r),
            [(
                "spec.listeners[0].tls.certificates[0].secretName".to_string(),
                Reason::CertificateKeyMismatch,
                true
            )]
        );
        assert_eq!(r.changes.len(), 1);
        // Nothing changed: nothing to log again.
        assert!(run(&store).changes.is_empty());
        // Deleted: still the last valid contents, now reported as not found.
        store.remove("web-tls");
        let r = run(&store);
        assert_eq!(cert_pem(&r.material, "web-tls"), Ok(Some(cert2.clone())));
        assert_eq!(summary(&r)[0].1, Reason::SecretNotFound);

        // No longer referenced: forgotten, so a later reference starts afresh.
        let none: Vec<Reference> = Vec::new();
        assert!(resolver.resolve(&none, |_, _| None).material.is_empty());
        let r = resolver.resolve(&refs, |k, _| store.get(&k.name).cloned().map(Arc::new));
        assert!(cert_pem(&r.material, "web-tls").is_err());
        assert!(matches!(
            r.material.get(&MaterialRef::Secret {
                namespace: "shop".into(),
                name: "web-tls".into()
            }),
            Some(Err(_))
        ));
    }
}
