//! Hostname rules of Gateway API: which names a route serves on a listener (the
//! intersection of the listener's hostname and the route's hostnames), and label
//! selectors over namespaces. Pure.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Whether `name` falls under `wildcard` (`*.example.com`): at least one more label.
fn under(name: &str, wildcard: &str) -> bool {
    let Some(suffix) = wildcard.strip_prefix('*') else {
        return false;
    };
    name.len() > suffix.len()
        && name.ends_with(suffix)
        && !name[..name.len() - suffix.len()].is_empty()
}

/// The names both `a` and `b` accept, as one hostname: the more specific of the two.
fn meet(a: &str, b: &str) -> Option<String> {
    let (a, b) = (a.to_ascii_lowercase(), b.to_ascii_lowercase());
    if a == b {
        return Some(a);
    }
    match (a.starts_with("*."), b.starts_with("*.")) {
        (false, false) => None,
        (true, false) => under(&b, &a).then_some(b),
        (false, true) => under(&a, &b).then_some(a),
        // Two wildcards: the longer one, when it lies under the shorter.
        (true, true) => {
            let (long, short) = if a.len() >= b.len() { (a, b) } else { (b, a) };
            under(&long[2..], &short).then_some(long)
        }
    }
}

/// The hostnames a route with `route_hosts` serves on a listener with `listener_host`:
/// `Some(vec![])` means every name, `None` that they have no name in common.
pub fn intersect(listener_host: Option<&str>, route_hosts: &[String]) -> Option<Vec<String>> {
    match (listener_host, route_hosts.is_empty()) {
        (None, true) => Some(Vec::new()),
        (None, false) => Some(route_hosts.iter().map(|h| h.to_ascii_lowercase()).collect()),
        (Some(l), true) => Some(vec![l.to_ascii_lowercase()]),
        (Some(l), false) => {
            let mut out: Vec<String> = route_hosts.iter().filter_map(|h| meet(l, h)).collect();
            out.sort();
            out.dedup();
            (!out.is_empty()).then_some(out)
        }
    }
}

/// Whether `labels` satisfy `selector` (matchLabels and matchExpressions; an operator
/// this does not know selects nothing).
pub fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let plain = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expressions = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    plain && expressions
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn hosts(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn listener_and_route_hostnames_intersect_as_the_spec_says() {
        type Case<'a> = (Option<&'a str>, &'a [&'a str], Option<&'a [&'a str]>);
        let cases: &[Case] = &[
            (None, &[], Some(&[])),
            (None, &["a.example.com"], Some(&["a.example.com"])),
            (Some("a.example.com"), &[], Some(&["a.example.com"])),
            (
                Some("a.example.com"),
                &["A.example.com"],
                Some(&["a.example.com"]),
            ),
            (Some("a.example.com"), &["b.example.com"], None),
            (
                Some("*.example.com"),
                &["a.example.com", "other.org"],
                Some(&["a.example.com"]),
            ),
            // A wildcard needs at least one more label.
            (Some("*.example.com"), &["example.com"], None),
            (
                Some("a.b.example.com"),
                &["*.example.com"],
                Some(&["a.b.example.com"]),
            ),
            (
                Some("*.example.com"),
                &["*.b.example.com"],
                Some(&["*.b.example.com"]),
            ),
            (
                Some("*.b.example.com"),
                &["*.example.com"],
                Some(&["*.b.example.com"]),
            ),
            (Some("*.example.com"), &["*.example.org"], None),
        ];
        for (listener, route, want) in cases {
            let got = intersect(*listener, &hosts(route));
            assert_eq!(
                got,
                want.map(hosts),
                "listener {listener:?} route {route:?}"
            );
        }
    }

    #[test]
    fn selectors_match_labels_and_expressions() {
        let labels: BTreeMap<String, String> = [("team".to_string(), "web".to_string())].into();
        let expr = |op: &str, values: &[&str]| LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "team".into(),
                operator: op.into(),
                values: Some(hosts(values)),
            }]),
            match_labels: None,
        };
        assert!(selects(&LabelSelector::default(), &labels));
        assert!(selects(&expr("In", &["web", "api"]), &labels));
        assert!(!selects(&expr("NotIn", &["web"]), &labels));
        assert!(selects(&expr("Exists", &[]), &labels));
        assert!(!selects(&expr("DoesNotExist", &[]), &labels));
        assert!(!selects(&expr("Sometimes", &[]), &labels));
        let plain = LabelSelector {
            match_labels: Some([("team".to_string(), "api".to_string())].into()),
            match_expressions: None,
        };
        assert!(!selects(&plain, &labels));
    }
}
