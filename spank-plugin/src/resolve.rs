//! Turning a reference into an image id through the gateway, on the submit
//! host. The id is what every node and every nested `srun` then uses, so a tag
//! re-pushed while the job waits in the queue does not change what it runs.

use std::time::Duration;

use gw_client::{Client, ClientError};
use runtime_core::Config;
use shifter_api::{ImageId, ImageRef, ImageStatus, RefError};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ResolveError {
    #[error("image {image} is not available: {source}")]
    Gateway {
        image: String,
        #[source]
        source: ClientError,
    },
    #[error("image {image} is {status} on the gateway{}: wait for `shifterimg pull {image}` to finish", message_suffix(.message))]
    NotReady {
        image: String,
        status: ImageStatus,
        message: String,
    },
    #[error("the gateway returned an invalid id for {image}: {source}")]
    BadId {
        image: String,
        #[source]
        source: RefError,
    },
}

fn message_suffix(m: &str) -> String {
    if m.is_empty() {
        String::new()
    } else {
        format!(" ({m})")
    }
}

/// The id of `image`: `id:` references as they are, others looked up on the
/// configured gateways (blocking, each with the configured timeout, in order).
pub fn resolve(cfg: &Config, image: &ImageRef) -> Result<ImageId, ResolveError> {
    if let ImageRef::Id(id) = image {
        return Ok(id.clone());
    }
    let shown = image.to_string();
    let gw = |source| ResolveError::Gateway {
        image: shown.clone(),
        source,
    };
    let client = Client::new(
        cfg.gateways.clone(),
        cfg.system.clone(),
        Duration::from_secs(cfg.lookup_timeout_secs),
        Some(cfg.munge_socket.clone()),
    )
    .map_err(gw)?;
    let record = client.lookup(image).map_err(gw)?;
    if record.status != ImageStatus::Ready {
        return Err(ResolveError::NotReady {
            image: shown,
            status: record.status,
            message: record.status_message,
        });
    }
    ImageId::parse(&record.id).map_err(|source| ResolveError::BadId {
        image: shown,
        source,
    })
}
