//! Import of keepalived.conf files (keepalived 2.x syntax), one per node, into VirtualIP
//! objects with per-node priorities and peers.
//!
//! Each file is read with its includes ([`include`], [`lexer`]), built into a statement
//! tree ([`tree`]), read into typed values ([`config`]) and then all nodes are merged
//! ([`merge`], with unicast peers in [`peers`], tracking in [`tracking`], and scripts and
//! weights in [`track`] and [`script`]).

pub mod config;
pub mod include;
pub mod lexer;
pub mod merge;
pub mod peers;
pub mod script;
pub mod track;
pub mod tracking;
pub mod tree;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use halo_crds::VirtualIP;

use self::include::Files;
use self::merge::NodeFile;
use super::{NodeNameFrom, ParseError, Report};

#[derive(Debug, Clone, Default)]
pub struct KeepalivedImport {
    pub virtual_ips: Vec<VirtualIP>,
    pub report: Report,
}

pub fn import(paths: &[PathBuf], names: NodeNameFrom) -> Result<KeepalivedImport, ParseError> {
    import_from(paths, names, &include::Disk)
}

/// [`import`] over any [`Files`].
pub fn import_from(
    paths: &[PathBuf],
    names: NodeNameFrom,
    files: &dyn Files,
) -> Result<KeepalivedImport, ParseError> {
    let mut report = Report::default();
    let mut nodes: Vec<NodeFile> = Vec::new();
    // Report order: the files in the order they were read, then line.
    let mut rank: BTreeMap<String, usize> = BTreeMap::new();
    for path in paths {
        let lines = include::load(path, files)?;
        for l in &lines {
            let next = rank.len();
            rank.entry(l.file.clone()).or_insert(next);
        }
        let conf = config::read(&tree::parse(&lines)?, &mut report);
        let name = node_name(path, &conf, names);
        if nodes.iter().any(|n| n.name == name) {
            return Err(ParseError::new(
                &path.display().to_string(),
                0,
                format!(
                    "another file already gives the node name {name}; name the files (or router_id) after the nodes"
                ),
            ));
        }
        nodes.push(NodeFile { name, conf });
    }
    let virtual_ips = merge::merge(&nodes, &mut report);
    report.entries.sort_by_key(|e| {
        let file = rank.get(&e.source.file).copied().unwrap_or(usize::MAX);
        (file, e.source.line)
    });
    // A file included by several nodes reports its lines once.
    let mut seen = Vec::new();
    report.entries.retain(|e| {
        let fresh = !seen.contains(e);
        if fresh {
            seen.push(e.clone());
        }
        fresh
    });
    Ok(KeepalivedImport {
        virtual_ips,
        report,
    })
}

/// The file's stem, or its `router_id` when asked for and present.
fn node_name(path: &Path, conf: &config::NodeConf, names: NodeNameFrom) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    match (names, &conf.router_id) {
        (NodeNameFrom::RouterId, Some(r)) => r.value.clone(),
        _ => stem,
    }
}

#[cfg(test)]
mod tests {
    use super::include::tests::Memory;
    use super::*;

    const NODE: &str = "global_defs {\n router_id lb-one\n}\ninclude common.conf\n\
        vrrp_instance VI_1 {\n interface eth0\n virtual_router_id 7\n priority 120\n\
        virtual_ipaddress {\n 192.0.2.7/24\n }\n}\n";

    #[test]
    fn node_names_from_file_or_router_id() {
        let files = Memory::new(&[("site/lb1.conf", NODE), ("site/common.conf", "! nothing\n")]);
        let paths = [PathBuf::from("site/lb1.conf")];
        let by_file = import_from(&paths, NodeNameFrom::File, &files).unwrap();
        assert_eq!(by_file.virtual_ips[0].spec.priorities[0].node, "lb1");
        let by_id = import_from(&paths, NodeNameFrom::RouterId, &files).unwrap();
        assert_eq!(by_id.virtual_ips[0].spec.priorities[0].node, "lb-one");
        let text = by_file.report.to_string();
        assert!(
            text.starts_with("site/lb1.conf:2: router_id lb-one: mapped to nothing"),
            "{text}"
        );
    }

    #[test]
    fn report_is_in_file_then_line_order_and_duplicate_names_fail() {
        let files = Memory::new(&[
            ("a/lb1.conf", NODE),
            (
                "a/common.conf",
                "vrrp_script s {\n script \"pidof haproxy\"\n}\n",
            ),
            ("b/lb1.conf", NODE),
            ("b/common.conf", ""),
        ]);
        let r = import_from(&[PathBuf::from("a/lb1.conf")], NodeNameFrom::File, &files).unwrap();
        let order: Vec<(String, usize)> = r
            .report
            .entries
            .iter()
            .map(|e| (e.source.file.clone(), e.source.line))
            .collect();
        let mut sorted = order.clone();
        sorted.sort_by_key(|(f, l)| (f != "a/lb1.conf", *l));
        assert_eq!(order, sorted);
        let e = import_from(
            &[PathBuf::from("a/lb1.conf"), PathBuf::from("b/lb1.conf")],
            NodeNameFrom::File,
            &files,
        )
        .unwrap_err();
        assert!(e.message.contains("node name lb1"), "{e}");
    }
}
