//! Running as a systemd service: the unit in `dist/` passes `systemd-analyze verify` (where
//! systemd is installed), the binary tells a `NOTIFY_SOCKET` when it is ready and when it stops,
//! and `scripts/tune-linux.sh` reports every setting it knows without changing any.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The root of the repository.
fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_unit_file_passes_systemd_analyze_verify() {
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("skipped: systemd-analyze is not installed");
        return;
    };
    assert!(version.status.success());
    let unit = std::fs::read_to_string(repo().join("dist/ringtalk.service")).unwrap();
    // The unit names the installed binary; verify checks that ExecStart can run, so point it at
    // the one just built.
    assert!(
        unit.contains("ExecStart=/usr/local/bin/ringtalk "),
        "{unit}"
    );
    let unit = unit.replace("/usr/local/bin/ringtalk", env!("CARGO_BIN_EXE_ringtalk"));
    for needed in [
        "Type=notify",
        "LimitNOFILE=1048576",
        "LimitMEMLOCK=",
        "DynamicUser=yes",
        "StateDirectory=ringtalk",
        "ProtectSystem=strict",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "--config /etc/ringtalk/ringtalk.toml",
    ] {
        assert!(unit.contains(needed), "the unit lacks {needed}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ringtalk.service");
    std::fs::write(&path, unit).unwrap();
    let verified = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&verified.stderr);
    assert!(verified.status.success(), "{said}");
    // Any complaint about this unit is a warning worth fixing (other units of the machine may
    // have their own).
    assert!(!said.contains("ringtalk.service"), "{said}");
}

/// The next notification on `socket`, within a deadline.
fn notification(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = socket
        .recv(&mut buf)
        .expect("a notification within the deadline");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn the_server_tells_its_service_manager_when_it_is_ready_and_when_it_stops() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut server = Command::new(env!("CARGO_BIN_EXE_ringtalk"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--shards",
            "2",
            "--bcrypt-cost",
            "4",
        ])
        .args(["--stats-interval", "0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("NOTIFY_SOCKET", &socket_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ready = notification(&socket);
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    assert!(
        ready
            .lines()
            .any(|l| l.starts_with("STATUS=listening on 127.0.0.1:")),
        "{ready:?}"
    );
    let pid = server.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let stopping = notification(&socket);
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
    assert!(server.wait().unwrap().success());
}

#[test]
fn the_tuning_script_names_every_setting_and_changes_nothing_without_apply() {
    let out = Command::new("sh")
        .arg(repo().join("scripts/tune-linux.sh"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let said = String::from_utf8_lossy(&out.stdout);
    for name in [
        "net.core.somaxconn",
        "net.ipv4.tcp_max_syn_backlog",
        "net.ipv4.ip_local_port_range",
        "fs.file-max",
        "fs.nr_open",
        "fs.epoll.max_user_watches",
    ] {
        let line = said
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} missing from {said}"));
        assert!(line.contains(" # "), "no reason given: {line}");
    }
    assert!(said.contains("Nothing changed."), "{said}");
    let refused = Command::new("sh")
        .arg(repo().join("scripts/tune-linux.sh"))
        .arg("--bogus")
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
}
