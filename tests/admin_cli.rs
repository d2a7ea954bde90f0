//! `ringtalk admin` run as its own process on a data directory: grant, revoke and list on a stopped
//! server's accounts, an unknown user, a directory with no database, and the refusal while a
//! server holds the directory (which also keeps a second server off it).

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{start_server, Kind};
use futures::executor::block_on;
use ringtalk::accounts::{Accounts, LoggedIn, Login, MIN_BCRYPT_COST};
use ringtalk::data_dir::LockError;
use ringtalk::{Config, Server, StartError};

/// Runs `ringtalk admin ARGS --data-dir DIR` and waits for it.
fn admin(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ringtalk"))
        .arg("admin")
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .output()
        .expect("running ringtalk admin")
}

/// What a run printed, and its exit status.
fn outcome(output: &Output) -> (String, String, Option<i32>) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        output.status.code(),
    )
}

/// Whether `name` logs in as an admin, asked of the database directly.
fn is_admin(dir: &Path, name: &str) -> bool {
    let (accounts, guard) = Accounts::open(dir, MIN_BCRYPT_COST, 1, 4).expect("the database opens");
    let login = block_on(accounts.login(name, "secret-1", false)).unwrap();
    guard.shutdown();
    match login {
        Login::Ok(LoggedIn { admin, .. }) => admin,
        other => panic!("{name} cannot log in: {other:?}"),
    }
}

#[test]
fn grant_list_and_revoke_on_a_stopped_servers_accounts() {
    // Accounts made through a server, which then stops.
    let server = start_server(1);
    for name in ["Alice", "bob"] {
        server.connect(Kind::Raw).create_account(name, "secret-1");
    }
    let dir = server.stop_keeping_data();
    let dir = dir.path();

    let (out, err, status) = outcome(&admin(dir, &["grant", "alice"]));
    assert_eq!(
        (out.as_str(), status),
        ("alice is now an admin.\n", Some(0)),
        "{err}"
    );
    let (out, _, status) = outcome(&admin(dir, &["grant", "BOB"]));
    assert_eq!((out.as_str(), status), ("BOB is now an admin.\n", Some(0)));
    // The names as they were made.
    let (out, _, status) = outcome(&admin(dir, &["list"]));
    assert_eq!((out.as_str(), status), ("Alice\nbob\n", Some(0)));
    assert!(is_admin(dir, "alice"));

    let (out, _, status) = outcome(&admin(dir, &["revoke", "Alice"]));
    assert_eq!(
        (out.as_str(), status),
        ("Alice is no longer an admin.\n", Some(0))
    );
    let (out, _, _) = outcome(&admin(dir, &["list"]));
    assert_eq!(out, "bob\n");
    assert!(!is_admin(dir, "alice"));

    for unknown in ["carol", "not a name"] {
        let (out, _, status) = outcome(&admin(dir, &["grant", unknown]));
        assert_eq!(out, format!("No user named {unknown}.\n"));
        assert_eq!(status, Some(1));
    }
    let (_, err, status) = outcome(&admin(dir, &["promote", "bob"]));
    assert_eq!(status, Some(2), "{err}");
}

#[test]
fn a_running_server_keeps_admin_and_a_second_server_off_its_data_directory() {
    let server = start_server(1);
    server.connect(Kind::Raw).create_account("dave", "secret-1");
    let dir = server.data_dir().to_path_buf();

    let (out, err, status) = outcome(&admin(&dir, &["grant", "dave"]));
    assert_eq!((out.as_str(), status), ("", Some(2)));
    assert!(
        err.contains("another ringtalk process is using the data directory"),
        "{err}"
    );
    let mut config = Config::for_tests(&dir);
    config.shards = Some(1);
    match Server::start(config) {
        Ok(_) => panic!("a second server started on the same data directory"),
        Err(e) => {
            assert!(
                matches!(e, StartError::DataDir(LockError::Held { .. })),
                "{e:?}"
            );
            assert!(e.to_string().contains("stop it first"), "{e}");
        }
    }

    let dir = server.stop_keeping_data();
    let (out, _, status) = outcome(&admin(dir.path(), &["grant", "dave"]));
    assert_eq!((out.as_str(), status), ("dave is now an admin.\n", Some(0)));
    assert!(is_admin(dir.path(), "dave"));
}

#[test]
fn a_directory_without_a_database_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing-here");
    for args in [&["grant", "erin"][..], &["list"][..]] {
        let (out, err, status) = outcome(&admin(&missing, args));
        assert_eq!((out.as_str(), status), ("", Some(2)));
        assert!(err.contains("no ringtalk database"), "{err}");
    }
    assert!(!missing.exists());
    let (_, err, status) = outcome(&admin(dir.path(), &["list"]));
    assert_eq!(status, Some(2), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
