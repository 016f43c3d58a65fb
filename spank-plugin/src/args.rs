//! The plugstack.conf arguments after the plugin path, parsed in one place
//! with every default set here. Unknown keys are errors, so a typo in the
//! cluster's plugstack.conf fails loudly instead of silently changing nothing.

use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ArgsError {
    #[error("plugstack.conf: argument {0:?} is not key=value: write e.g. config=/etc/shifter/shifter.toml")]
    NotKeyValue(String),
    #[error("plugstack.conf: unknown argument `{0}`: the plugin takes config=PATH")]
    UnknownKey(String),
    #[error("plugstack.conf: `{0}` is given twice: keep one")]
    Duplicate(String),
    #[error("plugstack.conf: config={0:?} is not an absolute path")]
    RelativeConfig(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginArgs {
    /// The site config (`config=`), default `/etc/shifter/shifter.toml`.
    pub config: PathBuf,
}

impl Default for PluginArgs {
    fn default() -> Self {
        PluginArgs {
            config: PathBuf::from(runtime_core::DEFAULT_CONFIG_PATH),
        }
    }
}

impl PluginArgs {
    pub fn parse(args: &[String]) -> Result<PluginArgs, ArgsError> {
        let mut out = PluginArgs::default();
        let mut seen: Vec<&str> = Vec::new();
        for arg in args {
            let (key, value) = arg
                .split_once('=')
                .ok_or_else(|| ArgsError::NotKeyValue(arg.clone()))?;
            if seen.contains(&key) {
                return Err(ArgsError::Duplicate(key.to_owned()));
            }
            seen.push(key);
            match key {
                "config" => {
                    if !value.starts_with('/') {
                        return Err(ArgsError::RelativeConfig(value.to_owned()));
                    }
                    out.config = PathBuf::from(value);
                }
                _ => return Err(ArgsError::UnknownKey(key.to_owned())),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<PluginArgs, ArgsError> {
        PluginArgs::parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn no_arguments_give_the_documented_default_config() {
        assert_eq!(
            parse(&[]).unwrap().config,
            PathBuf::from("/etc/shifter/shifter.toml")
        );
    }

    #[test]
    fn config_path_is_read() {
        let a = parse(&["config=/tmp/tb/etc/shifter.toml"]).unwrap();
        assert_eq!(a.config, PathBuf::from("/tmp/tb/etc/shifter.toml"));
    }

    #[test]
    fn unknown_key_is_refused_by_name() {
        let e = parse(&["config=/a", "imagedir=/x"]).unwrap_err();
        assert_eq!(e, ArgsError::UnknownKey("imagedir".into()));
        assert!(e.to_string().contains("unknown argument `imagedir`"));
    }

    #[test]
    fn malformed_duplicate_and_relative_arguments_are_refused() {
        assert_eq!(
            parse(&["verbose"]).unwrap_err(),
            ArgsError::NotKeyValue("verbose".into())
        );
        assert_eq!(
            parse(&["config=/a", "config=/b"]).unwrap_err(),
            ArgsError::Duplicate("config".into())
        );
        assert_eq!(
            parse(&["config=etc/shifter.toml"]).unwrap_err(),
            ArgsError::RelativeConfig("etc/shifter.toml".into())
        );
    }
}
