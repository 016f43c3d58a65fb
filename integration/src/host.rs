//! Small facts about the test machine: a free loopback port, a user's ids, and
//! handing a directory to an account.

use std::path::Path;
use std::process::Command;

/// A TCP port on 127.0.0.1 nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn id(flag: &str, user: &str) -> u32 {
    let out = Command::new("id").args([flag, user]).output().unwrap();
    assert!(out.status.success(), "id {flag} {user}: no such user");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

pub fn uid_of(user: &str) -> u32 {
    id("-u", user)
}

/// The primary group of `user`.
pub fn gid_of(user: &str) -> u32 {
    id("-g", user)
}

/// `chown user: p`.
#[track_caller]
pub fn chown(user: &str, p: &Path) {
    let st = Command::new("chown")
        .arg(format!("{user}:"))
        .arg(p)
        .status()
        .unwrap();
    assert!(st.success(), "chown {user}: {}", p.display());
}
