//! Resolving model sources against a Hugging Face cache built here (this machine has no hub
//! access, so everything runs offline or must fail with a clear error).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use mlx_models::hub::{
    allowed, cache_dir_from_env, cached_snapshot, offline_from_env, parse_repo_id, resolve,
    resolve_with_env, HubError, HubOptions, RepoRef,
};

const SHA_MAIN: &str = "0123456789abcdef0123456789abcdef01234567";
const SHA_V1: &str = "fedcba9876543210fedcba9876543210fedcba98";

/// `<cache>/models--org--name/{refs/main, refs/v1, snapshots/<sha>/config.json}`.
fn build_cache(cache: &Path) -> PathBuf {
    let repo = cache.join("models--mlx-community--Tiny-Llama");
    for (sha, marker) in [(SHA_MAIN, "main"), (SHA_V1, "v1")] {
        let snap = repo.join("snapshots").join(sha);
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::write(
            snap.join("config.json"),
            format!("{{\"model_type\": \"llama\", \"marker\": \"{marker}\"}}"),
        )
        .unwrap();
    }
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), SHA_MAIN).unwrap();
    std::fs::write(repo.join("refs/v1"), format!("{SHA_V1}\n")).unwrap();
    repo
}

fn env<'a>(vars: &'a [(&'a str, String)]) -> impl Fn(&str) -> Option<String> + 'a {
    let map: HashMap<&str, String> = vars.iter().cloned().collect();
    move |k| map.get(k).cloned()
}

fn marker(dir: &Path) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    v["marker"].as_str().unwrap().to_string()
}

#[test]
fn local_folder_wins() {
    let dir = tempfile::tempdir().unwrap();
    let got = resolve(dir.path().to_str().unwrap(), &HubOptions::default()).unwrap();
    assert_eq!(got, dir.path());
    let file = dir.path().join("f");
    std::fs::write(&file, "x").unwrap();
    assert!(matches!(
        resolve(file.to_str().unwrap(), &HubOptions::default()),
        Err(HubError::NotAFolder(_))
    ));
}

#[test]
fn offline_resolution_from_the_cache() {
    let cache = tempfile::tempdir().unwrap();
    build_cache(cache.path());
    let opts = HubOptions {
        offline: true,
        cache_dir: Some(cache.path().to_path_buf()),
        ..HubOptions::default()
    };
    let no_env = env(&[]);
    let main = resolve_with_env("mlx-community/Tiny-Llama", &opts, &no_env).unwrap();
    assert_eq!(
        main,
        cache
            .path()
            .join("models--mlx-community--Tiny-Llama/snapshots")
            .join(SHA_MAIN)
    );
    assert_eq!(marker(&main), "main");
    // A branch or tag through refs/, by option or by @suffix; a commit hash directly.
    let v1 = HubOptions {
        revision: Some("v1".into()),
        ..opts.clone()
    };
    assert_eq!(
        marker(&resolve_with_env("mlx-community/Tiny-Llama", &v1, &no_env).unwrap()),
        "v1"
    );
    assert_eq!(
        marker(&resolve_with_env("mlx-community/Tiny-Llama@v1", &opts, &no_env).unwrap()),
        "v1"
    );
    let by_sha = format!("mlx-community/Tiny-Llama@{SHA_V1}");
    assert_eq!(
        marker(&resolve_with_env(&by_sha, &opts, &no_env).unwrap()),
        "v1"
    );
}

#[test]
fn hf_hub_offline_and_cache_variables() {
    let cache = tempfile::tempdir().unwrap();
    build_cache(cache.path());
    let c = cache.path().to_str().unwrap().to_string();
    // HF_HUB_CACHE names the cache; HF_HUB_OFFLINE=1 keeps everything local.
    let vars = [
        ("HF_HUB_CACHE", c.clone()),
        ("HF_HUB_OFFLINE", "1".to_string()),
    ];
    let got = resolve_with_env(
        "mlx-community/Tiny-Llama",
        &HubOptions::default(),
        env(&vars),
    )
    .unwrap();
    assert_eq!(marker(&got), "main");
    // HF_HOME/hub when HF_HUB_CACHE is not set.
    let home = tempfile::tempdir().unwrap();
    build_cache(&home.path().join("hub"));
    let vars = [
        ("HF_HOME", home.path().to_str().unwrap().to_string()),
        ("HF_HUB_OFFLINE", "true".into()),
    ];
    let got = resolve_with_env(
        "mlx-community/Tiny-Llama",
        &HubOptions::default(),
        env(&vars),
    )
    .unwrap();
    assert!(got.starts_with(home.path().join("hub")));

    assert!(offline_from_env(env(&[("HF_HUB_OFFLINE", "YES".into())])));
    assert!(offline_from_env(env(&[("HF_HUB_OFFLINE", "on".into())])));
    assert!(!offline_from_env(env(&[("HF_HUB_OFFLINE", "0".into())])));
    assert!(!offline_from_env(env(&[])));
    assert_eq!(
        cache_dir_from_env(env(&[("HOME", "/home/u".into())])).unwrap(),
        PathBuf::from("/home/u/.cache/huggingface/hub")
    );
    assert_eq!(
        cache_dir_from_env(env(&[
            ("HOME", "/home/u".into()),
            ("HF_HOME", "/hf".into())
        ]))
        .unwrap(),
        PathBuf::from("/hf/hub")
    );
    assert!(matches!(
        cache_dir_from_env(env(&[])),
        Err(HubError::NoCacheDir)
    ));
}

#[test]
fn repo_not_in_the_cache_offline() {
    let cache = tempfile::tempdir().unwrap();
    build_cache(cache.path());
    let opts = HubOptions {
        offline: true,
        cache_dir: Some(cache.path().to_path_buf()),
        ..HubOptions::default()
    };
    let err = resolve_with_env("someone/Missing-Model", &opts, env(&[])).unwrap_err();
    match &err {
        HubError::NotInCache { repo, revision, .. } => {
            assert_eq!(repo, "someone/Missing-Model");
            assert_eq!(revision, "main");
        }
        other => panic!("expected NotInCache, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("someone/Missing-Model") && msg.contains("offline"),
        "{msg}"
    );
    // A revision that is not cached, and a ref to a snapshot that is gone.
    let err = resolve_with_env("mlx-community/Tiny-Llama@v2", &opts, env(&[])).unwrap_err();
    assert!(matches!(err, HubError::NotInCache { .. }));
    std::fs::remove_dir_all(
        cache
            .path()
            .join("models--mlx-community--Tiny-Llama/snapshots")
            .join(SHA_MAIN),
    )
    .unwrap();
    assert!(cached_snapshot(cache.path(), "mlx-community/Tiny-Llama", "main").is_none());
    // HF_HUB_OFFLINE is named in the error when it is what turned offline mode on.
    let vars = [
        ("HF_HUB_CACHE", cache.path().to_str().unwrap().to_string()),
        ("HF_HUB_OFFLINE", "1".into()),
    ];
    let err = resolve_with_env("a/b", &HubOptions::default(), env(&vars)).unwrap_err();
    assert!(err.to_string().contains("HF_HUB_OFFLINE"), "{err}");
}

#[test]
fn repo_ids() {
    assert_eq!(
        parse_repo_id("org/name"),
        Some(RepoRef {
            repo: "org/name".into(),
            revision: None
        })
    );
    assert_eq!(
        parse_repo_id("gpt2@refs/pr/1"),
        Some(RepoRef {
            repo: "gpt2".into(),
            revision: Some("refs/pr/1".into())
        })
    );
    for bad in [
        "",
        "a/b/c",
        "../x",
        "org/..",
        "org/-x",
        "org/x-",
        "a//b",
        "org/na me",
        "org/name@",
        "org/name@../x",
        "/abs/path",
    ] {
        assert_eq!(parse_repo_id(bad), None, "{bad:?}");
    }
    let opts = HubOptions {
        offline: true,
        ..HubOptions::default()
    };
    assert!(matches!(
        resolve_with_env("no/such/dir", &opts, env(&[])),
        Err(HubError::InvalidSource(_))
    ));
    // A revision cannot walk out of refs/.
    let cache = tempfile::tempdir().unwrap();
    build_cache(cache.path());
    assert!(cached_snapshot(cache.path(), "mlx-community/Tiny-Llama", "../refs/main").is_none());
}

#[test]
fn allow_patterns() {
    for name in [
        "config.json",
        "model.safetensors",
        "model-00001-of-00002.safetensors",
        "tokenizer.model",
        "chat_template.jinja",
        "merges.txt",
    ] {
        assert!(allowed(name), "{name}");
    }
    for name in [
        "pytorch_model.bin",
        "consolidated.safetensors",
        "weights.pt",
        "README.md",
        "original/params.pth",
    ] {
        assert!(!allowed(name), "{name}");
    }
}
