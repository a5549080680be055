//! The `atlas` binary: as a command, as a server child process, and the
//! runbook's shell lines run verbatim.

/// The `atlas` binary of this build: `ATLAS_BIN` if set, else the `atlas`
/// next to the running test or bench (cargo puts them in `target/<profile>/`
/// and the test binaries in its `deps/`).
pub fn atlas_bin() -> std::path::PathBuf {
    if let Some(bin) = std::env::var_os("ATLAS_BIN") {
        return bin.into();
    }
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap();
    let dir = if dir.ends_with("deps") {
        dir.parent().unwrap()
    } else {
        dir
    };
    let bin = dir.join(format!("atlas{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "no atlas binary at {} (build it, or set ATLAS_BIN)",
        bin.display()
    );
    bin
}
use atlas_store::testdb::TempDir;
use std::sync::Arc;

/// Runs the `atlas` binary with `home` as `ATLAS_HOME` and `token` (only) as
/// `ATLAS_ADMIN_TOKEN`; returns success, stdout and stderr.
pub fn run_atlas(
    home: Option<&std::path::Path>,
    token: Option<&str>,
    args: &[&str],
) -> (bool, String, String) {
    let mut cmd = std::process::Command::new(atlas_bin());
    cmd.env_remove("ATLAS_ADMIN_TOKEN").args(args);
    if let Some(home) = home {
        cmd.env("ATLAS_HOME", home);
    }
    if let Some(token) = token {
        cmd.env("ATLAS_ADMIN_TOKEN", token);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// [`run_atlas`] with no home or token and `env` set (an S3 endpoint, say).
pub fn run_atlas_env(env: &[(&str, String)], args: &[&str]) -> (bool, String, String) {
    let mut cmd = std::process::Command::new(atlas_bin());
    cmd.env_remove("ATLAS_ADMIN_TOKEN").args(args);
    for (key, value) in env {
        cmd.env(key, value);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs the `atlas` binary as a client (`ATLAS_HOME` = `home`) and returns its
/// stdout, failing the test if the command fails.
pub fn atlas_ok(home: &std::path::Path, args: &[&str]) -> String {
    let (ok, stdout, stderr) = run_atlas(Some(home), None, args);
    assert!(ok, "atlas {args:?}: {stderr}");
    stdout
}

/// An operator token with `scope`, made with `atlas admin token create` against the server's database.
pub fn operator_token(database_url: &str, scope: &str) -> String {
    operator_token_with(database_url, scope, &[]).0
}

/// [`operator_token`] with more arguments (`--label`, `--kek-file`, …); what it
/// printed on stderr too (a warning when the act could not be audited).
pub fn operator_token_with(database_url: &str, scope: &str, extra: &[&str]) -> (String, String) {
    let mut args = vec![
        "admin",
        "token",
        "create",
        "--scope",
        scope,
        "--database-url",
        database_url,
    ];
    args.extend(extra);
    let (ok, token, stderr) = run_atlas(None, None, &args);
    assert!(ok, "{stderr}");
    (token.trim().to_owned(), stderr)
}

/// `atlas serve` as a child process, with everything it logs kept for the test.
pub struct Server {
    pub child: std::process::Child,
    pub url: String,
    pub log: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        // A failed test must not leave a server behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// SIGKILL, not a graceful stop: nothing the server held only in memory survives.
    pub fn kill_9(&mut self) {
        self.child.kill().unwrap(); // SIGKILL on Unix
        let status = self.child.wait().unwrap();
        assert!(!status.success(), "killed, not stopped: {status}");
    }

    /// What the server logged so far, one line each.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

/// Starts `atlas serve --listen LISTEN --data-dir DATA EXTRA…` (log level from
/// `ATLAS_LOG`, `warn` unless the test sets it) and waits for its address.
pub fn serve(data: &TempDir, listen: &str, extra: &[&str]) -> Server {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(atlas_bin())
        .args(["serve", "--listen", listen, "--data-dir"])
        .arg(&data.path)
        .args(extra)
        .env(
            "ATLAS_LOG",
            std::env::var("ATLAS_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let url = loop {
        let line = lines.next().expect("server prints its address").unwrap();
        if let Some(rest) = line.strip_prefix("atlas listening on ") {
            break format!("http://{}", rest.split_whitespace().next().unwrap());
        }
    };
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = log.clone();
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    Server { child, url, log }
}

/// An independent tool the test needs: its path, or `None` to skip — except
/// when `ATLAS_REQUIRE_INTEROP` is set (CI), where a missing tool fails the test.
pub fn required_tool(name: &str) -> Option<String> {
    let found = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    if found.is_none() {
        assert!(
            std::env::var_os("ATLAS_REQUIRE_INTEROP").is_none(),
            "{name} is required (ATLAS_REQUIRE_INTEROP is set) but not installed"
        );
        eprintln!("skipping: {name} is not installed");
    }
    found
}

/// Runs runbook lines with bash, verbatim but for the placeholders the caller
/// filled in: the runbook's hosts point at `url`, and curl fails on HTTP errors
/// and stays quiet. Returns stdout; a failing line fails the test.
pub fn run_runbook(lines: &str, url: &str) -> String {
    let script = format!("set -euo pipefail\n{lines}")
        .replace("https://trust.atlas.dev", url)
        .replace("https://api.atlas.dev", url)
        .replace("curl ", "curl -sf ");
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A TCP port nothing listens on at the moment.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until a load has `count` answered sends (a minute at most), so what
/// the test does next happens under load.
pub async fn wait_until_answered(answered: &std::sync::Mutex<Vec<String>>, count: usize) {
    let started = std::time::Instant::now();
    while answered.lock().unwrap().len() < count {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "the load did not get going"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// An operator's request (`Authorization: Bearer token`) to `url`, with a
/// JSON body if given: the status and the JSON answer (`Null` when none).
pub async fn operator_request(
    method: reqwest::Method,
    url: &str,
    token: &str,
    body: Option<&serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut request = atlas_client::http_client()
        .expect("an HTTP client")
        .request(method, url)
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.expect("the server answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}
