//! Heap-free encoding with serde-json-core (agent side).

use core::fmt;
use serde::Serialize;

/// Why a payload could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// The buffer is too small for the payload.
    BufferFull,
    /// The value could not be represented (serde-json-core refused it).
    Unsupported,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EncodeError::BufferFull => "payload does not fit the encode buffer",
            EncodeError::Unsupported => "payload value cannot be encoded as JSON",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for EncodeError {}

/// Encodes `msg` as compact JSON into `buf`, returning the bytes written.
///
/// Never allocates: serde-json-core writes straight into the slice. Non-finite
/// floats are written as `null`; callers must not produce them (the decoder
/// rejects `null` where a number is required).
pub fn encode<T: Serialize>(msg: &T, buf: &mut [u8]) -> Result<usize, EncodeError> {
    serde_json_core::to_slice(msg, buf).map_err(|e| match e {
        serde_json_core::ser::Error::BufferFull => EncodeError::BufferFull,
        _ => EncodeError::Unsupported,
    })
}
