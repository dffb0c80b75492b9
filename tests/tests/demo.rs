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

#[test]
fn example_manifests_validate() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let bin = halo_tests::process::binary("halo-dataplane").expect("halo-dataplane built");
    for entry in std::fs::read_dir(format!("{root}/deploy/examples")).expect("examples") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "yaml") {
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
}
