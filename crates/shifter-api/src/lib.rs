//! Plain data shared by the runtime, the Slurm plugin, the gateway and the CLIs:
//! image references, the gateway's image record, the on-disk `<id>.json` image
//! metadata and the pull status machine. No I/O lives here.

pub mod credential;
pub mod meta;
pub mod record;
pub mod reference;

pub use meta::{ImageAcl, ImageMeta, Platform};
pub use record::{ApiErrorBody, ImageList, ImageRecord, ImageStatus, PullRequest};
pub use reference::{DockerRef, ImageId, ImageRef, ImageType, RefError};
