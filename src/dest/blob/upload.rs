//! Uploading one blob: the landing buffers a block at a time, stages each
//! block with its MD5 (checked by the service) under a deterministic id,
//! and commits the block list, reusing blocks an interrupted attempt
//! already staged.

use std::collections::HashMap;
use std::io::{self, Write};
use std::sync::atomic::Ordering;

use azure_core::http::RequestContent;
use azure_storage_blob::models::{
    BlockBlobClientCommitBlockListOptions, BlockBlobClientStageBlockOptions, BlockListType,
    BlockLookupList,
};

use super::retry::is_not_found;
use super::{Blob, Overwrite};
use crate::dest::{DestError, Landing};

/// A blob's committed or uncommitted block list as (id, size) pairs;
/// empty when the blob does not exist.
pub(super) fn block_list(
    blob: &Blob,
    client: &azure_storage_blob::BlockBlobClient,
    kind: BlockListType,
    rel: &str,
) -> Result<Vec<(Vec<u8>, u64)>, DestError> {
    let (committed, uncommitted) = match kind {
        BlockListType::Committed => (true, false),
        BlockListType::Uncommitted => (false, true),
        _ => (true, true),
    };
    match blob.retry("read the block list", || client.get_block_list(kind, None)) {
        Ok(r) => {
            let list = r.into_model().map_err(|e| blob.io_err(rel, &e))?;
            let pick = |on: bool, blocks: Option<Vec<_>>| {
                if on {
                    blocks.unwrap_or_default()
                } else {
                    Vec::new()
                }
            };
            Ok(pick(committed, list.committed_blocks)
                .into_iter()
                .chain(pick(uncommitted, list.uncommitted_blocks))
                .filter_map(|b| Some((b.name?, u64::try_from(b.size?).ok()?)))
                .collect())
        }
        Err(e) if is_not_found(&e) => Ok(Vec::new()),
        Err(e) => Err(blob.io_err(rel, &e)),
    }
}

/// The id of block `index` of blob `name` holding `data`.
pub(super) fn block_id(name: &str, index: u64, data: &[u8]) -> Vec<u8> {
    let mut h = blake3::Hasher::new();
    h.update(b"custody-block/1\0");
    h.update(name.as_bytes());
    h.update(&[0]);
    h.update(&index.to_le_bytes());
    h.update(blake3::hash(data).as_bytes());
    h.finalize().as_bytes().to_vec()
}

pub(super) struct BlobLanding<'b> {
    pub(super) blob: &'b Blob,
    pub(super) name: String,
    pub(super) rel: String,
    pub(super) buf: Vec<u8>,
    pub(super) ids: Vec<Vec<u8>>,
    pub(super) staged: HashMap<Vec<u8>, u64>,
    /// BLAKE3 of the blob's bytes, for the convenience metadata.
    pub(super) hasher: blake3::Hasher,
}

impl BlobLanding<'_> {
    fn stage(&mut self) -> io::Result<()> {
        let data = std::mem::take(&mut self.buf);
        let id = block_id(&self.name, self.ids.len() as u64, &data);
        let len = data.len() as u64;
        if self.staged.get(&id) == Some(&len) {
            self.blob
                .stats
                .bytes_reused
                .fetch_add(len, Ordering::Relaxed);
        } else {
            let md5 = block_md5(&data);
            let container = self
                .blob
                .container()
                .map_err(|e| io::Error::other(self.blob.explain(&e)))?;
            let client = container.blob_client(&self.name).block_blob_client();
            self.blob
                .retry("stage a block", || {
                    let options = BlockBlobClientStageBlockOptions {
                        transactional_content_md5: Some(md5.clone()),
                        ..Default::default()
                    };
                    client.stage_block(&id, len, RequestContent::from(data.clone()), Some(options))
                })
                .map_err(|e| io::Error::other(self.blob.explain(&e)))?;
            self.blob.stats.bytes_sent.fetch_add(len, Ordering::Relaxed);
        }
        self.ids.push(id);
        self.buf = Vec::with_capacity(self.blob.block_size);
        Ok(())
    }
}

/// MD5 of a block, for the service's transactional check (integrity in
/// transit only; custody's own proof is BLAKE3).
pub(super) fn block_md5(data: &[u8]) -> Vec<u8> {
    use md5::Digest;
    md5::Md5::digest(data).to_vec()
}

impl Write for BlobLanding<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut rest = data;
        while !rest.is_empty() {
            let take = (self.blob.block_size - self.buf.len()).min(rest.len());
            self.buf.extend_from_slice(&rest[..take]);
            self.hasher.update(&rest[..take]);
            rest = &rest[take..];
            if self.buf.len() == self.blob.block_size {
                self.stage()?;
            }
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Landing for BlobLanding<'_> {
    fn commit(mut self: Box<Self>) -> Result<(), DestError> {
        let rel = self.rel.clone();
        let fail = |e: io::Error| DestError::Io {
            path: format!("{}/{}", self.blob.url, rel).into(),
            source: e,
        };
        if !self.buf.is_empty() {
            self.stage().map_err(fail)?;
        }
        let blob = self.blob;
        let container = blob.container().map_err(|e| blob.io_err(&rel, &e))?;
        let blob_client = container.blob_client(&self.name);
        let client = blob_client.block_blob_client();
        // The overwrite policy, decided on content: equal committed block
        // lists mean equal bytes (block ids are content hashes). A blob
        // exists only once committed: staged blocks alone are not one.
        let existing_len =
            match blob.retry("read blob properties", || blob_client.get_properties(None)) {
                Ok(r) => {
                    use azure_storage_blob::models::BlobClientGetPropertiesResultHeaders;
                    Some(r.content_length().ok().flatten().unwrap_or(0))
                }
                Err(e) if is_not_found(&e) => None,
                Err(e) => return Err(blob.io_err(&rel, &e)),
            };
        if let Some(existing_len) = existing_len {
            let committed: Vec<Vec<u8>> =
                block_list(blob, &client, BlockListType::Committed, &rel)?
                    .into_iter()
                    .map(|(id, _)| id)
                    .collect();
            let same = committed == self.ids && (!self.ids.is_empty() || existing_len == 0);
            match blob.overwrite {
                _ if same && blob.overwrite != Overwrite::Always => return Ok(()),
                Overwrite::Never => {
                    return Err(DestError::Io {
                        path: format!("{}/{}", blob.url, rel).into(),
                        source: io::Error::new(
                            io::ErrorKind::AlreadyExists,
                            "a different blob already exists under this name; not overwritten (see --overwrite)",
                        ),
                    });
                }
                Overwrite::IfDifferent | Overwrite::Always => {}
            }
        }
        let list = BlockLookupList {
            committed: None,
            latest: Some(self.ids.clone()),
            uncommitted: None,
        };
        // Metadata for people browsing the container; verify never trusts
        // it (it re-reads and re-hashes the bytes).
        let metadata = HashMap::from([(
            "custody_blake3".to_owned(),
            self.hasher.finalize().to_hex().to_string(),
        )]);
        blob.retry("commit the block list", || {
            let body = list.clone().try_into();
            let client = &client;
            let options = BlockBlobClientCommitBlockListOptions {
                metadata: Some(metadata.clone()),
                ..Default::default()
            };
            async move { client.commit_block_list(body?, Some(options)).await }
        })
        .map_err(|e| blob.io_err(&rel, &e))?;
        Ok(())
    }
}
