//! The API server's checks, for objects that never pass through one (standalone files): the
//! limits of the generated CRD schema (`maxItems`, `maxLength`, ranges, patterns, enums) read
//! from that schema itself, and a Rust twin of every `x-kubernetes-validations` CEL rule.
//! One validation for both sources; the controller can call it too.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::OnceLock;

use kube::CustomResourceExt;
use regex::Regex;
use serde::Serialize;
use serde_json::Value;

use crate::duration::DURATION_PATTERN;
use crate::{LoadBalancer, VirtualIP, VirtualIPPool};

/// One failed check: the field (`spec.listeners[3].name`) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub field: String,
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// A CRD's `openAPIV3Schema` with its patterns compiled.
pub struct Schema {
    root: Value,
    patterns: BTreeMap<String, Regex>,
}

impl Schema {
    /// Compiles every `pattern` in `root`; a pattern that does not compile is an error.
    pub fn new(root: Value) -> Result<Self, regex::Error> {
        let mut patterns = BTreeMap::new();
        collect_patterns(&root, &mut patterns)?;
        Ok(Self { root, patterns })
    }
}

fn collect_patterns(node: &Value, out: &mut BTreeMap<String, Regex>) -> Result<(), regex::Error> {
    match node {
        Value::Object(map) => {
            if let Some(Value::String(p)) = map.get("pattern") {
                out.insert(p.clone(), Regex::new(p)?);
            }
            map.values().try_for_each(|v| collect_patterns(v, out))
        }
        Value::Array(items) => items.iter().try_for_each(|v| collect_patterns(v, out)),
        _ => Ok(()),
    }
}

/// A VirtualIP, checked as the API server would check it.
pub fn virtual_ip(object: &VirtualIP) -> Vec<Violation> {
    static SCHEMA: OnceLock<Option<Schema>> = OnceLock::new();
    checked(&SCHEMA, schema_of::<VirtualIP>, object)
}

/// A LoadBalancer, checked as the API server would check it.
pub fn load_balancer(object: &LoadBalancer) -> Vec<Violation> {
    static SCHEMA: OnceLock<Option<Schema>> = OnceLock::new();
    checked(&SCHEMA, schema_of::<LoadBalancer>, object)
}

/// A VirtualIPPool, checked as the API server would check it.
pub fn virtual_ip_pool(object: &VirtualIPPool) -> Vec<Violation> {
    static SCHEMA: OnceLock<Option<Schema>> = OnceLock::new();
    checked(&SCHEMA, schema_of::<VirtualIPPool>, object)
}

fn checked<T: Serialize>(
    cell: &OnceLock<Option<Schema>>,
    make: fn() -> Option<Schema>,
    object: &T,
) -> Vec<Violation> {
    let Some(schema) = cell.get_or_init(make) else {
        return vec![violation("(schema)", "the built-in schema is unusable")];
    };
    match serde_json::to_value(object) {
        Ok(value) => check(schema, &value),
        Err(e) => vec![violation("(document)", &e.to_string())],
    }
}

/// The `openAPIV3Schema` of the CRD generated from `K`'s Rust type.
pub fn schema_of<K: CustomResourceExt>() -> Option<Schema> {
    let crd = K::crd();
    let version = crd.spec.versions.first()?;
    let props = version.schema.as_ref()?.open_api_v3_schema.as_ref()?;
    Schema::new(serde_json::to_value(props).ok()?).ok()
}

/// Every violation of `schema` in `instance` (pure).
pub fn check(schema: &Schema, instance: &Value) -> Vec<Violation> {
    let mut out = Vec::new();
    walk(schema, &schema.root, instance, "", &mut out);
    out
}

fn walk(schema: &Schema, node: &Value, value: &Value, path: &str, out: &mut Vec<Violation>) {
    if value.is_null() {
        return;
    }
    limits(schema, node, value, path, out);
    for rule in node
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let text = rule.get("rule").and_then(Value::as_str).unwrap_or_default();
        if cel_rule(text).is_some_and(|holds| !holds(value)) {
            let message = rule.get("message").and_then(Value::as_str).unwrap_or(text);
            out.push(violation(shown(path), message));
        }
    }
    match value {
        Value::Object(map) => {
            let props = node.get("properties").and_then(Value::as_object);
            let extra = node.get("additionalProperties").filter(|v| v.is_object());
            for (key, child) in map {
                if let Some(sub) = props.and_then(|p| p.get(key)).or(extra) {
                    walk(schema, sub, child, &join(path, key), out);
                }
            }
        }
        Value::Array(items) => {
            if let Some(sub) = node.get("items") {
                for (i, child) in items.iter().enumerate() {
                    walk(schema, sub, child, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

fn limits(schema: &Schema, node: &Value, value: &Value, path: &str, out: &mut Vec<Violation>) {
    let num = |key: &str| node.get(key).and_then(Value::as_f64);
    let mut fail = |message: String| out.push(violation(shown(path), &message));
    if let Value::Array(items) = value {
        let n = items.len();
        if let Some(max) = num("maxItems").filter(|m| n as f64 > *m) {
            fail(format!("must have at most {max} items (has {n})"));
        }
        if let Some(min) = num("minItems").filter(|m| (n as f64) < *m) {
            fail(format!("must have at least {min} items (has {n})"));
        }
    }
    if let Value::String(text) = value {
        let n = text.chars().count();
        if let Some(max) = num("maxLength").filter(|m| n as f64 > *m) {
            fail(format!("may be at most {max} characters long (is {n})"));
        }
        if let Some(min) = num("minLength").filter(|m| (n as f64) < *m) {
            fail(format!("must be at least {min} characters long (is {n})"));
        }
        if let Some(Value::String(p)) = node.get("pattern")
            && schema.patterns.get(p).is_some_and(|re| !re.is_match(text))
        {
            fail(pattern_message(text, p));
        }
    }
    if let Some(n) = value.as_f64() {
        if let Some(max) = num("maximum").filter(|m| n > *m) {
            fail(format!("must be at most {max} (is {n})"));
        }
        if let Some(min) = num("minimum").filter(|m| n < *m) {
            fail(format!("must be at least {min} (is {n})"));
        }
    }
    if let Some(allowed) = node.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        fail(format!(
            "{value} is not one of {}",
            Value::Array(allowed.clone())
        ));
    }
}

/// Durations are named as such (the same words `duration::parse` uses); other patterns
/// are shown.
fn pattern_message(text: &str, pattern: &str) -> String {
    match crate::duration::parse(text) {
        Err(e) if pattern == DURATION_PATTERN => e.to_string(),
        _ => format!("{text:?} does not match {pattern}"),
    }
}

fn violation(field: &str, message: &str) -> Violation {
    Violation {
        field: field.to_string(),
        message: message.to_string(),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn shown(path: &str) -> &str {
    if path.is_empty() { "(document)" } else { path }
}

/// The Rust twin of a CEL rule of the generated schemas, by its exact text. `None`: a rule
/// this table does not know (a test makes sure every rule in the schemas is known).
pub fn cel_rule(rule: &str) -> Option<fn(&Value) -> bool> {
    let f: fn(&Value) -> bool = match rule {
        "has(self.virtualIP) != has(self.addresses)" => {
            |v| has(v, "virtualIP") != has(v, "addresses")
        }
        "self.all(a, isIP(a))" => |v| all_str(v, is_ip),
        "isIP(self)" => |v| v.as_str().is_some_and(is_ip),
        "self.all(c, isCIDR(c))" => |v| all_str(v, is_cidr),
        "self.all(r, r.indexOf('-') > 0 && isIP(r.substring(0, r.indexOf('-'))) && isIP(r.substring(r.indexOf('-') + 1)) && ip(r.substring(0, r.indexOf('-'))).family() == ip(r.substring(r.indexOf('-') + 1)).family())" => {
            |v| all_str(v, |r| ip_range(r, true))
        }
        "self.all(r, isIP(r) || isCIDR(r) || (r.indexOf('-') > 0 && isIP(r.substring(0, r.indexOf('-'))) && isIP(r.substring(r.indexOf('-') + 1))))" => {
            |v| all_str(v, |r| is_ip(r) || is_cidr(r) || ip_range(r, false))
        }
        "size(self.cidrs) + (has(self.ranges) ? size(self.ranges) : 0) > 0" => |v| {
            let len = |k: &str| v.get(k).and_then(Value::as_array).map_or(0, Vec::len);
            len("cidrs") + len("ranges") > 0
        },
        "self.all(a, isCIDR(a) || isIP(a))" => |v| all_str(v, |a| is_cidr(a) || is_ip(a)),
        "self.all(l, self.exists_one(m, m.name == l.name))" => |v| unique(v, "name"),
        "self.all(l, self.exists_one(m, m.port == l.port))" => |v| unique(v, "port"),
        "self.all(g, self.exists_one(h, h.name == g.name))" => |v| unique(v, "name"),
        "self.all(i, self.exists_one(j, j.name == i.name))" => |v| unique(v, "name"),
        "self.all(c, self.exists_one(d, d.name == c.name))" => |v| unique(v, "name"),
        "[has(self.http), has(self.tcp), has(self.exec)].filter(x, x).size() == 1" => {
            |v| ["http", "tcp", "exec"].iter().filter(|k| has(v, k)).count() == 1
        }
        "self.startsWith('http://')" => |v| v.as_str().is_some_and(|s| s.starts_with("http://")),
        "self.startsWith('/')" => |v| v.as_str().is_some_and(|s| s.starts_with('/')),
        "self.type == 'Cookie' || !has(self.cookie)" => {
            |v| text(v, "type") == Some("Cookie") || !has(v, "cookie")
        }
        "has(self.secretName) != (has(self.certFile) && has(self.keyFile))" => {
            |v| has(v, "secretName") != (has(v, "certFile") && has(v, "keyFile"))
        }
        "self.protocol in ['HTTP', 'HTTPS'] || !has(self.forwardedHeaders) || !self.forwardedHeaders" => {
            |v| {
                matches!(text(v, "protocol"), Some("HTTP" | "HTTPS"))
                    || !flag(v, "forwardedHeaders")
            }
        }
        "self.protocol == 'HTTPS' ? has(self.tls) : !has(self.tls)" => {
            |v| (text(v, "protocol") == Some("HTTPS")) == has(v, "tls")
        }
        "!has(self.forwarded) || (self.protocol in ['HTTP', 'HTTPS'] && !has(self.forwardedHeaders))" => {
            |v| {
                !has(v, "forwarded")
                    || (matches!(text(v, "protocol"), Some("HTTP" | "HTTPS"))
                        && !has(v, "forwardedHeaders"))
            }
        }
        "self.protocol == 'HTTP' || !has(self.http2PriorKnowledge) || !self.http2PriorKnowledge" => {
            |v| text(v, "protocol") == Some("HTTP") || !flag(v, "http2PriorKnowledge")
        }
        "self.protocol != 'TCP' || !has(self.routes) || size(self.routes) == 0" => {
            |v| text(v, "protocol") != Some("TCP") || size(v, "routes") == 0
        }
        "!(has(self.caSecretName) && has(self.caFile))" => {
            |v| !(has(v, "caSecretName") && has(v, "caFile"))
        }
        "has(self.caSecretName) || has(self.caFile) || (has(self.insecureSkipVerify) && self.insecureSkipVerify)" => {
            |v| has(v, "caSecretName") || has(v, "caFile") || flag(v, "insecureSkipVerify")
        }
        "!(has(self.insecureSkipVerify) && self.insecureSkipVerify) || !(has(self.caSecretName) || has(self.caFile))" => {
            |v| !flag(v, "insecureSkipVerify") || !(has(v, "caSecretName") || has(v, "caFile"))
        }
        "self.all(p, p in ['h2', 'http/1.1'])" => |v| all_str(v, |p| p == "h2" || p == "http/1.1"),
        "!has(self.filters) || !self.filters.exists(f, f.type == 'RequestRedirect') || ((!has(self.backendRefs) || size(self.backendRefs) == 0) && !has(self.fixedResponse))" => {
            |v| {
                let redirect = v
                    .get("filters")
                    .and_then(Value::as_array)
                    .is_some_and(|fs| {
                        fs.iter()
                            .any(|f| text(f, "type") == Some("RequestRedirect"))
                    });
                !redirect || (size(v, "backendRefs") == 0 && !has(v, "fixedResponse"))
            }
        }
        "!has(self.fixedResponse) || !has(self.backendRefs) || size(self.backendRefs) == 0" => {
            |v| !has(v, "fixedResponse") || size(v, "backendRefs") == 0
        }
        "(self.type == 'RequestHeaderModifier') == has(self.requestHeaderModifier) && (self.type == 'ResponseHeaderModifier') == has(self.responseHeaderModifier) && (self.type == 'RequestRedirect') == has(self.requestRedirect) && (self.type == 'URLRewrite') == has(self.urlRewrite)" => {
            |v| {
                [
                    ("RequestHeaderModifier", "requestHeaderModifier"),
                    ("ResponseHeaderModifier", "responseHeaderModifier"),
                    ("RequestRedirect", "requestRedirect"),
                    ("URLRewrite", "urlRewrite"),
                ]
                .iter()
                .all(|(kind, field)| (text(v, "type") == Some(kind)) == has(v, field))
            }
        }
        "self in [301, 302, 303, 307, 308]" => |v| {
            v.as_u64()
                .is_some_and(|s| [301, 302, 303, 307, 308].contains(&s))
        },
        "self.type == 'ReplaceFullPath' ? (has(self.replaceFullPath) && !has(self.replacePrefixMatch)) : (has(self.replacePrefixMatch) && !has(self.replaceFullPath))" => {
            |v| {
                let (mine, other) = if text(v, "type") == Some("ReplaceFullPath") {
                    ("replaceFullPath", "replacePrefixMatch")
                } else {
                    ("replacePrefixMatch", "replaceFullPath")
                };
                has(v, mine) && !has(v, other)
            }
        }
        "has(self.path) == (has(self.target) && self.target == 'File')" => {
            |v| has(v, "path") == (text(v, "target") == Some("File"))
        }
        "has(self.address) != has(self.service)" => |v| has(v, "address") != has(v, "service"),
        "!has(self.address) || has(self.port)" => |v| !has(v, "address") || has(v, "port"),
        "self.type == 'HTTP' || (!has(self.path) && !has(self.expectStatus))" => {
            |v| text(v, "type") == Some("HTTP") || (!has(v, "path") && !has(v, "expectStatus"))
        }
        "!self.vrrp.enabled || !has(self.vrrp.authentication) || self.vrrp.version == 2" => |v| {
            let vrrp = v.get("vrrp").unwrap_or(&Value::Null);
            !flag(vrrp, "enabled")
                || !has(vrrp, "authentication")
                || vrrp.get("version").and_then(Value::as_u64) == Some(2)
        },
        "self.version == 3 || !has(self.advertisementInterval) || self.advertisementInterval.endsWith('s') && !self.advertisementInterval.endsWith('ms')" => {
            |v| {
                v.get("version").and_then(Value::as_u64) == Some(3)
                    || text(v, "advertisementInterval")
                        .is_none_or(|i| i.ends_with('s') && !i.ends_with("ms"))
            }
        }
        "has(self.weight) != (has(self.fault) && self.fault)" => {
            |v| has(v, "weight") != flag(v, "fault")
        }
        "has(self.password) != has(self.secretRef)" => {
            |v| has(v, "password") != has(v, "secretRef")
        }
        _ => return None,
    };
    Some(f)
}

fn has(v: &Value, key: &str) -> bool {
    v.get(key).is_some_and(|x| !x.is_null())
}

/// CEL's `size` of a list field, 0 when absent.
fn size(v: &Value, key: &str) -> usize {
    v.get(key).and_then(Value::as_array).map_or(0, Vec::len)
}

fn flag(v: &Value, key: &str) -> bool {
    v.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn text<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn all_str(v: &Value, f: impl Fn(&str) -> bool) -> bool {
    v.as_array()
        .is_none_or(|items| items.iter().all(|i| i.as_str().is_some_and(&f)))
}

fn unique(v: &Value, key: &str) -> bool {
    let Some(items) = v.as_array() else {
        return true;
    };
    let mut seen = HashSet::new();
    items
        .iter()
        .all(|i| seen.insert(i.get(key).map(Value::to_string).unwrap_or_default()))
}

/// CEL's `isIP`: an IPv4 or IPv6 address, no zone, no IPv4-mapped IPv6.
fn is_ip(text: &str) -> bool {
    match text.parse::<IpAddr>() {
        Ok(IpAddr::V4(_)) => true,
        Ok(IpAddr::V6(v6)) => v6.to_ipv4_mapped().is_none(),
        Err(_) => false,
    }
}

/// CEL's `isCIDR`: an address and a prefix length that fits it.
/// `FIRST-LAST` split at the first `-` (CEL's indexOf), two addresses, optionally of one
/// family.
fn ip_range(text: &str, same_family: bool) -> bool {
    let Some((a, b)) = text.split_once('-') else {
        return false;
    };
    if a.is_empty() || !is_ip(a) || !is_ip(b) {
        return false;
    }
    !same_family || a.contains(':') == b.contains(':')
}

fn is_cidr(text: &str) -> bool {
    let Some((ip, len)) = text.split_once('/') else {
        return false;
    };
    let Ok(len) = len.parse::<u8>() else {
        return false;
    };
    if !is_ip(ip) || len.to_string().len() != text.len() - ip.len() - 1 {
        return false;
    }
    match ip.parse::<IpAddr>() {
        Ok(IpAddr::V4(_)) => len <= 32,
        Ok(IpAddr::V6(_)) => len <= 128,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tiny() -> Schema {
        Schema::new(json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "x-kubernetes-validations": [
                        {"rule": "has(self.address) != has(self.service)", "message": "one of address or service"}
                    ],
                    "properties": {
                        "names": {"type": "array", "maxItems": 2, "minItems": 1,
                                  "items": {"type": "string", "maxLength": 3, "pattern": "^[a-z]+$"}},
                        "port": {"type": "integer", "minimum": 1.0, "maximum": 10.0},
                        "kind": {"type": "string", "enum": ["A", "B"]},
                        "address": {"type": "string", "nullable": true},
                        "labels": {"type": "object", "additionalProperties": {"type": "string", "maxLength": 2}}
                    }
                }
            }
        }))
        .expect("schema compiles")
    }

    #[test]
    fn table_of_schema_limits() {
        let cases: &[(Value, &[&str])] = &[
            (
                json!({"spec": {"address": "x", "names": ["ab"], "port": 5, "kind": "A"}}),
                &[],
            ),
            (
                json!({"spec": {"address": "x", "names": ["a", "b", "c"]}}),
                &["spec.names: must have at most 2 items (has 3)"],
            ),
            (
                json!({"spec": {"address": "x", "names": []}}),
                &["spec.names: must have at least 1 items (has 0)"],
            ),
            (
                json!({"spec": {"address": "x", "names": ["abcd"]}}),
                &["spec.names[0]: may be at most 3 characters long (is 4)"],
            ),
            (
                json!({"spec": {"address": "x", "names": ["A1"]}}),
                &["spec.names[0]: \"A1\" does not match ^[a-z]+$"],
            ),
            (
                json!({"spec": {"address": "x", "port": 11}}),
                &["spec.port: must be at most 10 (is 11)"],
            ),
            (
                json!({"spec": {"address": "x", "port": 0}}),
                &["spec.port: must be at least 1 (is 0)"],
            ),
            (
                json!({"spec": {"address": "x", "kind": "C"}}),
                &["spec.kind: \"C\" is not one of [\"A\",\"B\"]"],
            ),
            (
                json!({"spec": {"address": "x", "labels": {"k": "abc"}}}),
                &["spec.labels.k: may be at most 2 characters long (is 3)"],
            ),
            (
                json!({"spec": {"address": null}}),
                &["spec: one of address or service"],
            ),
            (
                json!({"spec": {"address": "x", "service": "y"}}),
                &["spec: one of address or service"],
            ),
        ];
        let schema = tiny();
        for (instance, want) in cases {
            let got: Vec<String> = check(&schema, instance)
                .iter()
                .map(ToString::to_string)
                .collect();
            assert_eq!(got, *want, "{instance}");
        }
    }

    #[test]
    fn a_bad_duration_is_named_as_one() {
        let schema = Schema::new(json!({
            "type": "object",
            "properties": {"d": {"type": "string", "pattern": DURATION_PATTERN}}
        }))
        .expect("schema");
        let got = check(&schema, &json!({"d": "soon"}));
        assert_eq!(got.len(), 1);
        assert!(
            got[0]
                .to_string()
                .starts_with("d: invalid duration \"soon\": expected"),
            "{got:?}"
        );
        assert!(check(&schema, &json!({"d": "1m30s"})).is_empty());
    }

    #[test]
    fn table_of_cel_twins() {
        let cases: &[(&str, Value, bool)] = &[
            ("self.all(a, isIP(a))", json!(["10.0.0.1", "fd00::1"]), true),
            ("self.all(a, isIP(a))", json!(["10.0.0.1/24"]), false),
            ("isIP(self)", json!("::ffff:10.0.0.1"), false),
            ("isIP(self)", json!("300.0.0.1"), false),
            (
                "self.all(c, isCIDR(c))",
                json!(["10.0.0.0/8", "fd00::/64"]),
                true,
            ),
            ("self.all(c, isCIDR(c))", json!(["10.0.0.0/33"]), false),
            (
                "self.all(r, r.indexOf('-') > 0 && isIP(r.substring(0, r.indexOf('-'))) && isIP(r.substring(r.indexOf('-') + 1)) && ip(r.substring(0, r.indexOf('-'))).family() == ip(r.substring(r.indexOf('-') + 1)).family())",
                json!(["192.0.2.1-192.0.2.9", "fd00::1-fd00::9"]),
                true,
            ),
            (
                "self.all(r, r.indexOf('-') > 0 && isIP(r.substring(0, r.indexOf('-'))) && isIP(r.substring(r.indexOf('-') + 1)) && ip(r.substring(0, r.indexOf('-'))).family() == ip(r.substring(r.indexOf('-') + 1)).family())",
                json!(["192.0.2.1-fd00::9"]),
                false,
            ),
            (
                "self.all(r, r.indexOf('-') > 0 && isIP(r.substring(0, r.indexOf('-'))) && isIP(r.substring(r.indexOf('-') + 1)) && ip(r.substring(0, r.indexOf('-'))).family() == ip(r.substring(r.indexOf('-') + 1)).family())",
                json!(["192.0.2.1"]),
                false,
            ),
            (
                "self.all(r, r.indexOf('-') > 0 && isIP(r.substring(0, r.indexOf('-'))) && isIP(r.substring(r.indexOf('-') + 1)) && ip(r.substring(0, r.indexOf('-'))).family() == ip(r.substring(r.indexOf('-') + 1)).family())",
                json!(["-192.0.2.1"]),
                false,
            ),
            (
                "self.all(r, isIP(r) || isCIDR(r) || (r.indexOf('-') > 0 && isIP(r.substring(0, r.indexOf('-'))) && isIP(r.substring(r.indexOf('-') + 1))))",
                json!(["192.0.2.1", "192.0.2.0/30", "192.0.2.5-192.0.2.9"]),
                true,
            ),
            (
                "self.all(r, isIP(r) || isCIDR(r) || (r.indexOf('-') > 0 && isIP(r.substring(0, r.indexOf('-'))) && isIP(r.substring(r.indexOf('-') + 1))))",
                json!(["192.0.2.0/33"]),
                false,
            ),
            (
                "size(self.cidrs) + (has(self.ranges) ? size(self.ranges) : 0) > 0",
                json!({"ranges": ["x"]}),
                true,
            ),
            (
                "size(self.cidrs) + (has(self.ranges) ? size(self.ranges) : 0) > 0",
                json!({"cidrs": [], "ranges": []}),
                false,
            ),
            (
                "size(self.cidrs) + (has(self.ranges) ? size(self.ranges) : 0) > 0",
                json!({"cidrs": ["192.0.2.0/24"]}),
                true,
            ),
            ("self.all(c, isCIDR(c))", json!(["10.0.0.0"]), false),
            ("self.all(c, isCIDR(c))", json!(["10.0.0.0/08"]), false),
            (
                "self.all(a, isCIDR(a) || isIP(a))",
                json!(["10.0.0.1", "10.0.0.1/24"]),
                true,
            ),
            (
                "self.all(l, self.exists_one(m, m.name == l.name))",
                json!([{"name": "a"}, {"name": "b"}]),
                true,
            ),
            (
                "self.all(l, self.exists_one(m, m.name == l.name))",
                json!([{"name": "a"}, {"name": "a"}]),
                false,
            ),
            (
                "self.all(l, self.exists_one(m, m.port == l.port))",
                json!([{"port": 1}, {"port": 1}]),
                false,
            ),
            (
                "self.all(c, self.exists_one(d, d.name == c.name))",
                json!([{"name": "a"}, {"name": "a"}]),
                false,
            ),
            (
                "[has(self.http), has(self.tcp), has(self.exec)].filter(x, x).size() == 1",
                json!({"tcp": {"address": "127.0.0.1:1"}}),
                true,
            ),
            (
                "[has(self.http), has(self.tcp), has(self.exec)].filter(x, x).size() == 1",
                json!({"tcp": {}, "exec": {}}),
                false,
            ),
            (
                "[has(self.http), has(self.tcp), has(self.exec)].filter(x, x).size() == 1",
                json!({"name": "c"}),
                false,
            ),
            ("self.startsWith('http://')", json!("https://x/"), false),
            ("self.startsWith('/')", json!("bin/true"), false),
            ("self.startsWith('/')", json!("/bin/true"), true),
            (
                "self.protocol in ['HTTP', 'HTTPS'] || !has(self.forwardedHeaders) || !self.forwardedHeaders",
                json!({"protocol": "TCP", "forwardedHeaders": true}),
                false,
            ),
            (
                "self.protocol in ['HTTP', 'HTTPS'] || !has(self.forwardedHeaders) || !self.forwardedHeaders",
                json!({"protocol": "TCP", "forwardedHeaders": false}),
                true,
            ),
            (
                "!has(self.address) || has(self.port)",
                json!({"address": "10.0.0.1"}),
                false,
            ),
            (
                "self.type == 'HTTP' || (!has(self.path) && !has(self.expectStatus))",
                json!({"type": "TCP", "path": "/"}),
                false,
            ),
            (
                "!self.vrrp.enabled || !has(self.vrrp.authentication) || self.vrrp.version == 2",
                json!({"vrrp": {"enabled": true, "version": 3, "authentication": {}}}),
                false,
            ),
            (
                "!self.vrrp.enabled || !has(self.vrrp.authentication) || self.vrrp.version == 2",
                json!({"vrrp": {"enabled": true, "version": 2, "authentication": {}}}),
                true,
            ),
            (
                "self.version == 3 || !has(self.advertisementInterval) || self.advertisementInterval.endsWith('s') && !self.advertisementInterval.endsWith('ms')",
                json!({"version": 2, "advertisementInterval": "500ms"}),
                false,
            ),
            (
                "self.version == 3 || !has(self.advertisementInterval) || self.advertisementInterval.endsWith('s') && !self.advertisementInterval.endsWith('ms')",
                json!({"version": 2, "advertisementInterval": "2s"}),
                true,
            ),
            (
                "has(self.weight) != (has(self.fault) && self.fault)",
                json!({"weight": 10, "fault": true}),
                false,
            ),
            (
                "has(self.weight) != (has(self.fault) && self.fault)",
                json!({"fault": false}),
                false,
            ),
            (
                "has(self.password) != has(self.secretRef)",
                json!({"password": "x"}),
                true,
            ),
            (
                "self.protocol == 'HTTPS' ? has(self.tls) : !has(self.tls)",
                json!({"protocol": "HTTPS"}),
                false,
            ),
            (
                "self.protocol == 'HTTPS' ? has(self.tls) : !has(self.tls)",
                json!({"protocol": "HTTPS", "tls": {}}),
                true,
            ),
            (
                "self.protocol == 'HTTPS' ? has(self.tls) : !has(self.tls)",
                json!({"protocol": "TLS", "tls": {}}),
                false,
            ),
            (
                "!has(self.forwarded) || (self.protocol in ['HTTP', 'HTTPS'] && !has(self.forwardedHeaders))",
                json!({"protocol": "HTTP", "forwarded": {}, "forwardedHeaders": true}),
                false,
            ),
            (
                "!has(self.forwarded) || (self.protocol in ['HTTP', 'HTTPS'] && !has(self.forwardedHeaders))",
                json!({"protocol": "TCP", "forwarded": {}}),
                false,
            ),
            (
                "!has(self.forwarded) || (self.protocol in ['HTTP', 'HTTPS'] && !has(self.forwardedHeaders))",
                json!({"protocol": "HTTPS", "forwarded": {}}),
                true,
            ),
            (
                "self.protocol == 'HTTP' || !has(self.http2PriorKnowledge) || !self.http2PriorKnowledge",
                json!({"protocol": "HTTPS", "http2PriorKnowledge": true}),
                false,
            ),
            (
                "self.protocol != 'TCP' || !has(self.routes) || size(self.routes) == 0",
                json!({"protocol": "TCP", "routes": [{}]}),
                false,
            ),
            (
                "self.protocol != 'TCP' || !has(self.routes) || size(self.routes) == 0",
                json!({"protocol": "TCP", "routes": []}),
                true,
            ),
            (
                "!(has(self.caSecretName) && has(self.caFile))",
                json!({"caSecretName": "a", "caFile": "b"}),
                false,
            ),
            (
                "has(self.caSecretName) || has(self.caFile) || (has(self.insecureSkipVerify) && self.insecureSkipVerify)",
                json!({}),
                false,
            ),
            (
                "has(self.caSecretName) || has(self.caFile) || (has(self.insecureSkipVerify) && self.insecureSkipVerify)",
                json!({"insecureSkipVerify": true}),
                true,
            ),
            (
                "!(has(self.insecureSkipVerify) && self.insecureSkipVerify) || !(has(self.caSecretName) || has(self.caFile))",
                json!({"insecureSkipVerify": true, "caFile": "x"}),
                false,
            ),
            (
                "self.all(p, p in ['h2', 'http/1.1'])",
                json!(["h2", "http/1.1"]),
                true,
            ),
            ("self.all(p, p in ['h2', 'http/1.1'])", json!(["h3"]), false),
            (
                "!has(self.filters) || !self.filters.exists(f, f.type == 'RequestRedirect') || ((!has(self.backendRefs) || size(self.backendRefs) == 0) && !has(self.fixedResponse))",
                json!({"filters": [{"type": "RequestRedirect"}], "backendRefs": [{"name": "a"}]}),
                false,
            ),
            (
                "!has(self.filters) || !self.filters.exists(f, f.type == 'RequestRedirect') || ((!has(self.backendRefs) || size(self.backendRefs) == 0) && !has(self.fixedResponse))",
                json!({"filters": [{"type": "RequestRedirect"}], "fixedResponse": {}}),
                false,
            ),
            (
                "!has(self.filters) || !self.filters.exists(f, f.type == 'RequestRedirect') || ((!has(self.backendRefs) || size(self.backendRefs) == 0) && !has(self.fixedResponse))",
                json!({"filters": [{"type": "URLRewrite"}], "backendRefs": [{"name": "a"}]}),
                true,
            ),
            (
                "!has(self.fixedResponse) || !has(self.backendRefs) || size(self.backendRefs) == 0",
                json!({"fixedResponse": {}, "backendRefs": [{"name": "a"}]}),
                false,
            ),
            (
                "(self.type == 'RequestHeaderModifier') == has(self.requestHeaderModifier) && (self.type == 'ResponseHeaderModifier') == has(self.responseHeaderModifier) && (self.type == 'RequestRedirect') == has(self.requestRedirect) && (self.type == 'URLRewrite') == has(self.urlRewrite)",
                json!({"type": "URLRewrite", "urlRewrite": {}}),
                true,
            ),
            (
                "(self.type == 'RequestHeaderModifier') == has(self.requestHeaderModifier) && (self.type == 'ResponseHeaderModifier') == has(self.responseHeaderModifier) && (self.type == 'RequestRedirect') == has(self.requestRedirect) && (self.type == 'URLRewrite') == has(self.urlRewrite)",
                json!({"type": "URLRewrite"}),
                false,
            ),
            (
                "(self.type == 'RequestHeaderModifier') == has(self.requestHeaderModifier) && (self.type == 'ResponseHeaderModifier') == has(self.responseHeaderModifier) && (self.type == 'RequestRedirect') == has(self.requestRedirect) && (self.type == 'URLRewrite') == has(self.urlRewrite)",
                json!({"type": "URLRewrite", "urlRewrite": {}, "requestRedirect": {}}),
                false,
            ),
            ("self in [301, 302, 303, 307, 308]", json!(308), true),
            ("self in [301, 302, 303, 307, 308]", json!(300), false),
            (
                "self.type == 'ReplaceFullPath' ? (has(self.replaceFullPath) && !has(self.replacePrefixMatch)) : (has(self.replacePrefixMatch) && !has(self.replaceFullPath))",
                json!({"type": "ReplaceFullPath", "replaceFullPath": "/"}),
                true,
            ),
            (
                "self.type == 'ReplaceFullPath' ? (has(self.replaceFullPath) && !has(self.replacePrefixMatch)) : (has(self.replacePrefixMatch) && !has(self.replaceFullPath))",
                json!({"type": "ReplacePrefixMatch", "replaceFullPath": "/"}),
                false,
            ),
            (
                "has(self.path) == (has(self.target) && self.target == 'File')",
                json!({"target": "File"}),
                false,
            ),
            (
                "has(self.path) == (has(self.target) && self.target == 'File')",
                json!({"path": "/x"}),
                false,
            ),
            (
                "has(self.path) == (has(self.target) && self.target == 'File')",
                json!({"target": "File", "path": "/x"}),
                true,
            ),
        ];
        for (rule, value, want) in cases {
            let f = cel_rule(rule).unwrap_or_else(|| panic!("unknown rule {rule}"));
            assert_eq!(f(value), *want, "{rule} on {value}");
        }
    }

    fn rules_in(node: &Value, out: &mut Vec<String>) {
        match node {
            Value::Object(map) => {
                for rule in map
                    .get("x-kubernetes-validations")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    out.push(rule["rule"].as_str().unwrap_or_default().to_string());
                }
                map.values().for_each(|v| rules_in(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| rules_in(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_cel_rule_of_every_crd_has_a_rust_twin() {
        let schemas = [
            schema_of::<VirtualIP>(),
            schema_of::<LoadBalancer>(),
            schema_of::<VirtualIPPool>(),
        ];
        let mut rules = Vec::new();
        for s in &schemas {
            rules_in(&s.as_ref().expect("schema").root, &mut rules);
        }
        assert!(rules.len() >= 15, "{rules:?}");
        let unknown: Vec<&String> = rules.iter().filter(|r| cel_rule(r).is_none()).collect();
        assert!(
            unknown.is_empty(),
            "CEL rules without a Rust twin: {unknown:?}"
        );
    }
}
