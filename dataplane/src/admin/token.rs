//! The admin API's bearer token: a random secret in a file only its owner can read, made at
//! start when it does not exist yet, read by `halo-dataplane takeover` and other clients.

use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read the admin token {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create the admin token {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the admin token {path} is empty")]
    Empty { path: PathBuf },
}

/// Reads the token at `path` (for a client).
pub fn read(path: &Path) -> Result<String, TokenError> {
    let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let token = text.trim().to_string();
    if token.is_empty() {
        return Err(TokenError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(token)
}

/// Reads the token at `path`, or makes a new one there (mode 0600) when there is none.
pub fn load_or_create(path: &Path) -> Result<String, TokenError> {
    match create(path) {
        Ok(token) => {
            tracing::info!(path = %path.display(), "admin token created");
            Ok(token)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            warn_if_shared(path);
            read(path)
        }
        Err(source) => Err(TokenError::Create {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn create(path: &Path) -> std::io::Result<String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    let token = random_hex(32)?;
    file.write_all(format!("{token}\n").as_bytes())?;
    file.sync_all()?;
    Ok(token)
}

fn warn_if_shared(path: &Path) {
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            path = %path.display(),
            mode = format!("{:o}", meta.permissions().mode() & 0o777),
            "the admin token can be read by other users: chmod 600 it"
        );
    }
}

fn random_hex(bytes: usize) -> std::io::Result<String> {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_a_private_token_once_and_reads_it_back() {
        let dir = std::env::temp_dir().join(format!("halo-token-{}", std::process::id()));
        let path = dir.join("sub").join("admin-token");
        let first = load_or_create(&path).expect("created");
        assert_eq!(first.len(), 64);
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_or_create(&path).expect("read back"), first);
        assert_eq!(read(&path).expect("client read"), first);
        std::fs::write(&path, "\n").expect("blank it");
        assert!(matches!(read(&path), Err(TokenError::Empty { .. })));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
