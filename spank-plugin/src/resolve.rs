//! Turning a reference into an image id through the gateway, on the submit
//! host (see [`gw_client::resolve_ready`]).

use std::time::Duration;

use gw_client::Client;
pub use gw_client::ResolveError;
use runtime_core::Config;
use shifter_api::{ImageId, ImageRef};

use crate::error::PluginError;

/// The id of `image`: `id:` references as they are, others looked up on the
/// configured gateways (blocking, each with the configured timeout, in order).
/// The credentials are restricted to the site's gateway account, so one sent
/// to an impostor at a gateway address is useless at the real gateway.
pub fn resolve(cfg: &Config, image: &ImageRef) -> Result<ImageId, PluginError> {
    if let ImageRef::Id(id) = image {
        return Ok(id.clone());
    }
    let client = Client::new(
        cfg.gateways.clone(),
        cfg.system.clone(),
        Duration::from_secs(cfg.lookup_timeout_secs),
        Some(cfg.munge_socket.clone()),
        cfg.gateway_account()?,
    )
    .map_err(|source| ResolveError::Gateway {
        image: image.to_string(),
        source,
    })?;
    Ok(gw_client::resolve_ready(&client, image)?)
}
