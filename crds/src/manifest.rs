//! Multi-document YAML manifests of Halo objects (standalone mode reads these), with
//! errors that name the document, the object and the field.

use std::fmt;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{API_VERSION, LoadBalancer, VirtualIP, validate};

#[derive(Clone, Debug, Default)]
pub struct Manifests {
    pub virtual_ips: Vec<VirtualIP>,
    pub load_balancers: Vec<LoadBalancer>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("YAML: {0}")]
    Syntax(String),
    #[error("document {index}{object}: {field}: {message}")]
    Document {
        /// 1-based position in the file.
        index: usize,
        object: DocumentLabel,
        field: String,
        message: String,
    },
}

/// ` (Kind namespace/name)` when the document says what it is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DocumentLabel(pub Option<String>);

impl fmt::Display for DocumentLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(label) => write!(f, " ({label})"),
            None => Ok(()),
        }
    }
}

/// Parses every document and holds each object to the CRD schema and its CEL rules (as the
/// API server would); all errors are returned, not just the first.
pub fn parse(text: &str) -> Result<Manifests, Vec<ManifestError>> {
    parse_with(text, Check::Schema)
}

/// Parses the documents into typed objects without the schema checks: for exercising
/// `render`'s own checks, which must hold for objects that skipped validation.
pub fn parse_unvalidated(text: &str) -> Result<Manifests, Vec<ManifestError>> {
    parse_with(text, Check::ShapeOnly)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Check {
    Schema,
    ShapeOnly,
}

fn parse_with(text: &str, check: Check) -> Result<Manifests, Vec<ManifestError>> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text)
        .map_err(|e| vec![ManifestError::Syntax(e.to_string())])?;
    let mut out = Manifests::default();
    let mut errors = Vec::new();
    for (i, doc) in docs.into_iter().enumerate() {
        if let Err(e) = parse_document(i + 1, doc, check, &mut out) {
            errors.push(e);
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn parse_document(
    index: usize,
    mut doc: Value,
    check: Check,
    out: &mut Manifests,
) -> Result<(), ManifestError> {
    let str_at =
        |doc: &Value, ptr: &str| doc.pointer(ptr).and_then(Value::as_str).map(str::to_string);
    let kind = str_at(&doc, "/kind");
    let name = str_at(&doc, "/metadata/name");
    let namespace = str_at(&doc, "/metadata/namespace").or_else(|| Some("default".into()));
    let label = DocumentLabel(kind.as_ref().map(|k| match (&namespace, &name) {
        (Some(ns), Some(n)) if k == "LoadBalancer" => format!("{k} {ns}/{n}"),
        (_, Some(n)) => format!("{k} {n}"),
        _ => k.clone(),
    }));
    let fail = |field: &str, message: String| ManifestError::Document {
        index,
        object: label.clone(),
        field: field.to_string(),
        message,
    };
    if !doc.is_object() {
        return Err(fail(
            "(document)",
            "expected a mapping with apiVersion, kind, metadata and spec".into(),
        ));
    }
    match str_at(&doc, "/apiVersion") {
        Some(v) if v == API_VERSION => {}
        Some(v) => {
            return Err(fail(
                "apiVersion",
                format!("{v:?} is not served here; expected {API_VERSION}"),
            ));
        }
        None => return Err(fail("apiVersion", "missing".into())),
    }
    if name.as_deref().is_none_or(str::is_empty) {
        return Err(fail("metadata.name", "missing".into()));
    }
    match kind.as_deref() {
        Some("VirtualIP") => {
            let object = typed(&doc).map_err(|(f, m)| fail(&f, m))?;
            if check == Check::Schema {
                schema_checked(validate::virtual_ip(&object)).map_err(|(f, m)| fail(&f, m))?;
            }
            out.virtual_ips.push(object);
        }
        Some("LoadBalancer") => {
            if let Some(meta) = doc.pointer_mut("/metadata").and_then(Value::as_object_mut) {
                meta.entry("namespace")
                    .or_insert_with(|| Value::String("default".into()));
            }
            let object = typed(&doc).map_err(|(f, m)| fail(&f, m))?;
            if check == Check::Schema {
                schema_checked(validate::load_balancer(&object)).map_err(|(f, m)| fail(&f, m))?;
            }
            out.load_balancers.push(object);
        }
        Some(other) => {
            return Err(fail(
                "kind",
                format!(
                    "{other:?} is not supported in a manifest file; expected VirtualIP or LoadBalancer"
                ),
            ));
        }
        None => return Err(fail("kind", "missing".into())),
    }
    Ok(())
}

/// The first violation of the CRD's schema and CEL rules, as `(field, message)`: a file is
/// held to exactly what the API server would accept.
fn schema_checked(violations: Vec<validate::Violation>) -> Result<(), (String, String)> {
    match violations.into_iter().next() {
        Some(v) => Err((v.field, v.message)),
        None => Ok(()),
    }
}

/// Deserializes with the failing field's path, and refuses fields the type does not know
/// (as `kubectl apply` does with strict field validation) so a typo is never ignored.
fn typed<T: DeserializeOwned + serde::Serialize>(doc: &Value) -> Result<T, (String, String)> {
    let object: T = serde_path_to_error::deserialize(doc.clone()).map_err(|e| {
        let path = e.path().to_string();
        (
            if path == "." {
                "(document)".into()
            } else {
                path
            },
            e.into_inner().to_string(),
        )
    })?;
    let known =
        serde_json::to_value(&object).map_err(|e| ("(document)".to_string(), e.to_string()))?;
    if let Some(path) = unknown_field(doc, &known, String::new()) {
        return Err((path, "unknown field".into()));
    }
    Ok(object)
}

fn unknown_field(given: &Value, known: &Value, path: String) -> Option<String> {
    match (given, known) {
        (Value::Object(g), Value::Object(k)) => g.iter().find_map(|(key, value)| {
            let at = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            match k.get(key) {
                None if !value.is_null() => Some(at),
                None => None,
                Some(kv) => unknown_field(value, kv, at),
            }
        }),
        (Value::Array(g), Value::Array(k)) => g
            .iter()
            .zip(k)
            .enumerate()
            .find_map(|(i, (gv, kv))| unknown_field(gv, kv, format!("{path}[{i}]"))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
apiVersion: halo.dev/v1alpha1
kind: VirtualIP
metadata: {name: web}
spec:
  addresses: ["127.0.0.1/8"]
  vrrp: {enabled: false}
---
apiVersion: halo.dev/v1alpha1
kind: LoadBalancer
metadata: {name: web}
spec:
  virtualIP: web
  listeners:
    - name: http
      port: 8080
      protocol: HTTP
      backends:
        - {address: 127.0.0.1, port: 9001}
"#;

    #[test]
    fn parses_both_kinds_and_defaults_the_namespace() {
        let m = parse(GOOD).expect("valid manifests");
        assert_eq!(m.virtual_ips.len(), 1);
        assert_eq!(m.load_balancers.len(), 1);
        assert_eq!(
            m.load_balancers[0].metadata.namespace.as_deref(),
            Some("default")
        );
        assert!(!m.virtual_ips[0].spec.vrrp.enabled);
    }

    fn only_error(text: &str) -> String {
        match parse(text) {
            Ok(_) => panic!("expected an error"),
            Err(errors) => {
                assert_eq!(errors.len(), 1, "{errors:?}");
                errors[0].to_string()
            }
        }
    }

    #[test]
    fn type_error_names_document_object_and_field() {
        let text = GOOD.replace("port: 8080", "port: eighty");
        let e = only_error(&text);
        assert!(
            e.starts_with("document 2 (LoadBalancer default/web): spec.listeners[0].port:"),
            "{e}"
        );
    }

    #[test]
    fn unknown_field_is_refused() {
        let text = GOOD.replace(
            "protocol: HTTP",
            "protocol: HTTP\n      helthCheck: {type: TCP}",
        );
        let e = only_error(&text);
        assert_eq!(
            e,
            "document 2 (LoadBalancer default/web): spec.listeners[0].helthCheck: unknown field"
        );
    }

    #[test]
    fn wrong_kind_and_api_version_are_refused() {
        let e = only_error(&GOOD.replace("kind: VirtualIP", "kind: Service"));
        assert!(e.contains("document 1 (Service web): kind:"), "{e}");
        let e =
            only_error(&GOOD.replace("halo.dev/v1alpha1\nkind: VirtualIP", "v1\nkind: VirtualIP"));
        assert!(e.contains("document 1 (VirtualIP web): apiVersion:"), "{e}");
    }

    #[test]
    fn schema_limits_are_enforced_with_the_field_path() {
        let mut listeners = String::new();
        for i in 0..100 {
            listeners.push_str(&format!(
                "    - {{name: l{i}, port: {}, protocol: TCP, backends: []}}\n",
                1000 + i
            ));
        }
        let text = GOOD.replace("  listeners:\n", &format!("  listeners:\n{listeners}"));
        assert_eq!(
            only_error(&text),
            "document 2 (LoadBalancer default/web): spec.listeners: must have at most 64 items (has 101)"
        );
        let e = only_error(&GOOD.replace("name: http", "name: Http_1"));
        assert!(
            e.contains("spec.listeners[0].name: \"Http_1\" does not match"),
            "{e}"
        );
        let e =
            only_error(&GOOD.replace("port: 9001}", "port: 9001}\n        - {address: 127.0.0.1}"));
        assert!(
            e.ends_with("spec.listeners[0].backends[1]: a static address needs a port"),
            "{e}"
        );
    }

    #[test]
    fn syntax_error_is_reported() {
        assert!(matches!(
            parse("a: [1, 2").unwrap_err()[0],
            ManifestError::Syntax(_)
        ));
    }

    #[test]
    fn every_bad_document_is_reported() {
        let text = GOOD
            .replace("port: 8080", "port: x")
            .replace("vrrp: {enabled: false}", "vrrp: {enabled: nope}");
        assert_eq!(parse(&text).unwrap_err().len(), 2);
    }
}
