//! Prepares and enters a container root built from a squashfs image, on one node.

pub mod config;
pub mod trust;

pub use config::{Config, ConfigError, ExtraUser, Module, SiteMount, TmpMode, DEFAULT_CONFIG_PATH};
