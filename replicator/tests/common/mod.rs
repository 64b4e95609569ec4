//! Helpers for the replicator's integration tests: random images and byte-level comparison.

#![allow(dead_code)]

use std::path::Path;

use replicator::fileio;
use replicator::workload::Rng;
use replicator::{DiskImage, Format};

/// The guest-visible bytes of an image.
pub fn bytes(path: &Path) -> Vec<u8> {
    let img = DiskImage::open(path).unwrap();
    let f = img.open_data_read().unwrap();
    let mut v = vec![0u8; img.size as usize];
    fileio::read_at(&f, &mut v, 0).unwrap();
    v
}

/// Fills an image with a random mix of data runs, explicit zero runs (allocated zeros) and holes.
pub fn scribble(img: &DiskImage, rng: &mut Rng, runs: usize) {
    let f = img.open_data_rw().unwrap();
    for _ in 0..runs {
        let off = rng.below(img.size);
        let len = (1 + rng.below(256 << 10)).min(img.size - off) as usize;
        let mut buf = vec![0u8; len];
        match rng.below(4) {
            0 => {} // allocated zeros
            1 => fileio::punch_hole(&f, off, len as u64).unwrap(),
            _ => rng.fill(&mut buf),
        }
        if !buf.is_empty() {
            fileio::write_at(&f, &buf, off).unwrap();
        }
    }
}

pub fn random_format(rng: &mut Rng) -> Format {
    [Format::Raw, Format::Vmdk, Format::Vhd][rng.below(3) as usize]
}

pub fn ext(f: Format) -> &'static str {
    match f {
        Format::Raw => "img",
        Format::Vmdk => "vmdk",
        Format::Vhd => "vhd",
    }
}

pub fn seeds(fast: u64, slow: u64) -> u64 {
    if std::env::var_os("HOMEWARD_E2E").is_some() {
        slow
    } else {
        fast
    }
}
