//! Disk images in the formats the two sites use: sparse raw, VMDK `monolithicFlat` (on-premises: a text
//! descriptor plus a `-flat.vmdk` extent) and fixed VHD (cloud: raw data followed by a 512-byte footer).
//!
//! Every supported format keeps the guest's bytes contiguous in one *data file* starting at offset 0, so the rest
//! of the crate reads and writes `[0, size)` of that file and never touches the descriptor or the footer.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::fileio;
use crate::Error;

pub const SECTOR: u64 = 512;
const VHD_FOOTER: u64 = 512;
const VHD_COOKIE: &[u8; 8] = b"conectix";
const VHD_FIXED: u32 = 2;
/// Azure accepts fixed VHDs whose virtual size is a whole number of MiB.
const VHD_ALIGN: u64 = 1 << 20;
const VMDK_MAGIC: &str = "# Disk DescriptorFile";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Raw,
    Vmdk,
    Vhd,
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "raw" | "img" => Ok(Format::Raw),
            "vmdk" => Ok(Format::Vmdk),
            "vhd" | "vpc" => Ok(Format::Vhd),
            other => Err(format!("unknown disk format {other:?}; use raw, vmdk or vhd")),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Raw => "raw",
            Format::Vmdk => "vmdk (monolithicFlat)",
            Format::Vhd => "vhd (fixed)",
        })
    }
}

impl Format {
    /// The format a new image at `path` gets from its extension (`.vmdk`, `.vhd`, anything else raw).
    pub fn from_extension(path: &Path) -> Format {
        match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("vmdk") => Format::Vmdk,
            Some("vhd") => Format::Vhd,
            _ => Format::Raw,
        }
    }

    /// The name `qemu-img -f` uses for it.
    pub fn qemu_name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Vmdk => "vmdk",
            Format::Vhd => "vpc",
        }
    }
}

/// An opened, validated disk image.
#[derive(Clone, Debug)]
pub struct DiskImage {
    pub format: Format,
    /// The path the user names: the raw file, the VMDK descriptor or the VHD.
    pub path: PathBuf,
    /// The file holding the guest's bytes at offset 0: the same file, or the VMDK's flat extent.
    pub data_path: PathBuf,
    /// Virtual size in bytes (a multiple of 512).
    pub size: u64,
}

impl DiskImage {
    /// Creates a new, sparse, zero-filled image. Refuses to overwrite an existing file.
    pub fn create(path: &Path, format: Format, size: u64) -> Result<DiskImage, Error> {
        let bad = |problem: String| Error::Image { path: path.to_path_buf(), problem };
        if size == 0 || !size.is_multiple_of(SECTOR) {
            return Err(bad(format!("size {size} is not a positive multiple of 512 bytes")));
        }
        if format == Format::Vhd && !size.is_multiple_of(VHD_ALIGN) {
            return Err(bad(format!("a fixed VHD must be a whole number of MiB (Azure's rule); {size} bytes is not")));
        }
        let new_file = |p: &Path| -> Result<File, Error> {
            OpenOptions::new().read(true).write(true).create_new(true).open(p).map_err(|e| Error::io(p, e))
        };
        match format {
            Format::Raw => {
                new_file(path)?.set_len(size).map_err(|e| Error::io(path, e))?;
                Ok(DiskImage { format, path: path.into(), data_path: path.into(), size })
            }
            Format::Vhd => {
                let f = new_file(path)?;
                f.set_len(size + VHD_FOOTER).map_err(|e| Error::io(path, e))?;
                fileio::write_at(&f, &vhd_footer(size, unique_id(path)), size).map_err(|e| Error::io(path, e))?;
                f.sync_all().map_err(|e| Error::io(path, e))?;
                Ok(DiskImage { format, path: path.into(), data_path: path.into(), size })
            }
            Format::Vmdk => {
                let extent_name = flat_extent_name(path);
                let data_path = path.with_file_name(&extent_name);
                let f = new_file(&data_path)?;
                f.set_len(size).map_err(|e| Error::io(&data_path, e))?;
                let descriptor = vmdk_descriptor(size, &extent_name);
                let mut d = new_file(path)?;
                io::Write::write_all(&mut d, descriptor.as_bytes()).map_err(|e| Error::io(path, e))?;
                d.sync_all().map_err(|e| Error::io(path, e))?;
                Ok(DiskImage { format, path: path.into(), data_path, size })
            }
        }
    }

    /// Opens and validates an image; the format comes from its content, and a `.vmdk` / `.vhd` name must match it.
    pub fn open(path: &Path) -> Result<DiskImage, Error> {
        let bad = |problem: String| Error::Image { path: path.to_path_buf(), problem };
        let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
        let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
        if !f.metadata().map_err(|e| Error::io(path, e))?.is_file() {
            return Err(bad("not a regular file".into()));
        }
        let mut head = vec![0u8; 64.min(len as usize)];
        f.read_exact(&mut head).map_err(|e| Error::io(path, e))?;
        if head.starts_with(VMDK_MAGIC.as_bytes()) {
            return open_vmdk(path, len);
        }
        let footer = if len >= VHD_FOOTER {
            let mut footer = [0u8; VHD_FOOTER as usize];
            fileio::read_at(&f, &mut footer, len - VHD_FOOTER).map_err(|e| Error::io(path, e))?;
            Some(footer)
        } else {
            None
        };
        let has_cookie = footer.as_ref().is_some_and(|ft| &ft[..8] == VHD_COOKIE);
        match Format::from_extension(path) {
            Format::Vmdk => {
                return Err(bad("no VMDK descriptor (\"# Disk DescriptorFile\"); only monolithicFlat VMDKs are \
                                supported, open the descriptor file, not the -flat.vmdk extent"
                    .into()))
            }
            Format::Vhd if !has_cookie => {
                return Err(bad(format!(
                    "no VHD footer in the last 512 bytes (file is {len} bytes): the file is truncated or not a VHD"
                )))
            }
            _ => {}
        }
        if let (true, Some(footer)) = (has_cookie, footer) {
            let size = parse_vhd_footer(&footer).map_err(bad)?;
            if size + VHD_FOOTER != len {
                return Err(bad(format!(
                    "size mismatch: the footer says {size} bytes of data but the file holds {} (truncated or extended)",
                    len.saturating_sub(VHD_FOOTER)
                )));
            }
            return Ok(DiskImage { format: Format::Vhd, path: path.into(), data_path: path.into(), size });
        }
        if len == 0 || len % SECTOR != 0 {
            return Err(bad(format!("a raw image must be a positive multiple of 512 bytes; this one is {len}")));
        }
        Ok(DiskImage { format: Format::Raw, path: path.into(), data_path: path.into(), size: len })
    }

    /// The data file opened read-only.
    pub fn open_data_read(&self) -> Result<File, Error> {
        File::open(&self.data_path).map_err(|e| Error::io(&self.data_path, e))
    }

    /// The data file opened for reading and writing.
    pub fn open_data_rw(&self) -> Result<File, Error> {
        OpenOptions::new().read(true).write(true).open(&self.data_path).map_err(|e| Error::io(&self.data_path, e))
    }

    /// Bytes the data file really occupies on disk (sparse files cost less than their size).
    pub fn allocated_bytes(&self) -> Result<u64, Error> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(&self.data_path).map_err(|e| Error::io(&self.data_path, e))?;
        Ok(m.blocks() * 512)
    }

    /// Folder beside the image for Homeward's own state about it (change tracking, hashes, journal).
    pub fn state_dir(&self) -> PathBuf {
        let mut name = self.path.file_name().unwrap_or_default().to_os_string();
        name.push(".homeward");
        self.path.with_file_name(name)
    }
}

fn flat_extent_name(descriptor: &Path) -> String {
    let stem = descriptor.file_stem().and_then(|s| s.to_str()).unwrap_or("disk");
    format!("{stem}-flat.vmdk")
}

/// CHS geometry as VMware and the VHD specification compute it.
fn chs(size: u64) -> (u16, u8, u8) {
    let total = (size / SECTOR).min(65535 * 16 * 255);
    let (spt, heads, cth);
    if total >= 65535 * 16 * 63 {
        spt = 255;
        heads = 16;
        cth = total / spt;
    } else {
        let mut s = 17;
        let mut c = total / s;
        let mut h = c.div_ceil(1024).max(4);
        if c >= h * 1024 || h > 16 {
            s = 31;
            h = 16;
            c = total / s;
        }
        if c >= h * 1024 {
            s = 63;
            h = 16;
            c = total / s;
        }
        spt = s;
        heads = h;
        cth = c;
    }
    ((cth / heads) as u16, heads as u8, spt as u8)
}

fn vmdk_descriptor(size: u64, extent: &str) -> String {
    let sectors = size / SECTOR;
    let cylinders = (sectors / (16 * 63)).clamp(1, 16383);
    format!(
        "{VMDK_MAGIC}\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n\n\
         # Extent description\nRW {sectors} FLAT \"{extent}\" 0\n\n\
         # The Disk Data Base\n#DDB\n\nddb.virtualHWVersion = \"4\"\nddb.geometry.cylinders = \"{cylinders}\"\n\
         ddb.geometry.heads = \"16\"\nddb.geometry.sectors = \"63\"\nddb.adapterType = \"lsilogic\"\n"
    )
}

fn open_vmdk(path: &Path, len: u64) -> Result<DiskImage, Error> {
    let bad = |problem: String| Error::Image { path: path.to_path_buf(), problem };
    if len > 1 << 20 {
        return Err(bad("the VMDK descriptor is larger than 1 MiB; this is not a monolithicFlat descriptor".into()));
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut create_type = None;
    let mut extents = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("createType=") {
            create_type = Some(v.trim_matches('"').to_owned());
        } else if line.starts_with("RW ") || line.starts_with("RDONLY ") || line.starts_with("NOACCESS ") {
            extents.push(line.to_owned());
        }
    }
    match create_type.as_deref() {
        Some("monolithicFlat") => {}
        Some(other) => return Err(bad(format!("createType \"{other}\" is not supported; only monolithicFlat is"))),
        None => return Err(bad("the descriptor has no createType".into())),
    }
    let [extent] = extents.as_slice() else {
        return Err(bad(format!("expected exactly one extent line, found {}", extents.len())));
    };
    // RW <sectors> FLAT "<file>" <offset>
    let parse = || -> Option<(u64, String, u64)> {
        let (head, rest) = extent.split_once('"')?;
        let (file, tail) = rest.split_once('"')?;
        let mut h = head.split_whitespace();
        let (_access, sectors, kind) = (h.next()?, h.next()?.parse().ok()?, h.next()?);
        (kind == "FLAT").then_some(())?;
        let offset = tail.trim().parse().unwrap_or(0);
        Some((sectors, file.to_owned(), offset))
    };
    let Some((sectors, file, offset)) = parse() else {
        return Err(bad(format!("cannot read the extent line {extent:?}; expected RW <sectors> FLAT \"<file>\" 0")));
    };
    if offset != 0 {
        return Err(bad(format!("the extent starts at sector {offset}; only offset 0 is supported")));
    }
    if sectors == 0 {
        return Err(bad("the extent has 0 sectors".into()));
    }
    let data_path = path.with_file_name(&file);
    let meta = std::fs::metadata(&data_path).map_err(|e| Error::Image {
        path: path.to_path_buf(),
        problem: format!("the descriptor points to the extent {} which cannot be opened: {e}", data_path.display()),
    })?;
    let size = sectors * SECTOR;
    if meta.len() != size {
        return Err(bad(format!(
            "size mismatch: the descriptor says {size} bytes but the extent {} holds {}",
            data_path.display(),
            meta.len()
        )));
    }
    Ok(DiskImage { format: Format::Vmdk, path: path.into(), data_path, size })
}

fn unique_id(path: &Path) -> [u8; 16] {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let h = blake3::hash(format!("{}:{}:{}", path.display(), now.as_nanos(), std::process::id()).as_bytes());
    h.as_bytes()[..16].try_into().unwrap()
}

fn vhd_checksum(footer: &[u8]) -> u32 {
    let sum = footer.iter().enumerate().filter(|(i, _)| !(64..68).contains(i)).map(|(_, b)| *b as u32).sum::<u32>();
    !sum
}

/// A fixed-disk footer per the VHD specification. Creator application "win " makes qemu (and Hyper-V) take the
/// size from the footer rather than from the CHS geometry.
fn vhd_footer(size: u64, id: [u8; 16]) -> [u8; 512] {
    let mut f = [0u8; 512];
    f[0..8].copy_from_slice(VHD_COOKIE);
    f[8..12].copy_from_slice(&2u32.to_be_bytes()); // features: reserved bit always set
    f[12..16].copy_from_slice(&0x0001_0000u32.to_be_bytes()); // format version 1.0
    f[16..24].copy_from_slice(&u64::MAX.to_be_bytes()); // data offset: none for fixed disks
    let since_2000 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs().saturating_sub(946_684_800))
        .unwrap_or(0) as u32;
    f[24..28].copy_from_slice(&since_2000.to_be_bytes());
    f[28..32].copy_from_slice(b"win ");
    f[32..36].copy_from_slice(&0x000a_0000u32.to_be_bytes());
    f[36..40].copy_from_slice(b"Wi2k");
    f[40..48].copy_from_slice(&size.to_be_bytes()); // original size
    f[48..56].copy_from_slice(&size.to_be_bytes()); // current size
    let (c, h, s) = chs(size);
    f[56..58].copy_from_slice(&c.to_be_bytes());
    f[58] = h;
    f[59] = s;
    f[60..64].copy_from_slice(&VHD_FIXED.to_be_bytes());
    f[68..84].copy_from_slice(&id);
    let sum = vhd_checksum(&f);
    f[64..68].copy_from_slice(&sum.to_be_bytes());
    f
}

fn parse_vhd_footer(f: &[u8; 512]) -> Result<u64, String> {
    let be32 = |r: std::ops::Range<usize>| u32::from_be_bytes(f[r].try_into().unwrap());
    let stored = be32(64..68);
    let computed = vhd_checksum(f);
    if stored != computed {
        return Err(format!(
            "bad VHD footer checksum (stored {stored:#010x}, computed {computed:#010x}): corrupt footer"
        ));
    }
    let disk_type = be32(60..64);
    match disk_type {
        VHD_FIXED => {}
        3 => return Err("dynamic VHDs are not supported; convert to a fixed VHD (Azure only accepts fixed)".into()),
        4 => return Err("differencing VHDs are not supported; convert to a fixed VHD".into()),
        t => return Err(format!("unknown VHD disk type {t}")),
    }
    let size = u64::from_be_bytes(f[48..56].try_into().unwrap());
    if size == 0 || size % SECTOR != 0 {
        return Err(format!("the footer's size {size} is not a positive multiple of 512"));
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_format_round_trips_create_then_open() {
        let dir = tempfile::tempdir().unwrap();
        for (name, fmt) in [("a.img", Format::Raw), ("b.vmdk", Format::Vmdk), ("c.vhd", Format::Vhd)] {
            let p = dir.path().join(name);
            let created = DiskImage::create(&p, fmt, 4 << 20).unwrap();
            let opened = DiskImage::open(&p).unwrap();
            assert_eq!((opened.format, opened.size, &opened.data_path), (fmt, 4 << 20, &created.data_path));
            assert!(opened.allocated_bytes().unwrap() < 64 << 10, "{name} is sparse");
        }
        assert!(dir.path().join("b-flat.vmdk").is_file());
    }

    #[test]
    fn create_refuses_bad_sizes_and_existing_files() {
        let dir = tempfile::tempdir().unwrap();
        let e = DiskImage::create(&dir.path().join("x.img"), Format::Raw, 1000).unwrap_err();
        assert!(e.to_string().contains("multiple of 512"), "{e}");
        let e = DiskImage::create(&dir.path().join("x.vhd"), Format::Vhd, 3 << 19).unwrap_err();
        assert!(e.to_string().contains("whole number of MiB"), "{e}");
        DiskImage::create(&dir.path().join("y.img"), Format::Raw, 1 << 20).unwrap();
        let e = DiskImage::create(&dir.path().join("y.img"), Format::Raw, 1 << 20).unwrap_err();
        assert!(e.to_string().contains("y.img"), "{e}");
    }

    #[test]
    fn vhd_geometry_matches_the_specification_examples() {
        // 1 GiB: 2080 cylinders, 16 heads, 63 sectors (as Hyper-V writes it).
        assert_eq!(chs(1 << 30), (2080, 16, 63));
        // Small disks use 17 sectors per track and at least 4 heads.
        assert_eq!(chs(4 << 20), (120, 4, 17));
    }
}
