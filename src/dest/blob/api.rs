//! Which Blob REST API an endpoint speaks, and what follows from it: the
//! `x-ms-version` every request carries, the SAS version custody signs,
//! and the largest block it may stage.
//!
//! Azure Storage accepts today's version (the SDK's own default). A Data
//! Box's local Blob REST endpoint supports storage API versions 2015-04-05
//! to 2019-02-02 only, with general-purpose v1 semantics (Microsoft's
//! "Azure Data Box Blob storage requirements"; docs/blob.md, "Data Box
//! REST"): every request is pinned to 2019-02-02, and nothing newer is
//! used. Put Block takes at most 100 MiB a block at that version ("Put
//! Block", "Remarks"), 4000 MiB from 2019-12-12 on.

use super::BlobUrl;
use super::auth::SasVersion;

/// The REST API of a blob endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Api {
    /// Azure Storage (or Azurite standing in for it): today's version.
    #[default]
    Azure,
    /// A Data Box's own Blob REST endpoint: 2019-02-02 and older only.
    DataBox,
}

/// The newest storage API version a Data Box's Blob REST endpoint takes.
pub const DATABOX_VERSION: &str = "2019-02-02";

/// Most blocks in one block blob, at every version.
pub const MAX_BLOCKS: u64 = 50_000;

const MIB: usize = 1 << 20;

impl Api {
    /// The API of `url`: a Data Box when its host says so
    /// (`*.blob.<serial>.microsoftdatabox.com`) or when `databox_rest`
    /// says so (an IP address on the box's data port, or a stand-in).
    pub fn of(url: &BlobUrl, databox_rest: bool) -> Api {
        if databox_rest || url.is_databox_host() {
            Api::DataBox
        } else {
            Api::Azure
        }
    }

    /// The `x-ms-version` to send; `None`: the SDK's own (today's).
    pub fn version(self) -> Option<&'static str> {
        match self {
            Api::Azure => None,
            Api::DataBox => Some(DATABOX_VERSION),
        }
    }

    /// The version of the account SAS custody signs for this endpoint.
    pub fn sas_version(self) -> SasVersion {
        match self {
            Api::Azure => SasVersion::V2022_11_02,
            Api::DataBox => SasVersion::V2019_02_02,
        }
    }

    /// The largest block custody stages here: its own cap of 256 MiB (one
    /// block per worker is held in memory), or the 100 MiB that Put Block
    /// takes at 2019-02-02.
    pub fn max_block_size(self) -> usize {
        match self {
            Api::Azure => 256 * MIB,
            Api::DataBox => 100 * MIB,
        }
    }

    /// What the endpoint is called in messages.
    pub fn name(self) -> &'static str {
        match self {
            Api::Azure => "Azure Storage",
            Api::DataBox => "a Data Box's Blob REST endpoint",
        }
    }
}

/// The largest blob that `block_size`-byte blocks can make
/// ([`MAX_BLOCKS`] of them).
pub fn max_blob_size(block_size: usize) -> u64 {
    MAX_BLOCKS * block_size as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_box_is_known_by_its_host_or_by_the_flag() {
        let azure = BlobUrl::parse("https://contoso.blob.core.windows.net/pacs").unwrap();
        let boxed =
            BlobUrl::parse("https://contoso.blob.DB1234.microsoftdatabox.com/pacs").unwrap();
        let by_ip = BlobUrl::parse("https://10.0.0.5/contoso/pacs").unwrap();
        assert_eq!(Api::of(&azure, false), Api::Azure);
        assert_eq!(Api::of(&boxed, false), Api::DataBox);
        assert_eq!(Api::of(&by_ip, false), Api::Azure);
        assert_eq!(Api::of(&by_ip, true), Api::DataBox);
        assert_eq!(Api::DataBox.version(), Some("2019-02-02"));
        assert_eq!(Api::Azure.version(), None);
        assert_eq!(Api::DataBox.sas_version().as_str(), "2019-02-02");
        assert_eq!(Api::DataBox.max_block_size(), 100 << 20);
    }

    #[test]
    fn fifty_thousand_blocks_bound_a_blob() {
        assert_eq!(max_blob_size(8 << 20), 50_000 * (8 << 20));
        // 50,000 blocks of 100 MiB: the "about 4.75 TiB" Data Box documents.
        assert_eq!(
            max_blob_size(Api::DataBox.max_block_size()),
            5_242_880_000_000
        );
    }
}
