//! The `.tar.gz` files of a backup, streamed: a snapshot may be larger than
//! memory. Reading checks what `gzip -t` does (every byte decompresses, the
//! CRC matches) and more: every entry is a plain file with a safe name, and
//! the whole is no larger than the caller allows.
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;

/// Why an archive could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// Reading or writing a file failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// Not a gzip'd tar of plain files with safe names: truncated, altered or not ours.
    #[error("corrupt archive: {0}")]
    Corrupt(String),
    /// Larger than allowed once unpacked.
    #[error("the archive unpacks to more than {0} bytes")]
    TooLarge(u64),
}

/// Writes `files` (name inside the archive, path on disk) as one `.tar.gz` at `out`.
pub fn pack(out: &Path, files: &[(&str, &Path)]) -> Result<(), ArchiveError> {
    let file = BufWriter::new(File::create(out)?);
    let mut tar = tar::Builder::new(GzEncoder::new(file, Compression::fast()));
    tar.mode(tar::HeaderMode::Deterministic);
    // Plain entries only: a reader refuses anything else, and every tar reads them.
    tar.sparse(false);
    for (name, path) in files {
        tar.append_path_with_name(path, name)?;
    }
    let gz = tar.into_inner()?;
    let mut file = gz.finish()?;
    file.flush()?;
    file.into_inner()
        .map_err(|e| ArchiveError::Io(e.into_error()))?
        .sync_all()?;
    Ok(())
}

/// [`pack`] of bytes held in memory (small files: the keys archive).
pub fn pack_bytes(files: &[(&str, &[u8])]) -> Result<Vec<u8>, ArchiveError> {
    let mut tar = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::default()));
    tar.mode(tar::HeaderMode::Deterministic);
    for (name, bytes) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o600);
        header.set_cksum();
        tar.append_data(&mut header, name, *bytes)?;
    }
    Ok(tar.into_inner()?.finish()?)
}

fn safe(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('/')
        && name
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
}

/// Reads every entry of a `.tar.gz`, calling `each(name, reader)` for each;
/// fails on anything but plain files with safe names, or past `max` bytes.
fn read_entries(
    input: impl Read,
    max: u64,
    mut each: impl FnMut(&str, &mut dyn Read) -> Result<(), ArchiveError>,
) -> Result<(), ArchiveError> {
    let corrupt = |e: io::Error| ArchiveError::Corrupt(e.to_string());
    let mut tar = tar::Archive::new(GzDecoder::new(input));
    let mut total = 0u64;
    for entry in tar.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        let kind = entry.header().entry_type();
        if kind != tar::EntryType::Regular {
            return Err(ArchiveError::Corrupt(format!(
                "entry {:?} is not a plain file ({kind:?})",
                String::from_utf8_lossy(&entry.path_bytes())
            )));
        }
        let name = entry
            .path()
            .map_err(corrupt)?
            .to_string_lossy()
            .into_owned();
        if !safe(&name) {
            return Err(ArchiveError::Corrupt(format!("unsafe entry name {name:?}")));
        }
        total = total.saturating_add(entry.size());
        if total > max {
            return Err(ArchiveError::TooLarge(max));
        }
        each(&name, &mut entry)?;
    }
    // The gzip trailer (CRC and length) is checked only once the stream ends.
    let mut rest = tar.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(corrupt)?;
    Ok(())
}

/// Unpacks the entry `name` of an archive to `dest` (created, `0600`).
pub fn unpack_one(path: &Path, name: &str, dest: &Path, max: u64) -> Result<(), ArchiveError> {
    let mut found = false;
    read_entries(BufReader::new(File::open(path)?), max, |entry, r| {
        if entry == name {
            let mut out = private_file(dest)?;
            io::copy(r, &mut out).map_err(|e| ArchiveError::Corrupt(e.to_string()))?;
            out.sync_all()?;
            found = true;
        } else {
            io::copy(r, &mut io::sink()).map_err(|e| ArchiveError::Corrupt(e.to_string()))?;
        }
        Ok(())
    })?;
    match found {
        true => Ok(()),
        false => Err(ArchiveError::Corrupt(format!("no {name} in the archive"))),
    }
}

/// Unpacks every entry (plain names only, no directories) into the existing
/// directory `dir`, each file `0600`; their names.
pub fn unpack_all(path: &Path, dir: &Path, max: u64) -> Result<Vec<String>, ArchiveError> {
    let mut names = Vec::new();
    read_entries(BufReader::new(File::open(path)?), max, |entry, r| {
        if entry.contains('/') {
            return Err(ArchiveError::Corrupt(format!(
                "entry {entry:?} is in a directory"
            )));
        }
        let mut out = private_file(&dir.join(entry))?;
        io::copy(r, &mut out).map_err(|e| ArchiveError::Corrupt(e.to_string()))?;
        out.sync_all()?;
        names.push(entry.to_owned());
        Ok(())
    })?;
    Ok(names)
}

/// Every entry of a small in-memory archive (the keys archive).
pub fn unpack_bytes(bytes: &[u8], max: u64) -> Result<Vec<(String, Vec<u8>)>, ArchiveError> {
    let mut out = Vec::new();
    read_entries(bytes, max, |name, r| {
        let mut buf = Vec::new();
        r.read_to_end(&mut buf)
            .map_err(|e| ArchiveError::Corrupt(e.to_string()))?;
        out.push((name.to_owned(), buf));
        Ok(())
    })?;
    Ok(out)
}

/// A new file only its owner may read.
pub fn private_file(path: &Path) -> io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "atlas-dr-{}",
            hex::encode(atlas_crypto::random_bytes::<8>())
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_packed_file_unpacks_and_damage_is_found() {
        let dir = temp();
        let src = dir.join("atlas.db");
        let content: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
        std::fs::write(&src, &content).unwrap();
        let archive = dir.join("data.tar.gz");
        pack(&archive, &[("atlas.db", &src)]).unwrap();
        let out = dir.join("restored.db");
        unpack_one(&archive, "atlas.db", &out, u64::MAX).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), content);
        assert!(
            matches!(
                unpack_one(&archive, "atlas.db", &out, u64::MAX),
                Err(ArchiveError::Io(_))
            ),
            "never overwrites"
        );
        assert!(matches!(
            unpack_one(&archive, "atlas.db", &dir.join("small.db"), 1000),
            Err(ArchiveError::TooLarge(1000))
        ));

        assert!(matches!(
            unpack_one(&archive, "other.db", &dir.join("other.db"), u64::MAX),
            Err(ArchiveError::Corrupt(_))
        ));
        let bytes = std::fs::read(&archive).unwrap();
        let truncated = dir.join("truncated.tar.gz");
        std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
        assert!(matches!(
            unpack_one(&truncated, "atlas.db", &dir.join("t.db"), u64::MAX),
            Err(ArchiveError::Corrupt(_))
        ));
        let flipped = dir.join("flipped.tar.gz");
        let mut damaged = bytes.clone();
        let middle = damaged.len() / 2;
        damaged[middle] ^= 0x40;
        std::fs::write(&flipped, &damaged).unwrap();
        assert!(matches!(
            unpack_one(&flipped, "atlas.db", &dir.join("f.db"), u64::MAX),
            Err(ArchiveError::Corrupt(_))
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A file with holes (SQLite's `VACUUM INTO` output can have them) is
    /// packed as a plain entry, which the reader accepts.
    #[test]
    fn a_sparse_file_is_packed_as_a_plain_one() {
        let dir = temp();
        let src = dir.join("sparse.db");
        let file = std::fs::File::create(&src).unwrap();
        file.set_len(8 << 20).unwrap();
        drop(file);
        let archive = dir.join("sparse.tar.gz");
        pack(&archive, &[("atlas.db", &src)]).unwrap();
        let out = dir.join("out.db");
        unpack_one(&archive, "atlas.db", &out, u64::MAX).unwrap();
        assert_eq!(std::fs::metadata(&out).unwrap().len(), 8 << 20);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn small_archives_round_trip_in_memory_and_unsafe_names_are_refused() {
        let packed = pack_bytes(&[("server.kek", b"k"), ("notes/readme", b"r")]).unwrap();
        let files = unpack_bytes(&packed, 1 << 20).unwrap();
        assert_eq!(files[0], ("server.kek".to_owned(), b"k".to_vec()));
        assert!(!safe("../etc/passwd") && !safe("/abs") && !safe("a//b") && safe("a/b"));
        let mut tar = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(1);
        header.set_cksum();
        // `append_data` refuses `..`; a hostile archive is written by hand.
        let name = b"../x";
        header.as_old_mut().name[..name.len()].copy_from_slice(name);
        header.set_cksum();
        tar.append(&header, &b"x"[..]).unwrap();
        let raw = tar.into_inner().unwrap();
        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        gz.write_all(&raw).unwrap();
        let hostile = gz.finish().unwrap();
        assert!(matches!(
            unpack_bytes(&hostile, 1 << 20),
            Err(ArchiveError::Corrupt(_))
        ));
    }
}
