//! The checked-in CRD YAML must equal what the types generate.

#[test]
fn checked_in_crds_match_the_types() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/crds");
    let files = halo_crds::generate::crd_files().expect("render CRDs");
    assert_eq!(files.len(), 3);
    for (name, yaml) in files {
        let on_disk = std::fs::read_to_string(dir.join(&name)).unwrap_or_default();
        assert!(
            on_disk == yaml,
            "deploy/crds/{name} differs from the types: run `cargo run --features halo-crds/crdgen --bin crdgen`"
        );
    }
}
