//! The generated `/etc` files: `passwd` and `group` naming the user (and the
//! site's extra users), so tools inside the image know who they are, and an
//! `nsswitch.conf` that only consults those files.

use crate::config::ExtraUser;
use crate::user::UserInfo;

pub const NSSWITCH: &str = "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n";

/// `/etc/passwd`: root, the user, then the extra users (skipping clashes).
pub fn passwd(user: &UserInfo, extra: &[ExtraUser]) -> String {
    let mut out = String::from("root:x:0:0:root:/root:/bin/sh\n");
    let mut seen = vec![0u32];
    if user.uid != 0 {
        out.push_str(&format!(
            "{}:x:{}:{}:{}:{}:{}\n",
            user.name, user.uid, user.gid, user.name, user.home, user.shell
        ));
        seen.push(user.uid);
    }
    for e in extra {
        if !seen.contains(&e.uid) {
            out.push_str(&format!(
                "{}:x:{}:{}:{}:{}:{}\n",
                e.name, e.uid, e.gid, e.name, e.home, e.shell
            ));
            seen.push(e.uid);
        }
    }
    out
}

/// `/etc/group`: root, the user's groups (listing the user as member), and the
/// extra users' groups.
pub fn group(user: &UserInfo, extra: &[ExtraUser]) -> String {
    let mut out = String::from("root:x:0:\n");
    let mut seen = vec![0u32];
    let primary = std::iter::once((user.gid, user.group_name.as_str()));
    for (gid, name) in primary.chain(user.groups.iter().map(|(g, n)| (*g, n.as_str()))) {
        if !seen.contains(&gid) {
            out.push_str(&format!("{name}:x:{gid}:{}\n", user.name));
            seen.push(gid);
        }
    }
    for e in extra {
        if !seen.contains(&e.gid) {
            let name = e.group.as_deref().unwrap_or(&e.name);
            out.push_str(&format!("{name}:x:{}:\n", e.gid));
            seen.push(e.gid);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> UserInfo {
        UserInfo {
            name: "alice".into(),
            uid: 1001,
            gid: 1001,
            group_name: "alice".into(),
            groups: vec![(50, "staff".into())],
            home: "/home/alice".into(),
            shell: "/bin/bash".into(),
        }
    }

    #[test]
    fn passwd_names_root_the_user_and_extra_users() {
        let extra = vec![ExtraUser {
            name: "munge".into(),
            uid: 101,
            gid: 102,
            group: None,
            home: "/".into(),
            shell: "/bin/false".into(),
        }];
        assert_eq!(
            passwd(&user(), &extra),
            "root:x:0:0:root:/root:/bin/sh\nalice:x:1001:1001:alice:/home/alice:/bin/bash\nmunge:x:101:102:munge:/:/bin/false\n"
        );
        assert_eq!(
            group(&user(), &extra),
            "root:x:0:\nalice:x:1001:alice\nstaff:x:50:alice\nmunge:x:102:\n"
        );
    }

    #[test]
    fn extra_user_clashing_with_the_user_is_skipped() {
        let extra = vec![ExtraUser {
            name: "other".into(),
            uid: 1001,
            gid: 1001,
            group: None,
            home: "/".into(),
            shell: "/bin/sh".into(),
        }];
        assert!(!passwd(&user(), &extra).contains("other"));
        assert!(!group(&user(), &extra).contains("other"));
    }
}
