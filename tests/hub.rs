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
