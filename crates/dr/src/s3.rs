//! Backups in an S3 bucket (`s3://BUCKET/PREFIX`), through the maintained
//! `object_store` crate: any S3-compatible server, with the usual AWS
//! environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
//! `AWS_ENDPOINT_URL` for a store other than AWS's). Large files go up in
//! parts and come down as a stream, so neither is held in memory. A request
//! that fails, or a download that breaks off, is retried (a download resumes
//! where it stopped) up to `ATLAS_S3_MAX_RETRIES` times, 10 unless set.
use crate::location::{Location, LocationError, valid_name};
use futures_util::StreamExt;
use object_store::ObjectStoreExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, RetryConfig, WriteMultipart};
use std::path::Path;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Bytes per uploaded part (S3's minimum is 5 MiB).
const PART: usize = 8 << 20;

/// A bucket and a key prefix.
pub struct S3 {
    store: Arc<AmazonS3>,
    bucket: String,
    prefix: String,
}

fn failed(e: object_store::Error) -> LocationError {
    match e {
        object_store::Error::NotFound { path, .. } => LocationError::Missing(path),
        e => LocationError::Io(std::io::Error::other(e.to_string())),
    }
}

/// object_store's retries, with `ATLAS_S3_MAX_RETRIES` (a scheduled job may
/// rather fail fast and page than back off for minutes).
fn retry_config() -> Result<RetryConfig, LocationError> {
    let mut config = RetryConfig::default();
    if let Ok(value) = std::env::var("ATLAS_S3_MAX_RETRIES") {
        config.max_retries = value.parse().map_err(|_| {
            LocationError::Unsupported(format!(
                "ATLAS_S3_MAX_RETRIES={value} is not a number of retries"
            ))
        })?;
    }
    Ok(config)
}

impl S3 {
    /// `s3://BUCKET[/PREFIX]`, configured from the environment.
    pub fn parse(url: &str) -> Result<Self, LocationError> {
        Self::parse_with(url, &[])
    }

    /// [`S3::parse`], then `config` on top (object_store's `aws_…` keys, e.g.
    /// `aws_endpoint`, `aws_access_key_id`): for tests and programs that do
    /// not configure through the environment.
    pub fn parse_with(url: &str, config: &[(&str, &str)]) -> Result<Self, LocationError> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| LocationError::Unsupported(format!("{url} is not s3://…")))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(LocationError::Unsupported(format!("{url}: no bucket")));
        }
        // The HTTP client speaks TLS with the process's rustls provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_retry(retry_config()?);
        if let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL") {
            builder = builder
                .with_allow_http(endpoint.starts_with("http://"))
                .with_endpoint(endpoint);
        }
        for (key, value) in config {
            let key: object_store::aws::AmazonS3ConfigKey = key
                .parse()
                .map_err(|e| LocationError::Unsupported(format!("{key}: {e}")))?;
            builder = builder.with_config(key, *value);
        }
        let store = builder
            .build()
            .map_err(|e| LocationError::Unsupported(format!("{url}: {e}")))?;
        Ok(Self {
            store: Arc::new(store),
            bucket: bucket.to_owned(),
            prefix: prefix.trim_matches('/').to_owned(),
        })
    }

    fn key(&self, parts: &[&str]) -> Result<ObjectPath, LocationError> {
        for part in parts {
            if !valid_name(part) {
                return Err(LocationError::BadName((*part).to_owned()));
            }
        }
        let mut all: Vec<&str> = Vec::new();
        if !self.prefix.is_empty() {
            all.extend(self.prefix.split('/'));
        }
        all.extend_from_slice(parts);
        Ok(ObjectPath::from(all.join("/")))
    }
}

#[async_trait::async_trait]
impl Location for S3 {
    fn describe(&self) -> String {
        match self.prefix.is_empty() {
            true => format!("s3://{}", self.bucket),
            false => format!("s3://{}/{}", self.bucket, self.prefix),
        }
    }

    async fn names(&self) -> Result<Vec<String>, LocationError> {
        let prefix = (!self.prefix.is_empty()).then(|| ObjectPath::from(self.prefix.as_str()));
        let listed = self
            .store
            .list_with_delimiter(prefix.as_ref())
            .await
            .map_err(failed)?;
        let mut names: Vec<String> = listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_owned))
            .filter(|n| valid_name(n))
            .collect();
        names.sort();
        Ok(names)
    }

    async fn create(&self, name: &str) -> Result<(), LocationError> {
        let dir = self.key(&[name])?;
        let listed = self
            .store
            .list_with_delimiter(Some(&dir))
            .await
            .map_err(failed)?;
        if !listed.objects.is_empty() || !listed.common_prefixes.is_empty() {
            return Err(LocationError::Exists(name.to_owned()));
        }
        Ok(())
    }

    async fn put(&self, name: &str, file: &str, from: &Path) -> Result<(), LocationError> {
        let key = self.key(&[name, file])?;
        let upload = self.store.put_multipart(&key).await.map_err(failed)?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART);
        let mut input = tokio::fs::File::open(from).await?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = input.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            writer.wait_for_capacity(4).await.map_err(failed)?;
            writer.write(&buf[..n]);
        }
        // S3 shows the object only once the last part is in: never half a file.
        writer.finish().await.map_err(failed)?;
        Ok(())
    }

    async fn get(&self, name: &str, file: &str, to: &Path) -> Result<(), LocationError> {
        let key = self.key(&[name, file])?;
        let got = self.store.get(&key).await.map_err(|e| match e {
            object_store::Error::NotFound { .. } => {
                LocationError::Missing(format!("{name}/{file}"))
            }
            e => failed(e),
        })?;
        let expected = got.meta.size;
        let mut out = crate::location::new_private_file(to).await?;
        let mut stream = got.into_stream();
        let mut received = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                LocationError::Io(std::io::Error::other(format!(
                    "{name}/{file}: the download broke off at {received} of {expected} bytes \
                     (retries included): {e}"
                )))
            })?;
            received += chunk.len() as u64;
            out.write_all(&chunk).await?;
        }
        out.sync_all().await?;
        if received != expected {
            return Err(LocationError::Io(std::io::Error::other(format!(
                "{name}/{file}: the download stopped at {received} of {expected} bytes"
            ))));
        }
        Ok(())
    }

    async fn stat(
        &self,
        name: &str,
        file: &str,
    ) -> Result<Option<(u64, std::time::SystemTime)>, LocationError> {
        match self.store.head(&self.key(&[name, file])?).await {
            Ok(meta) => Ok(Some((meta.size, meta.last_modified.into()))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(failed(e)),
        }
    }
}
