//! The config stream's serving certificate, kept in a Secret the controller creates itself
//! when it is missing, so the plain manifests apply in one step (no openssl, no cert-manager).
//! An existing Secret is used as it is: a certificate brought by the user is never replaced.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

pub const CERT: &str = "tls.crt";
pub const KEY: &str = "tls.key";
pub const CA: &str = "ca.crt";

/// PEM text of a serving certificate, its key and the CA the data planes trust.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Material {
    pub cert: String,
    pub key: String,
    pub ca: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot issue the serving certificate: {0}")]
    Issue(#[from] rcgen::Error),
    #[error("Secret {namespace}/{name}: {reason}")]
    Unusable {
        namespace: String,
        name: String,
        reason: String,
    },
    #[error("Secret {namespace}/{name}: {source}")]
    Api {
        namespace: String,
        name: String,
        source: kube::Error,
    },
}

/// What an existing Secret (or its absence) means for start-up.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    Use(Material),
    Missing,
    /// It exists but lacks a key: left alone (it may be someone's half-done setup).
    Unusable(String),
}

pub fn inspect(secret: Option<&Secret>) -> Found {
    let Some(secret) = secret else {
        return Found::Missing;
    };
    let data = secret.data.as_ref();
    let text = |key: &str| -> Result<String, String> {
        let bytes = data
            .and_then(|d| d.get(key))
            .filter(|b| !b.0.is_empty())
            .ok_or_else(|| format!("no {key}"))?;
        String::from_utf8(bytes.0.clone()).map_err(|_| format!("{key} is not PEM text"))
    };
    match (text(CERT), text(KEY), text(CA)) {
        (Ok(cert), Ok(key), Ok(ca)) => Found::Use(Material { cert, key, ca }),
        (c, k, a) => {
            let missing: Vec<String> = [c, k, a].into_iter().filter_map(Result::err).collect();
            Found::Unusable(missing.join(", "))
        }
    }
}

/// The names the data planes dial, as the chart's generated certificate has them.
pub fn dns_names(service: &str, namespace: &str, cluster_domain: &str) -> Vec<String> {
    let host = format!("{service}.{namespace}.svc");
    vec![
        host.clone(),
        format!("{host}.{cluster_domain}"),
        format!("{service}.{namespace}"),
        service.to_string(),
    ]
}

/// A new CA (ECDSA P-256) and a serving certificate it signs: rustls refuses a self-signed
/// certificate as the server's own, and the data planes pin the CA, not the leaf.
pub fn issue(names: &[String], namespace: &str, validity: Duration) -> Result<Material, Error> {
    let now = time::OffsetDateTime::now_utc();
    // An hour of slack for nodes whose clocks run behind the controller's.
    let not_before = now - time::Duration::hours(1);
    let not_after = now + time::Duration::seconds(validity.as_secs().min(i64::MAX as u64) as i64);

    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name = common_name(&format!("halo-controller-ca.{namespace}"));
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    (ca.not_before, ca.not_after) = (not_before, not_after);
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let mut leaf = CertificateParams::new(names.to_vec())?;
    leaf.distinguished_name = common_name(names.first().map_or("halo-controller", String::as_str));
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    (leaf.not_before, leaf.not_after) = (not_before, not_after);
    let leaf_key = KeyPair::generate()?;
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer)?;
    Ok(Material {
        cert: leaf_cert.pem(),
        key: leaf_key.serialize_pem(),
        ca: ca_cert.pem(),
    })
}

fn common_name(name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn
}

pub fn secret(namespace: &str, name: &str, material: &Material) -> Secret {
    let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([
                ("app.kubernetes.io/name".to_string(), "halo".to_string()),
                (
                    "app.kubernetes.io/component".to_string(),
                    "controller".to_string(),
                ),
                (
                    "app.kubernetes.io/managed-by".to_string(),
                    "halo-controller".to_string(),
                ),
            ])),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".to_string()),
        data: Some(BTreeMap::from([
            (CERT.to_string(), bytes(&material.cert)),
            (KEY.to_string(), bytes(&material.key)),
            (CA.to_string(), bytes(&material.ca)),
        ])),
        ..Default::default()
    }
}

/// The Secret's material, after creating the Secret if it does not exist. Replicas starting
/// together race on the create: the loser reads what the winner wrote.
pub async fn ensure(
    client: kube::Client,
    namespace: &str,
    name: &str,
    names: &[String],
    validity: Duration,
) -> Result<Material, Error> {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let api_error = |source| Error::Api {
        namespace: namespace.to_string(),
        name: name.to_string(),
        source,
    };
    let unusable = |reason: String| Error::Unusable {
        namespace: namespace.to_string(),
        name: name.to_string(),
        reason,
    };
    for _ in 0..2 {
        let existing = api.get_opt(name).await.map_err(api_error)?;
        match inspect(existing.as_ref()) {
            Found::Use(material) => {
                tracing::info!(
                    namespace,
                    name,
                    "serving certificate from the existing Secret"
                );
                return Ok(material);
            }
            Found::Unusable(reason) => return Err(unusable(reason)),
            Found::Missing => {}
        }
        let material = issue(names, namespace, validity)?;
        match api
            .create(&PostParams::default(), &secret(namespace, name, &material))
            .await
        {
            Ok(_) => {
                tracing::info!(
                    namespace,
                    name,
                    ?names,
                    "created the serving certificate's Secret"
                );
                return Ok(material);
            }
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(api_error(e)),
        }
    }
    Err(unusable(
        "created by someone else and gone again: retry".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(keys: &[(&str, &str)]) -> Secret {
        Secret {
            data: Some(
                keys.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn an_existing_secret_is_used_or_left_alone() {
        let full = with(&[(CERT, "c"), (KEY, "k"), (CA, "a")]);
        let cases: &[(Option<&Secret>, Found)] = &[
            (None, Found::Missing),
            (
                Some(&full),
                Found::Use(Material {
                    cert: "c".into(),
                    key: "k".into(),
                    ca: "a".into(),
                }),
            ),
            (
                Some(&with(&[(CERT, "c"), (KEY, "k")])),
                Found::Unusable("no ca.crt".into()),
            ),
            (
                Some(&with(&[(CERT, ""), (CA, "a")])),
                Found::Unusable("no tls.crt, no tls.key".into()),
            ),
            (
                Some(&Secret::default()),
                Found::Unusable("no tls.crt, no tls.key, no ca.crt".into()),
            ),
        ];
        for (secret, want) in cases {
            assert_eq!(&inspect(*secret), want, "{secret:?}");
        }
    }

    #[test]
    fn names_match_the_charts_certificate() {
        assert_eq!(
            dns_names("halo-controller", "halo-system", "cluster.local"),
            [
                "halo-controller.halo-system.svc",
                "halo-controller.halo-system.svc.cluster.local",
                "halo-controller.halo-system",
                "halo-controller",
            ]
        );
    }

    #[test]
    fn the_issued_certificate_verifies_against_its_ca_for_every_name() {
        use tokio_rustls::rustls::client::WebPkiServerVerifier;
        use tokio_rustls::rustls::client::danger::ServerCertVerifier;
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
        use tokio_rustls::rustls::{RootCertStore, crypto::ring};

        let names = dns_names("halo-controller", "ns1", "cluster.local");
        let m = issue(&names, "ns1", Duration::from_secs(86_400)).expect("issue");
        let ca = CertificateDer::from_pem_slice(m.ca.as_bytes()).expect("ca");
        let leaf = CertificateDer::from_pem_slice(m.cert.as_bytes()).expect("leaf");
        let mut roots = RootCertStore::empty();
        roots.add(ca).expect("root");
        let verifier = WebPkiServerVerifier::builder_with_provider(
            roots.into(),
            ring::default_provider().into(),
        )
        .build()
        .expect("verifier");
        for name in names
            .iter()
            .chain(std::iter::once(&"other.ns1.svc".to_string()))
        {
            let server = ServerName::try_from(name.clone()).expect("name");
            let verdict = verifier.verify_server_cert(&leaf, &[], &server, &[], UnixTime::now());
            assert_eq!(
                verdict.is_ok(),
                name != "other.ns1.svc",
                "{name}: {verdict:?}"
            );
        }
        // The key belongs to the certificate (the acceptor checks that too).
        crate::tls::acceptor_from_pem(m.cert.as_bytes(), m.key.as_bytes()).expect("acceptor");
    }
}
