//! A real S3-compatible server for the disaster-recovery tests: moto's
//! (`pip install 'moto[server]'`), one process per test on its own port, with
//! one bucket. Where it is not installed the test is skipped with a notice —
//! except in CI (`ATLAS_REQUIRE_S3` set), where that is a failure.
use std::process::{Child, Command, Stdio};

/// A running moto server with a bucket.
pub struct S3Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The bucket made for the test.
    pub bucket: String,
}

impl S3Server {
    /// Starts one, or `None` (after saying so) where moto is not installed outside CI.
    pub async fn start() -> Option<Self> {
        let port = crate::free_port();
        let child = match Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(child) => child,
            Err(e) if std::env::var_os("ATLAS_REQUIRE_S3").is_none() => {
                eprintln!(
                    "SKIPPED: moto_server is not installed ({e}); pip install 'moto[server]'"
                );
                return None;
            }
            Err(e) => panic!("moto_server is required (ATLAS_REQUIRE_S3): {e}"),
        };
        let server = Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            bucket: "atlas-backups".into(),
        };
        let http = atlas_client::http_client().expect("an HTTP client");
        let url = format!("{}/{}", server.endpoint, server.bucket);
        for _ in 0..100 {
            if let Ok(r) = http.put(&url).send().await
                && r.status().is_success()
            {
                return Some(server);
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("moto_server did not come up on {}", server.endpoint);
    }

    /// `s3://BUCKET/PREFIX`.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.bucket)
    }

    /// The AWS environment a child process needs to reach it.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }

    /// The same as object_store configuration keys.
    pub fn config(&self) -> Vec<(&'static str, String)> {
        vec![
            ("aws_endpoint", self.endpoint.clone()),
            ("aws_allow_http", "true".into()),
            ("aws_access_key_id", "test".into()),
            ("aws_secret_access_key", "test".into()),
            ("aws_region", "us-east-1".into()),
        ]
    }

    /// Stops it, as a failing store would (downloads break off).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
    }
}
