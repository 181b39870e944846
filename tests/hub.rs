//! Hub ids work offline once pulled (the standard Hugging Face cache layout is read), and a pull
//! without a network fails with a sentence rather than a hang or a panic.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

fn easel_with_home(home: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_easel"))
        .args(args)
        .env("HF_HOME", home)
        // A closed local port: the hub is unreachable at once, as on an offline machine.
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("the easel binary runs")
}

#[test]
fn pulled_models_are_used_by_id_offline() {
    let home = tempfile::tempdir().expect("temp dir");
    let repo = home.path().join("hub/models--easel-tests--tiny-sd");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    copy_tree(&fixtures().join("tiny-sd"), &repo.join("snapshots").join(commit));
    std::fs::create_dir_all(repo.join("refs")).expect("refs");
    std::fs::write(repo.join("refs/main"), commit).expect("ref");

    let list = easel_with_home(home.path(), &["models", "list"]);
    assert!(String::from_utf8_lossy(&list.stdout).contains("easel-tests/tiny-sd"), "{}", stderr(&list));

    let out = home.path().join("out.png");
    let res = easel_with_home(
        home.path(),
        &[
            "generate",
            "--model",
            "easel-tests/tiny-sd",
            "--prompt",
            "a cat",
            "--steps",
            "2",
            "--width",
            "64",
            "--height",
            "64",
            "-o",
            out.to_str().expect("utf-8"),
        ],
    );
    assert!(res.status.success(), "{}", stderr(&res));
    assert!(out.exists());
}

#[test]
fn unknown_id_says_to_pull_it() {
    let home = tempfile::tempdir().expect("temp dir");
    let res = easel_with_home(
        home.path(),
        &["generate", "--model", "someone/some-model", "--prompt", "a cat", "-o", "/tmp/never.png"],
    );
    assert!(!res.status.success());
    assert!(stderr(&res).contains("easel models pull someone/some-model"), "{}", stderr(&res));
}

#[test]
fn inception_pull_offline_says_where_to_put_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let res = Command::new(env!("CARGO_BIN_EXE_easel"))
        .args(["models", "pull", "inception"])
        .current_dir(dir.path())
        .env("EASEL_INCEPTION_URL", "http://127.0.0.1:9/pt_inception.pth")
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("runs");
    assert!(!res.status.success());
    let err = stderr(&res);
    assert!(
        err.contains("cannot download the Inception weights") && err.contains("models/pt_inception"),
        "{err}"
    );
}

#[test]
fn pull_offline_fails_with_a_clear_message() {
    let home = tempfile::tempdir().expect("temp dir");
    let res = easel_with_home(home.path(), &["models", "pull", "someone/some-model"]);
    assert!(!res.status.success());
    let err = stderr(&res);
    assert!(err.contains("cannot reach the Hugging Face hub") && err.contains("offline"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

#[test]
fn the_preview_decoder_is_pulled_by_its_short_name_and_then_found_offline() {
    let home = tempfile::tempdir().expect("temp dir");
    let work = tempfile::tempdir().expect("temp dir");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_easel"))
            .args(args)
            .current_dir(work.path())
            .env("HF_HOME", home.path())
            .env("HF_ENDPOINT", "http://127.0.0.1:9")
            .env_remove("RUST_BACKTRACE")
            .output()
            .expect("runs")
    };
    let list = run(&["models", "list"]);
    assert!(String::from_utf8_lossy(&list.stdout).contains("approximate colours"), "{}", stderr(&list));

    let res = run(&["models", "pull", "taesd"]);
    assert!(!res.status.success());
    let err = stderr(&res);
    assert!(err.contains("madebyollin/taesd") && err.contains("offline"), "{err}");

    // As a finished pull leaves it in the cache.
    let repo = home.path().join("hub/models--madebyollin--taesd");
    let commit = "89abcdef0123456789abcdef0123456789abcdef";
    copy_tree(&fixtures().join("tiny-taesd"), &repo.join("snapshots").join(commit));
    std::fs::create_dir_all(repo.join("refs")).expect("refs");
    std::fs::write(repo.join("refs/main"), commit).expect("ref");
    let list = run(&["models", "list"]);
    let out = String::from_utf8_lossy(&list.stdout).to_string();
    assert!(out.contains("live previews: tiny decoder") && out.contains(commit), "{out}");
    assert!(!out.contains("taesd_decoder.safetensors\n"), "the decoder is not listed as a model: {out}");
}

#[test]
fn a_pulled_controlnet_is_used_by_its_hub_id_offline() {
    let home = tempfile::tempdir().expect("temp dir");
    let commit = "89abcdef0123456789abcdef0123456789abcdef";
    let repo = home.path().join("hub/models--easel-tests--tiny-controlnet");
    copy_tree(&fixtures().join("controlnet/sd15"), &repo.join("snapshots").join(commit));
    std::fs::create_dir_all(repo.join("refs")).expect("refs");
    std::fs::write(repo.join("refs/main"), commit).expect("ref");
    let out = home.path().join("out.png");
    let model = fixtures().join("tiny-sd").display().to_string();
    let scribble = fixtures().join("controlnet/scribble.png").display().to_string();
    let args = |control: &str| {
        vec![
            "generate".to_string(),
            "--model".into(),
            model.clone(),
            "--prompt".into(),
            "a cat".into(),
            "--steps".into(),
            "2".into(),
            "--width".into(),
            "64".into(),
            "--height".into(),
            "64".into(),
            "--control".into(),
            control.to_string(),
            "-o".into(),
            out.display().to_string(),
        ]
    };
    let run =
        |a: Vec<String>| easel_with_home(home.path(), &a.iter().map(String::as_str).collect::<Vec<_>>());
    let res = run(args(&format!("model=easel-tests/tiny-controlnet,image={scribble}")));
    assert!(res.status.success(), "{}", stderr(&res));
    let texts = easel::export::png::read_png_text(&out).expect("text");
    assert!(texts["parameters"].contains("ControlNet 0: \"Module: none, Model: "), "{}", texts["parameters"]);
    std::fs::remove_file(&out).expect("remove");
    let res = run(args(&format!("model=easel-tests/not-pulled,image={scribble}")));
    assert!(!res.status.success());
    assert!(stderr(&res).contains("easel models pull easel-tests/not-pulled"), "{}", stderr(&res));
}

#[test]
fn one_file_of_a_repository_is_pulled_once_and_then_found_offline() {
    let home = tempfile::tempdir().expect("temp dir");
    let args = ["models", "pull", "ByteDance/Hyper-SD", "--file", "Hyper-SD15-8steps-CFG-lora.safetensors"];
    let res = easel_with_home(home.path(), &args);
    assert!(!res.status.success());
    let err = stderr(&res);
    assert!(err.contains("Hyper-SD15-8steps-CFG-lora.safetensors") && err.contains("offline"), "{err}");
    // Once in the cache (as a pull leaves it), the same command finds it without a network.
    let repo = home.path().join("hub/models--ByteDance--Hyper-SD");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let snapshot = repo.join("snapshots").join(commit);
    std::fs::create_dir_all(&snapshot).expect("snapshot");
    std::fs::copy(fixtures().join("lora/inkStyle.safetensors"), snapshot.join(args[4])).expect("copy");
    std::fs::create_dir_all(repo.join("refs")).expect("refs");
    std::fs::write(repo.join("refs/main"), commit).expect("ref");
    let res = easel_with_home(home.path(), &args);
    assert!(res.status.success(), "{}", stderr(&res));
    let stdout = String::from_utf8_lossy(&res.stdout);
    assert!(stdout.contains(&snapshot.join(args[4]).display().to_string()), "{stdout}");
}
