//! The public status page (`/status`, Statuspage's JSON, the Atom feed)
//! through an incident's stages, rendered by a real browser (headless Chromium).
use atlas_testing::{Harness, operator_token, required_tool};
use serde_json::Value;
use std::process::Command;

/// `atlas incident …` against `url` with `op`; its JSON.
fn incident(url: &str, op: &str, args: &[&str]) -> Value {
    super::incidents::incident(url, op, args).unwrap()
}

/// Headless Chromium on `url`: the DOM it rendered (and a screenshot, when `screenshot`).
fn chromium(browser: &str, url: &str, screenshot: Option<&std::path::Path>) -> String {
    let mut cmd = Command::new(browser);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1200,1000",
    ]);
    match screenshot {
        Some(path) => cmd.arg(format!("--screenshot={}", path.display())),
        None => cmd.arg("--dump-dom"),
    };
    let out = cmd.arg(url).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_each_stage_to_a_browser_and_leaks_nothing() {
    let Some(browser) = required_tool("chromium") else {
        return;
    };
    let mut h = Harness::sqlite().await;
    let url = h.url();
    let op = operator_token(&h.database_url(), "incidents");
    let http = atlas_client::http_client().unwrap();
    let get = |path: &str| {
        let request = http.get(format!("{url}{path}"));
        async move { request.send().await.unwrap() }
    };

    // Quiet: all operational.
    let status: Value = get("/api/v2/status.json").await.json().await.unwrap();
    assert_eq!(status["status"]["indicator"], "none", "{status}");
    assert_eq!(status["status"]["description"], "All Systems Operational");

    let declared = incident(
        &url,
        &op,
        &[
            "declare",
            "SEV-2",
            "Messages delayed <b>for some</b>",
            "--component",
            "delivery",
        ],
    );
    let id = declared["id"].as_str().unwrap().to_owned();
    // The manual's stages (§6.1), as updates users read.
    for (stage, message) in [
        (
            "investigating",
            "We are investigating reports of delayed messages.",
        ),
        ("identified", "A storage queue is stuck"),
    ] {
        incident(
            &url,
            &op,
            &["update", &id, "--status", stage, "--message", message],
        );
    }
    // The page is computed at most every 5 seconds.
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;

    let summary: Value = get("/api/v2/summary.json").await.json().await.unwrap();
    assert_eq!(summary["status"]["indicator"], "major", "{summary}");
    let delivery = summary["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "delivery")
        .unwrap();
    assert_eq!(delivery["status"], "partial_outage", "{summary}");
    let open = &summary["incidents"][0];
    assert_eq!(
        (&open["id"], &open["status"], &open["impact"]),
        (&id.clone().into(), &"identified".into(), &"major".into())
    );
    assert_eq!(
        open["incident_updates"][0]["body"],
        "A storage queue is stuck"
    );
    let json = summary.to_string();
    for internal in ["operator", "token", "commander"] {
        assert!(
            !json.contains(internal),
            "{internal} on the public page: {json}"
        );
    }
    let feed = get("/status/feed.atom").await;
    assert!(
        feed.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/atom+xml")
    );
    let feed = feed.text().await.unwrap();
    assert!(
        feed.contains("<title>Identified: Messages delayed &lt;b&gt;for some&lt;/b&gt;</title>"),
        "{feed}"
    );

    // What a browser shows: the open incident, its stage, the degraded component, escaped.
    let dom = chromium(&browser, &format!("{url}/status"), None);
    for visible in [
        "Partial System Outage",
        "Messages delayed &lt;b&gt;for some&lt;/b&gt;",
        "Identified",
        "A storage queue is stuck",
        "Message delivery",
        "Partial outage",
    ] {
        assert!(dom.contains(visible), "{visible} not shown: {dom}");
    }
    assert!(
        !dom.contains("<b>for some</b>"),
        "HTML typed by an operator is shown as text"
    );
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    chromium(&browser, &format!("{url}/status"), Some(&shot));
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a screenshot"
    );
    eprintln!("status page screenshot: {}", shot.display());

    // Monitoring, then resolved: operational again, the incident in the past
    // with its total duration, every stage on the page and in the feed.
    for (stage, message) in [
        (
            "monitoring",
            "A fix has been deployed. We are monitoring the situation.",
        ),
        ("resolved", "All delayed messages delivered"),
    ] {
        incident(
            &url,
            &op,
            &["update", &id, "--status", stage, "--message", message],
        );
    }
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    let status: Value = get("/api/v2/status.json").await.json().await.unwrap();
    assert_eq!(status["status"]["indicator"], "none", "{status}");
    let page = get("/status").await.text().await.unwrap();
    assert!(
        page.contains("Past incidents") && page.contains("Total duration: 0 minutes"),
        "{page}"
    );
    for heading in ["Investigating", "Identified", "Monitoring", "Resolved"] {
        assert!(
            page.contains(&format!("<strong>{heading}</strong>")),
            "{heading}: {page}"
        );
    }
    let feed = get("/status/feed.atom").await.text().await.unwrap();
    for heading in ["Investigating", "Identified", "Monitoring", "Resolved"] {
        let title =
            format!("<title>{heading}: Messages delayed &lt;b&gt;for some&lt;/b&gt;</title>");
        assert_eq!(feed.matches(&title).count(), 1, "{heading}: {feed}");
    }
    let summary: Value = get("/api/v2/summary.json").await.json().await.unwrap();
    assert!(
        summary["incidents"].as_array().unwrap().is_empty(),
        "resolved: {summary}"
    );
    h.stop().await;
}
