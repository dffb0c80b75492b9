//! The README's first command: the demo serves the example manifest and alternates backends.

use std::process::Command;

#[test]
fn demo_alternates_between_the_two_backends() {
    let admin = format!(
        "127.0.0.1:{}",
        halo_tests::backends::free_port().expect("port")
    );
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let out = Command::new(env!("CARGO_BIN_EXE_halo-lab"))
        .current_dir(root)
        .args(["demo", "--requests", "6", "--admin", &admin])
        .output()
        .expect("run halo-lab demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: Vec<&str> = stdout.lines().filter(|l| l.starts_with("200 ")).collect();
    assert_eq!(
        answers,
        [
            "200 web-1",
            "200 web-2",
            "200 web-1",
            "200 web-2",
            "200 web-1",
            "200 web-2"
        ]
    );
    assert!(
        stdout.contains("curl -s http://127.0.0.10:8080/"),
        "{stdout}"
    );
}

/// Every manifest under `dir`, recursively, except the `kubernetes` folder (objects only a
/// cluster serves; the API-server test in deploy_manifests.rs checks those).
fn manifests_under(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("examples") {
        let path = entry.expect("entry").path();
        if path.is_dir() && !path.ends_with("kubernetes") {
            manifests_under(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml") {
            out.push(path);
        }
    }
}

#[test]
fn example_manifests_validate() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let bin = halo_tests::process::binary("halo-dataplane").expect("halo-dataplane built");
    let mut files = Vec::new();
    manifests_under(
        &std::path::Path::new(root).join("deploy/examples"),
        &mut files,
    );
    let l7 = files
        .iter()
        .filter(|p| p.parent().is_some_and(|d| d.ends_with("l7")))
        .count();
    assert!(l7 >= 12, "one L7 example per capability, found {l7}");
    for path in files {
        let out = Command::new(&bin)
            .args(["check", "--node", "lb1", "--config"])
            .arg(&path)
            .output()
            .expect("check");
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
