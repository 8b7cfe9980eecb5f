//! The record blob the remote stores write (Redis, PostgreSQL): one format byte, then the
//! [`SessionRecord`] as MessagePack with named fields. Named fields let a field be added
//! without a format change (records carry their names, new fields have serde defaults); a
//! change old code could not read gets a new format byte. A blob with an unknown format byte,
//! or one that does not decode, is an error: a store fails closed on it, it never guesses.

use crate::record::SessionRecord;

/// The format byte of records written by this version.
pub(crate) const FORMAT_V1: u8 = 1;

/// Why a blob could not be written or read; each store wraps it in its own error type.
#[derive(Debug)]
pub(crate) enum BlobError {
    /// A format byte this version does not know.
    UnknownFormat(u8),
    /// An empty blob, or one that does not decode.
    Decode(String),
    /// The record could not be encoded.
    Encode(String),
}

pub(crate) fn encode(record: &SessionRecord) -> Result<Vec<u8>, BlobError> {
    let mut out = Vec::with_capacity(256);
    out.push(FORMAT_V1);
    rmp_serde::encode::write_named(&mut out, record)
        .map_err(|e| BlobError::Encode(e.to_string()))?;
    Ok(out)
}

pub(crate) fn decode(blob: &[u8]) -> Result<SessionRecord, BlobError> {
    match blob.split_first() {
        Some((&FORMAT_V1, rest)) => {
            rmp_serde::from_slice(rest).map_err(|e| BlobError::Decode(e.to_string()))
        }
        Some((&other, _)) => Err(BlobError::UnknownFormat(other)),
        None => Err(BlobError::Decode("empty record".into())),
    }
}
