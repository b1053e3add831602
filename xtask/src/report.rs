//! `cargo xtask report [--check]`: regenerate every experiment.
//!
//! Everything is rendered in memory first; only then are files written, each to a temporary
//! file in the same folder and renamed over the old one, so a failure never leaves a half-written
//! report. `--check` compares instead of writing (PNG files by decoded pixels, so a different
//! compression level in a new `png` version is not "stale").

use crate::experiments::{self, OutputFile};
use anyhow::{Context, Result, bail};
use std::fs;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Write,
    Check,
}

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent folder")
        .to_path_buf()
}

/// One generated file and where it goes, relative to the workspace root.
pub struct Planned {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
}

/// Render every experiment under `root/experiments`, in folder order.
pub fn render_all(root: &Path) -> Result<Vec<Planned>> {
    let mut planned = Vec::new();
    for dir in experiments::discover(root)? {
        let outputs = experiments::generate(root, &dir)?;
        for OutputFile { name, bytes } in outputs {
            planned.push(Planned {
                path: dir.join(name),
                bytes,
            });
        }
    }
    Ok(planned)
}

pub fn run(mode: Mode) -> Result<()> {
    let root = workspace_root();
    let planned = render_all(&root)?;
    match mode {
        Mode::Write => {
            for p in &planned {
                write_atomically(&root.join(&p.path), &p.bytes)?;
            }
            println!("regenerated {} files", planned.len());
            Ok(())
        }
        Mode::Check => {
            let stale = stale_files(&root, &planned)?;
            if stale.is_empty() {
                println!("{} generated files are up to date", planned.len());
                Ok(())
            } else {
                bail!(
                    "stale: {}; run `cargo xtask report`",
                    stale
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        }
    }
}

/// The planned files whose committed copy is missing or differs.
pub fn stale_files(root: &Path, planned: &[Planned]) -> Result<Vec<PathBuf>> {
    let mut stale = Vec::new();
    for p in planned {
        let committed = match fs::read(root.join(&p.path)) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                stale.push(p.path.clone());
                continue;
            }
            Err(e) => return Err(e).with_context(|| format!("{}", p.path.display())),
        };
        if !same_content(&p.path, &committed, &p.bytes) {
            stale.push(p.path.clone());
        }
    }
    Ok(stale)
}

fn same_content(path: &Path, committed: &[u8], fresh: &[u8]) -> bool {
    if committed == fresh {
        return true;
    }
    if path.extension().is_some_and(|e| e == "png") {
        return match (decode_png(committed), decode_png(fresh)) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        };
    }
    false
}

/// Size, colour type and pixels of a PNG; `None` if it does not decode.
fn decode_png(bytes: &[u8]) -> Option<(u32, u32, png::ColorType, Vec<u8>)> {
    let mut reader = png::Decoder::new(bytes).read_info().ok()?;
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).ok()?;
    buf.truncate(info.buffer_size());
    Some((info.width, info.height, info.color_type, buf))
}

/// Write `bytes` to a temporary file beside `path`, then rename it over `path`.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .with_context(|| format!("{}: no parent folder", path.display()))?;
    let name = path
        .file_name()
        .with_context(|| format!("{}: no file name", path.display()))?
        .to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| {
        let _ = fs::remove_file(&tmp);
        format!("renaming {} to {}", tmp.display(), path.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `cargo test` catches a stale report: the committed outputs equal what the code generates.
    #[test]
    fn committed_experiment_outputs_are_fresh() {
        let root = workspace_root();
        let planned = render_all(&root).unwrap();
        assert!(!planned.is_empty(), "no experiments found");
        let stale = stale_files(&root, &planned).unwrap();
        assert!(
            stale.is_empty(),
            "stale generated files {stale:?}; run `cargo xtask report`"
        );
    }

    #[test]
    fn check_names_changed_and_missing_files_and_compares_png_pixels() {
        let root = std::env::temp_dir().join(format!("xtask-stale-{}", std::process::id()));
        fs::create_dir_all(&root).unwrap();
        fs::write(root.join("same.md"), "a").unwrap();
        fs::write(root.join("changed.md"), "a").unwrap();
        // The same white 64x64 image at two compression levels: different bytes, same image.
        let png = |level| {
            let mut out = Vec::new();
            let mut e = png::Encoder::new(&mut out, 64, 64);
            e.set_color(png::ColorType::Rgb);
            e.set_compression(level);
            e.write_header()
                .unwrap()
                .write_image_data(&[255; 64 * 64 * 3])
                .unwrap();
            out
        };
        let (fast, best) = (png(png::Compression::Fast), png(png::Compression::Best));
        assert_ne!(fast, best);
        fs::write(root.join("chart.png"), &fast).unwrap();
        let planned = |name: &str, bytes: &[u8]| Planned {
            path: PathBuf::from(name),
            bytes: bytes.to_vec(),
        };
        let stale = stale_files(
            &root,
            &[
                planned("same.md", b"a"),
                planned("changed.md", b"b"),
                planned("missing.md", b"a"),
                planned("chart.png", &best),
            ],
        )
        .unwrap();
        fs::remove_dir_all(&root).unwrap();
        assert_eq!(
            stale,
            vec![PathBuf::from("changed.md"), PathBuf::from("missing.md")]
        );
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("xtask-write-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("out.md");
        write_atomically(&path, b"one").unwrap();
        write_atomically(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("out.md")]);
        fs::remove_dir_all(&dir).unwrap();
    }
}
