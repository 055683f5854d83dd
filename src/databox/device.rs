//! Device profiles: how much one Azure Data Box device of each kind holds
//! (usable bytes, files, containers), as Microsoft documents it, and
//! whether a tree fits one. The sources are cited in `docs/databox.md`
//! ("Device profiles"); `custom` takes explicit limits.

use std::fmt;

use serde::Serialize;

/// A kind of device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceKind {
    /// Data Box Disk: one order of up to five 8 TB SSDs, about 35 TB
    /// usable, 100,000 files.
    DataboxDisk,
    /// Data Box (100 TB raw): 80 TB usable, 500 million files.
    Databox,
    /// Data Box 120 (next generation): 120 TB, 500 million files.
    Databox120,
    /// Data Box 525 (next generation): 525 TB, 1 billion files.
    Databox525,
    /// One node of a Data Box Heavy (770 TB usable over two nodes): 385 TB,
    /// 1 billion files and 512 containers per node.
    DataboxHeavy,
    /// Limits given on the command line.
    Custom,
}

impl DeviceKind {
    /// Every kind, as `--device` spells it.
    pub const ALL: [DeviceKind; 6] = [
        DeviceKind::DataboxDisk,
        DeviceKind::Databox,
        DeviceKind::Databox120,
        DeviceKind::Databox525,
        DeviceKind::DataboxHeavy,
        DeviceKind::Custom,
    ];

    /// Its name on the command line and in splits.
    pub fn name(self) -> &'static str {
        match self {
            DeviceKind::DataboxDisk => "databox-disk",
            DeviceKind::Databox => "databox",
            DeviceKind::Databox120 => "databox-120",
            DeviceKind::Databox525 => "databox-525",
            DeviceKind::DataboxHeavy => "databox-heavy",
            DeviceKind::Custom => "custom",
        }
    }

    /// The kind `name` spells.
    pub fn parse(name: &str) -> Option<DeviceKind> {
        DeviceKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The documented limits of one device of this kind (`None` for
    /// [`DeviceKind::Custom`], whose limits are given).
    pub fn profile(self) -> Option<Device> {
        const TB: u64 = 1_000_000_000_000;
        let (bytes, files) = match self {
            DeviceKind::DataboxDisk => (35 * TB, 100_000),
            DeviceKind::Databox => (80 * TB, 500_000_000),
            DeviceKind::Databox120 => (120 * TB, 500_000_000),
            DeviceKind::Databox525 => (525 * TB, 1_000_000_000),
            DeviceKind::DataboxHeavy => (385 * TB, 1_000_000_000),
            DeviceKind::Custom => return None,
        };
        Some(Device {
            kind: self,
            bytes,
            files,
            containers: Some(MAX_CONTAINERS),
        })
    }
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Containers (or shares) one device of any kind uploads into.
pub const MAX_CONTAINERS: u64 = 512;

/// The share of a device `custody split` leaves free by default, in
/// percent of its usable bytes (file system metadata: Data Box's ReFS
/// takes some of the stated capacity).
pub const DEFAULT_HEADROOM_PERCENT: u64 = 5;

/// One device's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Device {
    /// Its kind.
    pub kind: DeviceKind,
    /// Usable bytes.
    pub bytes: u64,
    /// Most files.
    pub files: u64,
    /// Most containers (top-level folders of a share), if limited.
    pub containers: Option<u64>,
}

/// What a tree (or a shard) holds, against a device's limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Load {
    /// Bytes.
    pub bytes: u64,
    /// Files.
    pub files: u64,
    /// Containers.
    pub containers: u64,
}

/// Whether a tree fits one device, and if not, how many it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Fit {
    /// The device.
    pub device: Device,
    /// What the tree holds.
    pub load: Load,
    /// At least this many devices hold it (1 when it fits): by bytes,
    /// files and containers alone; keeping studies whole may take more
    /// (`custody split` says exactly).
    pub devices: u64,
}

impl Fit {
    /// Whether it fits one device.
    pub fn fits(&self) -> bool {
        self.devices <= 1
    }
}

impl fmt::Display for Fit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.device;
        let over: Vec<String> = [
            (self.load.bytes > d.bytes).then(|| {
                format!(
                    "{} bytes (one {} holds {})",
                    self.load.bytes, d.kind, d.bytes
                )
            }),
            (self.load.files > d.files).then(|| {
                format!(
                    "{} files (one {} holds {})",
                    self.load.files, d.kind, d.files
                )
            }),
            d.containers.filter(|&c| self.load.containers > c).map(|c| {
                format!(
                    "{} containers (one {} holds {c})",
                    self.load.containers, d.kind
                )
            }),
        ]
        .into_iter()
        .flatten()
        .collect();
        if over.is_empty() {
            write!(f, "fits one {}", d.kind)
        } else {
            write!(
                f,
                "does not fit one {}: {}; it needs at least {} devices",
                d.kind,
                over.join(", "),
                self.devices
            )
        }
    }
}

impl Device {
    /// Explicit limits (`--device custom`).
    pub fn custom(bytes: u64, files: u64, containers: Option<u64>) -> Device {
        Device {
            kind: DeviceKind::Custom,
            bytes,
            files,
            containers,
        }
    }

    /// The most bytes a shard holds with `headroom_percent` left free.
    pub fn shard_bytes(&self, headroom_percent: u64) -> u64 {
        let free = u128::from(self.bytes) * u128::from(headroom_percent.min(100)) / 100;
        self.bytes - free as u64
    }

    /// How `load` fits this device, with `bytes` as the usable bytes.
    pub fn fit(&self, load: Load, bytes: u64) -> Fit {
        let need = |have: u64, cap: u64| match cap {
            0 if have > 0 => u64::MAX,
            0 => 0,
            cap => have.div_ceil(cap),
        };
        let devices = need(load.bytes, bytes)
            .max(need(load.files, self.files))
            .max(self.containers.map_or(0, |c| need(load.containers, c)))
            .max(1);
        Fit {
            device: *self,
            load,
            devices,
        }
    }

    /// Whether `load` is within every limit, with `bytes` usable.
    pub fn holds(&self, load: &Load, bytes: u64) -> bool {
        load.bytes <= bytes
            && load.files <= self.files
            && self.containers.is_none_or(|c| load.containers <= c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_and_have_documented_limits() {
        for k in DeviceKind::ALL {
            assert_eq!(DeviceKind::parse(k.name()), Some(k));
        }
        let disk = DeviceKind::DataboxDisk.profile().unwrap();
        assert_eq!(disk.files, 100_000);
        assert_eq!(disk.containers, Some(512));
        assert!(DeviceKind::Custom.profile().is_none());
    }

    #[test]
    fn devices_needed_is_the_largest_of_each_limit() {
        let d = Device::custom(1000, 150, Some(2));
        let load = Load {
            bytes: 1001,
            files: 450,
            containers: 1,
        };
        let fit = d.fit(load, d.bytes);
        assert_eq!(fit.devices, 3);
        assert!(!fit.fits());
        assert!(fit.to_string().contains("450 files"), "{fit}");
        let one = d.fit(
            Load {
                bytes: 1000,
                files: 150,
                containers: 2,
            },
            d.bytes,
        );
        assert!(one.fits(), "{one}");
        assert_eq!(d.shard_bytes(5), 950);
    }
}
