//! The alert rules of `deploy/prometheus/`: valid for promtool, behaving as
//! their unit tests say, and firing in a real Prometheus that scrapes a real
//! `atlas serve` while devices report decryption failures.

use atlas_store::testdb::TempDir;
use atlas_testing::{RawDevice, free_port, required_tool, serve};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn rules_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/prometheus")
}

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    let Some(promtool) = required_tool("promtool") else {
        return;
    };
    for args in [
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts.test.yml"],
    ] {
        let out = Command::new(&promtool)
            .args(args)
            .current_dir(rules_dir())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_alertmanager_route_to_atlas_passes_amtool() {
    let Some(amtool) = required_tool("amtool") else {
        return;
    };
    let out = Command::new(amtool)
        .args(["check-config", "alertmanager.yml"])
        .current_dir(rules_dir())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("SUCCESS"), "{text}");
    let config = std::fs::read_to_string(rules_dir().join("alertmanager.yml")).unwrap();
    assert!(
        config.contains("url: https://api.atlas.dev/admin/alerts"),
        "{config}"
    );
    assert!(config.contains("send_resolved: true"), "{config}");
}

struct Prometheus {
    child: Child,
    url: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Prometheus scraping `target` every second, with the shipped rules whose
/// `for:` durations are cut to 5 s (the only change to the test copy).
fn prometheus(binary: &str, dir: &TempDir, target: &str) -> Prometheus {
    let rules = std::fs::read_to_string(rules_dir().join("alerts.yml")).unwrap();
    let shortened: String = rules
        .lines()
        .map(|l| match l.trim_start().strip_prefix("for: ") {
            Some(_) => format!("{}for: 5s", &l[..l.len() - l.trim_start().len()]),
            None => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(dir.path.join("alerts.yml"), shortened).unwrap();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - alerts.yml\n\
         scrape_configs:\n  - job_name: atlas\n    static_configs:\n      - targets: ['{target}']\n"
    );
    std::fs::write(dir.path.join("prometheus.yml"), config).unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let child = Command::new(binary)
        .arg(format!(
            "--config.file={}",
            dir.path.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path.join("data").display()
        ))
        .arg(format!("--web.listen-address={listen}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Prometheus {
        child,
        url: format!("http://{listen}"),
    }
}

async fn get_json(url: &str) -> Option<Value> {
    let http = atlas_client::http_client().ok()?;
    http.get(url).send().await.ok()?.json().await.ok()
}

/// Polls `check` once a second until it gives a value or `limit` passes.
async fn wait_for<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> F,
) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_fires_high_decryption_failure_rate() {
    let Some(binary) = required_tool("prometheus") else {
        return;
    };
    let data = TempDir::new("atlas-alerts").unwrap();
    let server = serve(&data, "127.0.0.1:0", &[]);
    let target = server.url.trim_start_matches("http://").to_owned();
    let prom_dir = TempDir::new("atlas-prometheus").unwrap();
    let prom = prometheus(&binary, &prom_dir, &target);

    let up_query = format!("{}/api/v1/query?query=up", prom.url);
    wait_for(
        "Prometheus to scrape atlas",
        Duration::from_secs(60),
        || async {
            let up = get_json(&up_query).await?;
            (up["data"]["result"][0]["value"][1] == "1").then_some(())
        },
    )
    .await;

    // Failures across several users: four users each fail to decrypt the five
    // messages the previous one sent. (The server counts at most five failures
    // per reporting and per sending user an hour, so fewer users could not fire it.)
    let mut users = Vec::new();
    for i in 0..4 {
        users.push(RawDevice::register(&server.url, &format!("user{i}")).await);
    }
    for (i, from) in users.iter().enumerate() {
        let to = &users[(i + 1) % users.len()];
        let ids = from.send_junk(to.user_id.as_str(), "RAW", 5).await;
        assert_eq!(to.report_failures(&ids).await, 5);
    }

    let alerts_url = format!("{}/api/v1/alerts", prom.url);
    let alert = wait_for(
        "HighDecryptionFailureRate to fire",
        Duration::from_secs(90),
        || async {
            let alerts = get_json(&alerts_url).await?;
            alerts["data"]["alerts"]
                .as_array()?
                .iter()
                .find(|a| {
                    a["labels"]["alertname"] == "HighDecryptionFailureRate"
                        && a["state"] == "firing"
                })
                .cloned()
        },
    )
    .await;
    assert_eq!(alert["labels"]["severity"], "critical");
    assert_eq!(
        alert["annotations"]["summary"],
        "E2EE decryption failure rate above 5%"
    );

    // The runbook's log search finds every reported failure.
    let log = data.path.join("server.log");
    std::fs::write(&log, server.log_text()).unwrap();
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "cat {} | grep \"decrypt\" | grep \"error\" | grep -c KeyNotFound",
            log.display()
        ))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "20");
    drop(prom);
}
