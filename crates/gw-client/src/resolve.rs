//! A tag to the id of a READY image, as every launcher needs it (the Slurm
//! plugin on the submit host, `shifter`): the id is then what every node and
//! every nested launch uses, so a tag re-pushed meanwhile does not change it.

use shifter_api::{ImageId, ImageRef, ImageStatus, RefError};
use thiserror::Error;

use crate::{Client, ClientError};

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

/// The id of `image`: `id:` references as they are, others looked up with
/// `client`; an image that is not READY is refused.
pub fn resolve_ready(client: &Client, image: &ImageRef) -> Result<ImageId, ResolveError> {
    if let ImageRef::Id(id) = image {
        return Ok(id.clone());
    }
    let shown = image.to_string();
    let record = client
        .lookup(image)
        .map_err(|source| ResolveError::Gateway {
            image: shown.clone(),
            source,
        })?;
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
