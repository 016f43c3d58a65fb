//! A blocking client for the image gateway's REST API (design §3), for the
//! `shifterimg` CLI and the Slurm plugin. No threads and no async runtime, so it
//! is safe inside slurmstepd and srun.
//!
//! Every request carries a fresh Munge credential in the `authentication`
//! header, restricted to the gateway's account when it is configured and
//! bound to the request by its payload (`shifter_api::credential`). Gateways are tried in the configured order; a gateway that cannot be
//! reached, times out or answers 5xx is skipped, and a 4xx answer is final.

mod auth;
mod client;
mod error;
#[cfg(feature = "test-utils")]
pub mod fake;
mod resolve;
mod transport;

pub use auth::{Authenticator, MungeAuth};
pub use client::{Client, PollOptions};
pub use error::{ClientError, GatewayFailure};
pub use resolve::{resolve_ready, ResolveError};
pub use transport::http_log_allowed;
