//! The Kubernetes half of the emergency manual (seed 004 §3.1, §3.2): the
//! scripts run against a recording stand-in for `kubectl` and a real server,
//! so the order of their steps, what they refuse and what they leave behind
//! are checked, not just their syntax.
use crate::audit::{kek_of, token};
use atlas_testing::{Harness, WebhookReceiver, atlas_bin};
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A `kubectl` that records its arguments, one call per line, and answers
/// `rollout status` with $FAKE_ROLLOUT_RC.
fn fake_kubectl(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = bin.join("kubectl");
    std::fs::write(
        &script,
        "#!/usr/bin/env bash\n\
         echo \"$*\" >> \"$KUBECTL_LOG\"\n\
         case \"$*\" in\n\
           *'rollout status'*) exit \"${FAKE_ROLLOUT_RC:-0}\" ;;\n\
           *jsonpath*) echo -n 'atlas:1.2.0' ;;\n\
           logs*) echo 'a log line' ;;\n\
         esac\n",
    )
    .unwrap();
    atlas_store::set_mode(&script, 0o755).unwrap();
    bin
}

fn run(script: &Path, args: &[&str], env: &[(&str, String)], path: &Path) -> (i32, String) {
    let atlas_dir = atlas_bin().parent().unwrap().to_owned();
    let out = Command::new("bash")
        .arg(script)
        .args(args)
        .env(
            "PATH",
            format!(
                "{}:{}:{}",
                path.display(),
                atlas_dir.display(),
                std::env::var("PATH").unwrap()
            ),
        )
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shutdown_script_saves_evidence_before_it_touches_the_cluster() {
    let h = Harness::sqlite().await;
    let url = h.url();
    let emergency = token(&h, &kek_of(&h), "emergency");
    let bin = fake_kubectl(&h.homes.path);
    let log = h.homes.path.join("kubectl.log");
    let evidence = h.homes.path.join("evidence");
    let script = repo().join("deploy/k8s/emergency/emergency-shutdown.sh");
    let env = |confirm: &str| {
        vec![
            ("ATLAS_SERVER", url.clone()),
            ("ATLAS_ADMIN_TOKEN", emergency.clone()),
            ("CONFIRM", confirm.to_owned()),
            ("EVIDENCE_DIR", evidence.display().to_string()),
            ("KUBECTL_LOG", log.display().to_string()),
        ]
    };

    let (code, out) = run(&script, &[], &env("confirm"), &bin);
    assert_eq!(code, 1, "{out}");
    assert!(!log.exists(), "a wrong phrase touches nothing");

    let (code, out) = run(&script, &[], &env("CONFIRM SHUTDOWN"), &bin);
    assert_eq!(code, 0, "{out}");
    let calls = std::fs::read_to_string(&log).unwrap();
    let calls: Vec<&str> = calls.lines().collect();
    assert!(
        calls[0].starts_with("logs -n atlas -l app=atlas-gateway"),
        "{calls:?}"
    );
    assert!(calls[1].starts_with("get all,events -n atlas"), "{calls:?}");
    assert_eq!(
        calls[2],
        r#"patch svc atlas-gateway -n atlas -p {"spec":{"type":"ClusterIP"}}"#
    );
    assert!(calls[3].starts_with("apply -f") && calls[3].ends_with("networkpolicy-deny-all.yaml"));
    assert!(
        !calls.iter().any(|c| c.starts_with("scale")),
        "no scale to zero unless asked"
    );
    let health: serde_json::Value = atlas_testing::get_json(&format!("{url}/health")).await;
    assert_eq!(health["status"], "locked_down");
    let saved = std::fs::read_dir(&evidence)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert!(saved.join("cluster/SHA256SUMS").exists());
    let verified = Command::new(atlas_bin())
        .args(["emergency", "verify-evidence", &saved.display().to_string()])
        .output()
        .unwrap();
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rollback_script_undoes_waits_checks_health_and_notifies() {
    let h = Harness::sqlite().await;
    let bin = fake_kubectl(&h.homes.path);
    let log = h.homes.path.join("kubectl.log");
    let slack = WebhookReceiver::start(&[], 200).await;
    let script = repo().join("deploy/k8s/emergency-rollback.sh");
    let env = |rc: &str, url: String| {
        vec![
            ("ATLAS_URL", url),
            ("HEALTH_WAIT", "0".to_owned()),
            ("FAKE_ROLLOUT_RC", rc.to_owned()),
            ("SLACK_WEBHOOK_URL", format!("{}/slack", slack.url)),
            ("KUBECTL_LOG", log.display().to_string()),
        ]
    };

    let (code, out) = run(&script, &["3"], &env("0", h.url()), &bin);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("atlas:1.2.0") && out.contains("Rollback successful"),
        "{out}"
    );
    let calls = std::fs::read_to_string(&log).unwrap();
    assert!(
        calls.contains("exec -n atlas deploy/atlas-gateway -- atlas db status"),
        "{calls}"
    );
    assert!(
        calls.contains("rollout undo deployment/atlas-gateway -n atlas --to-revision=3"),
        "{calls}"
    );
    assert!(
        calls.contains("rollout status deployment/atlas-gateway -n atlas --timeout=300s"),
        "{calls}"
    );

    let (code, out) = run(&script, &[], &env("1", h.url()), &bin);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("Rollback failed! Manual intervention required."),
        "{out}"
    );
    let (code, out) = run(&script, &[], &env("0", "http://127.0.0.1:9".into()), &bin);
    assert_eq!(code, 2, "{out}");
    let texts: Vec<String> = slack
        .accepted("/slack", 3, 10)
        .await
        .iter()
        .map(|r| r.body["text"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        texts[0].contains("rollback completed: service healthy"),
        "{texts:?}"
    );
    assert!(texts[1].contains("FAILED"), "{texts:?}");
    assert!(texts[2].contains("/health is failing"), "{texts:?}");
}
