//! Entering a prepared root (design §4, step 7) and dropping to the user.
//!
//! Order matters: chroot while we still may, then empty the bounding set
//! (needs CAP_SETPCAP, which we still have), clear the inheritable and ambient
//! sets (a uid change does not), and set no_new_privs so no later exec —
//! setuid binary or file capability — can gain anything. The uid/gid change
//! comes last because it also removes the capabilities the earlier steps need.

use std::path::Path;

use thiserror::Error;

use crate::prepared::PreparedRoot;
use crate::sys::{Ids, Sys, SysError};
use crate::user::UserInfo;

#[derive(Debug, Error)]
pub enum EntryError {
    #[error("entering the container: {0}")]
    Sys(#[from] SysError),
    #[error("refusing to run a container as root (uid 0): run it as an ordinary user")]
    RootTarget,
    #[error("privilege drop did not take effect ({what}): refusing to continue")]
    ReadBack { what: String },
}

/// Per task: chroot into the root, drop the bounding set, clear inheritable
/// and ambient capabilities, set no_new_privs. The caller (Slurm) then
/// changes to the user; `shifter` calls [`drop_to_user`].
pub fn enter(sys: &dyn Sys, root: &PreparedRoot) -> Result<(), EntryError> {
    sys.chroot(&root.root)?;
    sys.chdir(Path::new("/"))?;
    sys.drop_bounding_set()?;
    sys.clear_inheritable_and_ambient()?;
    sys.set_no_new_privs()?;
    Ok(())
}

/// setgroups → setresgid → setresuid, then reads everything back and fails
/// closed unless every id is the user's, every capability set is empty and
/// no_new_privs is on.
pub fn drop_to_user(sys: &dyn Sys, user: &UserInfo) -> Result<(), EntryError> {
    if user.uid == 0 {
        return Err(EntryError::RootTarget);
    }
    let creds = user.creds();
    sys.setgroups(&creds.groups)?;
    sys.setresgid(user.gid)?;
    sys.setresuid(user.uid)?;
    verify(sys, user)
}

/// The read-back check of [`drop_to_user`], usable on its own after Slurm's drop.
pub fn verify(sys: &dyn Sys, user: &UserInfo) -> Result<(), EntryError> {
    let ids = sys.read_ids()?;
    let mut want_groups = user.creds().groups;
    want_groups.sort_unstable();
    let mut got_groups = ids.groups.clone();
    got_groups.sort_unstable();
    got_groups.dedup();
    want_groups.dedup();
    let expected = Ids {
        ruid: user.uid,
        euid: user.uid,
        suid: user.uid,
        rgid: user.gid,
        egid: user.gid,
        sgid: user.gid,
        groups: want_groups,
    };
    let got = Ids {
        groups: got_groups,
        ..ids
    };
    if got != expected {
        return Err(EntryError::ReadBack {
            what: format!("ids are {got:?}, expected {expected:?}"),
        });
    }
    let caps = sys.read_caps()?;
    if !caps.all_empty() {
        return Err(EntryError::ReadBack {
            what: format!("capability sets are not empty: {caps:?}"),
        });
    }
    if !sys.no_new_privs()? {
        return Err(EntryError::ReadBack {
            what: "no_new_privs is not set".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fake::{Call, FakeSys};

    fn user() -> UserInfo {
        UserInfo::from_ids("alice", 1001, 1001, &[50], "/home/alice")
    }

    fn prepared() -> PreparedRoot {
        PreparedRoot {
            root: "/run/shifter/root".into(),
            loop_device: "/dev/loop0".into(),
            mounts: vec![],
        }
    }

    #[test]
    fn entry_then_drop_happens_in_the_documented_order() {
        let sys = FakeSys::new();
        enter(&sys, &prepared()).unwrap();
        drop_to_user(&sys, &user()).unwrap();
        assert_eq!(
            sys.calls(),
            vec![
                Call::Chroot("/run/shifter/root".into()),
                Call::Chdir("/".into()),
                Call::DropBoundingSet,
                Call::ClearInheritableAndAmbient,
                Call::SetNoNewPrivs,
                Call::Setgroups(vec![1001, 50]),
                Call::Setresgid(1001),
                Call::Setresuid(1001),
            ]
        );
    }

    #[test]
    fn root_target_is_refused_before_any_change() {
        let sys = FakeSys::new();
        let root = UserInfo::from_ids("root", 0, 0, &[], "/root");
        assert!(matches!(
            drop_to_user(&sys, &root),
            Err(EntryError::RootTarget)
        ));
        assert!(sys.calls().is_empty());
    }

    #[test]
    fn a_saved_uid_left_at_zero_fails_closed() {
        let sys = FakeSys::new();
        sys.broken_setresuid.set(true);
        enter(&sys, &prepared()).unwrap();
        let err = drop_to_user(&sys, &user()).unwrap_err();
        assert!(matches!(err, EntryError::ReadBack { .. }), "{err}");
    }

    #[test]
    fn skipping_the_entry_steps_fails_the_read_back() {
        // Without enter(), the bounding set and no_new_privs are untouched.
        let sys = FakeSys::new();
        let err = drop_to_user(&sys, &user()).unwrap_err();
        assert!(
            err.to_string().contains("capability sets are not empty"),
            "{err}"
        );
    }
}
