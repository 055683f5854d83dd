//! Micro-benchmarks of the hot paths: hashing a stream (BLAKE3, CRC64 and
//! both in one pass), reading a DICOM header from that stream, encrypting,
//! encoding a manifest, recording landed files in the ledger, and sorting
//! paths in manifest order. Run with `cargo bench`; the side-by-side comparison with
//! other tools is `scripts/bench` (docs/PERFORMANCE.md).

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use custody::ledger::{LandedFile, Ledger};
use custody::manifest::{ChainHead, DicomEntry, FileEntry, Manifest, Operator, Tool, Totals};

fn hash(c: &mut Criterion) {
    let data = vec![0x5au8; 16 << 20];
    let mut g = c.benchmark_group("hash");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("blake3 16 MiB stream", |b| {
        b.iter(|| custody::digest::hash_reader(black_box(&data[..])).unwrap())
    });
    g.bench_function("crc64 16 MiB", |b| {
        b.iter(|| {
            let mut c = custody::digest::Crc64::new();
            c.update(black_box(&data));
            c.value()
        })
    });
    g.bench_function(
        "blake3 + crc64 16 MiB, 1 MiB pieces (the transfer's pass)",
        |b| {
            b.iter(|| {
                let mut s = custody::digest::Sums::new();
                for piece in black_box(&data).chunks(custody::digest::CHUNK) {
                    s.update(piece);
                }
                s.finish()
            })
        },
    );
    g.finish();
}

fn encrypt(c: &mut Criterion) {
    use std::io::Write;
    let data = vec![0x5au8; 16 << 20];
    let key = custody::crypt::EncryptionKey::generate();
    let mut g = c.benchmark_group("encrypt");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("AES-256-GCM STREAM 16 MiB, 64 KiB chunks", |b| {
        b.iter(|| {
            let mut w = custody::crypt::EncryptWriter::new(
                std::io::sink(),
                &key,
                custody::crypt::DEFAULT_CHUNK,
            )
            .unwrap();
            w.write_all(black_box(&data)).unwrap();
            w.finish().unwrap()
        })
    });
    g.finish();
}

fn files(n: usize) -> Vec<FileEntry> {
    (0..n)
        .map(|i| FileEntry {
            blake3: blake3::hash(&i.to_le_bytes()).to_hex().to_string(),
            crc64: Some(format!("{:016x}", i as u64 * 0x9e37_79b9)),
            mtime: "2024-01-01T08:30:00.123456789Z".into(),
            path: format!("PAT{:05}/STUDY{}/SERIES{}/IM{i:06}", i / 400, i % 4, i % 7),
            size: 400_000 + i as u64,
            stored: None,
            version_of: None,
            // As for a PACS archive: every file an instance.
            dicom: Some(DicomEntry {
                instance: Some(format!("1.2.826.0.1.3680043.8.498.{}.{i}", i / 400)),
                modality: Some("CT".into()),
                series: Some(format!("1.2.826.0.1.3680043.8.498.{}.{}", i / 400, i % 7)),
                sop_class: Some("1.2.840.10008.5.1.4.1.1.2".into()),
                study: Some(format!("1.2.826.0.1.3680043.8.498.{}", i / 400)),
            }),
        })
        .collect()
}

fn head(files: Vec<FileEntry>) -> Manifest {
    Manifest {
        created: "2026-11-23T21:45:00Z".into(),
        destination: "/mnt/databox/contoso_BlockBlob/pacs".into(),
        encryption: None,
        excluded: vec![],
        totals: Totals {
            bytes: files.iter().map(|f| f.size).sum(),
            excluded: 0,
            files: files.len() as u64,
        },
        files,
        format: custody::manifest::FORMAT.into(),
        host: "bench".into(),
        id: "20261123T214500Z-00000000".into(),
        ledger_head: ChainHead {
            hash: "0".repeat(64),
            seq: 1,
        },
        operator: Operator {
            identity: "bench".into(),
            key_fingerprint: "SHA256:x".into(),
        },
        run: 1,
        source: "/srv/pacs".into(),
        tool: Tool {
            name: "custody".into(),
            version: "0".into(),
        },
        version: custody::manifest::VERSION_CRC64,
        wave: None,
        job: None,
        source_changes: None,
        selection: None,
        shard: None,
        tree: None,
    }
}

fn manifest_encode(c: &mut Criterion) {
    let m = head(files(10_000));
    let mut g = c.benchmark_group("manifest");
    g.throughput(Throughput::Elements(10_000));
    g.bench_function("canonical encode, 10k files", |b| {
        b.iter(|| black_box(&m).to_canonical())
    });
    let bytes = m.to_canonical();
    g.bench_function("parse, 10k files", |b| {
        b.iter(|| Manifest::parse(black_box(&bytes)).unwrap())
    });
    g.finish();
}

/// What the Merkle tree adds to a seal (docs/proofs.md): the same
/// streamed encode of 100,000 entries (the seal's path, to a sink) as a
/// version 4 manifest and as a version 9 one, which hashes every entry
/// into the tree as it writes it.
fn merkle(c: &mut Criterion) {
    use custody::manifest::{Tree, VERSION_DICOM, VERSION_TREE, write_canonical};
    const N: usize = 100_000;
    let entries = files(N);
    let mut plain = head(Vec::new());
    plain.version = VERSION_DICOM;
    let mut treed = plain.clone();
    treed.version = VERSION_TREE;
    treed.tree = Some(Tree {
        base: VERSION_DICOM,
        root: String::new(),
        size: 0,
    });
    let encode = |m: &Manifest| {
        write_canonical::<std::convert::Infallible>(
            m,
            std::iter::empty(),
            entries.iter().cloned().map(Ok),
            std::io::sink(),
        )
        .unwrap()
    };
    let mut g = c.benchmark_group("merkle");
    g.throughput(Throughput::Elements(N as u64));
    g.sample_size(10);
    g.bench_function("streamed encode, 100k files, version 4", |b| {
        b.iter(|| encode(black_box(&plain)))
    });
    g.bench_function("streamed encode, 100k files, version 9 (+ tree)", |b| {
        b.iter(|| encode(black_box(&treed)))
    });
    let leaves: Vec<Vec<u8>> = entries
        .iter()
        .map(|f| serde_json::to_vec(f).unwrap())
        .collect();
    g.bench_function("tree root alone, 100k entries", |b| {
        b.iter(|| {
            let mut t = custody::merkle::Builder::new();
            for l in &leaves {
                t.push(black_box(l));
            }
            t.root()
        })
    });
    g.finish();
}

fn ledger_insert(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let g = custody::keys::generate(&dir.path().join("k"), "bench").unwrap();
    let key = custody::keys::SigningKey::load(&g.private_key).unwrap();
    let mut ledger = Ledger::open(&dir.path().join("bench.db")).unwrap();
    let run = ledger
        .begin_run(&custody::ledger::NewRun::new("/src", "/dst"), &key)
        .unwrap();
    let batch: Vec<LandedFile> = files(1024)
        .into_iter()
        .map(|f| LandedFile {
            path: f.path,
            size: f.size,
            mtime_ns: 1_704_097_800_000_000_000,
            blake3: f.blake3,
            crc64: f.crc64,
            stored: None,
            dicom: f.dicom,
            version_of: None,
        })
        .collect();
    let mut grp = c.benchmark_group("ledger");
    grp.throughput(Throughput::Elements(batch.len() as u64));
    grp.bench_function("record a batch of 1024 landed files", |b| {
        b.iter(|| ledger.record_batch(run.id, &batch, &[], &[], &[]).unwrap())
    });
    grp.finish();
}

fn component_sort(c: &mut Criterion) {
    let paths: Vec<String> = files(10_000).into_iter().map(|f| f.path).collect();
    c.bench_function("sort 10k paths in component order", |b| {
        b.iter_batched(
            || paths.clone(),
            |mut v| v.sort_by(|a, b| custody::relpath::cmp_components(a, b)),
            BatchSize::SmallInput,
        )
    });
}

/// A synthetic CT-like Part 10 file (made-up values): meta group, a dozen
/// header elements, then 512 KiB of pixel data.
fn ct_like() -> Vec<u8> {
    fn el(out: &mut Vec<u8>, group: u16, elem: u16, vr: &[u8; 2], value: &[u8]) {
        out.extend_from_slice(&group.to_le_bytes());
        out.extend_from_slice(&elem.to_le_bytes());
        out.extend_from_slice(vr);
        if matches!(vr, b"OB" | b"OW" | b"UN" | b"UT") {
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        } else {
            out.extend_from_slice(&(value.len() as u16).to_le_bytes());
        }
        out.extend_from_slice(value);
    }
    let mut meta = Vec::new();
    el(&mut meta, 2, 0x0001, b"OB", &[0, 1]);
    el(&mut meta, 2, 0x0002, b"UI", b"1.2.840.10008.5.1.4.1.1.2\0");
    el(&mut meta, 2, 0x0003, b"UI", b"1.2.826.0.1.3680043.8.498.1");
    el(&mut meta, 2, 0x0010, b"UI", b"1.2.840.10008.1.2.1\0");
    let mut f = vec![0u8; 128];
    f.extend_from_slice(b"DICM");
    el(&mut f, 2, 0x0000, b"UL", &(meta.len() as u32).to_le_bytes());
    f.extend_from_slice(&meta);
    el(&mut f, 8, 0x0016, b"UI", b"1.2.840.10008.5.1.4.1.1.2\0");
    el(&mut f, 8, 0x0018, b"UI", b"1.2.826.0.1.3680043.8.498.1");
    el(&mut f, 8, 0x0060, b"CS", b"CT");
    el(&mut f, 0x10, 0x0010, b"PN", b"Synthetic^Bench");
    el(&mut f, 0x10, 0x0020, b"LO", b"BENCH-1 ");
    el(
        &mut f,
        0x20,
        0x000d,
        b"UI",
        b"1.2.826.0.1.3680043.8.498.2\0",
    );
    el(
        &mut f,
        0x20,
        0x000e,
        b"UI",
        b"1.2.826.0.1.3680043.8.498.3\0",
    );
    el(&mut f, 0x28, 0x0010, b"US", &512u16.to_le_bytes());
    el(&mut f, 0x28, 0x0011, b"US", &512u16.to_le_bytes());
    el(&mut f, 0x28, 0x0100, b"US", &16u16.to_le_bytes());
    el(&mut f, 0x7fe0, 0x0010, b"OW", &vec![0x11; 512 * 512 * 2]);
    f
}

fn dicom(c: &mut Criterion) {
    let file = ct_like();
    let mut g = c.benchmark_group("dicom");
    g.throughput(Throughput::Bytes(file.len() as u64));
    g.bench_function("probe a 512 KiB CT-like file in 1 MiB reads", |b| {
        b.iter(|| {
            let mut p = custody::source::dicom::Probe::new();
            p.feed(black_box(&file));
            p.finish()
        })
    });
    g.bench_function("blake3 + crc64 + probe, the transfer's pass", |b| {
        b.iter(|| {
            let mut s = custody::digest::Sums::new();
            let mut p = custody::source::dicom::Probe::new();
            s.update(black_box(&file));
            p.feed(black_box(&file));
            (s.finish(), p.finish())
        })
    });
    g.bench_function("blake3 + crc64 alone, same file", |b| {
        b.iter(|| {
            let mut s = custody::digest::Sums::new();
            s.update(black_box(&file));
            s.finish()
        })
    });
    let plain = vec![0x5au8; file.len()];
    g.bench_function("probe a file that is not DICOM", |b| {
        b.iter(|| {
            let mut p = custody::source::dicom::Probe::new();
            p.feed(black_box(&plain));
            p.finish()
        })
    });
    g.finish();
    // It must have read the header, or the figures mean nothing.
    let mut p = custody::source::dicom::Probe::new();
    p.feed(&file);
    assert!(matches!(
        p.finish(),
        custody::source::dicom::Outcome::Dicom(_)
    ));
}

criterion_group!(
    benches,
    hash,
    dicom,
    encrypt,
    manifest_encode,
    merkle,
    ledger_insert,
    component_sort
);
criterion_main!(benches);
