//! Writes the CRD YAML into directories (default `deploy/crds` and the Helm chart's CRD
//! templates, which must stay identical); `--check` only compares.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut check = false;
    let mut dirs: Vec<PathBuf> = Vec::new();
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--check" => check = true,
            "-h" | "--help" => {
                println!("usage: crdgen [--check] [DIR...]");
                return ExitCode::SUCCESS;
            }
            other => dirs.push(PathBuf::from(other)),
        }
    }
    let files = match halo_crds::generate::crd_files() {
        Ok(files) => files,
        Err(e) => {
            eprintln!("crdgen: cannot render CRDs: {e}");
            return ExitCode::FAILURE;
        }
    };
    if dirs.is_empty() {
        dirs = vec![
            PathBuf::from("deploy/crds"),
            PathBuf::from("deploy/helm/halo/charts/crds/templates"),
        ];
    }
    let mut drift = false;
    for (dir, (name, yaml)) in dirs.iter().flat_map(|d| files.iter().map(move |f| (d, f))) {
        let path = dir.join(name);
        if check {
            if std::fs::read_to_string(&path).ok().as_deref() != Some(yaml.as_str()) {
                eprintln!("crdgen: {} is out of date", path.display());
                drift = true;
            }
        } else if let Err(e) =
            std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&path, yaml))
        {
            eprintln!("crdgen: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        } else {
            println!("wrote {}", path.display());
        }
    }
    if drift {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
