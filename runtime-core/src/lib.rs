//! Prepares and enters a container root built from a squashfs image, on one node.
