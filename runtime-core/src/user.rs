//! The user a container is for: plain data the Slurm plugin fills from the job
//! and `shifter` fills from the host's account database.

use thiserror::Error;

use crate::sys::Creds;

#[derive(Debug, Error)]
pub enum UserError {
    #[error("uid {0} has no account on this host: ask the site admin to add it to the host's user database")]
    Unknown(u32),
    #[error("looking up uid {uid}: {errno}")]
    Lookup { uid: u32, errno: nix::errno::Errno },
}

/// Who the container's processes run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Name of the primary group.
    pub group_name: String,
    /// Supplementary groups (gid, name), not including the primary group.
    pub groups: Vec<(u32, String)>,
    pub home: String,
    pub shell: String,
}

impl UserInfo {
    /// Reads the account and its groups from the host (NSS).
    pub fn lookup(uid: u32) -> Result<UserInfo, UserError> {
        let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .map_err(|errno| UserError::Lookup { uid, errno })?
            .ok_or(UserError::Unknown(uid))?;
        let cname =
            std::ffi::CString::new(user.name.clone()).map_err(|_| UserError::Unknown(uid))?;
        let gids = nix::unistd::getgrouplist(&cname, user.gid).unwrap_or_else(|_| vec![user.gid]);
        let gid = user.gid.as_raw();
        let groups = gids
            .into_iter()
            .map(|g| g.as_raw())
            .filter(|g| *g != gid)
            .map(|g| (g, group_name(g)))
            .collect();
        Ok(UserInfo {
            name: user.name,
            uid,
            gid,
            group_name: group_name(gid),
            groups,
            home: user.dir.to_string_lossy().into_owned(),
            shell: user.shell.to_string_lossy().into_owned(),
        })
    }

    /// Builds a user from ids the caller already has (e.g. Slurm's job
    /// facts), naming groups from the host where it knows them.
    pub fn from_ids(name: &str, uid: u32, gid: u32, supplementary: &[u32], home: &str) -> UserInfo {
        UserInfo {
            name: name.to_owned(),
            uid,
            gid,
            group_name: group_name(gid),
            groups: supplementary
                .iter()
                .filter(|g| **g != gid)
                .map(|g| (*g, group_name(*g)))
                .collect(),
            home: home.to_owned(),
            shell: "/bin/sh".to_owned(),
        }
    }

    /// Every gid of the user, primary first.
    pub fn all_gids(&self) -> Vec<u32> {
        std::iter::once(self.gid)
            .chain(self.groups.iter().map(|g| g.0))
            .collect()
    }

    /// The credentials to switch to (supplementary groups include the primary).
    pub fn creds(&self) -> Creds {
        Creds {
            uid: self.uid,
            gid: self.gid,
            groups: self.all_gids(),
        }
    }
}

fn group_name(gid: u32) -> String {
    nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid))
        .ok()
        .flatten()
        .map(|g| g.name)
        .unwrap_or_else(|| format!("g{gid}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_account_is_found_on_the_host() {
        let u = UserInfo::lookup(0).unwrap();
        assert_eq!(u.name, "root");
        assert_eq!(u.gid, 0);
        assert_eq!(u.all_gids()[0], 0);
    }

    #[test]
    fn unknown_uid_gives_an_actionable_error() {
        let err = UserInfo::lookup(3_999_999_999).unwrap_err();
        assert!(err.to_string().contains("no account"), "{err}");
    }

    #[test]
    fn creds_list_the_primary_group_first_without_duplicates() {
        let u = UserInfo::from_ids("me", 1000, 100, &[100, 5, 7], "/home/me");
        assert_eq!(u.creds().groups, vec![100, 5, 7]);
    }
}
