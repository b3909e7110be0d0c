//! Why the index could not be used.

use std::path::{Path, PathBuf};

use crate::models::DIMENSIONS;

/// Why the index could not be used.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("index I/O at {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("full-text index: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    #[error("vector of {0} dimensions, expected {DIMENSIONS}")]
    Dimensions(usize),
    #[error("approximate vector index: {0}")]
    Approximate(String),
}

pub(super) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> IndexError + '_ {
    move |source| IndexError::Io {
        path: path.to_path_buf(),
        source,
    }
}
