//! Where backups are kept: a directory (a mounted volume) or an S3 bucket
//! (`s3.rs`). Each backup is a folder `NAME/` of files; a backup
//! is complete once its `manifest.json` is there, which is written last.
use std::path::{Path, PathBuf};

/// Why a location could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LocationError {
    /// Reading or writing failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Not a location this binary knows.
    #[error("{0}")]
    Unsupported(String),
    /// A backup of that name exists already.
    #[error("a backup named {0} exists already")]
    Exists(String),
    /// There is no such backup (or file of it).
    #[error("no backup {0}")]
    Missing(String),
    /// A name that would leave the location.
    #[error("{0:?} is not a valid backup name (letters, digits, '.', '_' and '-')")]
    BadName(String),
}

/// A place holding backups.
#[async_trait::async_trait]
pub trait Location: Send + Sync {
    /// The location as the operator wrote it.
    fn describe(&self) -> String;
    /// The names of the backups there (complete or not).
    async fn names(&self) -> Result<Vec<String>, LocationError>;
    /// Starts a new backup `name`; `Exists` if there is one.
    async fn create(&self, name: &str) -> Result<(), LocationError>;
    /// Stores the local file `from` as `file` of backup `name`.
    async fn put(&self, name: &str, file: &str, from: &Path) -> Result<(), LocationError>;
    /// Fetches `file` of backup `name` into the new local file `to`.
    async fn get(&self, name: &str, file: &str, to: &Path) -> Result<(), LocationError>;
    /// Size and modification time of `file` of backup `name`, if it is there.
    async fn stat(
        &self,
        name: &str,
        file: &str,
    ) -> Result<Option<(u64, std::time::SystemTime)>, LocationError>;
}

/// Whether `name` is a backup (or file) name that stays inside its location.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// A new local file only its owner may read (a download is never written over another file).
pub(crate) async fn new_private_file(path: &Path) -> std::io::Result<tokio::fs::File> {
    tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .await
}

fn checked(name: &str) -> Result<&str, LocationError> {
    match valid_name(name) {
        true => Ok(name),
        false => Err(LocationError::BadName(name.to_owned())),
    }
}

/// The location `text` names: `s3://BUCKET/PREFIX` or a directory.
pub fn parse(text: &str) -> Result<Box<dyn Location>, LocationError> {
    if text.starts_with("s3://") {
        return Ok(Box::new(crate::s3::S3::parse(text)?));
    }
    if text.contains("://") {
        return Err(LocationError::Unsupported(format!(
            "{text}: a location is a directory or s3://BUCKET/PREFIX"
        )));
    }
    Ok(Box::new(Directory(PathBuf::from(text))))
}

/// Backups in a directory: `DIR/NAME/FILE`.
pub struct Directory(pub PathBuf);

#[async_trait::async_trait]
impl Location for Directory {
    fn describe(&self) -> String {
        self.0.display().to_string()
    }

    async fn names(&self) -> Result<Vec<String>, LocationError> {
        let mut names = Vec::new();
        let mut dir = match tokio::fs::read_dir(&self.0).await {
            Ok(dir) => dir,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(names),
            Err(e) => return Err(e.into()),
        };
        while let Some(entry) = dir.next_entry().await? {
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type().await?.is_dir() && valid_name(&name) {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    async fn create(&self, name: &str) -> Result<(), LocationError> {
        tokio::fs::create_dir_all(&self.0).await?;
        match tokio::fs::create_dir(self.0.join(checked(name)?)).await {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(LocationError::Exists(name.to_owned()))
            }
            done => Ok(done?),
        }
    }

    async fn put(&self, name: &str, file: &str, from: &Path) -> Result<(), LocationError> {
        let dir = self.0.join(checked(name)?);
        let part = dir.join(format!(".{}.partial", checked(file)?));
        tokio::fs::copy(from, &part).await?;
        tokio::fs::File::open(&part).await?.sync_all().await?;
        // Renamed into place whole: a reader never sees half a file under its name.
        tokio::fs::rename(&part, dir.join(file)).await?;
        Ok(())
    }

    async fn get(&self, name: &str, file: &str, to: &Path) -> Result<(), LocationError> {
        let from = self.0.join(checked(name)?).join(checked(file)?);
        if !tokio::fs::try_exists(&from).await? {
            return Err(LocationError::Missing(format!("{name}/{file}")));
        }
        let mut src = tokio::fs::File::open(&from).await?;
        let mut dst = new_private_file(to).await?;
        tokio::io::copy(&mut src, &mut dst).await?;
        dst.sync_all().await?;
        Ok(())
    }

    async fn stat(
        &self,
        name: &str,
        file: &str,
    ) -> Result<Option<(u64, std::time::SystemTime)>, LocationError> {
        match tokio::fs::metadata(self.0.join(checked(name)?).join(checked(file)?)).await {
            Ok(m) => Ok(Some((m.len(), m.modified()?))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_inside_the_location() {
        for bad in ["", "..", "../x", "a/b", ".hidden", "a b", &"x".repeat(129)] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        for good in [
            "nightly",
            "atlas_20261130_data.tar.gz",
            "manifest.json",
            "v1.2-rc_3",
        ] {
            assert!(valid_name(good), "{good:?}");
        }
        assert!(matches!(parse("s3://"), Err(LocationError::Unsupported(_))));
        assert!(matches!(
            parse("s3:///prefix"),
            Err(LocationError::Unsupported(_))
        ));
        assert!(matches!(
            parse("ftp://host/x"),
            Err(LocationError::Unsupported(_))
        ));
        assert!(parse("/var/backups/atlas").is_ok());
    }
}
